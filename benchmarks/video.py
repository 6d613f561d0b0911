"""Video speed (issue #21): SAM 2 tracking frames per second and a whole text-prompted clip.

Run: ``python benchmarks/video.py [--threads 2] [--full-frames 3]``

Targets (mini profile, 2 CPU cores, 128 px): tracking >= 5 frames/s after loading (propagation only:
:func:`ovseg.video.propagate_masks` from frame-0 masks, every object of frame 0, per frame); the whole text-prompted
segmentation of a 48-frame clip (:meth:`ovseg.pipeline.OpenVocabSegmentationPipeline.segment_video`, keyframe
detections + tracking, one prompt) <= 20 s. The clip is a dev-range mini-world clip rendered with the video test
set's settings at 48 frames. ``--full-frames N`` also times SAM 2.1 Hiera-L's video predictor built with random
weights at 1024 px on N frames (timing only, like ``--random-init``; 0 skips it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET_FPS = 5.0
TARGET_CLIP_S = 20.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--keyframe-every", type=int, default=None, help="default: the library's default")
    ap.add_argument("--full-frames", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import torch

    from ovseg import video as V
    from ovseg.config import get_balanced_config
    from ovseg.pipeline import OpenVocabSegmentationPipeline
    from ovseg.video_eval import dev_clip_config
    from ovseg.world import seed_range
    from ovseg.world_video import render_clip

    torch.set_num_threads(args.threads)
    seed = seed_range("video", "dev").seeds[0]
    clip = render_clip(seed, replace(dev_clip_config(), n_frames=args.frames))
    frames, ids = clip.frames, clip.instance_maps  # (T, H, W, 3), (T, H, W)
    t0 = time.perf_counter()
    pipe = OpenVocabSegmentationPipeline(config=get_balanced_config(profile="mini"))
    predictor = V.video_predictor_for(pipe)
    load_s = time.perf_counter() - t0
    # 1. propagation only: every frame-0 object from its mask
    V.propagate_masks(predictor, frames[:4], ids[0])  # warm-up
    t0 = time.perf_counter()
    V.propagate_masks(predictor, frames, ids[0])
    prop_s = time.perf_counter() - t0
    n_obj = len([k for k in np.unique(ids[0]) if k])
    fps = frames.shape[0] / prop_s
    # 2. the whole text-prompted segmentation of the clip (the class of its first object)
    prompt = clip.objects[0].class_name
    kw = {} if args.keyframe_every is None else {"keyframe_every": args.keyframe_every}
    pipe.segment(frames[0], prompt)  # warm-up of the image models
    t0 = time.perf_counter()
    result = pipe.segment_video(frames, prompt, keep_frames=False, **kw)
    clip_s = time.perf_counter() - t0
    res = {"threads": args.threads, "frames": int(frames.shape[0]), "size": list(frames.shape[1:3]),
           "load_s": round(load_s, 2), "propagation_s": round(prop_s, 2), "objects_tracked": n_obj,
           "tracking_fps": round(fps, 2), "prompt": prompt, "keyframe_every": result.settings["keyframe_every"],
           "text_prompted_clip_s": round(clip_s, 2), "timings": {k: round(v, 2) for k, v in result.timings.items()}}
    ok_fps, ok_clip = fps >= TARGET_FPS, clip_s <= TARGET_CLIP_S
    if args.full_frames > 0:  # 3. full-size architecture, random weights: timing only
        from PIL import Image

        full = V.build_sam2_video_predictor_from("sam2.1_hiera_l")
        big = np.stack([np.asarray(Image.fromarray(f).resize((1024, 1024))) for f in frames[:args.full_frames]])
        first = np.asarray(Image.fromarray(ids[0]).resize((1024, 1024), Image.NEAREST))
        t0 = time.perf_counter()
        V.propagate_masks(full, big, first)
        res["full_random_init_s_per_frame"] = round((time.perf_counter() - t0) / len(big), 2)
    print(json.dumps(res))
    print(f"tracking {fps:.1f} frames/s >= {TARGET_FPS:g} ({n_obj} objects, {frames.shape[2]} px): "
          f"{'PASS' if ok_fps else 'FAIL'}")
    print(f"text-prompted {frames.shape[0]}-frame clip {clip_s:.1f} s <= {TARGET_CLIP_S:g} s: "
          f"{'PASS' if ok_clip else 'FAIL'}")
    return 0 if ok_fps and ok_clip else 1


if __name__ == "__main__":
    raise SystemExit(main())
