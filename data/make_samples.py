"""Draw the shipped sample images (deterministic). Run: python data/make_samples.py

Until the mini world lands, these are simple hand-specified scenes of the world's vocabulary
(coloured shapes on smooth backgrounds) used by the README, the demo and the CLI tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent / "samples"


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


if __name__ == "__main__":
    HERE.mkdir(parents=True, exist_ok=True)
    shapes().save(HERE / "shapes.png", optimize=True)
    print("wrote", HERE / "shapes.png")
