"""Experiments of notebook 3.2.4 (generative editing): mask preparation, the three operations, and the
effect of mask dilation / blur measured against the mini world's exact edit ground truth.

The mini world can draw any scene again with one object removed or replaced
(:func:`ovseg.world.render_scene` with ``edit=``), so an edit can be compared with what the scene
*should* look like: :func:`blur_dilation_sweep` reports the PSNR inside the repainted region against
that ground truth, beside what the segmentation stage sees there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..pipeline import OpenVocabSegmentationPipeline

__all__ = ["mask_preparation_figure", "edits_figure", "psnr_inside", "blur_dilation_sweep", "sweep_figure",
           "edit_quality_rows", "log_sweep_test"]


def mask_preparation_figure(image: np.ndarray, mask: np.ndarray, settings: Sequence[tuple[int, float]]) -> "Figure":
    """The soft repaint mask for each ``(dilation px, blur sigma px)``, over the image.

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) bool object mask.
        settings: e.g. ``[(0, 0), (5, 0), (5, 8)]``.
    """
    from matplotlib.figure import Figure

    from ..inpaint import prepare_mask

    fig = Figure(figsize=(3.0 * (len(settings) + 1), 3.0), layout="constrained")
    axes = fig.subplots(1, len(settings) + 1)
    axes[0].imshow(image)
    axes[0].contour(mask, levels=[0.5], colors="white", linewidths=0.8)
    axes[0].set_title("object mask")
    for ax, (dilation, blur) in zip(axes[1:], settings):
        soft = prepare_mask(mask, dilation, blur)  # (H, W) float32 in [0, 1], 1 = repaint
        ax.imshow(soft, cmap="gray", vmin=0, vmax=1)
        ax.contour(mask, levels=[0.5], colors="red", linewidths=0.6)
        ax.set_title(f"dilation {dilation} px, blur {blur:g} px\nweight at object edge {_edge_weight(mask, soft):.2f}")
    for ax in axes:
        ax.axis("off")
    return fig


def _edge_weight(mask: np.ndarray, soft: np.ndarray) -> float:
    """Mean repaint weight on the object's boundary pixels (1 = fully repainted)."""
    import cv2

    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    edge = mask & ~inner
    return float(soft[edge].mean()) if edge.any() else float("nan")


def edits_figure(image: np.ndarray, edits: Sequence[tuple[str, np.ndarray]], mask: np.ndarray | None = None) -> "Figure":
    """Input (with the edited mask outlined) beside each ``(title, edited HWC uint8 image)``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.0 * (len(edits) + 1), 3.0), layout="constrained")
    axes = fig.subplots(1, len(edits) + 1)
    axes[0].imshow(image)
    if mask is not None:
        axes[0].contour(mask, levels=[0.5], colors="white", linewidths=0.8)
    axes[0].set_title("input")
    for ax, (title, img) in zip(axes[1:], edits):
        ax.imshow(np.asarray(img))
        ax.set_title(title)
    for ax in axes:
        ax.axis("off")
    return fig


def psnr_inside(result: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB) of ``result`` against ``truth`` (both (H, W, 3) uint8) over the ``region`` (H, W) bool pixels."""
    if not region.any():
        return float("nan")
    diff = result.astype(np.float64)[region] - truth.astype(np.float64)[region]
    mse = float((diff ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def blur_dilation_sweep(pipe: "OpenVocabSegmentationPipeline", seeds: Sequence[int], settings: Sequence[tuple[int, float]],
                        operation: str = "remove", seed: int = 0, scene_config: Any = None) -> tuple[list[dict[str, Any]], dict]:
    """Edit the largest object of each world scene under every ``(dilation, blur)`` and score it.

    For each scene ``render_scene(s)`` the largest object is removed (or, with ``operation="replace"``,
    replaced by another base class fixed per scene) with the pipeline's inpainter, using the exact object
    mask. Scores per setting, averaged over scenes:

    * ``psnr_vs_truth_db``: PSNR inside the object's dilated region (the union of the object and its
      replacement, dilated by the largest dilation swept, so every setting is scored on the same pixels)
      against the scene drawn with the edit applied (exact ground truth);
    * ``success``: fraction whose region the segmentation stage classifies as the target
      (background for remove; the new class for replace), as in :mod:`ovseg.edit_eval`;
    * ``repainted_px``: mean number of pixels with repaint weight > 0.

    Returns:
        (rows, examples): one row per setting; ``examples[(dilation, blur)]`` is the first scene's edited
        image (H, W, 3) uint8, and ``examples["input"]`` / ``examples["truth"]`` / ``examples["mask"]`` its
        input, ground truth and object mask.
    """
    from dataclasses import replace

    import cv2

    from ..edit_eval import classify_region
    from ..stats import bootstrap_mean, bootstrap_rate, interval_text
    from ..world import BASE_CLASSES, CLASS_NAMES, SceneConfig, render_scene

    if operation not in ("remove", "replace"):
        raise ValueError("the sweep edits with remove or replace")
    cfg = scene_config or SceneConfig(split="base", n_objects=(1, 3), textured_objects=0.0)
    inpainter = pipe.inpainter
    base_cfg = inpainter.config
    grow = max(d for d, _ in settings) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1,) * 2)
    per: dict[tuple[int, float], dict[str, list[float]]] = {s: {"psnr": [], "success": [], "px": []} for s in settings}
    examples: dict[Any, Any] = {}
    try:
        for k, s in enumerate(seeds):
            scene = render_scene(int(s), cfg)
            i = int(np.argmax([o.area for o in scene.objects]))
            obj = scene.objects[i]
            new = None if operation == "remove" else [c for c in BASE_CLASSES if c != obj.class_name][int(s) % 40]
            truth = render_scene(int(s), cfg, edit=(i, new))
            region = scene.instance_masks[i] | (truth.instance_masks[i] if new else False)
            region = cv2.dilate(region.astype(np.uint8), kernel).astype(bool)
            if k == 0:
                examples.update(input=scene.image, truth=truth.image, mask=scene.instance_masks[i])
            for d, b in settings:
                inpainter.config = replace(base_cfg, mask_dilation=int(d), mask_blur=float(b))
                res = inpainter.edit(scene.image, scene.instance_masks[i], operation, edit_prompt=new,
                                     object_prompt=obj.class_name, seed=seed)
                out = np.asarray(res.image)
                found = classify_region(pipe, out, scene.instance_masks[i], CLASS_NAMES)
                per[(d, b)]["psnr"].append(psnr_inside(out, truth.image, region))
                per[(d, b)]["success"].append(float(found == (new or "background")))
                per[(d, b)]["px"].append(float((res.mask > 0).sum()))  # the repaint mask the edit used
                if k == 0:
                    examples[(d, b)] = out
    finally:
        inpainter.config = base_cfg
    rows = []
    for (d, b), v in per.items():
        psnr, ok = bootstrap_mean(v["psnr"], unit="scenes"), bootstrap_rate(v["success"])
        rows.append({"operation": operation, "dilation_px": d, "blur_px": b, "psnr_vs_truth_db": round(psnr.value, 2),
                     "psnr_ci95": interval_text(psnr, digits=2), "success": round(ok.value, 3),
                     "success_ci95": interval_text(ok),
                     "repainted_px": round(float(np.mean(v["px"])), 1), "scenes": len(seeds)})
    return rows, examples


def sweep_figure(rows: Sequence[dict[str, Any]], examples: dict) -> "Figure":
    """Top: the first scene's input, ground truth and edit per setting; bottom: PSNR vs truth and success per setting."""
    from matplotlib.figure import Figure

    from ..stats import error_ends

    settings = [(r["dilation_px"], r["blur_px"]) for r in rows]
    n = len(settings) + 2
    fig = Figure(figsize=(2.4 * n, 5.4), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.0, 0.9])
    axes = top.subplots(1, n)
    axes[0].imshow(examples["input"])
    axes[0].contour(examples["mask"], levels=[0.5], colors="white", linewidths=0.8)
    axes[0].set_title("input")
    axes[1].imshow(examples["truth"])
    axes[1].set_title("ground truth")
    for ax, s in zip(axes[2:], settings):
        ax.imshow(examples[s])
        ax.set_title(f"d={s[0]}, blur={s[1]:g}")
    for ax in axes:
        ax.axis("off")
    ax1, ax2 = bottom.subplots(1, 2)
    labels = [f"d{d}/b{b:g}" for d, b in settings]
    x = np.arange(len(rows))
    for ax, key, ci, colour in ((ax1, "psnr_vs_truth_db", "psnr_ci95", "tab:blue"), (ax2, "success", "success_ci95",
                                                                                    "tab:green")):
        err = np.array([error_ends(r.get(ci), r[key]) for r in rows]).T  # (2, settings)
        ax.bar(x, [r[key] for r in rows], color=colour, yerr=err, capsize=2, ecolor="0.3")
    ax1.set_ylabel("PSNR vs ground truth (dB)")
    ax1.set_title(f"fidelity inside the region ({rows[0]['scenes']} scenes, 95% intervals)")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("success rate")
    ax2.set_title(f"{rows[0]['operation']}: region classified as the target")
    for ax in (ax1, ax2):
        ax.set_xticks(x, labels, rotation=30, fontsize=7)
    return fig


def edit_quality_rows(summaries: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Table rows from :func:`ovseg.edit_eval.evaluate_edits` summaries: one row per ``(label, summary)`` and kind of
    edit the summary has (remove, replace base, replace novel, restyle) with ``n`` (edits of that kind), ``success``
    (%) and its 95% interval ``success_ci95`` (edits resampled), and per method ``n_edits``, ``split``, ``steps``,
    ``psnr_outside_min_db``, ``fid``, ``clip_score`` (no timings: tables must not drift)."""
    from ..edit_eval import RATE_KEYS

    kinds = {"success_remove": "remove", "success_replace_base": "replace, base class",
             "success_replace_novel": "replace, novel class", "success_style": "restyle"}
    rows = []
    for label, s in summaries:
        for key in RATE_KEYS:
            iv = (s.get("ci95") or {}).get(key) or {}
            if s.get(key) is None:
                continue
            lo, hi = iv.get("ci95") or (None, None)
            rows.append({"method": label, "edit": kinds[key], "n": iv.get("n"), "success": round(100 * s[key], 1),
                         "success_ci95": None if lo is None else f"[{100 * lo:.1f}, {100 * hi:.1f}]",
                         "n_edits": s.get("n_edits"), "split": s.get("split"), "steps": s.get("steps"),
                         "psnr_outside_min_db": s.get("psnr_outside_min_db"), "fid": s.get("fid"),
                         "clip_score": s.get("clip_score")})
    return rows


def log_sweep_test(rows: Sequence[dict[str, Any]], config: Any, split: str, n_scenes: int, seed: int) -> bool:
    """Log a :func:`blur_dilation_sweep` on the limitations test block (:func:`ovseg.testlog.record_experiment`,
    task ``edit_mask_sweep``): each setting's success rate with its interval. Nothing for ``dev`` or full."""
    from ..stats import parse_interval
    from ..testlog import interval, record_experiment

    headline = {}
    for r in rows:
        if r.get("success_ci95"):
            lo, hi = parse_interval(r["success_ci95"])
            headline[f"d{r['dilation_px']}/b{r['blur_px']:g}|success"] = interval(r["success"], lo, hi, r["scenes"],
                                                                                 "scenes")
    return record_experiment("edit_mask_sweep", config, n_scenes, headline,
                             {"settings": [[r["dilation_px"], r["blur_px"]] for r in rows], "seed": seed,
                              "operation": rows[0]["operation"] if rows else None},
                             f"limitations/{split}", ("sam2", "clip", "inpainting"))
