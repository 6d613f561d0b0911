"""Video removal strategies on the mini world's video DEV split (issue #21, part 4): the table that chose
``ovseg.video_edit.DEFAULT_STRATEGY``.

    python scripts/video_edit_dev.py                      # 4 static dev clips x 12 frames, mini profile, 1 thread
    python scripts/video_edit_dev.py --clips 8 --frames 16 --json out.json

Each clip's largest object is removed with its exact per-frame masks (tracking left out, so only the editing stage is
compared) by every strategy, and scored against the exact object-free clip (``render_clip(seed, without=k)``): PSNR
inside the edit region, exactness outside it, and flicker (mean |frame t - frame t-1| inside the masks; the exact
clip's own flicker, sensor noise, beside it). Means over clips with seeded 95% bootstrap intervals; the flicker
reduction is the paired per-clip ratio independent / strategy. Never runs on the test split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fmt(d: dict, digits: int = 2) -> str:
    if d["value"] is None:
        return "-"
    lo, hi = d["ci95"]
    return f"{d['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=4, help="static-background dev clips (default 4)")
    p.add_argument("--frames", type=int, default=12, help="frames per clip (default 12)")
    p.add_argument("--strategies", default="independent,fixed-noise,reuse", help="comma-separated")
    p.add_argument("--seed", type=int, default=0, help="diffusion seed of frame 0")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the mini config's)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", default=None, help="also write the summaries here")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from ovseg import OpenVocabSegmentationPipeline
    from ovseg.video_edit import dev_removal_clips, measure_strategies

    start = time.perf_counter()
    clips = dev_removal_clips(args.clips, args.frames)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    pipe = OpenVocabSegmentationPipeline()
    print(f"video dev split: {len(clips)} static clips x {args.frames} frames "
          f"({', '.join(c.name + '/' + c.objects[k].class_name for c, k in clips)}); mini profile, "
          f"{pipe.config.inpainting.num_inference_steps if args.steps is None else args.steps} steps, seed {args.seed}")
    res = measure_strategies(pipe, clips, strategies, seed=args.seed, num_inference_steps=args.steps)
    base = res.get("independent")
    rows = [m.summary(base if base is not None and m is not base else None) for m in res.values()]
    print()
    print("| strategy | n clips | PSNR inside (dB) | outside exact | flicker (levels) | exact clip's flicker | "
          "flicker reduction vs independent | model calls / clip | s / clip |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        red = _fmt(r["flicker_reduction_vs_baseline"]) + "x" if "flicker_reduction_vs_baseline" in r else "1 (baseline)"
        print(f"| {r['strategy']} | {r['n_clips']} | {_fmt(r['psnr_inside_db'])} | "
              f"{_fmt(r['exact_outside'])} | {_fmt(r['flicker'])} | {_fmt(r['flicker_exact'])} | {red} | "
              f"{r['model_calls_per_clip']:.1f} | {r['seconds_per_clip']:.1f} |")
    print(f"\n95% intervals: seeded percentile bootstrap over clips (ovseg.stats); {time.perf_counter() - start:.0f} s")
    if args.json:
        from ovseg.io import write_json_atomic

        per_clip = {s: m.__dict__ for s, m in res.items()}
        write_json_atomic(args.json, {"clips": args.clips, "frames": args.frames, "seed": args.seed, "summary": rows,
                                      "per_clip": json.loads(json.dumps(per_clip, default=float))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
