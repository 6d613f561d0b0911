"""Dev-split check of a mini CLIP's *global* path (class token), the path CLIP's contrastive loss trains:

    python scripts/mini_clip_global_check.py mini-clip-contrastive

Prints image -> caption top-1 retrieval among the dev images' world captions (correct when the retrieved caption
names the same set of objects) and single-object zero-shot top-1 over the 48 class names ("a {}."), each with a
seeded 95% bootstrap interval and n. Dev split only (data/mini_world/dev): it selects nothing and logs nothing.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from PIL import Image

from ovseg.mini_clip import load_mini_clip
from ovseg.paths import DATA_DIR
from ovseg.stats import Interval, bootstrap_rate, interval_text
from ovseg.world import CLASS_NAMES


def _text(iv: Interval) -> str:
    return f"{iv.value:.3f} {interval_text(iv)} (n = {iv.n} {iv.unit})"


def main(name: str) -> None:
    torch.set_num_threads(1)
    model, tok, cfg = load_mini_clip(DATA_DIR / "models" / name)
    dev = DATA_DIR / "mini_world" / "dev"
    idx = json.loads((dev / "index.json").read_text())["images"]
    mean, std = torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    imgs = np.stack([np.asarray(Image.open(dev / "images" / f"{e['stem']}.png").convert("RGB")) for e in idx])
    x = (torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255 - mean) / std  # (N, 3, 128, 128)
    keys = [tuple(sorted(o["class_name"] for o in e["objects"])) for e in idx]
    norm = torch.nn.functional.normalize
    with torch.no_grad():
        fi = norm(model.encode_image(x), dim=-1)  # (N, D)
        ft = norm(model.encode_text(tok([e["caption"] for e in idx])), dim=-1)  # (N, D)
        top = (fi @ ft.T).argmax(1).tolist()
        single = [i for i, e in enumerate(idx) if len(e["objects"]) == 1]
        fc = norm(model.encode_text(tok([f"a {c}." for c in CLASS_NAMES])), dim=-1)  # (C, D)
        pred = (fi[single] @ fc.T).argmax(1).tolist()
    retrieval = np.array([keys[i] == keys[j] for i, j in enumerate(top)], dtype=float)
    zero_shot = np.array([CLASS_NAMES[p] == idx[i]["objects"][0]["class_name"] for p, i in zip(pred, single)], float)
    print(f"{name}: image -> caption top-1 among {len(idx)} dev images: {_text(bootstrap_rate(retrieval))}")
    print(f"{name}: single-object zero-shot top-1 over {len(CLASS_NAMES)} classes: {_text(bootstrap_rate(zero_shot))} "
          f"(chance {1 / len(CLASS_NAMES):.3f})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "mini-clip-contrastive")
