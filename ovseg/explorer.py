"""State and callbacks behind the interactive explorer (plain functions; the widgets only wire them).

One image at a time: its SAM 2 masks are generated once as a *pool* at permissive floor thresholds,
and its dense CLIP features once. A slider change then costs no model run:

* :meth:`Explorer.filter` keeps the pool masks above the chosen predicted-IoU / stability
  thresholds and removes duplicates by box NMS (the generator's own order is threshold -> NMS per
  crop -> NMS across crops; filtering a pool that was already de-duplicated by predicted IoU differs
  only when a duplicate with higher predicted IoU but lower stability hid another mask; the exact
  generator output is ``MaskGenerator.refilter``);
* :meth:`Explorer.score` re-runs only text encoding (cached per prompt) and the alignment product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .align import AlignmentScores, rank_masks, score_masks
from .errors import InputError
from .features import check_prompts
from .io import load_image
from .utils import MaskSet, downscale_image, score_shape, working_shape

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .pipeline import OpenVocabSegmentationPipeline

__all__ = ["Explorer", "ExplorerView"]


@dataclass
class ExplorerView:
    """What the explorer shows for one setting of the controls."""

    masks: MaskSet  # the filtered masks
    scores: AlignmentScores  # (N, T) against the prompts
    order: np.ndarray  # mask indices for prompts[0], best first (top-k, above the similarity threshold)
    heatmaps: np.ndarray  # (T, H, W) float32 cosine similarity maps at scoring resolution
    prompts: list[str]


class Explorer:
    """Cached masks and features of one image, re-filtered and re-scored on demand.

    Args:
        pipe: a pipeline (its models are loaded lazily on the first image).
        pool_iou, pool_stability: floor thresholds of the cached mask pool; sliders go from here up.
    """

    def __init__(self, pipe: "OpenVocabSegmentationPipeline", pool_iou: float = 0.3, pool_stability: float = 0.5):
        self.pipe = pipe
        self.pool_iou = pool_iou
        self.pool_stability = pool_stability
        self.image: np.ndarray | None = None
        self.pool: MaskSet | None = None
        self.features: Any = None

    # ---- per image (model runs) ---------------------------------------------------------------
    def set_image(self, image: Any) -> MaskSet:
        """Load an image (path, PIL or HWC uint8), generate its mask pool and dense features once.

        An image whose longer side exceeds ``sam2.max_image_side`` (e.g. a phone photo) is explored, and edited, as
        its area-downscaled working copy: every view and figure is at that size."""
        arr = load_image(image)
        arr = downscale_image(arr, working_shape(*arr.shape[:2], self.pipe.config.sam2.max_image_side))
        gen = self.pipe.mask_generator
        settings = gen.config
        gen.update_config(pred_iou_thresh=self.pool_iou, stability_score_thresh=self.pool_stability)
        try:
            self.pool = gen.generate(arr)
        finally:
            gen.update_config(settings)  # the pipeline keeps its own thresholds
        self.image = arr
        self.features = self.pipe.clip.dense_features(arr)
        return self.pool

    def _need_image(self) -> None:
        if self.image is None or self.pool is None:
            raise InputError("the explorer needs an image first", "no image", "call set_image(...) / pick an image")

    # ---- slider callbacks (no model run) ------------------------------------------------------
    def filter(self, pred_iou_thresh: float, stability_score_thresh: float, box_nms_thresh: float | None = None) -> MaskSet:
        """Pool masks passing both thresholds, de-duplicated by box NMS (highest predicted IoU wins)."""
        import torch
        from torchvision.ops import batched_nms

        self._need_image()
        if pred_iou_thresh < self.pool_iou or stability_score_thresh < self.pool_stability:
            raise InputError(f"thresholds must be at least the pool's floor ({self.pool_iou}, {self.pool_stability})",
                             (pred_iou_thresh, stability_score_thresh),
                             "raise the slider, or rebuild the Explorer with a lower pool floor")
        pool = self.pool
        # sam2's comparisons: predicted IoU strictly above, stability at or above the threshold
        keep = np.flatnonzero((pool.predicted_iou > pred_iou_thresh) & (pool.stability_score >= stability_score_thresh))
        if len(keep) == 0:
            return pool.filter(keep)
        nms = self.pipe.config.sam2.box_nms_thresh if box_nms_thresh is None else box_nms_thresh
        boxes = torch.from_numpy(pool.bbox[keep].astype(np.float32))  # (K, 4) XYWH
        boxes[:, 2:] += boxes[:, :2]  # -> XYXY
        kept = batched_nms(boxes, torch.from_numpy(pool.predicted_iou[keep]), torch.zeros(len(keep), dtype=torch.long), nms)
        return pool.filter(keep[np.sort(kept.numpy())])

    def score(self, prompts: str | Sequence[str], masks: MaskSet | None = None, alpha: float | None = None,
              threshold: float | None = None, top_k: int = 5, layers: Sequence[int] | None = None,
              spatial_weighting: bool | None = None) -> ExplorerView:
        """Alignment of the (filtered) masks against prompts with the given controls; defaults from the config."""
        self._need_image()
        prompts = check_prompts(prompts)
        a = self.pipe.config.alignment
        alpha = a.background_weight if alpha is None else alpha
        threshold = a.similarity_threshold if threshold is None else threshold
        spatial = a.spatial_weighting if spatial_weighting is None else spatial_weighting
        masks = self.pool if masks is None else masks
        clip = self.pipe.clip
        if layers is not None:
            bad = [layer for layer in layers if layer not in self.features.layers]
            if bad or not layers:
                raise InputError("layers must be a non-empty subset of the extracted layers " f"{self.features.layers}",
                                 list(layers), "tick at least one of the extracted layers")
        shape = score_shape(*self.image.shape[:2], a.score_max_side)
        sim = self.features.similarity(clip.encode_text(prompts), size=shape, layers=layers,
                                       weights=None if layers is not None else clip.layer_weights)  # (T, h, w)
        weights = masks.score_weights(shape, a.boundary_width if spatial else 0.0, a.boundary_min_weight)
        scores = score_masks(weights, sim, alpha)
        order = rank_masks(scores, 0, threshold, top_k)
        return ExplorerView(masks, scores, order, sim.numpy(), prompts)

    def edit(self, view: ExplorerView, rank: int, operation: str, edit_prompt: str | None = None, seed: int = 0) -> Any:
        """Edit the ``rank``-th mask of a view (remove / replace / style); returns the inpainter's EditResult."""
        self._need_image()
        if not 0 <= rank < len(view.order):
            raise InputError("the selected mask must be one of the ranked masks", rank,
                             f"pick a rank between 0 and {len(view.order) - 1}" if len(view.order) else
                             "no mask matches: change the prompt or lower the thresholds")
        mask = view.masks.masks[view.order[rank]]
        return self.pipe.inpainter.edit(self.image, mask, operation, edit_prompt=edit_prompt,
                                        object_prompt=view.prompts[0], seed=seed)

    def figure(self, view: ExplorerView) -> "Figure":
        """Image with the ranked masks, and the first prompt's similarity heatmap."""
        from matplotlib.figure import Figure

        from .viz import overlay_masks

        fig = Figure(figsize=(8, 4), layout="constrained")
        ax0, ax1 = fig.subplots(1, 2)
        ax0.imshow(overlay_masks(self.image, [view.masks.masks[i] for i in view.order]))
        scores = ", ".join(f"{view.scores.final[i, 0]:.3f}" for i in view.order)
        ax0.set_title(f'"{view.prompts[0]}": {scores or "no match"}', fontsize=9)
        im = ax1.imshow(view.heatmaps[0], cmap="viridis")
        ax1.set_title("cosine similarity", fontsize=9)
        fig.colorbar(im, ax=ax1, shrink=0.8)
        for ax in (ax0, ax1):
            ax.axis("off")
        return fig
