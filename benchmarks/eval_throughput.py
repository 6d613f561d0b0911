"""Evaluation throughput, 1 process vs N processes under torchrun (gloo on CPU).

    python benchmarks/eval_throughput.py [--images 40] [--nproc 2] [--method ovseg] [--profile mini]

Runs ``ovseg evaluate --dataset mini`` on the first IMAGES shipped evaluation scenes once with one
process and once with ``torchrun --nproc-per-node NPROC``, checks that both give the same metrics,
and prints the wall times and the throughput ratio (model loading included, as a user sees it).
On a 2-core machine each process gets one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=40)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--method", default="ovseg")
    p.add_argument("--profile", default="mini")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ovseg-eval-bench-"))
    common = ["evaluate", "--dataset", "mini", "--method", args.method, "--profile", args.profile,
              "--max-images", str(args.images)]
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // args.nproc)))
    single_env = dict(os.environ)
    t1 = _run([sys.executable, "-m", "ovseg", *common, "--out", str(tmp / "one")], single_env)
    tn = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc), "-m", "ovseg",
               *common, "--out", str(tmp / "many")], env)
    m1 = json.loads((tmp / "one" / "metrics.json").read_text())
    mn = json.loads((tmp / "many" / "metrics.json").read_text())
    same = all(m1[k] == mn[k] for k in ("mIoU", "per_class_iou", "pixel_accuracy"))
    res = {"images": args.images, "nproc": args.nproc, "single_s": round(t1, 2), "multi_s": round(tn, 2),
           "throughput_ratio": round(t1 / tn, 3), "identical_metrics": same}
    print(json.dumps(res))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
