"""Pure helpers shared by the stages: the batched per-mask record and mask geometry.

Nothing here loads a model. Shapes: N masks, image H x W; masks are ``bool``; boxes are XYWH
in pixels of the image they belong to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["MaskSet", "masks_to_boxes_xywh", "boundary_weights", "resize_masks", "score_shape", "working_shape",
           "downscale_image", "upscale_nearest", "mask_iou", "check_device"]


def check_device(device: Any) -> str:
    """Validate a torch device string before any model loads: ``cpu``, ``cuda``, ``cuda:N`` (a GPU torch can see) or
    ``mps`` (Apple GPU). Returns it normalised (``"cuda"`` -> ``"cuda:0"``).

    Raises:
        InputError: an unknown device, or a GPU this machine does not have.
    """
    import torch

    from .errors import InputError

    if not isinstance(device, str):
        if isinstance(device, torch.device):
            device = str(device)
        else:
            raise InputError("device must be a string such as 'cpu' or 'cuda:0'", repr(device), "pass device='cpu'")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise InputError("device must be cpu, cuda, cuda:N or mps", repr(device), "pass --device cpu (or cuda)") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise InputError("device cuda needs a CUDA GPU that torch can see", f"{device!r} (no CUDA GPU found)",
                             "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
        index = 0 if dev.index is None else dev.index
        if index >= n:
            raise InputError(f"a cuda device index must be below the GPU count ({n})", repr(device),
                             f"use one of {', '.join(f'cuda:{i}' for i in range(n))}")
        return f"cuda:{index}"
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise InputError("device mps needs an Apple GPU", repr(device), "use --device cpu")
        return "mps"
    raise InputError("device must be cpu, cuda, cuda:N or mps", repr(device), "pass --device cpu (or cuda)")


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of every predicted mask with every ground-truth mask.

    Args:
        pred: (N, H, W) bool.  gt: (K, H, W) bool.

    Returns:
        (N, K) float64 in [0, 1]; 0 where both masks are empty. Pixel counts are exact (float64 products).
    """
    p = pred.reshape(pred.shape[0], -1).astype(np.float64)
    g = gt.reshape(gt.shape[0], -1).astype(np.float64)
    inter = p @ g.T  # (N, K)
    union = p.sum(1)[:, None] + g.sum(1)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def masks_to_boxes_xywh(masks: np.ndarray) -> np.ndarray:
    """Tight XYWH boxes of (N, H, W) bool masks -> (N, 4) int64; empty masks give zeros."""
    n = masks.shape[0]
    boxes = np.zeros((n, 4), dtype=np.int64)
    if n == 0:
        return boxes
    rows = masks.any(axis=2)  # (N, H)
    cols = masks.any(axis=1)  # (N, W)
    nonempty = rows.any(axis=1)
    h, w = masks.shape[1:]
    y0 = rows.argmax(axis=1)
    y1 = h - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = w - cols[:, ::-1].argmax(axis=1)
    boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3] = x0, y0, x1 - x0, y1 - y0
    boxes[~nonempty] = 0
    return boxes


def score_shape(h: int, w: int, max_side: int) -> tuple[int, int]:
    """Scoring resolution: (h, w) shrunk (never enlarged) so that max(h, w) <= max_side."""
    scale = min(1.0, max_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def working_shape(h: int, w: int, max_side: int) -> tuple[int, int]:
    """The working size of an (h, w) image: shrunk (never enlarged, aspect kept) so that max(h, w) <= max_side;
    ``max_side`` 0 keeps (h, w). See ``SAM2Config.max_image_side``."""
    if max_side <= 0 or max(h, w) <= max_side:
        return h, w
    return score_shape(h, w, max_side)


def downscale_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C) uint8 by area interpolation; the array itself when it already has that size."""
    import cv2

    h, w = shape
    if image.shape[:2] == (h, w):
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def upscale_nearest(small: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) array (bool mask, int label map) -> (H, W) of the same dtype, nearest neighbour, pixel centres aligned.

    Output pixel (y, x) takes input pixel (floor((y + 0.5) h / H), floor((x + 0.5) w / W)): an integer factor
    replicates each pixel exactly. Memory: the output only (one gather).
    """
    hs, ws = small.shape[:2]
    h, w = shape
    if (hs, ws) == (h, w):
        return small
    rows = np.minimum(((np.arange(h) + 0.5) * hs / h).astype(np.int64), hs - 1)  # (H,)
    cols = np.minimum(((np.arange(w) + 0.5) * ws / w).astype(np.int64), ws - 1)  # (W,)
    return small[rows[:, None], cols[None, :]]


def resize_masks(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, H, W) bool -> (N, h, w) float32 coverage in [0, 1] (area interpolation)."""
    import cv2

    h, w = shape
    if masks.shape[1:] == (h, w):
        return masks.astype(np.float32)
    out = np.empty((masks.shape[0], h, w), dtype=np.float32)
    for i, m in enumerate(masks):  # cv2 has no batched resize; this runs once per mask set
        out[i] = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
    return out


def boundary_weights(masks: np.ndarray, width: float, min_weight: float) -> np.ndarray:
    """Per-pixel spatial weights that down-weight mask boundaries.

    Args:
        masks: (N, h, w) float32 coverage in [0, 1] (or bool).
        width: ramp width in pixels; a pixel at distance ``d`` from the outside gets ``d / width``.
        min_weight: floor of the ramp, in [0, 1].

    Returns:
        (N, h, w) float32 ``coverage * clip(d / width, min_weight, 1)``; zero outside the mask.
        ``width == 0`` returns the coverage unchanged.
    """
    import cv2

    cover = masks.astype(np.float32)
    if width <= 0:
        return cover
    out = np.empty_like(cover)
    for i, m in enumerate(cover):  # distance transform is per image in OpenCV; done once per mask set
        inside = (m >= 0.5).astype(np.uint8)
        dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)  # (h, w): 0 outside, >= 1 inside
        out[i] = m * np.clip(dist / width, min_weight, 1.0)
    return out


@dataclass
class MaskSet:
    """Batched per-mask records, in the spirit of sam2's ``MaskData``.

    All arrays share the first dimension N. ``masks`` is (N, H, W) bool at the size of the image
    they were generated for; ``bbox`` and ``crop_box`` are XYWH pixels; ``point_coords`` is the
    (x, y) prompt that produced each mask. ``source`` says where the masks came from
    (``"sam2"``, ``"classical"``, ``"ground-truth"``), and travels into every result.
    """

    masks: np.ndarray
    predicted_iou: np.ndarray
    stability_score: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    point_coords: np.ndarray
    crop_box: np.ndarray
    source: str = "sam2"
    _cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.masks)
        for name in ("predicted_iou", "stability_score", "bbox", "area", "point_coords", "crop_box"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"MaskSet.{name} has {len(getattr(self, name))} rows, masks has {n}")

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def empty(cls, shape: tuple[int, int], source: str = "sam2") -> "MaskSet":
        h, w = shape
        return cls(np.zeros((0, h, w), bool), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros((0, 4), np.int64), np.zeros(0, np.int64), np.zeros((0, 2), np.float32),
                   np.zeros((0, 4), np.int64), source)

    @classmethod
    def from_masks(cls, masks: np.ndarray, predicted_iou: np.ndarray | None = None,
                   stability_score: np.ndarray | None = None, source: str = "ground-truth") -> "MaskSet":
        """From plain (N, H, W) bool masks; scores default to 1.0."""
        masks = np.asarray(masks, dtype=bool)
        n, h, w = masks.shape
        ones = np.ones(n, np.float32)
        bbox = masks_to_boxes_xywh(masks)
        centre = bbox[:, :2] + bbox[:, 2:] / 2
        return cls(masks, ones if predicted_iou is None else np.asarray(predicted_iou, np.float32),
                   ones if stability_score is None else np.asarray(stability_score, np.float32), bbox,
                   masks.reshape(n, -1).sum(1).astype(np.int64), centre.astype(np.float32),
                   np.tile(np.array([0, 0, w, h], np.int64), (n, 1)), source)

    @classmethod
    def from_records(cls, records: list[dict[str, Any]], shape: tuple[int, int], source: str = "sam2") -> "MaskSet":
        """From sam2 ``SAM2AutomaticMaskGenerator.generate`` records (``output_mode="binary_mask"``)."""
        if not records:
            return cls.empty(shape, source)
        masks = np.stack([np.asarray(r["segmentation"], bool) for r in records])  # (N, H, W)
        return cls(
            masks=masks,
            predicted_iou=np.array([r["predicted_iou"] for r in records], np.float32),
            stability_score=np.array([r["stability_score"] for r in records], np.float32),
            # sam2's record boxes use (last pixel - first pixel) as width; recompute the full extent.
            bbox=masks_to_boxes_xywh(masks),
            area=np.array([r["area"] for r in records], np.int64),
            point_coords=np.array([r["point_coords"][0] for r in records], np.float32),
            crop_box=np.array([[round(v) for v in r["crop_box"]] for r in records], np.int64),
            source=source,
        )

    # ---- MaskData-like operations --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.masks)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the image the masks belong to."""
        return tuple(self.masks.shape[1:])  # type: ignore[return-value]

    def filter(self, keep: np.ndarray) -> "MaskSet":
        """New MaskSet with the rows selected by a bool (N,) array or an index array."""
        keep = np.asarray(keep)
        return MaskSet(self.masks[keep], self.predicted_iou[keep], self.stability_score[keep], self.bbox[keep],
                       self.area[keep], self.point_coords[keep], self.crop_box[keep], self.source)

    @staticmethod
    def cat(sets: list["MaskSet"]) -> "MaskSet":
        if not sets:
            raise ValueError("MaskSet.cat needs at least one MaskSet")
        first = sets[0]
        return MaskSet(*(np.concatenate([getattr(s, name) for s in sets]) for name in
                         ("masks", "predicted_iou", "stability_score", "bbox", "area", "point_coords", "crop_box")),
                       source=first.source)

    def to_records(self) -> list[dict[str, Any]]:
        """One JSON-friendly dict per mask (without the pixel mask itself)."""
        return [
            {"bbox": self.bbox[i].tolist(), "area": int(self.area[i]),
             "predicted_iou": float(self.predicted_iou[i]), "stability_score": float(self.stability_score[i]),
             "point_coords": self.point_coords[i].tolist(), "crop_box": self.crop_box[i].tolist()}
            for i in range(len(self))
        ]

    # ---- scoring support -----------------------------------------------------------------
    def score_weights(self, shape: tuple[int, int], boundary_width: float, min_weight: float) -> np.ndarray:
        """(N, h*w) float32 per-pixel weights at scoring resolution ``shape``, cached.

        Masks are area-resized to ``shape`` and, when ``boundary_width > 0``, multiplied by
        :func:`boundary_weights`. Computed once per (shape, width, min_weight): re-scoring with new
        prompts or alpha reuses it, which is what makes interactive re-scoring cheap.
        """
        key = (tuple(shape), float(boundary_width), float(min_weight))
        if key not in self._cache:
            cover = resize_masks(self.masks, shape)  # (N, h, w) float32
            weights = boundary_weights(cover, boundary_width, min_weight) if boundary_width > 0 else cover
            self._cache[key] = np.ascontiguousarray(weights.reshape(len(self), shape[0] * shape[1]))  # N may be 0
        return self._cache[key]
