"""ovseg.experiments.masks: IoU / recall / coverage on hand-made masks, the sweep bookkeeping, the figures."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.experiments import masks as M
from ovseg.utils import MaskSet


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_and_best_iou_on_boxes():
    gt = np.stack([_box(10, 10, 0, 4, 0, 4), _box(10, 10, 6, 10, 6, 10)])  # two 16 px squares
    pred = np.stack([_box(10, 10, 0, 4, 0, 2),  # half of object 0: IoU 8/16
                     _box(10, 10, 6, 10, 6, 10),  # object 1 exactly
                     np.zeros((10, 10), bool)])  # empty
    iou = M.mask_iou(pred, gt)
    assert iou.shape == (3, 2)
    np.testing.assert_allclose(iou, [[0.5, 0.0], [0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(M.best_iou_per_object(pred, gt), [0.5, 1.0])
    np.testing.assert_allclose(M.best_iou_per_object(pred[:0], gt), [0.0, 0.0])
    assert M.mask_iou(np.zeros((1, 3, 3), bool), np.zeros((1, 3, 3), bool))[0, 0] == 0.0  # empty vs empty


def test_mask_stats_recall_coverage_and_hidden_objects():
    gt = np.stack([_box(10, 10, 0, 4, 0, 4), _box(10, 10, 6, 10, 6, 10), np.zeros((10, 10), bool)])  # 3rd: hidden
    pred = MaskSet.from_masks(np.stack([_box(10, 10, 0, 4, 0, 3),  # IoU 12/16 = 0.75 with object 0
                                        _box(10, 10, 6, 10, 6, 8)]))  # IoU 8/16 = 0.5 with object 1
    s = M.mask_stats(pred, gt)
    assert s["n_objects"] == 2 and s["n_masks"] == 2
    assert s["hits"] == 2  # IoU >= 0.5 counts
    assert s["coverage"] == pytest.approx(20 / 100)
    np.testing.assert_allclose(s["best_iou"], [0.75, 0.5])
    assert M.mask_stats(pred, gt, iou_thresh=0.6)["hits"] == 1


def test_sweep_settings_one_at_a_time_and_presets():
    base = {"points_per_side": 16, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7, "crop_n_layers": 1}
    grid = {"points_per_side": (8, 16), "crop_n_layers": (0,)}
    s = M.sweep_settings(base, grid=grid, presets={"thesis": M.THESIS_SAM2})
    assert [x["label"] for x in s] == ["points_per_side=8", "points_per_side=16", "crop_n_layers=0", "thesis"]
    assert s[0]["setting"] == {**base, "points_per_side": 8}
    assert s[2]["setting"] == {**base, "crop_n_layers": 0}
    assert s[3]["setting"] == M.THESIS_SAM2 and s[3]["group"] == "preset"
    default = M.sweep_settings(base)
    assert {"mini fast", "mini balanced", "mini quality", "thesis"} <= {x["label"] for x in default}


class _FakeGenerator:
    """Stands in for MaskGenerator: 'masks' = the top-left square of side points_per_side."""

    def __init__(self):
        self.encoder_calls = 0
        self.calls = []

    def generate(self, image):
        self.encoder_calls += 1
        self.image = image

    def refilter(self, **setting):
        self.calls.append(setting)
        h, w = self.image.shape[:2]
        n = setting["points_per_side"]
        return MaskSet.from_masks(_box(h, w, 0, n, 0, n)[None])


def test_run_sweep_dedupes_settings_and_summarises():
    from ovseg.world import Scene

    gt = _box(8, 8, 0, 4, 0, 4)[None]
    scenes = [Scene(np.zeros((8, 8, 3), np.uint8), gt, np.zeros((8, 8), np.uint8), [], "", 0)] * 2
    base = {"points_per_side": 4, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7, "crop_n_layers": 1}
    settings = M.sweep_settings(base, grid={"points_per_side": (2, 4, 8)}, presets={"same as base": {}})
    gen = _FakeGenerator()
    per_image, counts = M.run_sweep(gen, scenes, settings)
    assert counts == {"settings": 3, "images": 2, "encoder_calls": 2, "generator_runs": 6}  # base preset deduplicated
    rows = {r["setting"]: r for r in M.summarise(settings, per_image)}
    assert rows["points_per_side=4"]["recall@0.5"] == 1.0 and rows["points_per_side=4"]["mean_best_iou"] == 1.0
    assert rows["points_per_side=2"]["recall@0.5"] == 0.0  # IoU 4/16
    assert rows["points_per_side=8"]["coverage"] == 1.0 and rows["points_per_side=8"]["n_objects"] == 2
    assert rows["same as base"]["recall@0.5"] == 1.0
    # recall over 2 objects that are both found (or both missed): no spread, the interval is the point
    assert rows["points_per_side=4"]["recall_ci95"] == "[1.000, 1.000]"
    assert rows["points_per_side=2"]["recall_ci95"] == "[0.000, 0.000]"
    assert rows["points_per_side=2"]["best_iou_ci95"] == "[0.250, 0.250]"
    fig = M.sweep_figure(M.summarise(settings, per_image), base)
    assert len(fig.axes) >= 2


def test_load_eval_scene_matches_the_shipped_labels():
    from ovseg.datasets import load_dataset

    ds = load_dataset("mini")
    scene = M.load_eval_scene(ds, 3)
    sample = ds[3]
    assert scene.instance_masks.shape[1:] == sample.label.shape
    for k, obj in enumerate(scene.objects):  # every instance carries its object's class in the label map
        if scene.instance_masks[k].any():
            values = np.unique(sample.label[scene.instance_masks[k]])
            assert list(values) == [ds.class_names.index(obj.class_name)]
    chosen = M.select_scenes(ds, 2, min_objects=3)
    assert len(chosen) == 2 and all(s.instance_masks.any(axis=(1, 2)).sum() >= 3 for s in chosen)


def test_masks_figure_handles_empty_mask_sets():
    img = np.zeros((16, 20, 3), np.uint8)
    fig = M.masks_figure(img, [("none", np.zeros((0, 16, 20), bool)), ("one", _box(16, 20, 2, 8, 2, 8)[None])],
                         gt=_box(16, 20, 2, 8, 2, 8)[None])
    assert len(fig.axes) == 4
    out = M._overlay(img, _box(16, 20, 2, 8, 2, 8)[None])
    assert out[0, 0].tolist() == [0, 0, 0] and out[2, 2].any() and out[5, 5].any()


def test_summarise_interval_spans_mixed_objects():
    per_image = [{"label": "a", "n_masks": 1, "coverage": 0.5, "n_objects": 2, "hits": 1,
                  "best_iou": np.array([0.9, 0.1])}]
    (row,) = M.summarise([{"group": "g", "label": "a", "setting": {}}], per_image)
    assert row["recall@0.5"] == 0.5 and (row["recall_lo"], row["recall_hi"]) == (0.0, 1.0)  # 2 objects: any mix
    assert row["best_iou_ci95"] == "[0.100, 0.900]"
