"""Experiments of thesis section 3.2.3 (mask-text alignment): notebook ``3.2.3_alignment``.

A referring task on the mini world: for every prompt about a scene (by default the class names of its
visible objects, :func:`ovseg.world.referring_prompts` kind ``"class"``) the masks are ranked by the
alignment score and the top-ranked mask is compared with the ground truth of the prompt: the union of the
target objects' visible pixels (for a class prompt: all pixels of that class, as in
:func:`ovseg.evaluate.referring_evaluation`).

Metrics per setting (:func:`evaluate_setting`): ``acc@0.5``, the fraction of prompts whose top-1 mask has
IoU >= 0.5 with the ground truth; ``mean_iou``, the mean top-1 IoU; ``hit@k``, the fraction with *some*
mask of the top k at IoU >= 0.5; ``oracle``, the fraction for which any candidate mask reaches IoU >= 0.5
(the ceiling set by the masks). Masks whose mean similarity ``S_i`` is below
``alignment.similarity_threshold`` are not ranked, as in :meth:`~ovseg.OpenVocabSegmentationPipeline.segment`;
a prompt with no ranked mask scores IoU 0.

Masks, dense features, similarity maps and mask/ground-truth IoUs are computed once per image
(:func:`prepare`); each setting then costs one :func:`ovseg.align.score_masks` product per image (the
per-mask pixel weights are cached by :meth:`ovseg.utils.MaskSet.score_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .masks import mask_iou

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from matplotlib.figure import Figure

    from ..align import AlignmentScores
    from ..pipeline import OpenVocabSegmentationPipeline
    from ..utils import MaskSet
    from ..world import Scene

__all__ = ["ALPHAS", "TOP_KS", "PromptCase", "ImageCache", "prompt_cases", "prepare", "rank_hits", "evaluate_setting",
           "setting_difference", "alignment_sweep", "sweep_figure", "scoring_figure", "log_test"]

#: Background-suppression weights swept (thesis: 0.3).
ALPHAS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
TOP_KS: tuple[int, ...] = (1, 3, 5)


@dataclass
class PromptCase:
    """One prompt about a scene: its text, kind and ground truth ``gt`` ((H, W) bool)."""

    prompt: str
    kind: str
    gt: np.ndarray


@dataclass
class ImageCache:
    """Everything alignment needs for one image, computed once.

    Attributes:
        masks: the candidate :class:`~ovseg.utils.MaskSet` (N masks).
        sim: (T, h, w) float32 similarity maps of the T prompts at scoring resolution ``shape``.
        ious: (N, T) float64 IoU of each mask with each prompt's ground truth (full resolution).
        cases: the T prompts.
    """

    masks: "MaskSet"
    sim: "torch.Tensor"
    shape: tuple[int, int]
    ious: np.ndarray
    cases: list[PromptCase]


def prompt_cases(scene: "Scene", kinds: Sequence[str] = ("class",)) -> list[PromptCase]:
    """Referring prompts of ``scene`` (:func:`ovseg.world.referring_prompts`) of the given kinds, each with the
    union of its targets' instance masks as ground truth; prompts repeated for identical objects appear once."""
    from ..world import referring_prompts

    out, seen = [], set()
    for p in referring_prompts(scene):
        if p["kind"] not in kinds or p["prompt"] in seen:
            continue
        seen.add(p["prompt"])
        gt = scene.instance_masks[p["targets"]].any(axis=0)  # (H, W) bool
        if gt.any():
            out.append(PromptCase(p["prompt"], p["kind"], gt))
    return out


def prepare(pipe: "OpenVocabSegmentationPipeline", scenes: Sequence["Scene"],
            kinds: Sequence[str] = ("class",)) -> list[ImageCache]:
    """Masks, features, similarity maps and IoUs per scene (the expensive part, done once)."""
    import torch

    from ..utils import score_shape

    a = pipe.config.alignment
    out = []
    for scene in scenes:
        cases = prompt_cases(scene, kinds)
        if not cases:
            continue
        masks = pipe.generate_masks(scene.image)
        feats = pipe.dense_features(scene.image)
        shape = score_shape(*masks.shape, a.score_max_side)
        with torch.inference_mode():
            text = pipe.clip.encode_text([c.prompt for c in cases])  # (T, E)
            sim = feats.similarity(text, size=shape, weights=pipe.clip.layer_weights)  # (T, h, w)
        ious = mask_iou(masks.masks, np.stack([c.gt for c in cases]))  # (N, T)
        out.append(ImageCache(masks, sim, shape, ious, cases))
    return out


def rank_hits(order: np.ndarray, ious: np.ndarray, top_ks: Sequence[int] = TOP_KS, thresh: float = 0.5) -> dict[str, float]:
    """Metrics of one ranking: ``order`` (R,) mask indices best first, ``ious`` (N,) IoU of each mask with the target.

    Returns ``{"iou": top-1 IoU (0 if R == 0), "hit@k": 1.0 if some of the first k has IoU >= thresh else 0.0}``.
    """
    ranked = ious[order] if len(order) else np.zeros(0)
    out = {"iou": float(ranked[0]) if len(ranked) else 0.0}
    for k in top_ks:
        out[f"hit@{k}"] = float((ranked[:k] >= thresh).any()) if len(ranked) else 0.0
    return out


def _records(caches: Sequence[ImageCache], alpha: float, spatial: bool, boundary_width: float, min_weight: float,
             threshold: float, top_ks: Sequence[int], kinds: Sequence[str] | None
             ) -> tuple[list[dict[str, float]], list[float], list[float]]:
    """Per prompt (image order, then prompt order): its :func:`rank_hits` record, oracle hit and no-mask flag."""
    from ..align import rank_masks, score_masks

    recs, oracle, empty = [], [], []
    for c in caches:
        weights = c.masks.score_weights(c.shape, boundary_width if spatial else 0.0, min_weight)  # (N, h*w)
        scores = score_masks(weights, c.sim, alpha)
        for t, case in enumerate(c.cases):
            if kinds is not None and case.kind not in kinds:
                continue
            order = rank_masks(scores, t, threshold, max(top_ks))
            recs.append(rank_hits(order, c.ious[:, t], top_ks))
            oracle.append(float(len(c.masks) > 0 and c.ious[:, t].max() >= 0.5))
            empty.append(float(len(order) == 0))
    return recs, oracle, empty


def evaluate_setting(caches: Sequence[ImageCache], alpha: float, spatial: bool, boundary_width: float = 4.0,
                     min_weight: float = 0.25, threshold: float = 0.2, top_ks: Sequence[int] = TOP_KS,
                     kinds: Sequence[str] | None = None) -> dict[str, Any]:
    """Referring metrics of one alignment setting over the cached images (prompts of ``kinds``; None = all).

    Returns ``{"alpha", "spatial", "n_prompts", "acc@0.5", "acc_ci95", "mean_iou", "iou_ci95", "hit@k"...,
    "no_mask", "oracle", "acc_lo", "acc_hi"}``; rates in [0, 1]. ``no_mask``: fraction of prompts for which no mask
    passed ``threshold``. ``*_ci95``: ``"[lo, hi]"`` seeded 95% bootstrap intervals over prompts (:mod:`ovseg.stats`).
    """
    from ..stats import bootstrap_mean, interval_text

    recs, oracle, empty = _records(caches, alpha, spatial, boundary_width, min_weight, threshold, top_ks, kinds)
    n = len(recs)

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in recs])) if n else float("nan")

    row = {"alpha": float(alpha), "spatial": bool(spatial), "n_prompts": n, "acc@0.5": mean("hit@1") if 1 in top_ks else
           float("nan"), "mean_iou": mean("iou")}
    acc = bootstrap_mean([r["hit@1"] for r in recs], unit="prompts") if 1 in top_ks else None
    iou = bootstrap_mean([r["iou"] for r in recs], unit="prompts")
    row["acc_ci95"] = interval_text(acc)
    row["iou_ci95"] = interval_text(iou)
    row.update({f"hit@{k}": mean(f"hit@{k}") for k in top_ks})
    row["no_mask"] = float(np.mean(empty)) if n else float("nan")
    row["oracle"] = float(np.mean(oracle)) if n else float("nan")
    row["acc_lo"], row["acc_hi"] = (acc.lo, acc.hi) if acc is not None else (float("nan"), float("nan"))
    return row


def setting_difference(caches: Sequence[ImageCache], a: tuple[float, bool], b: tuple[float, bool],
                       boundary_width: float = 4.0, min_weight: float = 0.25, threshold: float = 0.2,
                       kinds: Sequence[str] | None = None) -> dict[str, Any]:
    """Paired top-1 accuracy difference, setting ``a`` minus setting ``b`` (each ``(alpha, spatial)``), over the same
    prompts: ``{"difference", "ci95" ("[lo, hi]", points of accuracy in [0, 1]), "n_prompts", "verdict"}``. One
    bootstrap resample of the prompts feeds both settings, so the interval is that of the difference."""
    from ..stats import bootstrap_mean, interval_text, noise_verdict

    ra, _, _ = _records(caches, a[0], a[1], boundary_width, min_weight, threshold, (1,), kinds)
    rb, _, _ = _records(caches, b[0], b[1], boundary_width, min_weight, threshold, (1,), kinds)
    iv = bootstrap_mean([x["hit@1"] - y["hit@1"] for x, y in zip(ra, rb)], unit="prompts")
    if iv.n == 0:
        return {"difference": float("nan"), "ci95": None, "n_prompts": 0, "verdict": "no prompts"}
    verdict = noise_verdict(iv.lo, iv.hi, "first higher", "first lower")
    return {"difference": iv.value, "ci95": interval_text(iv), "n_prompts": iv.n, "verdict": verdict}


def alignment_sweep(caches: Sequence[ImageCache], alphas: Sequence[float] = ALPHAS, spatial: Sequence[bool] = (True, False),
                    **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`evaluate_setting` for every (spatial weighting, alpha) pair; spatial outer."""
    return [evaluate_setting(caches, a, s, **kwargs) for s in spatial for a in alphas]


def sweep_figure(rows: Sequence[dict[str, Any]], thesis_alpha: float = 0.3) -> "Figure":
    """Top-1 accuracy and mean IoU against alpha (spatial weighting on / off), and hit@k at the thesis alpha."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax1, ax2, ax3 = fig.subplots(1, 3)
    styles = {True: ("o-", "spatial weighting on"), False: ("s--", "spatial weighting off")}
    for sp in (True, False):
        rs = sorted((r for r in rows if r["spatial"] == sp), key=lambda r: r["alpha"])
        if not rs:
            continue
        fmt, label = styles[sp]
        line, = ax1.plot([r["alpha"] for r in rs], [r["acc@0.5"] for r in rs], fmt, label=label)
        if all(np.isfinite(r.get("acc_lo", np.nan)) for r in rs):  # 95% interval over prompts
            ax1.fill_between([r["alpha"] for r in rs], [r["acc_lo"] for r in rs], [r["acc_hi"] for r in rs],
                             color=line.get_color(), alpha=0.12, lw=0)
        ax2.plot([r["alpha"] for r in rs], [r["mean_iou"] for r in rs], fmt, label=label)
    oracle = rows[0]["oracle"]
    for ax, what in ((ax1, "top-1 accuracy (IoU >= 0.5)"), (ax2, "mean top-1 IoU")):
        ax.axvline(thesis_alpha, color="black", ls=":", lw=0.8, label=f"thesis alpha = {thesis_alpha}")
        ax.set_xlabel("background suppression alpha")
        ax.set_ylabel(what)
        ax.set_title(f"{what} vs alpha")
        ax.grid(alpha=0.3)
    ax1.axhline(oracle, color="grey", ls="-.", lw=0.8, label=f"oracle (best mask) {oracle:.2f}")
    lo = min(min(r.get("acc_lo", r["acc@0.5"]), r["acc@0.5"], r["mean_iou"]) for r in rows)
    for ax in (ax1, ax2):
        ax.set_ylim(max(0.0, lo - 0.1), 1.02)
    ax1.legend(fontsize=7, loc="lower left")
    ks = sorted(int(k.split("@")[1]) for k in rows[0] if k.startswith("hit@"))
    x = np.arange(len(ks))
    for j, sp in enumerate((True, False)):
        r = min((r for r in rows if r["spatial"] == sp), key=lambda r: abs(r["alpha"] - thesis_alpha), default=None)
        if r is None:
            continue
        bars = ax3.bar(x + (j - 0.5) * 0.38, [r[f"hit@{k}"] for k in ks], 0.38, label=styles[sp][1])
        ax3.bar_label(bars, fmt="%.2f", fontsize=7)
    ax3.axhline(oracle, color="grey", ls="-.", lw=0.8, label="oracle")
    ax3.set_xticks(x, [f"top-{k}" for k in ks])
    ax3.set_ylim(0, 1.1)
    ax3.set_ylabel("some mask of the top k at IoU >= 0.5")
    ax3.set_title(f"top-k hit rate at alpha = {thesis_alpha}")
    ax3.legend(fontsize=7, loc="lower right")
    return fig


def scoring_figure(image: np.ndarray, prompt: str, sim: np.ndarray, masks: "MaskSet",
                   scores: dict[str, "AlignmentScores"], k: int = 3) -> "Figure":
    """One row per scoring setting: the prompt's similarity map, then its top-k masks with S_i, O_i and final score.

    Args:
        image: (H, W, 3) uint8.  sim: (H, W) similarity map of the prompt.
        scores: ``{setting label: AlignmentScores (N, 1)}`` for this one prompt.
    """
    from matplotlib.figure import Figure

    from ..align import rank_masks
    from .masks import _overlay

    rows = list(scores)
    fig = Figure(figsize=(2.4 * (k + 1), 2.5 * len(rows) + 0.3), layout="constrained")
    axes = np.asarray(fig.subplots(len(rows), k + 1, squeeze=False))
    for r, label in enumerate(rows):
        sc = scores[label]
        im = axes[r, 0].imshow(sim, cmap="magma")
        axes[r, 0].set_title(f'cos(f_p, "{prompt}")', fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=8)
        fig.colorbar(im, ax=axes[r, 0], shrink=0.7)
        order = rank_masks(sc, 0, -1.0, k)
        for j in range(k):
            ax = axes[r, j + 1]
            if j < len(order):
                i = int(order[j])
                ax.imshow(_overlay(image, masks.masks[i][None], alpha=0.6))
                ax.set_title(f"#{j + 1}: final {sc.final[i, 0]:.3f}\nS={sc.mean_similarity[i, 0]:.3f} "
                             f"O={sc.outside_similarity[i, 0]:.3f}", fontsize=7)
            else:
                ax.imshow(image)
                ax.set_title("(no mask)", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def log_test(kind_rows: Sequence[dict[str, Any]], diffs: dict[str, dict[str, Any]], config: Any, split: str,
             n_images: int) -> bool:
    """Log the referring accuracies per prompt kind and setting of a test-split run (:func:`evaluate_setting`
    rows with ``kind`` and ``setting``) and the paired differences of :func:`setting_difference` per kind
    (:func:`ovseg.testlog.record_experiment`, task ``alignment``). Nothing for ``dev`` or the full profile."""
    from ..stats import parse_interval
    from ..testlog import interval, record_experiment

    headline = {}
    for r in kind_rows:
        if r["n_prompts"] and np.isfinite(r.get("acc_lo", np.nan)):
            headline[f"{r['kind']}|{r['setting']}|acc"] = interval(r["acc@0.5"], r["acc_lo"], r["acc_hi"],
                                                                   r["n_prompts"], "prompts")
    for kind, dd in diffs.items():
        if dd["ci95"]:
            lo, hi = parse_interval(dd["ci95"])
            headline[f"{kind}|thesis_minus_plain"] = interval(dd["difference"], lo, hi, dd["n_prompts"], "prompts")
    return record_experiment("alignment", config, n_images, headline, {"n_images": n_images}, f"scenes/{split}")
