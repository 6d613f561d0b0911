"""Experiments of thesis section 3.2.1 (dense CLIP features): notebook ``3.2.1_clip_features``.

* which transformer layer localises best: per-layer and fused similarity heatmaps
  (:func:`similarity_maps`, :func:`heatmap_figure`) and dense per-pixel segmentation quality per layer
  (:func:`dense_eval`);
* what prompt ensembling buys: the same evaluation with a bare prompt, each single template, and the
  ensemble (:func:`template_settings`), plus how far apart the class text embeddings are
  (:func:`text_separation`); :func:`ensemble_figure` plots the table.

Dense evaluation protocol: every pixel takes the class whose text embedding has the highest cosine with
the pixel's (bilinearly upsampled) feature, over all ``C`` class names of the dataset (mini: background +
48 shapes); a confusion matrix is summed over the images and turned into pixel accuracy and mIoU
(:mod:`ovseg.metrics`; classes that never occur in ground truth or prediction are skipped).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..datasets import SegDataset
    from ..features import DenseCLIP, DenseFeatures
    from ..world import Scene

__all__ = ["layer_settings", "template_settings", "sample_scene", "similarity_maps", "heatmap_figure",
           "object_contrast", "pixel_predictions", "dense_eval", "text_separation", "nearest_other_cosine",
           "ensemble_figure", "log_test", "WORLD_SAMPLE_CONFIG", "block_settings", "global_path_check",
           "block_figure", "log_global_check"]

#: The SceneConfig keyword arguments ``data/make_samples.py`` draws ``data/samples/world_<k>.png`` with
#: (seed ``EVAL_SEED_OFFSET + 500_000 + k``).
WORLD_SAMPLE_CONFIG: dict[str, Any] = {"size": (192, 256), "n_objects": (2, 4), "split": "base", "textured_objects": 0.0}


def layer_settings(clip: "DenseCLIP") -> list[tuple[str, list[int]]]:
    """(label, layers) pairs: each extracted layer alone, then all of them fused (the pipeline's setting)."""
    layers = list(clip.extract_layers)
    out = [(f"layer {layer}", [layer]) for layer in layers]
    if len(layers) > 1:
        out.append(("fused " + "+".join(str(x) for x in layers), layers))
    return out


def template_settings(clip: "DenseCLIP", max_single: int = 3,
                      extra: Sequence[str] = ("imagenet80",)) -> list[tuple[str, list[str]]]:
    """(label, templates) pairs: the bare prompt, single templates, the model's ensemble, then ``extra`` sets.

    Single templates are the ensemble's own when it has at most ``max_single`` (the mini CLIP's 3), else
    CLIP's standard ``"a photo of a {}."`` (the full profile's 80-template ensemble). ``extra`` names
    template sets of :func:`ovseg.features.get_templates` (e.g. ``"imagenet80"``, the thesis' ensemble)
    added unless they equal the model's ensemble. For the mini CLIP most of their words are outside its
    vocabulary (they become ``<unk>``).
    """
    from ..features import get_templates

    ens = list(clip.templates)
    out: list[tuple[str, list[str]]] = [('bare "{}"', ["{}"])]
    singles = ens if len(ens) <= max_single else ["a photo of a {}."]
    out += [(f'single "{t}"', [t]) for t in singles if t != "{}"]
    if len(ens) > 1:
        out.append((f"ensemble ({len(ens)})", ens))
    for name in extra:
        t = get_templates(name)
        if t != ens:
            out.append((f"{name} ({len(t)})", t))
    return out


def sample_scene(k: int) -> "Scene":
    """The mini-world scene of the shipped sample ``data/samples/world_<k>.png`` (image, instances, objects).

    Re-rendered from its seed; raises ``ValueError`` if it no longer matches the shipped PNG.
    """
    from ..io import load_image
    from ..paths import SAMPLES_DIR
    from ..world import EVAL_SEED_OFFSET, SceneConfig, render_scene

    scene = render_scene(EVAL_SEED_OFFSET + 500_000 + k, SceneConfig(**WORLD_SAMPLE_CONFIG))
    if not np.array_equal(scene.image, load_image(SAMPLES_DIR / f"world_{k}.png")):
        raise ValueError(f"world_{k}.png differs from its re-rendered scene; regenerate with data/make_samples.py")
    return scene


def similarity_maps(clip: "DenseCLIP", feats: "DenseFeatures", prompts: Sequence[str],
                    layers: Sequence[tuple[str, Sequence[int]]], templates: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Cosine similarity maps per layer setting.

    Returns:
        ``{label: (T, H, W) float32}`` in [-1, 1] at the image's size, one map per prompt.
    """
    text = clip.encode_text(list(prompts), templates=templates)  # (T, E)
    out = {}
    for label, sel in layers:
        weights = clip.layer_weights if list(sel) == list(clip.extract_layers) else None
        out[label] = feats.similarity(text, layers=list(sel), weights=weights).numpy().astype(np.float32)
    return out


def heatmap_figure(image: np.ndarray, prompts: Sequence[str], maps: dict[str, np.ndarray], title: str = "") -> "Figure":
    """Rows = prompts, columns = the image then one similarity heatmap per layer setting (shared colour scale).

    Args:
        image: (H, W, 3) uint8.
        maps: ``{label: (T, H, W)}`` from :func:`similarity_maps`, T = len(prompts).
    """
    from matplotlib.figure import Figure

    labels = list(maps)
    n_rows, n_cols = len(prompts), 1 + len(labels)
    h, w = image.shape[:2]
    fig = Figure(figsize=(1.9 * n_cols * w / max(h, w) + 0.8, 1.9 * n_rows * h / max(h, w) + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(n_rows, n_cols, squeeze=False))
    vals = np.concatenate([m.ravel() for m in maps.values()])
    vmin, vmax = float(np.percentile(vals, 1)), float(np.percentile(vals, 99.9))
    im = None
    for r, prompt in enumerate(prompts):
        axes[r, 0].imshow(image)
        axes[r, 0].set_ylabel(f'"{prompt}"', fontsize=9)
        for c, label in enumerate(labels, start=1):
            im = axes[r, c].imshow(maps[label][r], cmap="magma", vmin=vmin, vmax=vmax)
            if r == 0:
                axes[r, c].set_title(label)
        if r == 0:
            axes[r, 0].set_title("image")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="cosine(pixel feature, text)")
    if title:
        fig.suptitle(title)
    return fig


def object_contrast(scene: "Scene", prompts: Sequence[str], maps: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean over prompts of (mean cosine on the prompted class's pixels - mean cosine on background pixels).

    Args:
        scene: a scene with ``instance_masks`` (K, H, W) and ``objects``; prompts are class names in it.
        maps: ``{label: (T, H, W)}`` from :func:`similarity_maps` for ``prompts``.

    Returns:
        ``{label: float}``; larger = the map singles out the prompted object more clearly.
    """
    background = ~scene.instance_masks.any(axis=0)  # (H, W)
    out = {}
    for label, m in maps.items():
        diffs = []
        for t, p in enumerate(prompts):
            obj = scene.instance_masks[[k for k, o in enumerate(scene.objects) if o.class_name == p]].any(axis=0)
            diffs.append(float(m[t][obj].mean() - m[t][background].mean()))
        out[label] = float(np.mean(diffs))
    return out


def pixel_predictions(sim: "Any") -> np.ndarray:
    """(T, H, W) similarity maps (tensor or array) -> (H, W) int64 index of the best prompt per pixel."""
    return np.asarray(sim).argmax(axis=0).astype(np.int64)


def _row(cm: np.ndarray, splits: dict[str, list[int]]) -> dict[str, float]:
    from ..metrics import metrics_from_confusion

    m = metrics_from_confusion(cm)
    row = {"pixel_acc": m.pixel_accuracy, "mIoU": m.miou}
    for name, idx in splits.items():
        row[f"mIoU_{name}"] = m.subset_miou(idx)
    return row


def dense_eval(clip: "DenseCLIP", dataset: "SegDataset", n_images: int, layers: Sequence[tuple[str, Sequence[int]]],
               templates: Sequence[tuple[str, Sequence[str]]]) -> list[dict[str, Any]]:
    """Dense per-pixel segmentation of the first ``n_images`` scenes for every (layer, template) setting.

    Each image's features are computed once; each template set's text embeddings once.

    Returns:
        One row per setting, layer settings outer: ``{"layers", "templates", "n_templates", "pixel_acc",
        "mIoU", "mIoU_<split>"..., "mIoU_ci95", "mIoU_<split>_ci95"..., "images"}`` (floats in [0, 1]; splits
        from ``dataset.splits``, e.g. base / novel; ``*_ci95``: ``"[lo, hi]"`` seeded 95% bootstrap interval over
        images, each resample summing the per-image confusion matrices, :func:`ovseg.stats.bootstrap_confusion`).
    """
    import torch

    from ..metrics import confusion_matrix

    c = dataset.num_classes
    texts = {name: clip.encode_text(dataset.class_names, templates=list(t)) for name, t in templates}  # (C, E)
    n = min(n_images, len(dataset))
    cms = {(ln, tn): np.zeros((n, c, c), np.int64) for ln, _ in layers for tn, _ in templates}  # per image
    for i in range(n):
        sample = dataset[i]
        feats = clip.dense_features(sample.image)
        for ln, sel in layers:
            weights = clip.layer_weights if list(sel) == list(clip.extract_layers) else None
            for tn, _ in templates:
                with torch.inference_mode():
                    sim = feats.similarity(texts[tn], size=sample.label.shape, layers=list(sel), weights=weights)
                pred = pixel_predictions(sim.numpy())
                cms[(ln, tn)][i] = confusion_matrix(pred, sample.label, c, dataset.ignore_index)
    rows = []
    n_templates = {name: len(t) for name, t in templates}
    for ln, _ in layers:
        for tn, _ in templates:
            per_image = cms[(ln, tn)]  # (n, C, C)
            rows.append({"layers": ln, "templates": tn, "n_templates": n_templates[tn],
                         **_row(per_image.sum(axis=0), dataset.splits), **_intervals(per_image, dataset.splits),
                         "images": n})
    return rows


def _intervals(cms: np.ndarray, splits: dict[str, list[int]]) -> dict[str, str | None]:
    """``mIoU_ci95`` and ``mIoU_<split>_ci95`` (``"[lo, hi]"``, 3 decimals) of (n, C, C) per-image confusions."""
    from ..metrics import metrics_from_confusion
    from ..stats import bootstrap_confusion, interval_text

    out = {}
    for key, idx in (("mIoU", None), *((f"mIoU_{k}", v) for k, v in splits.items())):
        iv = bootstrap_confusion(cms, (lambda cm: metrics_from_confusion(cm).miou) if idx is None else
                                 (lambda cm, idx=idx: metrics_from_confusion(cm).subset_miou(idx)))
        out[f"{key}_ci95"] = interval_text(iv)
        if idx is None:  # numeric ends of the headline interval (plots, the test-set log)
            out["mIoU_lo"], out["mIoU_hi"] = iv.lo, iv.hi
    return out


def text_separation(clip: "DenseCLIP", class_names: Sequence[str], templates: Sequence[str]) -> float:
    """Mean over classes of the cosine to the *nearest other* class embedding (lower = better separated), in [-1, 1]."""
    text = clip.encode_text(list(class_names), templates=list(templates)).numpy().astype(np.float64)  # (C, E)
    return nearest_other_cosine(text)


def nearest_other_cosine(emb: np.ndarray) -> float:
    """(C, E) L2-normalised rows -> mean over rows of the largest cosine to another row (C >= 2)."""
    gram = emb @ emb.T  # (C, C)
    np.fill_diagonal(gram, -np.inf)
    return float(gram.max(axis=1).mean())


def ensemble_figure(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = ("mIoU", "mIoU_novel")) -> "Figure":
    """Grouped bars: one panel per metric, x = template setting, one bar per layer setting."""
    from matplotlib.figure import Figure

    from ..stats import error_ends

    layer_names = list(dict.fromkeys(r["layers"] for r in rows))
    tmpl_names = list(dict.fromkeys(r["templates"] for r in rows))
    import textwrap

    metrics = [m for m in metrics if m in rows[0]]
    fig = Figure(figsize=(5.6 * len(metrics), 3.9), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    width = 0.8 / len(layer_names)
    x = np.arange(len(tmpl_names))
    handles = []
    for ax, metric in zip(axes, metrics):
        handles = []
        for k, ln in enumerate(layer_names):
            sel = [next(r for r in rows if r["layers"] == ln and r["templates"] == tn) for tn in tmpl_names]
            vals = [r[metric] for r in sel]
            err = np.array([error_ends(r.get(f"{metric}_ci95"), r[metric]) for r in sel]).T  # (2, T): 95% interval
            bars = ax.bar(x + (k - (len(layer_names) - 1) / 2) * width, vals, width, label=ln, yerr=err,
                          error_kw={"elinewidth": 0.6, "ecolor": "0.3"})
            ax.bar_label(bars, fmt="%.2f", fontsize=6, padding=2, rotation=90)
            handles.append(bars)
        ax.set_xticks(x, [textwrap.fill(t, 13) for t in tmpl_names], fontsize=7)
        ax.set_ylabel(metric.replace("_", " "))
        ax.set_ylim(0, 1.0)
        ax.set_title(f"dense per-pixel {metric.replace('_', ' ')} by prompt templates"
                     + (f" ({rows[0]['images']} images, 95% intervals)" if "images" in rows[0] else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.legend(handles=handles, labels=layer_names, title="features", loc="outside right center", fontsize=8)
    return fig



def log_test(rows: Sequence[dict[str, Any]], config: Any, split: str, n_images: int) -> bool:
    """Log a :func:`dense_eval` on the mini world's test split (:func:`ovseg.testlog.record_experiment`, task
    ``dense_features``): each setting's mIoU with its interval. Does nothing for ``dev`` or the full profile."""
    from ..testlog import interval, record_experiment

    headline = {f"{r['layers']}|{r['templates']}|mIoU": interval(r["mIoU"], r["mIoU_lo"], r["mIoU_hi"], r["images"],
                                                                 "images")
                for r in rows if "mIoU_lo" in r and np.isfinite(r["mIoU_lo"])}
    return record_experiment("dense_features", config, rows[0]["images"] if rows else 0, headline,
                             {"settings": [[r["layers"], r["templates"]] for r in rows], "n_images": n_images},
                             f"scenes/{split}", ("clip",))


# ---- one CLIP block by block (issue #22: the contrastive mini CLIP through the thesis's value path) ----------------

def block_settings(clip: "DenseCLIP", own: Sequence[int]) -> list[tuple[str, list[int]]]:
    """(label, layers) pairs for a block-by-block comparison: every block 1..depth alone, then ``own`` fused (the
    model's inference blocks, e.g. 2 / 4 / 6 / 8 of 8 where ViT-L/14's 6 / 12 / 18 / 24 sit), then all blocks fused.
    ``clip`` must extract every block (:meth:`ovseg.features.DenseCLIP.with_settings` with ``range(1, depth + 1)``).

    Raises:
        InputError: ``clip`` does not extract every block, or ``own`` names a block it does not have.
    """
    from ..errors import InputError

    every = list(range(1, clip.depth + 1))
    if list(clip.extract_layers) != every:
        raise InputError("a block-by-block comparison needs a CLIP that extracts every block", list(clip.extract_layers),
                         f"pass clip.with_settings(extract_layers=range(1, {clip.depth + 1}))")
    if not own or any(b not in every for b in own):
        raise InputError(f"the fused blocks must be among 1..{clip.depth}", list(own), "pass the model's extract_layers")
    out = [(f"block {b}", [b]) for b in every]
    out.append(("fused " + "+".join(str(b) for b in own), list(own)))
    if list(own) != every:
        out.append((f"fused 1-{clip.depth}", every))
    return out


def global_path_check(clip: "DenseCLIP", split_dir: Any, n_images: int | None = None) -> dict[str, Any]:
    """What a CLIP's *global* path (class token, the path CLIP's contrastive loss trains) knows about mini-world
    scenes: image -> caption top-1 retrieval among the split's world captions (correct when the retrieved caption
    names the same set of objects) and single-object zero-shot top-1 over the 48 class names (``"a {}."``), each a
    seeded 95% bootstrap interval over images (:class:`ovseg.stats.Interval`). Selects nothing, logs nothing.

    Args:
        clip: a :class:`~ovseg.features.DenseCLIP` (its :meth:`global_image_embedding` resizes to its input size).
        split_dir: a mini-world split folder (``index.json``, ``images/``), e.g. ``data/mini_world/dev``.
        n_images: the first N images (None: all).

    Returns:
        ``{"retrieval": Interval, "zero_shot": Interval, "chance_zero_shot": float, "n_images": int}``.
    """
    import json
    from pathlib import Path

    import torch

    from ..io import load_image
    from ..stats import bootstrap_rate
    from ..world import CLASS_NAMES

    root = Path(split_dir)
    idx = json.loads((root / "index.json").read_text(encoding="utf-8"))["images"][:n_images]
    fi = torch.stack([clip.global_image_embedding(load_image(root / "images" / f"{e['stem']}.png")) for e in idx])
    ft = clip.encode_text([e["caption"] for e in idx], templates=["{}"])  # (N, E): the captions as written
    fc = clip.encode_text(list(CLASS_NAMES), templates=["a {}."])  # (C, E)
    keys = [tuple(sorted(o["class_name"] for o in e["objects"])) for e in idx]
    top = (fi @ ft.T).argmax(1).tolist()  # (N,) best caption per image
    single = [i for i, e in enumerate(idx) if len(e["objects"]) == 1]
    pred = (fi[single] @ fc.T).argmax(1).tolist() if single else []
    retrieval = np.array([keys[i] == keys[j] for i, j in enumerate(top)], dtype=float)
    zero_shot = np.array([CLASS_NAMES[p] == idx[i]["objects"][0]["class_name"] for p, i in zip(pred, single)], float)
    return {"retrieval": bootstrap_rate(retrieval), "zero_shot": bootstrap_rate(zero_shot),
            "chance_zero_shot": 1 / len(CLASS_NAMES), "n_images": len(idx)}


def block_figure(rows: Sequence[dict[str, Any]], title: str = "") -> "Figure":
    """mIoU (and novel mIoU) per single block with 95% intervals, the fused settings as horizontal lines, from
    :func:`dense_eval` rows of :func:`block_settings` (labels ``"block k"`` and ``"fused ..."``)."""
    from matplotlib.figure import Figure

    from ..stats import error_ends

    single = [r for r in rows if r["layers"].startswith("block ")]
    fused = [r for r in rows if not r["layers"].startswith("block ")]
    fig = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = fig.add_subplot()
    xs = np.array([int(r["layers"].split()[1]) for r in single])
    for key, colour, dx in (("mIoU", "tab:blue", -0.12), ("mIoU_novel", "tab:orange", 0.12)):
        vals = np.array([r[key] for r in single], float)
        err = np.array([error_ends(r.get(f"{key}_ci95"), r[key]) for r in single]).T  # (2, n): 95% interval
        ax.errorbar(xs + dx, vals, yerr=err, fmt="o-", color=colour, ms=4, lw=1, capsize=2,
                    label=f"{key.replace('_', ' ')}, one block")
    for r, style in zip(fused, ("--", ":", "-.")):
        ax.axhline(r["mIoU"], color="0.3", ls=style, lw=1, label=f"mIoU, {r['layers']} {r.get('mIoU_ci95') or ''}")
    ax.set_xticks(xs)
    ax.set_xlabel("block read through the value path")
    ax.set_ylabel("dense mIoU")
    tops = [r["mIoU"] for r in rows] + [r.get("mIoU_novel") or 0 for r in rows]
    tops += [error_ends(r.get(f"{k}_ci95"), r[k])[1] + r[k] for r in single for k in ("mIoU", "mIoU_novel")]
    ax.set_ylim(0, max(0.1, 1.1 * max(t for t in tops if np.isfinite(t))))
    n = rows[0]["images"] if rows else 0
    import textwrap

    ax.set_title(textwrap.fill(title or f"dense per-pixel mIoU per block ({n} images, 95% intervals)", 60), fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def log_global_check(result: dict[str, Any], config: Any, split: str) -> bool:
    """Log a :func:`global_path_check` on the mini world's test split (:func:`ovseg.testlog.record_experiment`, task
    ``global_path``, the CLIP only). Does nothing for ``dev`` or the full profile."""
    from ..testlog import interval, record_experiment

    headline = {k: interval(iv.value, iv.lo, iv.hi, iv.n, "images") for k, iv in
                (("retrieval", result["retrieval"]), ("zero_shot", result["zero_shot"])) if iv.n}
    return record_experiment("global_path", config, result["n_images"], headline, {"n_images": result["n_images"]},
                             f"scenes/{split}", ("clip",))
