import numpy as np
import pytest
import torch

from ovseg.align import rank_masks, score_masks, score_masks_loop, semantic_segmentation
from ovseg.benchmark import synthetic_masks
from ovseg.utils import MaskSet, boundary_weights, masks_to_boxes_xywh


def test_matches_the_slow_reference():
    masks = MaskSet.from_masks(synthetic_masks(30, 48, seed=1))
    w = masks.score_weights((48, 48), boundary_width=3.0, min_weight=0.25)
    sim = torch.rand(5, 48, 48) * 2 - 1
    fast, slow = score_masks(w, sim, 0.3), score_masks_loop(w, sim, 0.3)
    for name in ("mean_similarity", "outside_similarity", "final"):
        np.testing.assert_allclose(getattr(fast, name), getattr(slow, name), atol=1e-5)


def test_thesis_formula_without_weighting():
    """With spatial weighting off and alpha 0, S_i is the plain mean of sim over the mask."""
    m = np.zeros((1, 10, 10), bool)
    m[0, 2:5, 2:6] = True
    sim = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10) / 100
    s = score_masks(MaskSet.from_masks(m).score_weights((10, 10), 0.0, 0.0), sim, alpha=0.0)
    assert s.mean_similarity[0, 0] == pytest.approx(sim[0][torch.from_numpy(m[0])].mean().item(), abs=1e-6)
    assert s.outside_similarity[0, 0] == pytest.approx(sim[0][~torch.from_numpy(m[0])].mean().item(), abs=1e-6)


def test_background_suppression_penalises_whole_image_masks():
    h = w = 20
    obj = np.zeros((h, w), bool)
    obj[5:15, 5:15] = True
    full = np.ones((h, w), bool)
    sim = torch.full((1, h, w), 0.2)
    sim[0, 5:15, 5:15] = 0.3
    ms = MaskSet.from_masks(np.stack([obj, full]))
    scores = score_masks(ms.score_weights((h, w), 0.0, 0.0), sim, alpha=0.3)
    assert scores.final[0, 0] > scores.final[1, 0]
    assert scores.outside_similarity[1, 0] == pytest.approx(scores.mean_similarity[1, 0])  # no outside
    no_supp = score_masks(ms.score_weights((h, w), 0.0, 0.0), sim, alpha=0.0)
    np.testing.assert_allclose(no_supp.final, no_supp.mean_similarity)


def test_spatial_weighting_downweights_the_boundary():
    m = np.zeros((1, 21, 21), np.float32)
    m[0, 3:18, 3:18] = 1
    wts = boundary_weights(m, width=4.0, min_weight=0.25)[0]
    assert wts[10, 10] == 1.0 and wts[3, 10] == pytest.approx(0.25) and wts[0, 0] == 0.0
    # A noisy ring on the boundary hurts less with weighting on.
    sim = torch.full((1, 21, 21), 0.3)
    sim[0, 3, :] = sim[0, 17, :] = -1.0
    ms = MaskSet.from_masks(m.astype(bool))
    on = score_masks(ms.score_weights((21, 21), 4.0, 0.25), sim, 0.0).mean_similarity[0, 0]
    off = score_masks(ms.score_weights((21, 21), 0.0, 0.0), sim, 0.0).mean_similarity[0, 0]
    assert on > off


def test_rank_threshold_topk_and_semantic():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, :4] = True
    masks[1, 4:] = True
    masks[2, :, :4] = True
    ms = MaskSet.from_masks(masks)
    sim = torch.zeros(2, 8, 8)
    sim[0, :4] = 0.9  # class 0 = top half
    sim[1, 4:] = 0.8  # class 1 = bottom half
    s = score_masks(ms.score_weights((8, 8), 0.0, 0.0), sim, 0.3)
    assert rank_masks(s, 0)[0] == 0 and rank_masks(s, 1)[0] == 1
    assert list(rank_masks(s, 0, top_k=1)) == [0]
    assert len(rank_masks(s, 0, threshold=2.0)) == 0
    label, per_mask = semantic_segmentation(ms, s, threshold=0.5)
    assert label.dtype == np.int32 and label.shape == (8, 8)
    assert (label[:4] == 0).all() and (label[4:] == 1).all()
    assert per_mask[2] == -1  # its best class has S = 0.45 < 0.5


def test_boxes_xywh():
    m = np.zeros((2, 10, 12), bool)
    m[0, 2:5, 3:9] = True
    np.testing.assert_array_equal(masks_to_boxes_xywh(m), [[3, 2, 6, 3], [0, 0, 0, 0]])


def test_maskset_filter_cat_records():
    ms = MaskSet.from_masks(synthetic_masks(5, 40))
    sub = ms.filter(np.array([0, 2]))
    assert len(sub) == 2 and len(MaskSet.cat([ms, sub])) == 7
    rec = sub.to_records()[0]
    assert set(rec) == {"bbox", "area", "predicted_iou", "stability_score", "point_coords", "crop_box"}
