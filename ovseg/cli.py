"""Command line: ``ovseg`` (also ``python -m ovseg``).

Mapping from the thesis code's ``main.py --mode``:

============================  =========================================
thesis ``main.py``            ovseg
============================  =========================================
``--mode segment``            ``ovseg segment IMAGE --prompt TEXT``
(semantic label map)          ``ovseg segment IMAGE --classes "a, b, c"``
(batch)                       ``ovseg segment FOLDER|"GLOB"|LIST.txt --prompt TEXT`` (see ovseg.batch)
(video)                       ``ovseg segment CLIP.mp4 --prompt TEXT`` or ``ovseg segment FRAMES/ --video ...``
``--mode remove``             ``ovseg remove IMAGE --prompt TEXT``
``--mode replace --edit E``   ``ovseg replace IMAGE --prompt TEXT --edit E``
``--mode style --edit E``     ``ovseg style IMAGE --prompt TEXT --edit E``
``--mode benchmark``          ``ovseg benchmark [IMAGE]``
(Chapter 5)                   ``ovseg evaluate --dataset D --root DIR --out DIR``
``--config quality``          ``--config fast|balanced|quality|FILE.yaml``
============================  =========================================

Every input (image, prompt, config, ``--set`` overrides, output folder) is validated before a model is
loaded; a user error prints one line ``ovseg: error: <rule>; got <value>; fix: <fix>`` and exits 2 (3 for
missing weights). Outputs are written atomically by :meth:`ovseg.pipeline.SegmentationResult.save`. ovseg's
own warnings print as ``ovseg: warning: <message>``; other libraries' warnings keep Python's format.

A video (a file whose suffix is one of :data:`VIDEO_SUFFIXES`, or any file or frame folder with ``--video``) is
segmented and tracked by :func:`ovseg.video.segment_video`: ``OUT/masks/00000.png ...`` (palette id maps),
``OUT/overlay.mp4`` and ``OUT/result.json`` (:meth:`ovseg.video.VideoSegmentationResult.save`). A prompt that matches
nothing in any keyframe writes nothing and exits :data:`EXIT_NO_MATCH`. ``remove`` / ``replace`` / ``style`` on a
video track the prompt the same way and edit every frame (:func:`ovseg.video_edit.edit_video`): ``OUT/edited.mp4``,
``OUT/masks/00000.png ...`` (the edited objects' ids) and ``OUT/result.json``; a prompt matching nothing exits
:data:`EXIT_NO_MATCH` and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputError, OvsegError

__all__ = ["main", "build_parser", "VIDEO_SUFFIXES", "EXIT_NO_MATCH"]

#: ``evaluate --dataset`` values that are video datasets (``--task video``, :mod:`ovseg.video_eval`).
VIDEO_DATASETS = ("mini-video", "davis", "ref-youtube-vos")
#: File suffixes (lower case) read as a video by ``segment`` without ``--video``.
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")
#: Exit status of a video ``segment`` whose prompt matched no object in any keyframe (nothing is written). The image
#: ``segment`` writes its (empty) result and exits 0; a video result without objects cannot be saved.
EXIT_NO_MATCH = 1


#: ``--help`` epilog of the commands that take a config: the common ``--set`` keys.
SET_EPILOG = """\
--set KEY=VALUE overrides one config field (repeatable; VALUE is YAML, validated like a config file):
  alignment.similarity_threshold=0.1   masks whose mean similarity is below this are not returned
  alignment.background_weight=0.3      background suppression alpha
  sam2.points_per_side=16              SAM 2 point grid (points per image side)
  sam2.pred_iou_thresh=0.5             SAM 2 predicted-IoU cut-off (stability: sam2.stability_score_thresh)
  sam2.crop_n_layers=0                 multi-scale crop layers (0 = whole image only)
  inpainting.num_inference_steps=25    denoising steps (also --steps)
  inpainting.guidance_scale=7.5        classifier-free guidance
  inpainting.method=classical          OpenCV removal, no diffusion model (remove only)
Every key, with its range: PipelineConfig in ovseg/config.py (or print a preset as YAML:
  python -c "from ovseg import get_balanced_config as g; print(g().to_yaml())")."""

_OUT_HELP = "output folder (default: ovseg-out/<image stem>-{command})"


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set alignment.similarity_threshold=0.1 (repeatable; "
                        "common keys below)")


class _RefuseEdit(argparse.Action):
    """``remove --edit``: refused with argparse's error (``--edit`` is not in remove's help)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        parser.error("remove takes no --edit (it fills the object's place with background); to paint something "
                     'else there use: ovseg replace IMAGE --prompt "..." --edit "..."')


_INPUT_HELP = ("input image (PNG, JPEG, ...), or for a batch: a folder of images, a quoted glob (\"photos/*.jpg\") "
               "or a .txt list of paths (one a line); a batch writes OUT/<image stem>/ per image, OUT/results.jsonl "
               "and OUT/summary.csv (default OUT: ovseg-out/<folder or list name>-<command>, ovseg-out/batch-<command> "
               "for a glob), and a rerun resumes; or a video: a file (" + " ".join(VIDEO_SUFFIXES) + "), or a folder "
               "of frames with --video (segment writes OUT/masks/00000.png ..., OUT/overlay.mp4, OUT/result.json; "
               "remove / replace / style write OUT/edited.mp4, OUT/masks/..., OUT/result.json)")


def _add_common(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument("image", metavar="INPUT", help=_INPUT_HELP)
    if command == "segment":
        what = p.add_mutually_exclusive_group(required=True)
        what.add_argument("--prompt", help='text describing the object, e.g. "red car"')
        what.add_argument("--classes", default=None,
                          help='comma-separated class names, e.g. "red circle, blue square": label every pixel with '
                               "one of them (writes labels.png, semantic.png, result.json)")
    else:
        p.add_argument("--prompt", required=True, help='text describing the object, e.g. "red car"')
    if command in ("replace", "style"):
        p.add_argument("--edit", default=None,
                       help="what to paint instead" if command == "replace" else "the new look of the object")
    if command == "remove":
        p.add_argument("--edit", action=_RefuseEdit, help=argparse.SUPPRESS)
    if command == "segment":
        from .video import DEFAULT_MAX_FRAMES, VideoTrackConfig

        p.add_argument("--video", action="store_true",
                       help="INPUT is one video: a video file of any suffix, or a folder of frames (DAVIS "
                            "JPEGImages/480p/<clip>, a mini-world <clip>/frames); without it a folder is a batch of "
                            "independent images")
        p.add_argument("--keyframe-every", type=int, default=VideoTrackConfig.keyframe_every, metavar="K",
                       help="video: detect the prompt on frame 0 and every K-th frame, track in between "
                            f"(default {VideoTrackConfig.keyframe_every})")
        p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES, metavar="N",
                       help=f"video: refuse clips longer than N frames (default {DEFAULT_MAX_FRAMES}; every frame is "
                            "held in memory)")
    else:
        from .video import DEFAULT_MAX_FRAMES, VideoTrackConfig
        from .video_edit import DEFAULT_STRATEGY, STRATEGIES

        p.add_argument("--video", action="store_true",
                       help="INPUT is one video: a video file of any suffix, or a folder of frames; every frame is "
                            "edited (writes OUT/edited.mp4, OUT/masks/00000.png ..., OUT/result.json)")
        p.add_argument("--keyframe-every", type=int, default=VideoTrackConfig.keyframe_every, metavar="K",
                       help="video: detect the prompt on frame 0 and every K-th frame, track in between "
                            f"(default {VideoTrackConfig.keyframe_every})")
        p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES, metavar="N",
                       help=f"video: refuse clips longer than N frames (default {DEFAULT_MAX_FRAMES}; every frame is "
                            "held in memory)")
        p.add_argument("--strategy", choices=STRATEGIES, default=None,
                       help="video: against flicker, independent (a fresh seed per frame), fixed-noise (the same seed "
                            "every frame) or reuse (remove only: real background from nearby frames and the previous "
                            f"fill where the background is static) (default: {DEFAULT_STRATEGY[command]})")
    if command in ("remove", "replace", "style"):
        p.add_argument("--seed", type=int, default=None, help="diffusion seed (default: config inpainting.seed)")
        p.add_argument("--steps", type=int, default=None, help="diffusion steps (default: config, 50)")
    p.add_argument("--top-k", type=int, default=5, help="number of masks to return (default 5)")
    p.add_argument("--config", default="balanced", help="fast | balanced | quality | path to a .yaml config")
    _add_config_options(p)
    p.add_argument("--profile", choices=("mini", "full"), default=None, help="model profile (default: config's, mini)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    p.add_argument("--out", default=None, help=_OUT_HELP.format(command=command))
    p.add_argument("--json", action="store_true", help="also print result.json to stdout")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="one progress bar per long stage on stderr (default: only when stderr is a terminal)")


def build_parser() -> argparse.ArgumentParser:
    from .config import REPLACE_REGIONS

    parser = argparse.ArgumentParser(prog="ovseg", description="Open-vocabulary segmentation and editing "
                                     "(SAM 2 + CLIP + Stable Diffusion).")
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = {"epilog": SET_EPILOG, "formatter_class": argparse.RawDescriptionHelpFormatter}
    _add_common(sub.add_parser("segment", help="find the masks matching a prompt", **fmt), "segment")
    for op, text in (("remove", "remove the object"), ("replace", "replace the object with --edit"),
                     ("style", "restyle the object as --edit")):
        sp = sub.add_parser(op, help=text, **fmt)
        _add_common(sp, op)
        if op == "replace":
            sp.add_argument("--region", choices=REPLACE_REGIONS, default=None,
                            help="repaint the object's silhouette, its bounding box, or the square around its "
                                 "enclosing circle (room for another shape) "
                                 "(default: config inpainting.replace_region)")

    b = sub.add_parser("benchmark", help="per-stage timings", **fmt)
    b.add_argument("image", nargs="?", default=None, help="image to time (default: a shipped sample)")
    b.add_argument("--stage", choices=("all", "align"), default="all",
                   help="all stages, or only the alignment micro-benchmark")
    b.add_argument("--prompt", default="red circle")
    b.add_argument("--profile", choices=("mini", "full"), default="mini")
    b.add_argument("--config", default="balanced")
    _add_config_options(b)
    b.add_argument("--device", default="cpu")
    b.add_argument("--random-init", action="store_true",
                   help="full-size models with RANDOM weights: timing only, results are meaningless")
    b.add_argument("--steps", type=int, default=None, help="diffusion steps to time (default: config)")
    b.add_argument("--points-per-side", type=int, default=None, help="override the SAM 2 grid (default: config)")
    b.add_argument("--repeats", type=int, default=7, help="repeats for the alignment benchmark (median)")
    b.add_argument("--json", action="store_true", help="print a JSON object as the last line")

    e = sub.add_parser("evaluate", help="Chapter 5 evaluation of a dataset (resumable, torchrun-aware)", **fmt)
    e.add_argument("--dataset", required=True, choices=("voc", "coco-stuff", "ade20k", "mini", "folder", *VIDEO_DATASETS),
                   help="image datasets, or video ones for --task video: mini-video (the mini world's clips), davis "
                        "(DAVIS-2017, --root), ref-youtube-vos (Ref-YouTube-VOS or Ref-DAVIS, --root)")
    e.add_argument("--root", default=None, help="dataset folder (default for mini: data/mini_world/<split>)")
    e.add_argument("--split", default=None,
                   help="dataset split (default val; mini and mini-video: dev or test, default test: the reported "
                        "numbers, each test evaluation is logged in data/mini_world/TEST_LOG.jsonl; select settings on "
                        "dev)")
    e.add_argument("--config", default=None, help="evaluation YAML: protocol keys and an optional pipeline: section")
    _add_config_options(e)  # applies to the pipeline config
    e.add_argument("--method", choices=("ovseg", "dense", "maskclip", "sclip", "clearclip"), default=None,
                   help="override the protocol's method")
    e.add_argument("--max-images", type=int, default=None,
                   help="evaluate only the first N images (--task video: the first N clips)")
    from .video import DEFAULT_KEYFRAME_EVERY

    e.add_argument("--keyframe-every", type=int, default=None, metavar="K",
                   help="--task video: detect the prompt on frame 0 and every K-th frame (default "
                        f"{DEFAULT_KEYFRAME_EVERY}); a late object "
                        "counts as found when its id appears on it within K frames of it covering 1%% of the frame")
    e.add_argument("--profile", choices=("mini", "full"), default=None)
    e.add_argument("--device", default=None, help="torch device (default: cuda:LOCAL_RANK under torchrun with GPUs, else cpu)")
    e.add_argument("--out", required=True, help="output folder (results store, metrics.json, tables)")
    e.add_argument("--task", choices=("semantic", "referring", "masks", "edits", "video"), default=None,
                   help="semantic (default for image datasets): label every pixel (Chapter 5 tables); video (the "
                        "video datasets' only task): each clip's classes (or expressions) as prompts of segment_video, "
                        "J&F, late objects found and id switches (OUT/results.jsonl, OUT/video.json); "
                        "referring: segment(image, class name), "
                        "top-1 mask IoU against that class (OUT/referring.json); masks: object recall of the SAM 2 "
                        "masks at IoU >= 0.5 (OUT/masks.json); edits: edit quality of remove / replace / style on "
                        "mini-world scenes of the split's edit range, --max-images edits (default 60; OUT/edits.json; "
                        "each finished edit is kept in OUT/edits_work, and a rerun resumes from it)")

    t = sub.add_parser("train", help="train an embedded mini model (resumable; see its --help)")
    t.add_argument("model", choices=("mini-clip", "mini-sam2", "mini-sam2-video", "mini-inpainting"))
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
    wp.add_argument("name", choices=("mini-sam2", "mini-sam2-video", "mini-clip", "mini-clip-contrastive",
                                     "mini-inpainting"))
    return parser


def _out_dir(args: argparse.Namespace, suffix: str) -> Path:
    """``--out``, or ``ovseg-out/<image stem>-<command>`` (the default the help texts name)."""
    return Path(args.out) if args.out else Path("ovseg-out") / f"{Path(args.image).stem}-{suffix}"


def _validate(args: argparse.Namespace, batch: bool = False) -> tuple[Any, Any]:
    """Image, prompt, edit prompt, config overrides and output folder, all checked before any model loads.
    ``batch``: INPUT names several images: none is loaded here (each is checked when it is processed) and the
    output folder is left to :func:`ovseg.batch.check_batch_out`; the image returned is None."""
    from .config import apply_overrides, load_config
    from .errors import InputError
    from .features import check_prompts
    from .inpaint import check_seed
    from .io import check_output_dir, load_image
    from .utils import check_device

    config = apply_overrides(load_config(args.config, profile=args.profile), args.overrides)
    if getattr(args, "seed", None) is not None:
        check_seed(args.seed)
    image = None if batch else load_image(args.image)
    if getattr(args, "classes", None) is not None:
        from .batch import parse_classes

        args.class_names = check_prompts(parse_classes(args.classes))
    else:
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
    if not batch:
        check_output_dir(_out_dir(args, args.command), "--out")
    args.device = check_device(args.device)  # last: it imports torch (a GPU this machine lacks: one line, no model)
    return image, config


_EDIT_VERBS = {"remove": "removed {p!r}", "replace": "replaced {p!r} with {e!r}", "style": "restyled {p!r} as {e!r}"}


def _no_match_hint(result: Any) -> str:
    """What to try when no mask passed the similarity threshold (a threshold just under the best candidate's)."""
    best = result.counts.get("best_similarity")
    threshold = result.counts.get("similarity_threshold")
    if best is None or threshold is None or best >= threshold:
        return "try another wording"
    return (f"try another wording, or a threshold under the best candidate's similarity {best:.3f}: "
            f"--set alignment.similarity_threshold={math.floor(best * 100) / 100:g}")


def _cmd_batch(args: argparse.Namespace) -> int:
    """``segment`` / ``remove`` / ``replace`` / ``style`` over a folder, glob or .txt list (:mod:`ovseg.batch`)."""
    from .batch import check_batch_out, expand_inputs, run_batch

    inputs = expand_inputs(args.image)
    _, config = _validate(args, batch=True)
    out = Path(args.out) if args.out else Path("ovseg-out") / f"{inputs.label}-{args.command}"
    out = check_batch_out(out)
    return run_batch(args, inputs, config, out, getattr(args, "class_names", None))


def _save(args: argparse.Namespace, result: Any) -> tuple[Path, bool]:
    """Save a one-image result into its output folder; with ``--json`` also print its ``result.json``. Returns
    (the folder, whether the JSON was printed: then nothing else is)."""
    out = _out_dir(args, args.command)
    files = result.save(out)
    if args.json:
        print(json.dumps(json.loads(files[-1].read_text(encoding="utf-8")), indent=2))
    return out, bool(args.json)


def _cmd_semantic(args: argparse.Namespace, image: Any, config: Any, progress: bool) -> int:
    """``segment IMAGE --classes "a, b, c"``: a label map (``SemanticResult.save``)."""
    from .pipeline import OpenVocabSegmentationPipeline

    pipe = OpenVocabSegmentationPipeline(config, device=args.device, progress=progress)
    result = pipe.segment_semantic(image, args.class_names)
    result.source = str(args.image)
    out, printed = _save(args, result)
    if printed:
        return 0
    total = result.label_map.size
    shares = ", ".join(f"{name!r} {100 * n / total:.1f}%" for name, n in result.class_pixels().items())
    found = sum(1 for n in result.class_pixels().values() if n)
    print(f"label map: {found} of {len(result.class_names)} class(es) found ({shares}; profile {result.profile}) -> {out}")
    print(f"  {len(result.masks)} candidate masks, {result.num_assigned} given a class; labels.png (class i = i + 1, "
          f"0 = none), semantic.png, result.json in {out}")
    return 0


def _is_video_input(args: argparse.Namespace) -> bool:
    """INPUT is one video: ``--video`` (a file of any suffix, or a frame folder), or a file named like a video
    (:data:`VIDEO_SUFFIXES`; a folder so named is still a batch folder without ``--video``)."""
    if getattr(args, "video", False):
        return True
    path = Path(args.image)
    return path.suffix.lower() in VIDEO_SUFFIXES and not path.is_dir()


def _video_options(args: argparse.Namespace) -> tuple[Any, str]:
    """The config (with ``--set`` overrides) and the prompt of a video command, after checking ``--top-k``,
    ``--keyframe-every`` and ``--max-frames`` (shared by ``segment`` and the edit commands on videos)."""
    from .config import apply_overrides, load_config
    from .features import check_prompts

    config = apply_overrides(load_config(args.config, profile=args.profile), args.overrides)
    prompt = check_prompts(args.prompt)[0]
    if args.top_k < 1:
        raise InputError("--top-k must be a positive integer", args.top_k, "pass e.g. --top-k 5")
    if args.keyframe_every < 1:
        raise InputError("--keyframe-every must be a positive integer (1 = detect on every frame)",
                         args.keyframe_every, "pass e.g. --keyframe-every 8")
    if args.max_frames < 1:
        raise InputError("--max-frames must be a positive integer", args.max_frames, "pass e.g. --max-frames 2000")
    return config, prompt


def _cmd_video_edit(args: argparse.Namespace) -> int:
    """``remove|replace|style CLIP --prompt P [--edit E]``: track the prompt and edit every frame
    (:func:`ovseg.video_edit.edit_video`), streamed into ``OUT/edited.mp4``; ``OUT/masks/``, ``OUT/result.json``."""
    from .inpaint import check_seed
    from .io import check_output_dir
    from .utils import check_device
    from .video_edit import NoObjectError, VideoEditConfig, edit_video

    # 1. every setting, the output folder and the clip, before any model loads
    config, prompt = _video_options(args)
    edit = getattr(args, "edit", None)
    if args.command in ("replace", "style") and (edit is None or not edit.strip()):
        raise InputError(f"{args.command} needs --edit describing the new content", repr(edit),
                         'add --edit "..." (e.g. --edit "blue square")')
    check_seed(args.seed)
    if args.steps is not None:
        config = config.replace(**{"inpainting.num_inference_steps": args.steps})
    if getattr(args, "region", None) is not None:
        config = config.replace(**{"inpainting.replace_region": args.region})
    if args.strategy == "reuse" and args.command != "remove":
        raise InputError("--strategy reuse (a static background plate) applies to remove only: replace and style "
                         "paint something that moves with the object", f"{args.command} --strategy reuse",
                         "use --strategy fixed-noise (the default for replace / style)")
    VideoEditConfig(args.command, args.strategy, args.seed, None, "all", keyframe_every=args.keyframe_every,
                    top_k=args.top_k, max_frames=args.max_frames).validate()
    source = _video_source(args.image)
    if args.out:
        out = Path(args.out)
    else:
        name = source.parent.name if source.name == "frames" and source.parent.name else source.stem
        out = Path("ovseg-out") / f"{name or 'video'}-{args.command}"
    check_output_dir(out, "--out")
    args.device = check_device(args.device)  # imports torch
    # 2. read the clip (edit_video: before any model), track, then edit every frame into OUT/edited.mp4 (streamed:
    #    the edited frames are not held)
    from .pipeline import OpenVocabSegmentationPipeline

    pipe = OpenVocabSegmentationPipeline(config, device=args.device, progress=False)
    try:
        result = edit_video(pipe, source, prompt, args.command, edit, strategy=args.strategy, seed=args.seed,
                            keyframe_every=args.keyframe_every, top_k=args.top_k, max_frames=args.max_frames,
                            progress=args.progress is not False, keep_frames=False, out_dir=out)
    except NoObjectError as err:
        print(f"ovseg: no match: {err}", file=sys.stderr)
        return EXIT_NO_MATCH
    except InputError as err:
        limit = getattr(err, "max_frames", None)
        if limit is None:
            raise
        raise InputError(f"a clip may have at most --max-frames {limit} frames (every frame is held in memory)",
                         err.value, f"pass --max-frames N with N at least the clip's length, or cut the clip (e.g. "
                         f"ffmpeg -i IN -frames:v {limit} OUT.mp4)") from None
    if args.json:
        print(json.dumps(json.loads((out / "result.json").read_text(encoding="utf-8")), indent=2))
        return 0
    n, c = len(result.per_frame), result.counts
    what = _EDIT_VERBS[args.command].format(p=prompt, e=edit)
    ids = ", ".join(map(str, result.ids))
    print(f"{what} in {n} frames (object id{'s' * (len(result.ids) != 1)} {ids}; strategy {result.settings['strategy']}: "
          f"{c['inpainted']} frame(s) inpainted, {c['reused']} reused, {c['unchanged']} without the object; profile "
          f"{result.profile}) -> {out / 'edited.mp4'}")
    print(f"  edited.mp4, masks/00000.png ... masks/{n - 1:05d}.png (edited ids), result.json in {out}")
    return 0


def _video_source(spec: str) -> Path:
    """The file or frame folder ``segment --video`` reads: a clip folder holding ``frames/`` (the mini world's
    ``<clip>/``) means its ``frames/``."""
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".txt" and path.is_file() or (not path.exists() and any(c in spec for c in "*?[")):
        raise InputError("a video INPUT is one video file or one folder of frames (not a list or a glob)", spec,
                         "pass e.g. clip.mp4 or DAVIS/JPEGImages/480p/bear --video; for a batch of images drop --video")
    if path.is_dir() and (path / "frames").is_dir():
        from .video import IMAGE_SUFFIXES

        if not any(p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() for p in path.iterdir()):
            return path / "frames"
    return path


def _cmd_video(args: argparse.Namespace) -> int:
    """``segment CLIP --prompt P``: text-prompted video segmentation (:func:`ovseg.video.segment_video`)."""
    from .errors import NoMatchWarning
    from .io import check_output_dir
    from .utils import check_device
    from .video import read_video

    # 1. every setting, the output folder and the clip, before any model loads
    if getattr(args, "classes", None) is not None:
        raise InputError("--classes labels single images; a video is segmented for one --prompt", repr(args.classes),
                         'pass --prompt "..." (one object description)')
    config, prompt = _video_options(args)
    source = _video_source(args.image)
    if args.out:
        out = Path(args.out)
    else:
        name = source.parent.name if source.name == "frames" and source.parent.name else source.stem
        out = Path("ovseg-out") / f"{name or 'video'}-segment"
    check_output_dir(out, "--out")
    try:
        frames, info = read_video(source, max_frames=args.max_frames)
    except InputError as err:
        limit = getattr(err, "max_frames", None)
        if limit is None:
            raise
        raise InputError(f"a clip may have at most --max-frames {limit} frames (every frame is held in memory)",
                         err.value, f"pass --max-frames N with N at least the clip's length, or cut the clip (e.g. "
                         f"ffmpeg -i IN -frames:v {limit} OUT.mp4)") from None
    args.device = check_device(args.device)  # imports torch
    # 2. keyframe detection + tracking
    from .pipeline import OpenVocabSegmentationPipeline

    pipe = OpenVocabSegmentationPipeline(config, device=args.device, progress=bool(args.progress))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoMatchWarning)  # said below, on one line
        result = pipe.segment_video(frames, prompt, args.keyframe_every, top_k=args.top_k,
                                    max_frames=args.max_frames, progress=args.progress is not False)
    result.source, result.fps = info.source, info.fps
    n = result.id_maps.shape[0]
    if result.empty:
        c = result.counts
        print(f"ovseg: no match: {prompt!r} matched no object in any of the {len(result.keyframes)} keyframe(s) of "
              f"{n} frames ({c.get('detections', 0)} detection(s), profile {result.profile}); nothing was written to "
              f"{out}; try another wording, a smaller --keyframe-every, or a lower --set "
              "alignment.similarity_threshold=...", file=sys.stderr)
        return EXIT_NO_MATCH
    # 3. the files
    files = result.save(out)
    if args.json:
        print(json.dumps(json.loads(files[-1].read_text(encoding="utf-8")), indent=2))
        return 0
    ids = [o.id for o in result.objects]
    shown = ", ".join(map(str, ids))
    on = sum(1 for t in range(n) if result.scores[t])
    print(f"{len(ids)} object(s) (id{'s' * (len(ids) != 1)} {shown}) for {prompt!r} in {n} frames ({on} with an "
          f"object; {len(result.keyframes)} keyframe(s), every {args.keyframe_every}; profile {result.profile}) "
          f"-> {out}")
    print(f"  masks/00000.png ... masks/{n - 1:05d}.png (palette ids, 0 = background), overlay.mp4, result.json "
          f"in {out}")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from .batch import is_batch_input
    from .pipeline import OpenVocabSegmentationPipeline

    if _is_video_input(args):
        if args.command != "segment":
            return _cmd_video_edit(args)
        return _cmd_video(args)
    if is_batch_input(args.image):
        return _cmd_batch(args)
    image, config = _validate(args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    if getattr(args, "classes", None) is not None:
        return _cmd_semantic(args, image, config, progress)
    pipe = OpenVocabSegmentationPipeline(config, device=args.device, progress=progress)
    if args.command == "segment":
        result = pipe.segment(image, args.prompt, top_k=args.top_k)
    else:
        result = pipe.segment_and_edit(image, args.prompt, args.command, edit_prompt=getattr(args, "edit", None),
                                       top_k=args.top_k, seed=args.seed)
    result.source = str(args.image)
    out, printed = _save(args, result)
    if printed:
        return 0
    masks = result.segmentation_masks
    if args.command != "segment":
        best = masks[0]
        what = _EDIT_VERBS[args.command].format(p=result.text_prompt, e=getattr(args, "edit", None))
        steps = f", {result.edit['steps']} steps" if result.edit.get("method") == "diffusion" else ", classical"
        print(f"{what} (mask #1 of {len(masks)}, final score {best.final_score:.3f}, profile {result.profile}{steps})"
              f" -> {out / 'edited.png'}")
        print(f"  {result.counts_line()}; overlay.png, mask.png, edit_mask.png, result.json in {out}")
    elif masks:
        print(f"{len(masks)} mask(s) for {result.text_prompt!r} (best final score {masks[0].final_score:.3f}, "
              f"profile {result.profile}) -> {out}")
        print(f"  {result.counts_line()}")
    else:
        print(f"no mask matched {result.text_prompt!r} (profile {result.profile}) -> {out}")
        print(f"  {result.counts_line()}; {_no_match_hint(result)}")
    return 0


def _size(n: int | None) -> str:
    """Bytes as MB / GB (decimal), or "-" when unknown."""
    if n is None:
        return "-"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _cmd_weights(args: argparse.Namespace) -> int:
    from . import weights as W

    if args.weights_command == "list":
        names = W.list_models(profile=args.profile)
        print(f"{'profile':7} {'stage':10} {'name':24} {'source':52} {'size':>9}  status")
        present_total, present_n, missing_known, missing_unknown = 0, 0, 0, 0
        for name in names:
            e = W.REGISTRY[name]
            try:
                found = W.resolve(name, e.stage)
                status = f"present ({found.origin}: {found.path})"
                size = W.present_size(name)
                present_total += size or 0
                present_n += 1
            except OvsegError:
                status = "missing"
                size = e.download_size
                if size is None:
                    missing_unknown += 1
                else:
                    missing_known += size
            src = e.local_dir or e.hf_repo
            note = f"  [{e.note}]" if e.note else ""
            print(f"{e.profile:7} {e.stage:10} {name:24} {src:52} {_size(size):>9}  {status}{note}")
        missing = len(names) - present_n
        tail = ""
        if missing:
            known = f"{_size(missing_known)} known to download" if missing_known else ""
            unknown = f"{missing_unknown} of unknown size" if missing_unknown else ""
            tail = f"; {missing} missing ({', '.join(p for p in (known, unknown) if p)})"
        print(f"total: {_size(present_total)} present in {present_n} of {len(names)} entries{tail}")
        return 0
    if args.weights_command == "download":
        plan = W.download_plan(args.profile, args.only)
        fetch = [e for e, found in plan if found is None]
        print(f"ovseg weights download {args.profile}: {len(fetch)} of {len(plan)} model(s) to fetch into the "
              f"Hugging Face cache {W._hf_cache_dir()}")
        for e, found in plan:
            if found is not None:
                print(f"  {e.name:24} present ({found.origin}: {found.path}), skipped")
            else:
                what = f"{e.hf_repo}/{'|'.join(e.files)}" if e.stage != "inpainting" else f"{e.hf_repo} (diffusers folder)"
                print(f"  {e.name:24} {what}  {_size(e.download_size) if e.download_size else 'size unknown'}")
        for r in W.download(args.profile, args.only):
            print(f"{r.name}: {r.origin} -> {r.path}")
        return 0
    if args.weights_command == "pin":
        print(f"wrote {W.pin(args.name)}")
        return 0
    names = [args.name] if args.name else W.list_models()
    bad = []
    for name in names:
        if name not in W.REGISTRY:
            from .errors import InputError

            raise InputError("weights verify needs a registry name", repr(name), "see `ovseg weights list`")
        for f, status in W.verify(name):  # every file of every model, mismatches included
            print(f"{name:24} {f:36} {status}")
            if status.startswith("MISMATCH"):
                bad.append((name, f))
    if bad:
        shown = ", ".join(f"{n}/{f}" for n, f in bad)
        raise W.WeightsError(f"every model file must match its pinned sha256: {len(bad)} do not", shown,
                             "delete those files and fetch them again (`ovseg weights list` shows where they are "
                             "from; embedded models: git checkout -- data/models)")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from . import benchmark

    if args.stage == "align":
        res = benchmark.align_benchmark(repeats=args.repeats)
        if not args.json:
            print(f"align {res['align_ms']:.2f} ms | loop {res['loop_ms']:.1f} ms | bare matmul {res['matmul_ms']:.2f} ms "
                  f"({res['n_masks']} masks x {res['n_layers']} layers x {res['n_prompts']} prompts at {res['size']} px)")
    else:
        from .config import apply_overrides, load_config
        from .utils import check_device

        profile = "full" if args.random_init else args.profile
        config = apply_overrides(load_config(args.config, profile=profile), args.overrides)
        args.device = check_device(args.device)
        res = benchmark.stage_benchmark(image=args.image, prompt=args.prompt, profile=args.profile, config=config,
                                        device=args.device, random_init=args.random_init, steps=args.steps,
                                        points_per_side=args.points_per_side)
        if not args.json:
            for k, v in res["timings_s"].items():
                print(f"{k:18} {v:9.3f} s")
    if args.json:
        print(json.dumps(res))
    return 0


def _writable_folder(path: str) -> Path:
    """``--out`` of evaluate: a folder (created if missing) that this process can write, checked before any model
    work (a run that would fail at its first write should not start)."""
    import tempfile

    from .io import check_output_dir

    out = check_output_dir(path, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise InputError("--out must be a folder ovseg can write to", f"{out}: {err.strerror}",
                         "pass a writable folder, e.g. --out out/eval") from None
    return out


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from .config import apply_overrides
    from .datasets import load_dataset
    from .evaluate import load_protocol, run_evaluation, table_rows
    from .pipeline import OpenVocabSegmentationPipeline

    protocol, config = load_protocol(args.config, profile=args.profile)
    config = apply_overrides(config, args.overrides)
    if args.task is None:
        args.task = "video" if args.dataset in VIDEO_DATASETS else "semantic"
    if (args.task == "video") != (args.dataset in VIDEO_DATASETS):
        raise InputError("--task video takes a video dataset (" + ", ".join(VIDEO_DATASETS) + ") and a video dataset "
                         "takes --task video", f"--dataset {args.dataset} --task {args.task}",
                         "e.g. --dataset mini-video --task video, or an image dataset with another task")
    if args.task == "video":
        return _cmd_evaluate_video(args, config)
    if args.keyframe_every is not None:
        raise InputError("--keyframe-every applies to --task video only", args.keyframe_every, "drop it")
    changes = {k: v for k, v in (("method", args.method), ("max_images", args.max_images)) if v is not None}
    protocol = dataclasses.replace(protocol, **changes).validate()
    split = args.split if args.split is not None else ("test" if args.dataset == "mini" else "val")
    if args.task == "edits" and split not in ("dev", "test"):
        raise InputError("--task edits takes --split dev or test (the mini world's edit ranges)", repr(split),
                         "use --split dev to develop, --split test to report")
    # validates the layout before models load (edits render their scenes: no dataset folder needed)
    dataset = load_dataset(args.dataset, args.root, split=split if args.task != "edits" else "dev")
    _writable_folder(args.out)
    device = args.device
    if device is None:
        import torch

        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda"):
            os.environ.setdefault("OVSEG_DIST_BACKEND", "nccl")
    from .utils import check_device

    device = check_device(device)
    if args.task == "edits" and args.dataset != "mini":
        raise InputError("--task edits builds its edit set from the mini world", f"--dataset {args.dataset}",
                         "use --dataset mini (the edited objects' exact masks and targets come from ovseg.world)")
    pipe = OpenVocabSegmentationPipeline(config, device=device)
    if args.task == "edits":
        from .edit_eval import build_edit_set, evaluate_edits
        from .io import write_json_atomic

        # each finished edit is kept in OUT/edits_work, so an interrupted run resumes where it stopped
        summary = evaluate_edits(pipe, build_edit_set(protocol.max_images or 60, split=split), seed=0,
                                 work_dir=Path(args.out) / "edits_work", progress=True)
        write_json_atomic(Path(args.out) / "edits.json", summary)
        keys = ("n_edits", "split", "method", "steps", "psnr_outside_min_db", "success_remove", "success_replace_base",
                "success_replace_novel", "success_style", "fid", "clip_score", "seconds_per_edit")
        print(json.dumps({k: summary.get(k) for k in keys}))
        for key, ci in summary["ci95"].items():
            print(f"  {key:22} {_interval_text(ci)}")
        print(f"-> {args.out}/edits.json")
        return 0
    if args.task == "referring":
        from .evaluate import referring_evaluation
        from .io import write_json_atomic

        ref = referring_evaluation(dataset, pipe, protocol.max_images, progress=True)
        write_json_atomic(Path(args.out) / "referring.json", ref)
        ci = ref["ci95"]
        print(f"referring top-1 mean IoU {_interval_text(ci['mean_iou'], 1, 3)} (base "
              f"{_interval_text(ci['mean_iou_base'], 1, 3)}, novel {_interval_text(ci['mean_iou_novel'], 1, 3)}); "
              f"IoU>=0.5 rate {_interval_text(ci['hit_rate'], 1, 3)} over {ref['n_prompts']} prompts in "
              f"{ref['n_images']} images ({dataset.name}/{dataset.split})")
        print(f"-> {args.out}/referring.json")
        return 0
    if args.task == "masks":
        from .evaluate import mask_recall_evaluation
        from .io import write_json_atomic

        rec = mask_recall_evaluation(dataset, pipe, protocol.max_images, progress=True)
        write_json_atomic(Path(args.out) / "masks.json", rec)
        ci = rec["ci95"]
        print(f"SAM 2 object recall at IoU >= 0.5 {_interval_text(ci['recall'], 1, 3)}, mean best IoU "
              f"{_interval_text(ci['mean_best_iou'], 1, 3)}, {rec['masks_per_image']:.1f} masks per image "
              f"({dataset.name}/{dataset.split}, predicted IoU > {rec['thresholds']['pred_iou_thresh']:g}, "
              f"stability > {rec['thresholds']['stability_score_thresh']:g})")
        print(f"-> {args.out}/masks.json")
        return 0
    result = run_evaluation(dataset, pipe, protocol, args.out)
    if result is not None:
        for row in table_rows([result]):
            miou = "" if row["mIoU"] is None else f"{row['mIoU']:.1f}"
            print(f"{row['method']:34} {row['dataset']:11} {row['split']:6} mIoU {miou:>5} {row['mIoU_ci95'] or '':>14}"
                  f"  n={row['images']}  {row['source']}")
        print(f"-> {args.out}/metrics.json")
    return 0


def _cmd_evaluate_video(args: argparse.Namespace, config: Any) -> int:
    """``evaluate --task video``: :func:`ovseg.video_eval.evaluate_video` on mini-video, DAVIS-2017 or
    Ref-YouTube-VOS / Ref-DAVIS; a mini-video test run is logged (task ``video``)."""
    from . import video_eval as VE

    # 1. every setting and the clip list before any model loads
    if args.method is not None:
        raise InputError("--method applies to the image tasks; --task video runs the thesis pipeline with SAM 2's "
                         "video predictor", args.method, "drop --method")
    if args.max_images is not None and args.max_images < 1:
        raise InputError("--max-images must be a positive integer (clips, for --task video)", args.max_images,
                         "pass e.g. --max-images 5")
    from .video import DEFAULT_KEYFRAME_EVERY

    keyframe_every = DEFAULT_KEYFRAME_EVERY if args.keyframe_every is None else args.keyframe_every
    if keyframe_every < 1:
        raise InputError("--keyframe-every must be a positive integer (1 = detect on every frame)", keyframe_every,
                         "pass e.g. --keyframe-every 8")
    if args.dataset == "mini-video":
        if args.root is not None:
            raise InputError("mini-video clips come from the video dev seed range (dev) or data/mini_world/video_test "
                             "(test), not a folder", f"--root {args.root}", "drop --root")
        split = "test" if args.split is None else args.split
        clips = VE.mini_video_clips(split, args.max_images)
    else:
        if args.root is None:
            raise InputError(f"--dataset {args.dataset} needs --root (the dataset folder)", None,
                             "pass --root DIR (see ovseg/video_eval.py for the expected layout)")
        split = args.split or "val"
        clips = (VE.davis_clips(args.root, split, args.max_images, require_names=True) if args.dataset == "davis"
                 else VE.referring_clips(args.root, args.max_images))
    _writable_folder(args.out)
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    from .utils import check_device

    device = check_device(device)
    # 2. evaluate (resumable) and report
    from .pipeline import OpenVocabSegmentationPipeline

    pipe = OpenVocabSegmentationPipeline(config, device=device)
    logged = args.dataset == "mini-video" and split == "test"
    summary = VE.evaluate_video(pipe, clips, VE.default_targets, keyframe_every, args.out, dataset=args.dataset,
                                split=split, test_log="video/test" if logged else None, progress=True)
    ci = summary["ci95"]
    print(f"J&F {_interval_text(ci['jf'], 1, 3)}, J {_interval_text(ci['j'], 1, 3)}, F {_interval_text(ci['f'], 1, 3)}")
    print(f"late objects found within {summary['late_within']} frames {_interval_text(ci['late_found'], 1, 3)}; id "
          f"switches per 10 clips {_interval_text(ci['id_switches_per_10_clips'], 1, 2)} ({summary['n_clips']} clips, "
          f"{summary['n_targets']} prompts, {args.dataset}/{split}, keyframe every {keyframe_every})")
    print(f"-> {args.out}/video.json")
    return 0


def _interval_text(ci: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """``"0.832 [0.801, 0.860] (n=612 objects)"`` from an interval record (``Interval.to_dict``)."""
    if not ci or ci.get("value") is None:
        return f"- (n={ci.get('n', 0) if ci else 0})"
    lo, hi = ci["ci95"]
    f = f"{{:.{digits}f}}"
    return (f"{f.format(ci['value'] * scale)} [{f.format(lo * scale)}, {f.format(hi * scale)}] "
            f"(n={ci['n']} {ci['unit']})")


def _is_ovseg_warning(category: type[Warning], filename: str) -> bool:
    """ovseg's own warnings: an :class:`~ovseg.errors.OvsegWarning`, or one raised from a file of the ovseg package."""
    from .errors import OvsegWarning

    if issubclass(category, OvsegWarning):
        return True
    try:
        return Path(filename).resolve().is_relative_to(Path(__file__).resolve().parent)
    except (OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    default_format = warnings.formatwarning

    def formatwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
        if _is_ovseg_warning(category, filename):
            return f"ovseg: warning: {message}\n"
        return default_format(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning  # restored when main returns
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
    finally:
        warnings.formatwarning = default_format


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
