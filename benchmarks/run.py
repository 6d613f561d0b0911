"""Benchmarks with their targets. Run: python -m nox -s bench  (or python benchmarks/run.py).

Targets (issue #2, 2 CPU cores): alignment of 200 masks x 4 layers x 10 prompts at 336 px
takes <= 2x one bare (200 x 336*336) @ (336*336 x 10) float32 product, and a per-mask Python
loop doing the same maths takes >= 20x ovseg's time. ``--explorer``: one explorer slider change
(re-filter + re-score of cached masks and features) takes <= 100 ms on the mini profile.
``--stages`` also times the pipeline stages (mini profile, or ``--random-init`` full-size models:
timing only). ``--mini``: issue #3's targets on the mini profile: models load in <= 5 s and
``segment`` takes <= 1 s per evaluation image end to end after loading.
"""

from __future__ import annotations

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stages", action="store_true", help="also time the pipeline stages")
    parser.add_argument("--random-init", action="store_true", help="full-size random-weight models (timing only)")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--points-per-side", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--explorer", action="store_true", help="explorer slider latency (mini profile, target <= 100 ms)")
    parser.add_argument("--mini", action="store_true", help="mini profile load time and per-image seconds (issue #3)")
    parser.add_argument("--images", type=int, default=20, help="evaluation images for --mini")
    args = parser.parse_args()

    from ovseg.benchmark import align_benchmark, stage_benchmark

    ok_mini = True
    if args.mini:  # first, in a fresh process, so that the load time includes torch's first-use costs
        from ovseg.benchmark import mini_throughput_benchmark

        mini = mini_throughput_benchmark(args.images)
        ok_mini = mini["load_s"] <= 5 and mini["per_image_median_s"] <= 1
        print(json.dumps(mini))
        print(f"mini load {mini['load_s']:.2f} s <= 5 s, segment {mini['per_image_median_s']:.3f} s/img <= 1 s: "
              f"{'PASS' if ok_mini else 'FAIL'}")

    res = align_benchmark()
    ok_matmul = res["align_ms"] <= 2 * res["matmul_ms"]
    ok_loop = res["loop_ms"] >= 20 * res["align_ms"]
    print(json.dumps(res))
    print(f"align {res['align_ms']:.2f} ms <= 2 x matmul {res['matmul_ms']:.2f} ms: {'PASS' if ok_matmul else 'FAIL'}")
    print(f"loop {res['loop_ms']:.1f} ms >= 20 x align: {'PASS' if ok_loop else 'FAIL'} "
          f"({res['loop_ms'] / res['align_ms']:.0f}x)")
    if args.stages:
        stages = stage_benchmark(profile="full" if args.random_init else "mini", random_init=args.random_init,
                                 steps=args.steps, points_per_side=args.points_per_side, device=args.device)
        print(json.dumps(stages))
    ok_explorer = True
    if args.explorer:
        from ovseg.benchmark import explorer_benchmark

        ex = explorer_benchmark()
        ok_explorer = ex["rescore_ms"] <= 100
        print(json.dumps(ex))
        print(f"explorer re-filter + re-score {ex['rescore_ms']:.1f} ms <= 100 ms: {'PASS' if ok_explorer else 'FAIL'}")
    return 0 if (ok_matmul and ok_loop and ok_explorer and ok_mini) else 1


if __name__ == "__main__":
    sys.exit(main())
