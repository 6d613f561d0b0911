"""Figures for results. Every function returns a ``matplotlib.figure.Figure`` (no pyplot state)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .pipeline import SegmentationResult, SemanticResult

__all__ = ["PALETTE", "overlay_masks", "overlay_figure", "masks_figure", "edit_figure", "semantic_figure"]

#: Distinct RGB colours for mask overlays (tab10).
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], np.uint8)


def overlay_masks(image: np.ndarray, masks: list[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """Blend (H, W) bool masks over an (H, W, 3) uint8 image; mask k gets PALETTE[k % 10]. Returns uint8."""
    out = image.astype(np.float32)
    for k, m in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)].astype(np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
    return out.round().clip(0, 255).astype(np.uint8)


def _figure(ncols: int, width: float = 4.0) -> "Figure":
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, width), dpi=100, layout="constrained")
    return fig


def overlay_figure(result: "SegmentationResult") -> "Figure":
    """Input image beside the ranked masks overlaid, with scores in the title."""
    fig = _figure(2)
    ax0, ax1 = fig.subplots(1, 2)
    ax0.imshow(result.image)
    ax0.set_title("input")
    ax1.imshow(overlay_masks(result.image, [m.mask for m in result.segmentation_masks]))
    scores = ", ".join(f"{m.final_score:.3f}" for m in result.segmentation_masks[:5])
    ax1.set_title(f'"{result.text_prompt}" top-{len(result.segmentation_masks)}: {scores}', fontsize=9)
    for ax in (ax0, ax1):
        ax.axis("off")
    return fig


def masks_figure(result: "SegmentationResult", max_masks: int = 5) -> "Figure":
    """One panel per ranked mask with its final score, S_i and area."""
    shown = result.segmentation_masks[:max_masks]
    fig = _figure(max(1, len(shown)), width=3.0)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(shown))))
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k < len(shown):
            m = shown[k]
            ax.imshow(overlay_masks(result.image, [m.mask]))
            ax.set_title(f"#{k + 1} final {m.final_score:.3f}\nS={m.mean_similarity:.3f} area={m.area}", fontsize=8)
    return fig


def edit_figure(result: "SegmentationResult") -> "Figure":
    """Input, edited mask, output."""
    fig = _figure(3)
    axes = fig.subplots(1, 3)
    best = result.segmentation_masks[0].mask
    for ax, img, title in zip(axes, (result.image, overlay_masks(result.image, [best]), np.asarray(result.edited_image)),
                              ("input", "mask", f"{(result.edit or {}).get('operation', 'edit')}: "
                                                f"{(result.edit or {}).get('prompt', '')[:40]}")):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return fig


def semantic_figure(result: "SemanticResult") -> "Figure":
    """Input beside the label map; legend lists the classes present."""
    from matplotlib.patches import Patch

    fig = _figure(2)
    ax0, ax1 = fig.subplots(1, 2)
    ax0.imshow(result.image)
    colours = np.vstack([PALETTE, PALETTE // 2 + 64])
    lab = result.label_map
    rgb = np.zeros(lab.shape + (3,), np.uint8)
    present = [int(c) for c in np.unique(lab) if c >= 0]
    for c in present:
        rgb[lab == c] = colours[c % len(colours)]
    ax1.imshow(rgb)
    ax1.legend(handles=[Patch(color=colours[c % len(colours)] / 255, label=result.class_names[c]) for c in present],
               fontsize=7, loc="lower right")
    for ax in (ax0, ax1):
        ax.axis("off")
    return fig
