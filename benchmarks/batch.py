"""Batch processing: one ``ovseg segment FOLDER`` vs N separate ``ovseg segment FILE`` calls, and torchrun.

    python benchmarks/batch.py [--n 100] [--nproc 2] [--prompt "red circle"] [--profile mini] [--keep]

Renders N mini-world scenes (the first N seeds of the dev scene range, ``ovseg.world.seed_range("scenes", "dev")``)
as PNGs into a temporary folder, then times, each as a user runs it (fresh processes, model loading included):

1. ``ovseg segment FOLDER --prompt P`` (one process: models load once);
2. N separate ``ovseg segment FILE --prompt P`` calls (models load N times);
3. ``torchrun --nproc-per-node NPROC -m ovseg segment FOLDER --prompt P`` (gloo on CPU; each process gets
   ``cpu_count // NPROC`` threads), against run 1.

Checks: every sub-folder's ``result.json`` of run 1 has the masks of the separate call on that file, and the merged
``results.jsonl`` of run 3 equals run 1's except the measured ``seconds`` / ``timings_s``. Target: run 1 at least
5x faster than run 2 in total. Prints one line per run, PASS / FAIL, and a JSON object as the last line; exits 1 on
FAIL or a mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SPEEDUP = 5.0


def _run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def _lines(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k not in ("seconds", "timings_s")}
            for ln in path.read_text(encoding="utf-8").splitlines()]


def _masks(result_json: Path) -> list[dict]:
    return [{k: v for k, v in m.items()} for m in json.loads(result_json.read_text(encoding="utf-8"))["masks"]]


def render(folder: Path, n: int) -> list[Path]:
    """N mini-world scenes as ``scene_<k>.png`` (k zero-padded): the first N dev scene seeds."""
    from PIL import Image

    from ovseg.world import render_scene, seed_range

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, seed in zip(range(n), seed_range("scenes", "dev").seeds):
        p = folder / f"scene_{k:03d}.png"
        Image.fromarray(render_scene(seed).image).save(p)
        paths.append(p)
    return paths


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="scenes (default 100)")
    p.add_argument("--nproc", type=int, default=2, help="torchrun processes (default 2)")
    p.add_argument("--prompt", default="red circle")
    p.add_argument("--profile", default="mini")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = p.parse_args()
    if args.n < 1 or args.nproc < 1:
        p.error("--n and --nproc must be positive")
    tmp = Path(tempfile.mkdtemp(prefix="ovseg-batch-bench-"))
    try:
        images = render(tmp / "scenes", args.n)
        ovseg = [sys.executable, "-m", "ovseg", "segment"]
        common = ["--prompt", args.prompt, "--profile", args.profile, "--no-progress"]
        env = dict(os.environ)
        t_folder = _run([*ovseg, str(tmp / "scenes"), *common, "--out", str(tmp / "folder")], env)
        print(f"folder:   1 call, {args.n} images      {t_folder:8.1f} s  ({t_folder / args.n:.2f} s/image)", flush=True)
        t_files = 0.0
        for img in images:
            t_files += _run([*ovseg, str(img), *common, "--out", str(tmp / "files" / img.stem)], env)
        print(f"files:    {args.n} calls, 1 image each {t_files:8.1f} s  ({t_files / args.n:.2f} s/image)", flush=True)
        same_masks = all(_masks(tmp / "folder" / img.stem / "result.json") == _masks(tmp / "files" / img.stem /
                                                                                    "result.json") for img in images)
        speedup = t_files / t_folder
        verdict = "PASS" if speedup >= TARGET_SPEEDUP else "FAIL"
        print(f"speed-up: {speedup:.1f}x (target >= {TARGET_SPEEDUP:g}x) {verdict}; same masks: {same_masks}")
        threads = str(max(1, (os.cpu_count() or 2) // args.nproc))
        t_dist = _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc), "-m", "ovseg",
                       "segment", str(tmp / "scenes"), *common, "--out", str(tmp / "dist")],
                      dict(env, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads))
        same_merged = (tmp / "dist" / "results.jsonl").is_file() and \
            _lines(tmp / "dist" / "results.jsonl") == _lines(tmp / "folder" / "results.jsonl")
        print(f"torchrun: {args.nproc} processes            {t_dist:8.1f} s  ({t_folder / t_dist:.2f}x the 1-process "
              f"folder run; merged results.jsonl equal: {same_merged})")
        res = {"n": args.n, "nproc": args.nproc, "cpu_count": os.cpu_count(), "folder_s": round(t_folder, 2),
               "files_s": round(t_files, 2), "speedup": round(speedup, 2), "target": TARGET_SPEEDUP, "verdict": verdict,
               "same_masks": same_masks, "torchrun_s": round(t_dist, 2), "torchrun_vs_1proc": round(t_folder / t_dist, 3),
               "merged_equal": same_merged}
        print(json.dumps(res))
        if args.keep:
            print(f"kept {tmp}")
        return 0 if verdict == "PASS" and same_masks and same_merged else 1
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
