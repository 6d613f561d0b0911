"""Large photos (issue #19): peak memory and time per megapixel of ``ovseg segment`` and ``ovseg remove``.

Run: ``python benchmarks/large_images.py [--sizes 12 24 48] [--profile mini]`` (nox: ``-s bench -- ...`` runs
benchmarks/run.py; this one is run directly).

Each size is a JPEG (quality 90) of a mini-world scene enlarged to that many megapixels at 4:3 (8000 x 6000 for
48), so the mini models find its objects. Each command runs in a fresh process, as a user runs it; its peak resident
memory is the child's ``ru_maxrss`` (``os.wait4``), which includes Python, torch and the models (about 0.6 GB before
any image). The outputs are checked: every PNG the command writes is at the photo's size.

Target: a 48 MP image through ``segment`` and ``remove`` on the mini profile with peak RSS <= 4 GB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_MP = 48
TARGET_RSS_GB = 4.0


def make_photo(path: Path, megapixels: float, seed: int = 5) -> tuple[int, int, str]:
    """A 4:3 JPEG of a mini-world scene enlarged to ``megapixels``; returns (width, height, a prompt for it)."""
    import cv2
    from PIL import Image

    from ovseg.world import render_scene

    scene = render_scene(seed)
    height = int(round(math.sqrt(megapixels * 1e6 * 3 / 4)))
    width = int(round(height * 4 / 3))
    big = cv2.resize(scene.image, (width, height), interpolation=cv2.INTER_CUBIC)
    Image.fromarray(big).save(path, quality=90)
    first = scene.objects[0]
    return width, height, f"{first.colour} {first.shape}"


def run(cmd: list[str]) -> dict[str, float]:
    """Run a command in a child process; wall seconds and the child's peak RSS in GB."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{out}")
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}  # ru_maxrss is in KiB on Linux


def check_sizes(folder: Path, size: tuple[int, int]) -> list[str]:
    from PIL import Image

    names = json.loads((folder / "result.json").read_text())["files"]
    for name in names:
        if name.endswith(".png"):
            with Image.open(folder / name) as im:
                if im.size != size:
                    raise SystemExit(f"{folder / name} is {im.size}, expected the photo's {size}")
    return [n for n in names if n.endswith(".png")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[12, 24, TARGET_MP], help="megapixels")
    parser.add_argument("--profile", default="mini", choices=("mini", "full"))
    args = parser.parse_args()
    rows, ok = [], True
    with tempfile.TemporaryDirectory(prefix="ovseg-large-") as tmp:
        for mp in args.sizes:
            photo = Path(tmp) / f"photo_{mp:g}mp.jpg"
            width, height, prompt = make_photo(photo, mp)
            for command in ("segment", "remove"):
                out = Path(tmp) / f"{command}_{mp:g}"
                res = run([sys.executable, "-m", "ovseg", command, str(photo), "--prompt", prompt,
                           "--profile", args.profile, "--out", str(out), "--no-progress"])
                files = check_sizes(out, (width, height))
                timings = json.loads((out / "result.json").read_text())["timings_s"]
                row = {"command": command, "megapixels": round(width * height / 1e6, 2), "size": f"{width}x{height}",
                       **{k: round(v, 3) for k, v in res.items()},
                       "s_per_mp": round(res["seconds"] / (width * height / 1e6), 3),
                       "stages_s": timings, "full_size_pngs": len(files)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if mp >= TARGET_MP:
                    ok &= res["peak_rss_gb"] <= TARGET_RSS_GB
    print(f"\n{'command':8} {'MP':>6} {'size':>10} {'seconds':>8} {'s/MP':>6} {'peak RSS GB':>11}")
    for r in rows:
        print(f"{r['command']:8} {r['megapixels']:6.1f} {r['size']:>10} {r['seconds']:8.1f} {r['s_per_mp']:6.2f} "
              f"{r['peak_rss_gb']:11.2f}")
    big = [r for r in rows if r["megapixels"] >= TARGET_MP - 0.5]
    if big:
        print(f"{TARGET_MP} MP peak RSS <= {TARGET_RSS_GB} GB for segment and remove: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
