"""Experiments of notebook 3.2.4 (ovseg.experiments.inpainting)."""

import math

import numpy as np
import pytest
from matplotlib.figure import Figure

from ovseg.experiments import inpainting as exp


def _disc(h=40, w=50, r=8):
    yy, xx = np.mgrid[:h, :w]
    return (yy - h // 2) ** 2 + (xx - w // 2) ** 2 <= r * r


def test_psnr_inside_only_counts_the_region():
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[:5] = 255  # differs only in the top half
    bottom = np.zeros((10, 10), bool)
    bottom[5:] = True
    assert math.isinf(exp.psnr_inside(b, a, bottom))
    assert exp.psnr_inside(b, a, ~bottom) == pytest.approx(0.0)  # maximal error: 10 log10(255^2 / 255^2)
    assert math.isnan(exp.psnr_inside(b, a, np.zeros((10, 10), bool)))


def test_edge_weight_drops_with_blur_not_with_dilation():
    from ovseg.inpaint import prepare_mask

    m = _disc()
    assert exp._edge_weight(m, prepare_mask(m, 0, 0.0)) == 1.0
    assert exp._edge_weight(m, prepare_mask(m, 5, 0.0)) == 1.0
    feathered = exp._edge_weight(m, prepare_mask(m, 5, 8.0))
    assert 0.4 < feathered < 0.95  # a sigma-8 blur 5 px outside the edge leaves the edge partly kept


def test_figures_are_matplotlib_figures():
    img = np.full((40, 50, 3), 100, np.uint8)
    m = _disc()
    assert isinstance(exp.mask_preparation_figure(img, m, [(0, 0.0), (5, 8.0)]), Figure)
    assert isinstance(exp.edits_figure(img, [("remove", img), ("replace", img)], m), Figure)


def test_edit_quality_rows_one_row_per_kind_with_intervals_and_no_timings():
    from ovseg.edit_eval import _success_rates

    results = [("remove", False, True)] * 3 + [("remove", False, False)] + [("replace", True, False)] * 2
    summary = {"n_edits": 6, "seconds_per_edit": 2.0, "fid": 1.5, **_success_rates(results)}
    rows = exp.edit_quality_rows([("a", summary)])
    assert [r["edit"] for r in rows] == ["remove", "replace, novel class"]  # kinds without edits: no row
    assert rows[0]["n"] == 4 and rows[0]["success"] == 75.0 and rows[0]["fid"] == 1.5
    lo, hi = (float(t) for t in rows[0]["success_ci95"].strip("[]").split(","))
    assert lo < 75.0 < hi and lo >= 0.0 and hi == 100.0  # 4 cases: resamples of 4 hits reach 100%
    assert rows[1]["n"] == 2 and rows[1]["success"] == 0.0 and rows[1]["success_ci95"] == "[0.0, 0.0]"
    assert all("seconds_per_edit" not in r for r in rows)


def test_blur_dilation_sweep_scores_against_the_world_ground_truth(one_thread):
    """Classical (Telea) removal with the mini CLIP: fast and deterministic; the sweep restores the config."""
    from ovseg import OpenVocabSegmentationPipeline, get_fast_config

    pipe = OpenVocabSegmentationPipeline(config=get_fast_config().replace(**{"inpainting.method": "classical"}))
    before = pipe.inpainter.config
    rows, examples = exp.blur_dilation_sweep(pipe, [5, 6], [(0, 0.0), (3, 0.0)])
    assert pipe.inpainter.config == before
    assert [(r["dilation_px"], r["blur_px"]) for r in rows] == [(0, 0.0), (3, 0.0)]
    assert all(r["scenes"] == 2 and 0.0 <= r["success"] <= 1.0 and r["psnr_vs_truth_db"] > 10 for r in rows)
    for r in rows:  # the interval holds the mean; with 2 scenes it spans their values
        lo, hi = (float(t) for t in r["psnr_ci95"].strip("[]").split(","))
        assert lo - 0.01 <= r["psnr_vs_truth_db"] <= hi + 0.01
    assert rows[1]["repainted_px"] > rows[0]["repainted_px"]  # dilation grows the repainted area
    assert examples[(0, 0.0)].shape == examples["input"].shape == examples["truth"].shape
    with pytest.raises(ValueError):
        exp.blur_dilation_sweep(pipe, [5], [(0, 0.0)], operation="style")
    assert isinstance(exp.sweep_figure(rows, examples), Figure)
