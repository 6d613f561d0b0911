"""3.2.3 Mask-text alignment.

For mask ``M_i`` and prompt ``t`` the thesis scores

    S_i(t) = (1 / |M_i|) * sum_{p in M_i} sim(f_p, e_t)

with ``sim`` the cosine between the dense feature ``f_p`` at pixel ``p`` and the text embedding
``e_t``. ovseg evaluates it for all masks and prompts at once as one matrix product
``W @ sim.T`` of the (N, P) pixel-weight matrix and the (T, P) similarity maps at scoring
resolution (P pixels).

* **Spatial weighting** (``spatial_weighting``): pixel weights inside a mask ramp from
  ``boundary_min_weight`` at the edge to 1 at ``boundary_width`` pixels inside
  (:func:`ovseg.utils.boundary_weights`), so boundary pixels, where masks and the coarse feature
  grid disagree, count less: ``S_i = sum_p w_ip s_p / sum_p w_ip``.
* **Background suppression** (alpha = ``background_weight``, thesis 0.3): the final score subtracts
  alpha times the mean similarity *outside* the mask, ``O_i = sum_p (1 - w_ip) s_p / sum_p (1 - w_ip)``
  (a down-weighted boundary pixel counts partly as outside). A region only scores high if it
  matches the prompt better than its surroundings, which suppresses background and whole-image
  masks. A mask covering everything has no outside; it gets ``O_i = S_i``.

``final_i = S_i - alpha * O_i``. Masks with ``S_i < similarity_threshold`` are dropped by the
callers that rank (:func:`rank_masks`, :func:`semantic_segmentation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .utils import MaskSet

__all__ = ["AlignmentScores", "score_masks", "score_masks_loop", "rank_masks", "semantic_segmentation"]


@dataclass
class AlignmentScores:
    """Scores of N masks against T prompts; every array is (N, T) float32."""

    mean_similarity: np.ndarray  # S_i(t): weighted mean cosine inside the mask
    outside_similarity: np.ndarray  # O_i(t): mean cosine outside the mask
    final: np.ndarray  # S_i(t) - alpha * O_i(t)
    alpha: float


def score_masks(weights: "np.ndarray | torch.Tensor", sim: "torch.Tensor", alpha: float) -> AlignmentScores:
    """Vectorised alignment scores.

    Args:
        weights: (N, P) float32 per-pixel mask weights in [0, 1] at scoring resolution
            (:meth:`ovseg.utils.MaskSet.score_weights`).
        sim: (T, h, w) or (T, P) float32 cosine similarity maps at the same resolution.
        alpha: background suppression weight in [0, 1].

    Returns:
        :class:`AlignmentScores` with (N, T) arrays.
    """
    import torch

    w = torch.as_tensor(weights, dtype=torch.float32)  # (N, P)
    s = sim.reshape(sim.shape[0], -1).to(torch.float32)  # (T, P)
    n_pix = s.shape[1]
    if w.shape[1] != n_pix:
        raise ValueError(f"weights have {w.shape[1]} pixels per mask but similarity maps have {n_pix}")
    inside = w @ s.T  # (N, T): the one big product
    w_sum = w.sum(dim=1, keepdim=True)  # (N, 1)
    total = s.sum(dim=1)[None]  # (1, T)
    mean_in = inside / w_sum.clamp_min(1e-6)  # (N, T)
    out_w = n_pix - w_sum  # (N, 1)
    has_outside = out_w >= 1.0
    mean_out = torch.where(has_outside, (total - inside) / out_w.clamp_min(1.0), mean_in)  # (N, T)
    final = mean_in - alpha * mean_out
    return AlignmentScores(mean_in.numpy(), mean_out.numpy(), final.numpy(), float(alpha))


def score_masks_loop(weights: np.ndarray, sim: "torch.Tensor", alpha: float) -> AlignmentScores:
    """Reference implementation: the same maths as :func:`score_masks`, one mask and prompt at a time.

    Slow on purpose: used by tests to check the vectorised version and by the alignment benchmark.
    """
    s = sim.reshape(sim.shape[0], -1).numpy().astype(np.float64)  # (T, P)
    n, t = weights.shape[0], s.shape[0]
    mean_in = np.zeros((n, t))
    mean_out = np.zeros((n, t))
    for i in range(n):
        w = weights[i].astype(np.float64)
        for k in range(t):
            mean_in[i, k] = (w * s[k]).sum() / max(w.sum(), 1e-6)
            rest = 1.0 - w
            mean_out[i, k] = (rest * s[k]).sum() / rest.sum() if rest.sum() >= 1.0 else mean_in[i, k]
    final = mean_in - alpha * mean_out
    f32 = np.float32
    return AlignmentScores(mean_in.astype(f32), mean_out.astype(f32), final.astype(f32), float(alpha))


def rank_masks(scores: AlignmentScores, prompt_index: int = 0, threshold: float = -1.0,
               top_k: int | None = None) -> np.ndarray:
    """Indices of masks for one prompt, sorted by final score descending.

    Masks whose mean similarity ``S_i`` is below ``threshold`` are left out; ``top_k`` keeps the
    first k. Ties break by mask index (stable sort), so rankings are deterministic.
    """
    final = scores.final[:, prompt_index]
    keep = np.flatnonzero(scores.mean_similarity[:, prompt_index] >= threshold)
    order = keep[np.argsort(-final[keep], kind="stable")]
    return order if top_k is None else order[:top_k]


def semantic_segmentation(masks: "MaskSet", scores: AlignmentScores, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Label every pixel with the class of the best-scoring mask that covers it.

    Args:
        masks: N masks of an H x W image.
        scores: (N, C) scores against C class names.
        threshold: masks whose best class has ``S_i`` below this are ignored.

    Returns:
        ``(label_map, mask_labels)``: (H, W) int32 class indices with -1 for pixels no accepted
        mask covers, and the (N,) int32 class of each mask (-1 if ignored).
    """
    h, w = masks.shape
    label_map = np.full((h, w), -1, dtype=np.int32)
    if len(masks) == 0 or scores.final.shape[1] == 0:
        return label_map, np.full(len(masks), -1, np.int32)
    best = scores.final.argmax(axis=1)  # (N,)
    conf = scores.final[np.arange(len(masks)), best]  # (N,)
    accepted = scores.mean_similarity[np.arange(len(masks)), best] >= threshold
    mask_labels = np.where(accepted, best, -1).astype(np.int32)
    # Paint from the weakest accepted mask to the strongest, so each pixel ends with the label of
    # the best-scoring mask covering it (one boolean write per mask; scoring itself is vectorised).
    for i in np.flatnonzero(accepted)[np.argsort(conf[accepted], kind="stable")]:
        label_map[masks.masks[i]] = best[i]
    return label_map, mask_labels
