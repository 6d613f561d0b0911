"""Figures of ovseg.viz built from hand-made results (no model runs)."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from ovseg.pipeline import BatchItem, SegmentationMask, SegmentationResult
from ovseg.viz import PALETTE, contact_sheet_figure


def _result(image: np.ndarray, boxes: list[tuple[int, int, int, int]], scores: list[float]) -> SegmentationResult:
    masks = []
    for k, ((x, y, w, h), s) in enumerate(zip(boxes, scores)):
        m = np.zeros(image.shape[:2], bool)
        m[y:y + h, x:x + w] = True
        masks.append(SegmentationMask(m, s, s, 0.0, [x, y, w, h], int(m.sum()), 0.9, 0.9, k))
    return SegmentationResult(image, "red circle", masks, num_candidates=len(boxes) + 2, mask_source="sam2",
                              profile="mini")


def test_contact_sheet_shows_each_images_best_mask_and_errors():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for _ in range(3)]
    two = _result(images[0], [(4, 6, 10, 8), (20, 2, 6, 6)], [0.61, 0.40])  # best first
    none = _result(images[1], [], [])
    item = BatchItem(2, "c.png", _result(images[2], [(0, 0, 5, 5)], [0.33]), None, 0.1)
    failed = BatchItem(3, "d.png", None, "image file must be complete and readable; got /tmp/x/d.png: image file is "
                                         "truncated; fix: re-export it", 0.0)
    fig = contact_sheet_figure([two, none, item, failed, "too small"], ["a.png", "b.png", "c.png", "d.png", "e.png"],
                               ncols=2, title='"red circle"')
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5  # one axes per entry, no spare ones
    rows_cols = [ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes]
    assert set(rows_cols) == {(3, 2)}  # 5 panels at 2 per row: 3 rows

    a = fig.axes[0]
    shown = np.asarray(a.images[0].get_array())
    assert shown.shape == images[0].shape and shown.dtype == np.uint8
    assert (shown[8, 6] != images[0][8, 6]).any()  # inside the best mask: blended with PALETTE[0]
    expected = np.rint(0.5 * images[0][8, 6].astype(float) + 0.5 * PALETTE[0]).astype(np.uint8)
    assert np.abs(shown[8, 6].astype(int) - expected).max() <= 1
    assert (shown[4, 22] == images[0][4, 22]).all()  # inside the second mask only: not drawn
    assert (shown[20, 30] == images[0][20, 30]).all()  # outside every mask: the input
    assert len(a.patches) == 1 and a.patches[0].get_width() == 10  # the best mask's box
    assert a.get_title() == "a.png\nbest 0.61 (2 masks)"

    b = fig.axes[1]
    assert (np.asarray(b.images[0].get_array()) == images[1]).all() and "no match (2 candidates)" in b.get_title()
    assert fig.axes[2].get_title() == "c.png\nbest 0.33 (1 mask)"
    for ax, text in ((fig.axes[3], "image file must be complete and readable"), (fig.axes[4], "too small")):
        assert not ax.images and ax.get_title().endswith("error")
        shown_text = " ".join(t.get_text() for t in ax.texts).replace("\n", " ")
        assert shown_text == text  # an ovseg error's rule, without the value that names the file's path
    none1 = _result(images[1], [], [])
    none1.num_candidates = 1
    assert contact_sheet_figure([none1], ["b.png"]).axes[0].get_title() == "b.png\nno match (1 candidate)"
    assert fig._suptitle.get_text() == '"red circle"'

    one = contact_sheet_figure([two], ["a.png"], ncols=4)  # fewer entries than columns: one row of one
    assert len(one.axes) == 1 and one.axes[0].get_subplotspec().get_geometry()[:2] == (1, 1)
    with pytest.raises(ValueError, match="one title per entry"):
        contact_sheet_figure([two, none], ["a.png"])
    with pytest.raises(ValueError, match="at least one entry"):
        contact_sheet_figure([], [])
