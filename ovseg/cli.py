"""Command line: ``ovseg`` (also ``python -m ovseg``).

Mapping from the thesis code's ``main.py --mode``:

============================  =========================================
thesis ``main.py``            ovseg
============================  =========================================
``--mode segment``            ``ovseg segment IMAGE --prompt TEXT``
``--mode remove``             ``ovseg remove IMAGE --prompt TEXT``
``--mode replace --edit E``   ``ovseg replace IMAGE --prompt TEXT --edit E``
``--mode style --edit E``     ``ovseg style IMAGE --prompt TEXT --edit E``
``--mode benchmark``          ``ovseg benchmark [IMAGE]``
(Chapter 5)                   ``ovseg evaluate --dataset D --root DIR --out DIR``
``--config quality``          ``--config fast|balanced|quality|FILE.yaml``
============================  =========================================

Every input (image, prompt, config) is validated before a model is loaded; a user error prints
one line ``ovseg: error: <rule>; got <value>; fix: <fix>`` and exits 2 (3 for missing weights).
Outputs are written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputError, OvsegError

__all__ = ["main", "build_parser"]


def _add_common(p: argparse.ArgumentParser, edit: bool = False) -> None:
    p.add_argument("image", help="input image (PNG, JPEG, ...)")
    p.add_argument("--prompt", required=True, help='text describing the object, e.g. "red car"')
    if edit:
        p.add_argument("--edit", default=None, help="what to paint instead (replace) / the new look (style)")
        p.add_argument("--seed", type=int, default=None, help="diffusion seed (default: config inpainting.seed)")
        p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: config, 50)")
    p.add_argument("--top-k", type=int, default=5, help="number of masks to return (default 5)")
    p.add_argument("--config", default="balanced", help="fast | balanced | quality | path to a .yaml config")
    p.add_argument("--profile", choices=("mini", "full"), default=None, help="model profile (default: config's, mini)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--out", default=None, help="output folder (default: ./ovseg-out/<image stem>)")
    p.add_argument("--json", action="store_true", help="also print result.json to stdout")


def build_parser() -> argparse.ArgumentParser:
    from .config import REPLACE_REGIONS

    parser = argparse.ArgumentParser(prog="ovseg", description="Open-vocabulary segmentation and editing "
                                     "(SAM 2 + CLIP + Stable Diffusion).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_common(sub.add_parser("segment", help="find the masks matching a prompt"))
    for op, text in (("remove", "remove the object"), ("replace", "replace the object with --edit"),
                     ("style", "restyle the object as --edit")):
        sp = sub.add_parser(op, help=text)
        _add_common(sp, edit=True)
        if op == "replace":
            sp.add_argument("--region", choices=REPLACE_REGIONS, default=None,
                            help="repaint the object's silhouette, its bounding box, or the square around its "
                                 "enclosing circle (room for another shape) "
                                 "(default: config inpainting.replace_region)")

    b = sub.add_parser("benchmark", help="per-stage timings")
    b.add_argument("image", nargs="?", default=None, help="image to time (default: a shipped sample)")
    b.add_argument("--stage", choices=("all", "align"), default="all",
                   help="all stages, or only the alignment micro-benchmark")
    b.add_argument("--prompt", default="red circle")
    b.add_argument("--profile", choices=("mini", "full"), default="mini")
    b.add_argument("--config", default="balanced")
    b.add_argument("--device", default="cpu")
    b.add_argument("--random-init", action="store_true",
                   help="full-size models with RANDOM weights: timing only, results are meaningless")
    b.add_argument("--steps", type=int, default=None, help="diffusion steps to time (default: config)")
    b.add_argument("--points-per-side", type=int, default=None, help="override the SAM 2 grid (default: config)")
    b.add_argument("--repeats", type=int, default=7, help="repeats for the alignment benchmark (median)")
    b.add_argument("--json", action="store_true", help="print a JSON object as the last line")

    e = sub.add_parser("evaluate", help="Chapter 5 evaluation of a dataset (resumable, torchrun-aware)")
    e.add_argument("--dataset", required=True, choices=("voc", "coco-stuff", "ade20k", "mini", "folder"))
    e.add_argument("--root", default=None, help="dataset folder (default for mini: the shipped evaluation set)")
    e.add_argument("--split", default="val", help="dataset split (default val)")
    e.add_argument("--config", default=None, help="evaluation YAML: protocol keys and an optional pipeline: section")
    e.add_argument("--method", choices=("ovseg", "dense", "maskclip", "sclip", "clearclip"), default=None,
                   help="override the protocol's method")
    e.add_argument("--max-images", type=int, default=None, help="evaluate only the first N images")
    e.add_argument("--profile", choices=("mini", "full"), default=None)
    e.add_argument("--device", default=None, help="torch device (default: cuda:LOCAL_RANK under torchrun with GPUs, else cpu)")
    e.add_argument("--out", required=True, help="output folder (results store, metrics.json, tables)")
    e.add_argument("--task", choices=("semantic", "referring", "edits"), default="semantic",
                   help="semantic: label every pixel (Chapter 5 tables); referring: segment(image, class name), "
                        "top-1 mask IoU against that class (OUT/referring.json); edits: edit quality of remove / "
                        "replace / style on held-out mini-world scenes, --max-images edits (default 60; OUT/edits.json)")

    t = sub.add_parser("train", help="train an embedded mini model (resumable; see its --help)")
    t.add_argument("model", choices=("mini-clip", "mini-sam2", "mini-inpainting"))
    t.add_argument("args", nargs=argparse.REMAINDER, help="passed to the trainer, e.g. --out DIR --minutes 60 --resume")

    w = sub.add_parser("weights", help="list, download or verify model weights")
    wsub = w.add_subparsers(dest="weights_command", required=True)
    wl = wsub.add_parser("list", help="registry entries and whether their files are present")
    wl.add_argument("--profile", choices=("mini", "full"), default=None)
    wd = wsub.add_parser("download", help="fetch a profile's models into the Hugging Face cache")
    wd.add_argument("profile", choices=("mini", "full"))
    wd.add_argument("--only", default=None, help="one registry entry")
    wv = wsub.add_parser("verify", help="check files against their sha256")
    wv.add_argument("name", nargs="?", default=None, help="registry entry (default: all present)")
    wp = wsub.add_parser("pin", help="record the sha256 of an embedded model's files (after training)")
    wp.add_argument("name", choices=("mini-sam2", "mini-clip", "mini-inpainting"))
    return parser


def _out_dir(args: argparse.Namespace, suffix: str) -> Path:
    return Path(args.out) if args.out else Path("ovseg-out") / f"{Path(args.image).stem}-{suffix}"


def _validate(args: argparse.Namespace) -> tuple[Any, Any]:
    """Image, prompt, edit prompt and config, all checked before any model loads."""
    from .config import load_config
    from .errors import InputError
    from .features import check_prompts
    from .io import load_image

    config = load_config(args.config, profile=args.profile)
    image = load_image(args.image)
    check_prompts(args.prompt)
    if args.top_k < 1:
        raise InputError("--top-k must be a positive integer", args.top_k, "pass e.g. --top-k 5")
    if getattr(args, "steps", None) is not None:
        config = config.replace(**{"inpainting.num_inference_steps": args.steps})
    if getattr(args, "region", None) is not None:
        config = config.replace(**{"inpainting.replace_region": args.region})
    if args.command in ("replace", "style") and (args.edit is None or not args.edit.strip()):
        raise InputError(f"{args.command} needs --edit describing the new content", repr(args.edit),
                         'add --edit "..." (e.g. --edit "blue square")')
    return image, config


def _cmd_segment(args: argparse.Namespace) -> int:
    import numpy as np

    from .io import save_image_atomic, write_json_atomic
    from .pipeline import OpenVocabSegmentationPipeline
    from .viz import overlay_masks

    image, config = _validate(args)
    pipe = OpenVocabSegmentationPipeline(config, device=args.device, progress=sys.stderr.isatty())
    if args.command == "segment":
        result = pipe.segment(image, args.prompt, top_k=args.top_k)
    else:
        result = pipe.segment_and_edit(image, args.prompt, args.command, edit_prompt=args.edit, top_k=args.top_k,
                                       seed=args.seed)
    out = _out_dir(args, args.command)
    payload = result.to_dict() | {"image": str(args.image), "config": config.to_dict()}
    files = []
    # Images first, result.json last: its presence marks a complete output folder.
    files.append(save_image_atomic(out / "overlay.png", overlay_masks(result.image, [m.mask for m in result.segmentation_masks])))
    if args.command == "segment":
        for k, m in enumerate(result.segmentation_masks):
            files.append(save_image_atomic(out / f"mask_{k:02d}.png", m.mask))
    else:
        files.append(save_image_atomic(out / "mask.png", result.segmentation_masks[0].mask))
        # the repaint mask actually used (dilated, blurred; for replace --region box, the box's): 255 = repainted
        files.append(save_image_atomic(out / "edit_mask.png", np.rint(result.edit_mask * 255).astype(np.uint8)))
        files.append(save_image_atomic(out / "edited.png", result.edited_image))
    payload["files"] = [p.name for p in files] + ["result.json"]
    write_json_atomic(out / "result.json", payload)
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        best = result.segmentation_masks[0].final_score if result.segmentation_masks else float("nan")
        print(f"{len(result.segmentation_masks)} mask(s) for {args.prompt!r} (best final score {best:.3f}, "
              f"{result.num_candidates} candidates, profile {result.profile}) -> {out}")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from . import weights as W

    if args.weights_command == "list":
        for name in W.list_models(profile=args.profile):
            e = W.REGISTRY[name]
            try:
                found = W.resolve(name, e.stage)
                status = f"present ({found.origin}: {found.path})"
            except OvsegError:
                status = "missing"
            src = e.local_dir or e.hf_repo
            note = f"  [{e.note}]" if e.note else ""
            print(f"{e.profile:5} {e.stage:10} {name:24} {src:52} {status}{note}")
        return 0
    if args.weights_command == "download":
        for r in W.download(args.profile, args.only):
            print(f"{r.name}: {r.origin} -> {r.path}")
        return 0
    if args.weights_command == "pin":
        print(f"wrote {W.pin(args.name)}")
        return 0
    names = [args.name] if args.name else W.list_models()
    for name in names:
        if name not in W.REGISTRY:
            from .errors import InputError

            raise InputError("weights verify needs a registry name", repr(name), "see `ovseg weights list`")
        for f, status in W.verify(name):
            print(f"{name:24} {f:36} {status}")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from . import benchmark

    if args.stage == "align":
        res = benchmark.align_benchmark(repeats=args.repeats)
        if not args.json:
            print(f"align {res['align_ms']:.2f} ms | loop {res['loop_ms']:.1f} ms | bare matmul {res['matmul_ms']:.2f} ms "
                  f"({res['n_masks']} masks x {res['n_layers']} layers x {res['n_prompts']} prompts at {res['size']} px)")
    else:
        res = benchmark.stage_benchmark(image=args.image, prompt=args.prompt, profile=args.profile, config=args.config,
                                        device=args.device, random_init=args.random_init, steps=args.steps,
                                        points_per_side=args.points_per_side)
        if not args.json:
            for k, v in res["timings_s"].items():
                print(f"{k:18} {v:9.3f} s")
    if args.json:
        print(json.dumps(res))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from .datasets import load_dataset
    from .evaluate import load_protocol, run_evaluation, table_rows
    from .pipeline import OpenVocabSegmentationPipeline

    protocol, config = load_protocol(args.config, profile=args.profile)
    changes = {k: v for k, v in (("method", args.method), ("max_images", args.max_images)) if v is not None}
    protocol = dataclasses.replace(protocol, **changes).validate()
    dataset = load_dataset(args.dataset, args.root, split=args.split)  # validates the layout before models load
    device = args.device
    if device is None:
        import torch

        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            os.environ.setdefault("OVSEG_DIST_BACKEND", "nccl")
    if args.task == "edits" and args.dataset != "mini":
        raise InputError("--task edits builds its edit set from the mini world", f"--dataset {args.dataset}",
                         "use --dataset mini (the edited objects' exact masks and targets come from ovseg.world)")
    pipe = OpenVocabSegmentationPipeline(config, device=device)
    if args.task == "edits":
        from .edit_eval import build_edit_set, evaluate_edits
        from .io import write_json_atomic

        summary = evaluate_edits(pipe, build_edit_set(protocol.max_images or 60), seed=0)
        write_json_atomic(Path(args.out) / "edits.json", summary)
        keys = ("n_edits", "method", "steps", "psnr_outside_min_db", "success_remove", "success_replace_base",
                "success_replace_novel", "success_style", "fid", "clip_score", "seconds_per_edit")
        print(json.dumps({k: summary.get(k) for k in keys}))
        print(f"-> {args.out}/edits.json")
        return 0
    if args.task == "referring":
        from .evaluate import referring_evaluation
        from .io import write_json_atomic

        ref = referring_evaluation(dataset, pipe, protocol.max_images, progress=True)
        write_json_atomic(Path(args.out) / "referring.json", ref)
        print(f"referring top-1 mean IoU {ref['mean_iou']} (base {ref['mean_iou_base']}, novel {ref['mean_iou_novel']}); "
              f"IoU>=0.5 rate {ref['hit_rate']} over {ref['n_prompts']} prompts in {ref['n_images']} images")
        print(f"-> {args.out}/referring.json")
        return 0
    result = run_evaluation(dataset, pipe, protocol, args.out)
    if result is not None:
        for row in table_rows([result]):
            miou = "" if row["mIoU"] is None else f"{row['mIoU']:.1f}"
            print(f"{row['method']:34} {row['dataset']:11} {row['split']:6} mIoU {miou:>5}  {row['source']}")
        print(f"-> {args.out}/metrics.json")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"ovseg: warning: {msg}\n"
    try:
        if args.command in ("segment", "remove", "replace", "style"):
            return _cmd_segment(args)
        if args.command == "weights":
            return _cmd_weights(args)
        if args.command == "evaluate":
            return _cmd_evaluate(args)
        if args.command == "train":
            from importlib import import_module

            trainer = import_module(f".train.{args.model.replace('-', '_')}", __package__)
            return int(trainer.main(args.args) or 0)
        return _cmd_benchmark(args)
    except OvsegError as err:
        print(f"ovseg: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("ovseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
