"""What the edit-success metric allows at most (run: python benchmarks/mini_inpainting_ceiling.py).

For each edit of an edit set (``ovseg.edit_eval.build_edit_set``), the mini world's *exact* edit is composited
through the soft mask the mini profile's editor would use and classified by the mini segmenter, as in
``ovseg evaluate --task edits``:

* ``exact``: a perfect inpainter (the rate is below 1 where the metric or the mask cannot do better, e.g. a
  new shape clipped to the old object's silhouette);
* ``vae``: the same edit after an encode / decode round trip through the inpainting model's VAE, which a
  latent-diffusion inpainter cannot get past whatever its UNet learns.

``--replace-rotation upright`` draws each replacement at rotation 0 (the mini trainer's target, see
``TrainConfig.replace_rotation``) instead of at the old object's rotation.

Defaults: the development edits (``--scene-offset 4000000``, never the reported set at 2000000), the shipped mini
inpainting model (``--model`` takes another diffusers folder, e.g. a training run's export). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--edits", type=int, default=120, help="edits (operations cycle remove / replace / style)")
    p.add_argument("--scene-offset", type=int, default=4_000_000,
                   help="a dev range of ovseg.world.EVAL_SPLITS: 4000000 (edit-settings, default) or 2000000 (edits "
                        "dev); test ranges are refused")
    p.add_argument("--model", default=None, help="diffusers inpainting folder (default: the mini profile's)")
    p.add_argument("--replace-rotation", choices=("source", "upright"), default="source",
                   help="new object of a replacement: at the old object's rotation (the world's exact edit) or upright")
    args = p.parse_args()
    from ovseg.world import EVAL_SPLITS

    for r in EVAL_SPLITS:
        if r.split == "test" and r.start <= args.scene_offset < r.start + r.size:
            p.error(f"--scene-offset {args.scene_offset} lies in the {r.task} test range: benchmarks use dev ranges only")

    import torch

    from ovseg import OpenVocabSegmentationPipeline, get_balanced_config
    from ovseg.edit_eval import build_edit_set, edit_ceiling

    torch.set_num_threads(2)
    pipe = OpenVocabSegmentationPipeline(get_balanced_config())  # mini profile: its segmenter and edit settings
    if args.model:  # the mini profile always loads its embedded model; another folder's VAE is loaded here
        from ovseg.inpaint import load_inpaint_pipeline

        vae = load_inpaint_pipeline(args.model).vae.float()
    else:
        vae = pipe.inpainter.pipe.vae.float()
    res = edit_ceiling(pipe, build_edit_set(args.edits, scene_offset=args.scene_offset), vae=vae,
                       replace_rotation=args.replace_rotation)
    print(json.dumps({"model": args.model or "mini-inpainting", "scene_offset": args.scene_offset, **res}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
