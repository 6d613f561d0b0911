"""Chapter 5 segmentation metrics on ``torchmetrics``.

Everything derives from one confusion matrix per image, computed by
``torchmetrics.functional.classification.multiclass_confusion_matrix`` (rows = ground truth,
columns = prediction, ``ignore_index`` pixels dropped). Confusion matrices are integer counts, so
they add up exactly across images, resumed runs and distributed ranks; the metrics are then

* IoU_c = TP / (TP + FP + FN), NaN for a class absent from both prediction and ground truth;
  mIoU = mean over the non-NaN classes (the mmsegmentation convention);
* precision_c = TP / (TP + FP), recall_c = TP / (TP + FN), F1_c = harmonic mean; NaN when undefined,
  means over the defined classes;
* pixel accuracy = sum TP / number of labelled pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["confusion_matrix", "SegmentationMetrics", "metrics_from_confusion", "sparse_confusion",
           "dense_confusion"]


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(C, C) int64 confusion matrix of one prediction.

    Args:
        pred: (H, W) integer class indices in [0, C).
        target: (H, W) integer class indices in [0, C) or ``ignore_index``.
    """
    import torch
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {target.shape} must have the same shape")
    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.int64)).reshape(-1)
    t = torch.from_numpy(np.ascontiguousarray(target, dtype=np.int64)).reshape(-1)
    if p.numel() and (int(p.min()) < 0 or int(p.max()) >= num_classes):
        raise ValueError(f"predictions must be class indices in [0, {num_classes}), got [{int(p.min())}, {int(p.max())}]")
    cm = multiclass_confusion_matrix(p, t, num_classes=num_classes, ignore_index=ignore_index, validate_args=False)
    return cm.numpy().astype(np.int64)


def sparse_confusion(cm: np.ndarray) -> list[list[int]]:
    """Non-zero entries ``[[gt, pred, count], ...]`` of a confusion matrix (compact per-image storage)."""
    rows, cols = np.nonzero(cm)
    return [[int(r), int(c), int(cm[r, c])] for r, c in zip(rows, cols)]


def dense_confusion(entries: Sequence[Sequence[int]], num_classes: int) -> np.ndarray:
    """Inverse of :func:`sparse_confusion`."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for r, c, n in entries:
        cm[r, c] += n
    return cm


@dataclass
class SegmentationMetrics:
    """Per-class arrays are (C,) float64 with NaN where undefined."""

    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    pixel_accuracy: float
    confusion: np.ndarray  # (C, C) int64, rows = ground truth

    @property
    def miou(self) -> float:
        return _nanmean(self.iou)

    def subset_miou(self, classes: Sequence[int]) -> float:
        """mIoU over a subset of classes (e.g. base / novel), NaN classes skipped."""
        return _nanmean(self.iou[list(classes)]) if len(classes) else float("nan")

    def to_dict(self, class_names: Sequence[str], splits: dict[str, Sequence[int]] | None = None) -> dict[str, Any]:
        def per_class(arr: np.ndarray) -> dict[str, float | None]:
            return {n: (None if np.isnan(v) else round(float(v), 6)) for n, v in zip(class_names, arr)}

        out: dict[str, Any] = {
            "mIoU": _round(self.miou), "pixel_accuracy": _round(self.pixel_accuracy),
            "mean_precision": _round(_nanmean(self.precision)), "mean_recall": _round(_nanmean(self.recall)),
            "mean_f1": _round(_nanmean(self.f1)),
            "per_class_iou": per_class(self.iou), "precision": per_class(self.precision),
            "recall": per_class(self.recall), "f1": per_class(self.f1),
        }
        for name, idx in (splits or {}).items():
            out[f"mIoU_{name}"] = _round(self.subset_miou(idx))
        return out


def _nanmean(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def _round(v: float) -> float | None:
    return None if np.isnan(v) else round(float(v), 6)


def metrics_from_confusion(cm: np.ndarray) -> SegmentationMetrics:
    """All metrics from a (C, C) confusion matrix (rows = ground truth, columns = prediction)."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    total = cm.sum()
    return SegmentationMetrics(iou, precision, recall, f1, float(tp.sum() / total) if total else float("nan"),
                               cm.astype(np.int64))


# ---- edit quality: FID and CLIP score with a pluggable feature extractor ------------------------------------

def _clip_pixels(clip: Any, images: "Any") -> "Any":
    """(N, 3, H, W) uint8 or float in [0, 1] -> CLIP-normalised (N, 3, S, S) float at the model's size."""
    import torch

    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    x = torch.nn.functional.interpolate(x, size=(clip.image_size, clip.image_size), mode="bicubic",
                                        align_corners=False, antialias=True).clamp(0, 1)
    return (x - clip.mean.to(x)) / clip.std.to(x)


def clip_image_features(clip: Any) -> "Any":
    """A ``torch.nn.Module`` mapping (N, 3, H, W) uint8 images to (N, E) CLIP image embeddings.

    It is the pluggable ``feature`` of torchmetrics' ``FrechetInceptionDistance``: offline (mini
    profile) FID is computed on the mini CLIP's image embeddings instead of Inception-v3 features;
    tables say which extractor was used.
    """
    import torch

    class CLIPImageFeatures(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = clip
            self.num_features = int(clip.model.visual.output_dim)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return self.clip.model.encode_image(_clip_pixels(self.clip, images)).float().clone()

    return CLIPImageFeatures()


def fid_metric(extractor: Any = "inception") -> "Any":
    """torchmetrics ``FrechetInceptionDistance`` on Inception-v3 (``"inception"``, needs the
    ``torch-fidelity`` package and its weights) or on a :class:`~ovseg.features.DenseCLIP`'s image
    embeddings (offline). Feed it uint8 (N, 3, H, W) images with ``update(images, real=...)``."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from .errors import WeightsError

    if extractor == "inception":
        try:
            import torch_fidelity  # noqa: F401
        except ImportError:
            raise WeightsError("FID on Inception-v3 needs the torch-fidelity package and its Inception weights",
                               "torch_fidelity not installed",
                               "pip install torch-fidelity (online), or pass a CLIP extractor (mini profile)") from None
        return FrechetInceptionDistance(feature=2048)
    return FrechetInceptionDistance(feature=clip_image_features(extractor))


def clip_score_metric(clip: Any = None) -> "Any":
    """torchmetrics ``CLIPScore``: 100 x cosine(image, text) embeddings.

    ``clip=None`` uses torchmetrics' default (OpenAI CLIP ViT-L/14 through transformers, full profile);
    a :class:`~ovseg.features.DenseCLIP` (e.g. the mini CLIP) is adapted to the model/processor
    interface torchmetrics expects, so the score runs offline.
    """
    from torchmetrics.multimodal.clip_score import CLIPScore

    if clip is None:
        return CLIPScore()
    import types

    import torch

    class _Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = clip
            self.config = types.SimpleNamespace()  # no text_config: torchmetrics skips its HF length check

        def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return self.clip.model.encode_image(pixel_values).float().clone()

        def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return self.clip.model.encode_text(input_ids).float().clone()

    def processor(text: Any = None, images: Any = None, **_: Any) -> dict[str, torch.Tensor]:
        if images is not None:
            return {"pixel_values": _clip_pixels(clip, torch.stack(list(images)))}
        ids = clip.tokenizer(list(text))
        return {"input_ids": ids, "attention_mask": (ids != 0).long()}

    return CLIPScore(model_name_or_path=lambda: (_Model(), processor))
