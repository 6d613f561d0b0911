"""Video memory (issue #21): long clips stay bounded.

Run: ``python benchmarks/video_memory.py [--frames 600] [--read-frames 400] [--read-size 512] [--threads 1]``

Two measurements, each against the unbounded way:

1. **Reading**: ``read_video`` of a synthetic ``--read-frames``-frame MP4 at ``--read-size`` px, peak heap allocation
   (``tracemalloc``: numpy's buffers) with the default ``memory_mb`` (the clip fits: all in RAM) and with
   ``memory_mb=64`` (frames beyond 64 MiB go to an unlinked temporary file, memory-mapped). Target: the bounded peak
   stays under 2 x 64 MiB + one frame, whatever the clip's length.
2. **Tracking state**: text-prompted ``segment_video`` (mini profile) of a ``--frames``-frame mini-world dev clip
   (objects rotating in place, so every track lives to the end) with keyframe refresh, the bytes of the tensors in
   sam2's per-frame outputs after each frame, with :func:`ovseg.video._forget_frames` (default) and without it
   (everything kept, as sam2 does). Target: the bounded state's size at the end is no larger than at frame 100
   (flat), and the id maps are identical. (The read peak counts numpy's heap; PyAV's decoded frames are not traced.)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BOUND_MB = 64.0


def _state_bytes(state: dict) -> int:
    import torch

    total = 0
    for per_obj in state["output_dict_per_obj"].values():
        for frames in per_obj.values():
            for out in frames.values():
                for v in out.values():
                    if isinstance(v, torch.Tensor):
                        total += v.numel() * v.element_size()
    return total


def read_peaks(n_frames: int, size: int) -> dict:
    import numpy as np

    from ovseg import video as V

    yy, xx = np.mgrid[0:size, 0:size]
    frames = (np.stack([(xx + 3 * t) % 256, (yy + 2 * t) % 256, (xx + yy) % 256], -1)
              for t in range(n_frames))  # a moving gradient, generated frame by frame
    with tempfile.TemporaryDirectory() as tmp:
        path = V.write_video(Path(tmp) / "long.mp4", (f.astype(np.uint8) for f in frames), fps=24)
        out = {"frames": n_frames, "size": size, "clip_mib": round(n_frames * size * size * 3 / 2 ** 20, 1)}
        for name, mb in (("default", None), (f"memory_mb={BOUND_MB:g}", BOUND_MB)):
            tracemalloc.start()
            t0 = time.perf_counter()
            arr, _ = V.read_video(path, memory_mb=mb)
            seconds = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            out[name] = {"peak_mib": round(peak / 2 ** 20, 1), "seconds": round(seconds, 2),
                         "memmap": isinstance(arr, np.memmap)}
            del arr
    return out


def state_growth(n_frames: int) -> dict:
    import numpy as np

    from ovseg import video as V
    from ovseg.config import load_config
    from ovseg.pipeline import OpenVocabSegmentationPipeline
    from ovseg.video_eval import dev_clip_config
    from ovseg.world import seed_range
    from ovseg.world_video import render_clip

    # objects that stay in view for the whole clip (no drift, no entries), so that every track lives to the end
    still = replace(dev_clip_config(), n_frames=n_frames, speed=(0.0, 0.0), n_entering=(0, 0), scale_speed=(0.0, 0.0))
    clip = render_clip(seed_range("video", "dev").seeds[0], still)
    pipe = OpenVocabSegmentationPipeline(load_config(None))
    predictor = V.video_predictor_for(pipe)
    prompt = clip.objects[0].class_name
    real_propagate, sizes = predictor.propagate_in_video, []

    def spy(state, *args, **kwargs):  # the state's size before each tracked frame
        sizes.append(_state_bytes(state))
        yield from real_propagate(state, *args, **kwargs)

    predictor.propagate_in_video = spy
    out = {"frames": n_frames, "prompt": prompt}
    maps = {}
    try:
        for name in ("bounded", "unbounded"):
            sizes.clear()
            forget = V._forget_frames
            if name == "unbounded":
                V._forget_frames = lambda *a: 0
            try:
                t0 = time.perf_counter()
                r = V.segment_video(pipe, clip.frames, prompt, keep_frames=False)
                seconds = time.perf_counter() - t0
            finally:
                V._forget_frames = forget
            maps[name] = np.array(r.id_maps)
            at = min(100, len(sizes) - 1)
            out[name] = {"state_mib_at_frame_100": round(sizes[at] / 2 ** 20, 2),
                         "state_mib_at_end": round(sizes[-1] / 2 ** 20, 2),
                         "state_mib_max": round(max(sizes) / 2 ** 20, 2), "seconds": round(seconds, 1),
                         "objects": len(r.objects)}
    finally:
        del predictor.propagate_in_video
    out["id_maps_identical"] = bool(np.array_equal(maps["bounded"], maps["unbounded"]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600, help="frames of the tracked clip (128 px)")
    ap.add_argument("--read-frames", type=int, default=400)
    ap.add_argument("--read-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    reading = read_peaks(args.read_frames, args.read_size)
    frame_mib = args.read_size ** 2 * 3 / 2 ** 20
    bounded = reading[f"memory_mb={BOUND_MB:g}"]
    ok_read = bounded["memmap"] and bounded["peak_mib"] <= 2 * BOUND_MB + frame_mib
    print(json.dumps({"read": reading}))
    print(f"read {reading['clip_mib']} MiB clip: peak {reading['default']['peak_mib']} MiB in RAM, "
          f"{bounded['peak_mib']} MiB with memory_mb={BOUND_MB:g} (<= {2 * BOUND_MB + frame_mib:.0f}): "
          f"{'PASS' if ok_read else 'FAIL'}")
    state = state_growth(args.frames)
    b, u = state["bounded"], state["unbounded"]
    ok_state = b["state_mib_at_end"] <= b["state_mib_at_frame_100"] * 1.05 + 0.01 and state["id_maps_identical"]
    print(json.dumps({"state": state}))
    print(f"tracking state over {args.frames} frames: {b['state_mib_at_frame_100']} MiB at frame 100, "
          f"{b['state_mib_at_end']} MiB at the end (everything kept: {u['state_mib_at_end']} MiB); id maps identical: "
          f"{state['id_maps_identical']}: {'PASS' if ok_state else 'FAIL'}")
    return 0 if ok_read and ok_state else 1


if __name__ == "__main__":
    raise SystemExit(main())
