"""Regenerate the shipped data (deterministic): python data/make_samples.py

* ``data/samples/shapes.png``: a hand-placed scene for the README and the demo.
* ``data/samples/world_*.png``: four mini-world scenes (256 x 192).
* ``data/mini_world/dev`` and ``data/mini_world/test``: the mini world's evaluation splits (the seed ranges of
  ``ovseg.world.EVAL_SPLITS``, task "scenes"), 128 x 128 px scenes (about half of them with at least one novel
  composition) in the "folder" layout with instances and index.json: dev, 200 scenes (until issue #18 the only
  evaluation set, data/mini_world/eval, used to select settings); test, TEST_SIZE scenes, consulted only to report.
* ``data/mini_world/video_test``: the video test set (``ovseg.world_video``, seeds of the "video" test range after
  the RETIRED_VIDEO_TEST_SEEDS retired ones), VIDEO_TEST_CLIPS clips of VIDEO_TEST_CONFIG.n_frames frames in the
  DAVIS-like layout of ``write_clips``; consulted only to report. ``python data/make_samples.py --video`` regenerates
  it alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from ovseg.io import save_image_atomic  # noqa: E402
from ovseg.video_eval import RETIRED_VIDEO_TEST_SEEDS  # noqa: E402
from ovseg.world import EVAL_SEED_OFFSET, SceneConfig, render_scene, seed_range, write_dataset  # noqa: E402
from ovseg.world_video import ClipConfig, write_clips  # noqa: E402

DEV_SIZE = 200
#: Scenes in the test split: enough for a 95% interval of about +-3 points on the mini profile's semantic mIoU
#: (measured on dev: 79.3 [75.7, 81.3] with 200 scenes; the half-width shrinks about as 1 / sqrt(n)).
TEST_SIZE = 400
#: Clips in the video test set and how they are drawn: 40 clips of 32 frames (2-4 objects at frame 0, 0-2 entering
#: mid-clip), so that "<= 1 id switch per 10 clips" can be shown at all (the first set, 9 clips, could not: with no
#: switch the 95% upper bound is 3 / 9 per clip), at about 0.8 MB a clip (most of it the frames' PNGs: their sensor
#: noise does not compress).
VIDEO_TEST_CLIPS = 40
VIDEO_TEST_CONFIG = ClipConfig(n_frames=32, n_objects=(2, 4), split="all")


def shapes() -> Image.Image:
    w, h = 256, 192
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([150 + 40 * xx / w, 170 + 30 * yy / h, 190 - 40 * xx / w], -1).astype(np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    d.ellipse((30, 50, 100, 120), fill=(220, 40, 40))  # red circle
    d.rectangle((140, 30, 210, 100), fill=(40, 80, 220))  # blue square
    d.polygon([(150, 175), (230, 175), (190, 115)], fill=(240, 220, 40))  # yellow triangle
    return img


def main() -> None:
    samples = HERE / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    shapes().save(samples / "shapes.png", optimize=True)
    wide = SceneConfig(size=(192, 256), n_objects=(2, 4), split="base", textured_objects=0.0)
    for i, seed in enumerate([EVAL_SEED_OFFSET + 500_000 + k for k in range(4)]):  # outside train and eval
        save_image_atomic(samples / f"world_{i}.png", render_scene(seed, wide).image)
    scenes = SceneConfig(split="all", novel_fraction=0.5)
    for split, size in (("dev", DEV_SIZE), ("test", TEST_SIZE)):
        seeds = list(seed_range("scenes", split).seeds[:size])
        write_dataset(HERE / "mini_world" / split, seeds, scenes)
    video_test()
    print("wrote", samples, "and", HERE / "mini_world" / "dev", "and", HERE / "mini_world" / "test", "and",
          HERE / "mini_world" / "video_test")


def video_test(root: Path | None = None) -> Path:
    """Write the video test set (default ``data/mini_world/video_test``): VIDEO_TEST_CLIPS seeds of the "video" test
    range of ``ovseg.world.EVAL_SPLITS`` after its RETIRED_VIDEO_TEST_SEEDS first ones, drawn with VIDEO_TEST_CONFIG."""
    first = RETIRED_VIDEO_TEST_SEEDS
    seeds = list(seed_range("video", "test").seeds[first:first + VIDEO_TEST_CLIPS])
    return write_clips(HERE / "mini_world" / "video_test" if root is None else root, seeds, VIDEO_TEST_CONFIG)


if __name__ == "__main__":
    if sys.argv[1:] == ["--video"]:
        print("wrote", video_test())
    else:
        main()
