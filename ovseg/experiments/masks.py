"""Experiments of thesis section 3.2.2 (SAM 2 automatic masks): notebook ``3.2.2_sam2_masks``.

How the automatic mask generator's settings trade the number of masks against how much of the image
they cover and how many ground-truth objects they recover:

* ``points_per_side``: the point-prompt grid (thesis 32 x 32);
* ``pred_iou_thresh`` / ``stability_score_thresh``: the quality filters (thesis 0.88 / 0.95);
* ``crop_n_layers``: multi-scale crops (thesis 1).

Each setting is varied alone around a base setting (the mini profile's balanced preset), and the named
presets (:data:`ovseg.config.MINI_SAM2_PRESETS` and the thesis values) are evaluated as a whole
(:func:`sweep_settings`). Per image the image encoder runs once per crop; every other setting is
produced by :meth:`ovseg.masks.MaskGenerator.refilter`, which re-runs only the prompt encoder, mask
decoder and filters on the cached embeddings (:func:`run_sweep`).

Metrics (:func:`mask_stats`): masks per image; coverage, the fraction of image pixels covered by at
least one mask (:func:`ovseg.masks.mask_coverage`); object recall, the fraction of ground-truth objects
(visible instances) matched by some mask with IoU >= 0.5; and the mean over objects of the best IoU.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..utils import mask_iou  # noqa: F401 - (N, K) IoU matrix, re-exported for the 3.2.x experiments

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..datasets import SegDataset
    from ..masks import MaskGenerator
    from ..utils import MaskSet
    from ..world import Scene

__all__ = ["THESIS_SAM2", "SWEEP_GRID", "SWEEP_GRID_SMALL", "GRIDS", "SWEPT_KEYS", "load_eval_scene", "select_scenes",
           "mask_iou", "best_iou_per_object",
           "mask_stats", "sweep_settings", "run_sweep", "summarise", "sweep_figure", "masks_figure", "log_test"]

#: The thesis' automatic-mask-generation settings (README: 32 x 32 grid, IoU > 0.88, stability > 0.95, 1 crop layer).
THESIS_SAM2: dict[str, Any] = {"points_per_side": 32, "pred_iou_thresh": 0.88, "stability_score_thresh": 0.95,
                               "crop_n_layers": 1}
#: One-at-a-time sweep values around the base setting (``grid="fine"``).
SWEEP_GRID: dict[str, tuple[Any, ...]] = {
    "points_per_side": (4, 8, 16, 24, 32),
    "pred_iou_thresh": (0.3, 0.5, 0.7, 0.88),
    "stability_score_thresh": (0.5, 0.7, 0.85, 0.95),
    "crop_n_layers": (0, 1, 2),
}
#: A cheaper grid (``grid="small"``, the notebook's quick default): about 11 s per 128 px image on one CPU thread.
SWEEP_GRID_SMALL: dict[str, tuple[Any, ...]] = {
    "points_per_side": (4, 8, 16),
    "pred_iou_thresh": (0.3, 0.5, 0.88),
    "stability_score_thresh": (0.5, 0.7, 0.95),
    "crop_n_layers": (0, 1, 2),
}
GRIDS = {"fine": SWEEP_GRID, "small": SWEEP_GRID_SMALL}
SWEPT_KEYS = tuple(THESIS_SAM2)


# ---- ground truth ------------------------------------------------------------------------------

def load_eval_scene(dataset: "SegDataset", i: int) -> "Scene":
    """Scene ``i`` of a mini-world dataset on disk (e.g. data/mini_world/dev or test), with its instance masks and objects.

    Returns:
        :class:`ovseg.world.Scene`: ``image`` (H, W, 3) uint8, ``instance_masks`` (K, H, W) bool (visible
        pixels of object k; an object hidden entirely has an empty mask), ``label_map`` (H, W) uint8,
        ``objects`` from ``index.json``.
    """
    from PIL import Image

    from ..world import Scene, SceneObject

    sample = dataset[i]
    cache = dataset.__dict__.setdefault("_index_records", {})
    if not cache:
        index = json.loads((dataset.root / "index.json").read_text())
        cache.update({r["stem"]: r for r in index["images"]})
    rec = cache[sample.stem]
    inst = np.asarray(Image.open(dataset.root / "instances" / f"{sample.stem}.png"))  # (H, W) uint8, k + 1 = object k
    objects = [SceneObject(**{**o, "centre": tuple(o["centre"])}) for o in rec["objects"]]
    masks = np.stack([inst == k + 1 for k in range(len(objects))]) if objects else np.zeros((0, *inst.shape), bool)
    label = np.where(sample.label == dataset.ignore_index, 0, sample.label).astype(np.uint8)
    return Scene(sample.image, masks, label, objects, rec.get("caption", ""), int(rec["seed"]))


def select_scenes(dataset: "SegDataset", n: int, min_objects: int = 1) -> list["Scene"]:
    """The first ``n`` scenes (stem order) of ``dataset`` with at least ``min_objects`` visible objects."""
    out = []
    for i in range(len(dataset)):
        if len(out) >= n:
            break
        scene = load_eval_scene(dataset, i)
        if int(scene.instance_masks.any(axis=(1, 2)).sum()) >= min_objects:
            out.append(scene)
    return out


# ---- metrics -----------------------------------------------------------------------------------

def best_iou_per_object(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(K,) float64: for each ground-truth mask the best IoU of any predicted mask (0 with no predictions)."""
    if len(gt) == 0:
        return np.zeros(0)
    if len(pred) == 0:
        return np.zeros(len(gt))
    return mask_iou(pred, gt).max(axis=0)


def mask_stats(masks: "MaskSet", gt: np.ndarray, iou_thresh: float = 0.5) -> dict[str, Any]:
    """Per-image statistics of a mask set against ground-truth instances.

    Args:
        masks: the generated :class:`~ovseg.utils.MaskSet` (N masks of an H x W image).
        gt: (K, H, W) bool instance masks; empty ones (fully hidden objects) are ignored.

    Returns:
        ``{"n_masks": N, "coverage": float in [0, 1], "n_objects": K', "hits": int (objects with best
        IoU >= iou_thresh), "best_iou": (K',) float64}``.
    """
    from ..masks import mask_coverage

    gt = gt[gt.any(axis=(1, 2))] if len(gt) else gt
    best = best_iou_per_object(masks.masks, gt)
    return {"n_masks": len(masks), "coverage": mask_coverage(masks), "n_objects": len(gt),
            "hits": int((best >= iou_thresh).sum()), "best_iou": best}


# ---- the sweep ---------------------------------------------------------------------------------

def sweep_settings(base: dict[str, Any], grid: dict[str, Sequence[Any]] | None = None,
                   presets: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The settings to evaluate: each grid value alone on top of ``base``, then the named presets.

    Args:
        base: values of :data:`SWEPT_KEYS` (e.g. the mini balanced preset).
        grid: ``{key: values}`` (default :data:`SWEEP_GRID`).
        presets: ``{name: values}`` evaluated as whole settings (default: the mini presets and the thesis).

    Returns:
        ``[{"group": key or "preset", "label": str, "value": value or None, "setting": {key: value}}]``;
        every ``setting`` holds all of :data:`SWEPT_KEYS`.
    """
    from ..config import MINI_SAM2_PRESETS

    grid = SWEEP_GRID if grid is None else grid
    if presets is None:
        presets = {f"mini {k}": {key: v[key] for key in SWEPT_KEYS} for k, v in MINI_SAM2_PRESETS.items()}
        presets["thesis"] = dict(THESIS_SAM2)
    base = {k: base[k] for k in SWEPT_KEYS}
    out = []
    for key, values in grid.items():
        for v in values:
            out.append({"group": key, "label": f"{key}={v}", "value": v, "setting": {**base, key: v}})
    for name, values in presets.items():
        out.append({"group": "preset", "label": name, "value": None, "setting": {**base, **values}})
    return out


def _key(setting: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(setting[k] for k in SWEPT_KEYS)


def run_sweep(generator: "MaskGenerator", scenes: Sequence["Scene"], settings: Sequence[dict[str, Any]],
              iou_thresh: float = 0.5) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Evaluate every setting on every scene, reusing each image's embeddings.

    The generator keeps its own config; each setting is applied with ``refilter`` (one call per distinct
    setting and image). Returns ``(per_image, counts)``: one record per (setting label, image) with the
    :func:`mask_stats` fields (and ``"label"``, ``"image"``), and ``{"settings": distinct settings,
    "images", "encoder_calls": image-encoder runs, "generator_runs": refilter calls}``.
    """
    distinct: dict[tuple[Any, ...], dict[str, Any]] = {}
    for s in settings:
        distinct.setdefault(_key(s["setting"]), s["setting"])
    calls0, runs = generator.encoder_calls, 0
    per_image = []
    for i, scene in enumerate(scenes):
        generator.generate(scene.image)  # encodes the image (and crops) once
        results = {}
        for key, setting in distinct.items():
            results[key] = mask_stats(generator.refilter(**setting), scene.instance_masks, iou_thresh)
            runs += 1
        for s in settings:
            per_image.append({"label": s["label"], "image": i, **results[_key(s["setting"])]})
    counts = {"settings": len(distinct), "images": len(scenes), "encoder_calls": generator.encoder_calls - calls0,
              "generator_runs": runs}
    return per_image, counts


def summarise(settings: Sequence[dict[str, Any]], per_image: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One table row per setting: ``group``, ``setting`` (label), the four swept values, ``masks_per_image``,
    ``coverage`` (mean over images), ``recall@0.5`` (hits / objects over all images), ``mean_best_iou``
    (over objects), ``n_objects``, and ``recall_ci95`` / ``best_iou_ci95`` (``"[lo, hi]"``, seeded 95% bootstrap
    intervals over objects, :mod:`ovseg.stats`; plots read ``recall_lo`` / ``recall_hi``)."""
    from ..stats import bootstrap_mean, interval_text

    rows = []
    for s in settings:
        recs = [r for r in per_image if r["label"] == s["label"]]
        n_obj = sum(r["n_objects"] for r in recs)
        best = np.concatenate([r["best_iou"] for r in recs]) if recs else np.zeros(0)
        rows.append({"group": s["group"], "setting": s["label"], **s["setting"],
                     "masks_per_image": float(np.mean([r["n_masks"] for r in recs])) if recs else float("nan"),
                     "coverage": float(np.mean([r["coverage"] for r in recs])) if recs else float("nan"),
                     "recall@0.5": sum(r["hits"] for r in recs) / n_obj if n_obj else float("nan"),
                     "mean_best_iou": float(best.mean()) if len(best) else float("nan"), "n_objects": n_obj})
        rec, iou = bootstrap_mean((best >= 0.5).astype(float).tolist(), unit="objects"), bootstrap_mean(best.tolist())
        rows[-1].update({"recall_ci95": interval_text(rec), "best_iou_ci95": interval_text(iou), "recall_lo": rec.lo,
                         "recall_hi": rec.hi})
    return rows


# ---- figures -----------------------------------------------------------------------------------

_NICE = {"points_per_side": "points per side", "pred_iou_thresh": "predicted-IoU threshold",
         "stability_score_thresh": "stability-score threshold", "crop_n_layers": "crop layers"}


def sweep_figure(rows: Sequence[dict[str, Any]], base: dict[str, Any], thesis: dict[str, Any] | None = None) -> "Figure":
    """One panel per swept setting (recall@0.5 and coverage on the left axis, masks per image on the right),
    plus a panel comparing the presets; the base value is marked dotted, the thesis value dashed."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    thesis = THESIS_SAM2 if thesis is None else thesis
    groups = [g for g in dict.fromkeys(r["group"] for r in rows) if g != "preset"]
    presets = [r for r in rows if r["group"] == "preset"]
    n = len(groups) + (1 if presets else 0)
    fig = Figure(figsize=(3.3 * n, 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n))
    handles = []
    for ax, g in zip(axes, groups):
        rs = sorted((r for r in rows if r["group"] == g), key=lambda r: r[g])
        x = [r[g] for r in rs]
        h1, = ax.plot(x, [r["recall@0.5"] for r in rs], "o-", color="tab:blue", label="object recall @ IoU 0.5")
        if all("recall_lo" in r for r in rs):  # its 95% interval over objects
            ax.fill_between(x, [r["recall_lo"] for r in rs], [r["recall_hi"] for r in rs], color="tab:blue", alpha=0.15,
                            lw=0)
        h2, = ax.plot(x, [r["coverage"] for r in rs], "s-", color="tab:green", label="pixel coverage")
        ax.set_ylim(-0.03, 1.05)
        ax2 = ax.twinx()
        h3, = ax2.plot(x, [r["masks_per_image"] for r in rs], "^--", color="tab:orange", label="masks / image")
        ax2.set_ylim(0, max(1.0, max(r["masks_per_image"] for r in rows)) * 1.1)
        h4 = ax.axvline(base[g], color="grey", ls=":", label="mini default")
        if min(x) <= thesis[g] <= max(x):
            h5 = ax.axvline(thesis[g], color="black", ls="--", lw=0.8, label="thesis value")
        else:  # keep the axis on the swept range; name the thesis value instead
            h5 = Line2D([], [], color="black", ls="--", lw=0.8, label="thesis value")
            ax.text(0.98, 0.02, f"thesis: {thesis[g]}", transform=ax.transAxes, ha="right", va="bottom", fontsize=7)
        ax.set_xlabel(_NICE.get(g, g))
        ax.set_xticks(x)
        ax.set_title(f"varying {_NICE.get(g, g)}")
        ax.grid(alpha=0.3)
        if ax is axes[0]:
            ax.set_ylabel("recall / coverage")
        if g == groups[-1] and not presets:
            ax2.set_ylabel("masks per image")
        handles = [h1, h2, h3, h4, h5]
    if presets:
        ax = axes[-1]
        x = np.arange(len(presets))
        err = np.array([[r["recall@0.5"] - r.get("recall_lo", r["recall@0.5"]),
                         r.get("recall_hi", r["recall@0.5"]) - r["recall@0.5"]] for r in presets]).T  # (2, P)
        bars = ax.bar(x - 0.2, [r["recall@0.5"] for r in presets], 0.4, color="tab:blue", yerr=np.clip(err, 0, None),
                      capsize=2, ecolor="0.3")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
        ax.bar(x + 0.2, [r["coverage"] for r in presets], 0.4, color="tab:green")
        ax.set_ylim(0, 1.05)
        ax2 = ax.twinx()
        ax2.plot(x, [r["masks_per_image"] for r in presets], "^", color="tab:orange", ms=8)
        ax2.set_ylim(0, max(1.0, max(r["masks_per_image"] for r in rows)) * 1.1)
        ax2.set_ylabel("masks per image")
        ax.set_xticks(x, [r["setting"].replace(" ", "\n") for r in presets])
        ax.set_title("presets (whole settings)")
        ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8)
    return fig


def _overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Masks (N, H, W) blended over an image with a solid 1 px outline each, largest first so small masks stay
    visible; uint8 (H, W, 3)."""
    from ..viz import PALETTE

    out = image.astype(np.float32)
    order = np.argsort(-masks.sum(axis=(1, 2)), kind="stable")
    for k, i in enumerate(order):
        c = PALETTE[(k + 1) % len(PALETTE)].astype(np.float32)  # orange first: the world has many blue objects
        m = masks[i]
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        out[m] = (1 - alpha) * out[m] + alpha * c
        out[m & ~inner] = c
    return out.round().clip(0, 255).astype(np.uint8)


def masks_figure(image: np.ndarray, panels: Sequence[tuple[str, np.ndarray]], gt: np.ndarray | None = None) -> "Figure":
    """The image, then one overlay per ``(title, (N, H, W) bool masks)`` panel, then the ground-truth instances."""
    from matplotlib.figure import Figure

    items = [("image", None), *panels] + ([("ground-truth instances", gt)] if gt is not None else [])
    h, w = image.shape[:2]
    fig = Figure(figsize=(2.9 * len(items), 2.9 * h / w + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(items)))
    for ax, (title, m) in zip(axes, items):
        ax.imshow(image if m is None else _overlay(image, m))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    return fig


def log_test(rows: Sequence[dict[str, Any]], config: Any, split: str, protocol: dict[str, Any]) -> bool:
    """Log a :func:`summarise` sweep on the mini world's test split (:func:`ovseg.testlog.record_experiment`,
    task ``mask_sweep``): each setting's recall at IoU 0.5 with its interval. Nothing for ``dev`` or full."""
    from ..testlog import interval, record_experiment

    headline = {f"{r['setting']}|recall": interval(r["recall@0.5"], r["recall_lo"], r["recall_hi"], r["n_objects"],
                                                   "objects")
                for r in rows if r.get("n_objects") and np.isfinite(r.get("recall_lo", np.nan))}
    n = max((r["n_objects"] for r in rows), default=0)
    return record_experiment("mask_sweep", config, n, headline, protocol, f"scenes/{split}", ("sam2",))
