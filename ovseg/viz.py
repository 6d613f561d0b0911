"""Figures for results. Every ``*_figure`` function returns a ``matplotlib.figure.Figure`` (no pyplot state);
:func:`overlay_masks` and :func:`labelled_overlay` return uint8 arrays (``overlay.png``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .pipeline import BatchItem, SegmentationMask, SegmentationResult, SemanticResult

__all__ = ["PALETTE", "LEGIBLE_SIDE", "overlay_masks", "labelled_overlay", "overlay_figure", "masks_figure",
           "edit_figure", "semantic_figure", "contact_sheet_figure"]

#: ``labelled_overlay`` draws on at least this many pixels along the longer side: a smaller image is upscaled by an
#: integer factor (nearest neighbour, so pixels stay sharp) first, so that its labels stay legible; the mini world's
#: 128 px scenes give a 384 px ``overlay.png``.
LEGIBLE_SIDE = 384

#: Distinct RGB colours for mask overlays (tab10).
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)], np.uint8)


#: :func:`overlay_masks` blends this many image rows at a time (float32 working memory: rows x W x 12 bytes).
OVERLAY_ROWS = 512


def overlay_masks(image: np.ndarray, masks: list[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """Blend (H, W) bool masks over an (H, W, 3) uint8 image; mask k gets PALETTE[k % 10]. Returns (H, W, 3) uint8.

    Blended in float32, in bands of :data:`OVERLAY_ROWS` rows (the same per-pixel arithmetic, bounded memory for a
    large photo)."""
    out = np.empty_like(image, dtype=np.uint8)
    for r0 in range(0, image.shape[0], OVERLAY_ROWS):
        band = image[r0:r0 + OVERLAY_ROWS].astype(np.float32)  # (rows, W, 3)
        for k, m in enumerate(masks):
            colour = PALETTE[k % len(PALETTE)].astype(np.float32)
            mb = m[r0:r0 + OVERLAY_ROWS]
            band[mb] = (1 - alpha) * band[mb] + alpha * colour
        out[r0:r0 + OVERLAY_ROWS] = band.round().clip(0, 255).astype(np.uint8)
    return out


def labelled_overlay(image: np.ndarray, masks: "Sequence[SegmentationMask]", alpha: float = 0.5,
                     empty_text: str | None = None) -> np.ndarray:
    """The ranked masks over the image (:func:`overlay_masks`), each outlined by its box and labelled
    ``#<rank> <final score>`` (e.g. ``#1 0.31``) in its colour at a corner of the box (above its top-left corner
    where there is room; labels never overlap each other).

    Args:
        image: (H, W, 3) uint8 RGB.
        masks: ranked masks with ``.mask`` (H, W) bool, ``.bbox`` XYWH pixels and ``.final_score``, best first.
        empty_text: written at the top left when ``masks`` is empty (e.g. ``"no mask matched 'x'"``).

    Returns:
        (H * s, W * s, 3) uint8, with ``s = ceil(LEGIBLE_SIDE / max(H, W))`` for images smaller than
        :data:`LEGIBLE_SIDE`, else ``s = 1``.
    """
    from PIL import Image, ImageDraw, ImageFont

    base = overlay_masks(image, [m.mask for m in masks], alpha)
    h, w = base.shape[:2]
    scale = max(1, math.ceil(LEGIBLE_SIDE / max(h, w)))
    canvas = Image.fromarray(base)
    if scale > 1:
        canvas = canvas.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(12, max(canvas.size) // 32))
    pad = 2
    placed: list[tuple[int, int, int, int]] = []  # label rectangles drawn so far (x0, y0, x1, y1), kept apart

    def label(x: int, y: int, bw: int, bh: int, text: str, colour: tuple[int, int, int]) -> None:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * pad, bottom - top + 2 * pad

        def fit(lx: int, ly: int) -> tuple[int, int, int, int]:
            lx, ly = min(max(lx, 0), max(canvas.width - tw, 0)), min(max(ly, 0), max(canvas.height - th, 0))
            return lx, ly, lx + tw, ly + th

        def free(r: tuple[int, int, int, int]) -> bool:
            return all(r[2] <= q[0] or q[2] <= r[0] or r[3] <= q[1] or q[3] <= r[1] for q in placed)

        # above the box's top-left corner, inside it, above / inside its top-right corner, below it; else stack down
        tries = [(x, y - th), (x, y), (x + bw - tw, y - th), (x + bw - tw, y), (x, y + bh)]
        tries += [(x, y - th + i * th) for i in range(2, canvas.height // th + 2)]
        rect = next((r for r in map(lambda p: fit(*p), tries) if free(r)), fit(x, y - th))
        placed.append(rect)
        draw.rectangle([rect[0], rect[1], rect[2] - 1, rect[3] - 1], fill=colour)
        ink = (0, 0, 0) if 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140 else (255, 255, 255)
        draw.text((rect[0] + pad - left, rect[1] + pad - top), text, fill=ink, font=font)

    boxes = []
    for k, m in enumerate(masks):  # outlines first, labels on top
        colour = tuple(int(c) for c in PALETTE[k % len(PALETTE)])
        x, y, bw, bh = (int(v) * scale for v in m.bbox)
        draw.rectangle([x, y, x + max(bw, 1) - 1, y + max(bh, 1) - 1], outline=colour, width=max(1, scale - 1))
        boxes.append((x, y, bw, bh, f"#{k + 1} {m.final_score:.2f}", colour))
    for box in boxes:
        label(*box)
    if not masks and empty_text:
        label(0, 0, 0, 0, empty_text, (40, 40, 40))
    return np.asarray(canvas)


def _no_match(result: "SegmentationResult") -> str:
    return f"no mask matched '{result.text_prompt}' ({result.num_candidates} candidates)"


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
    if result.segmentation_masks:
        scores = ", ".join(f"{m.final_score:.3f}" for m in result.segmentation_masks[:5])
        ax1.set_title(f'"{result.text_prompt}" top-{len(result.segmentation_masks)}: {scores}', fontsize=9)
    else:
        ax1.set_title(_no_match(result), fontsize=9)
    for ax in (ax0, ax1):
        ax.axis("off")
    return fig


def masks_figure(result: "SegmentationResult", max_masks: int = 5) -> "Figure":
    """One panel per ranked mask with its final score, S_i and area (one panel saying so when there is none)."""
    shown = result.segmentation_masks[:max_masks]
    fig = _figure(max(1, len(shown)), width=3.0)
    axes = np.atleast_1d(fig.subplots(1, max(1, len(shown))))
    if not shown:
        axes[0].axis("off")
        axes[0].text(0.5, 0.5, _no_match(result).replace(" (", "\n("), ha="center", va="center", fontsize=9,
                     transform=axes[0].transAxes, wrap=True)
        return fig
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


def contact_sheet_figure(entries: "Sequence[SegmentationResult | BatchItem | str]", titles: Sequence[str],
                         ncols: int = 4, panel: float = 2.2, alpha: float = 0.5, title: str | None = None) -> "Figure":
    """A grid of small panels, one per image of a batch: each image with its best mask (``segmentation_masks[0]``)
    overlaid in ``PALETTE[0]`` (:func:`overlay_masks`) and outlined by its box, titled with its name, the best final
    score and how many masks the prompt returned.

    Args:
        entries: per image, in grid order (row-major): a :class:`~ovseg.pipeline.SegmentationResult` (``image``
            (H, W, 3) uint8 RGB, ranked ``segmentation_masks`` with ``.mask`` (H, W) bool and ``.bbox`` XYWH
            pixels), a :class:`~ovseg.pipeline.BatchItem` of ``segment_batch`` (its ``result``, or its ``error``
            when it failed) or a ``str``, the one-line error of an image that failed. A result without masks shows
            its plain image titled ``no match (<n> candidates)``; an error shows an empty panel, titled in red, with
            the message's rule: an ovseg error (``<rule>; got <value>; fix: <what to do>``) without its value, which
            names the file (already the panel's title) and would differ between folders.
        titles: one name per entry (e.g. the file name), the first line of its panel's title.
        ncols: panels per row (fewer when there are fewer entries); rows follow.
        panel: side of one panel, inches.
        alpha: opacity of the mask overlay.
        title: the figure's title (e.g. the prompt), or None.

    Returns:
        A Figure with exactly ``len(entries)`` axes, in entry order. Each result's axes shows one (H, W, 3) uint8
        image, the input with its best mask blended in (unchanged outside the mask), at the input's own size.

    Raises:
        ValueError: no entries, or ``titles`` of another length.
    """
    import textwrap

    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from .pipeline import BatchItem

    entries, titles = list(entries), list(titles)
    if not entries or len(titles) != len(entries):
        raise ValueError(f"contact_sheet_figure needs one title per entry and at least one entry; got "
                         f"{len(entries)} entries, {len(titles)} titles")
    ncols = max(1, min(ncols, len(entries)))
    nrows = math.ceil(len(entries) / ncols)
    fig = Figure(figsize=(panel * ncols, panel * nrows + (0.3 if title else 0.0)), dpi=100, layout="constrained")
    if title:
        fig.suptitle(title, fontsize=10)
    for k, (entry, name) in enumerate(zip(entries, titles)):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        if isinstance(entry, BatchItem):
            entry = entry.result if entry.error is None else entry.error
        if isinstance(entry, str):
            ax.text(0.5, 0.5, textwrap.fill(entry.split("; got ")[0], 28), ha="center", va="center", fontsize=6, wrap=True,
                    transform=ax.transAxes)
            ax.set_title(f"{name}\nerror", fontsize=8, color="tab:red")
            continue
        masks = entry.segmentation_masks
        if not masks:
            ax.imshow(entry.image)
            n = entry.num_candidates
            ax.set_title(f"{name}\nno match ({n} candidate{'s' * (n != 1)})", fontsize=8)
            continue
        best = masks[0]
        ax.imshow(overlay_masks(entry.image, [best.mask], alpha))
        x, y, w, h = best.bbox
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=PALETTE[0] / 255, linewidth=1.2))
        ax.set_title(f"{name}\nbest {best.final_score:.2f} ({len(masks)} mask{'s' * (len(masks) != 1)})",
                     fontsize=8)
    return fig
