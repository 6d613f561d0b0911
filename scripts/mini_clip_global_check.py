"""Dev-split check of a mini CLIP's *global* path (class token), the path CLIP's contrastive loss trains:

    python scripts/mini_clip_global_check.py mini-clip-contrastive [OTHER ...]

Each argument is a registry name (``data/models/<name>``) or a model folder (a training run's export, e.g.
``build/models/mini-clip-contrastive-v2``). Prints image -> caption top-1 retrieval among the dev images' world
captions (correct when the retrieved caption names the same set of objects) and single-object zero-shot top-1 over
the 48 class names ("a {}."), each with a seeded 95% bootstrap interval and n
(:func:`ovseg.experiments.features.global_path_check`). Dev split only (data/mini_world/dev): it selects nothing and
logs nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ovseg.experiments.features import global_path_check
from ovseg.features import DenseCLIP
from ovseg.mini_clip import load_mini_clip
from ovseg.paths import DATA_DIR
from ovseg.stats import Interval, interval_text


def _text(iv: Interval) -> str:
    return f"{iv.value:.3f} {interval_text(iv)} (n = {iv.n} {iv.unit})"


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        folder = Path(name) if Path(name).is_dir() else DATA_DIR / "models" / name
        model, tok, cfg = load_mini_clip(folder)
        clip = DenseCLIP(model, tok, cfg["mean"], cfg["std"], extract_layers=cfg["extract_layers"],
                         dense_path=cfg["dense_path"], templates=cfg["templates"], image_size=cfg["image_size"])
        r = global_path_check(clip, DATA_DIR / "mini_world" / "dev")
        print(f"{name}: image -> caption top-1 among {r['n_images']} dev images: {_text(r['retrieval'])}")
        print(f"{name}: single-object zero-shot top-1 over 48 classes: {_text(r['zero_shot'])} "
              f"(chance {r['chance_zero_shot']:.3f})")


if __name__ == "__main__":
    main(sys.argv[1:] or ["mini-clip-contrastive"])
