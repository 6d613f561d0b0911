"""ovseg.experiments.alignment: ranking metrics, prompts with ground truth, the alpha sweep on constructed scores."""

from __future__ import annotations

import numpy as np
import pytest

from ovseg.experiments import alignment as A
from ovseg.experiments.masks import mask_iou
from ovseg.utils import MaskSet


def test_rank_hits():
    ious = np.array([0.1, 0.9, 0.6, 0.0])
    r = A.rank_hits(np.array([3, 0, 2, 1]), ious, top_ks=(1, 3, 4))
    assert r == {"iou": 0.0, "hit@1": 0.0, "hit@3": 1.0, "hit@4": 1.0}
    assert A.rank_hits(np.array([1]), ious, top_ks=(1,)) == {"iou": 0.9, "hit@1": 1.0}
    assert A.rank_hits(np.array([], int), ious, top_ks=(1, 3)) == {"iou": 0.0, "hit@1": 0.0, "hit@3": 0.0}


def _cache():
    """10 x 10 image: object B (40 px, sim 0.5), distractor region D (10 px, sim 0.6), the rest sim 0."""
    import torch

    b = np.zeros((10, 10), bool)
    b[:4, :] = True
    d = np.zeros((10, 10), bool)
    d[9, :] = True
    sim = np.zeros((10, 10), np.float32)
    sim[b], sim[d] = 0.5, 0.6
    masks = MaskSet.from_masks(np.stack([d, b]))  # index 0 = D (wrong), 1 = B (right)
    return A.ImageCache(masks, torch.from_numpy(sim)[None], (10, 10), mask_iou(masks.masks, b[None]),
                        [A.PromptCase("thing", "class", b)])


def test_background_suppression_flips_the_ranking():
    c = _cache()
    # alpha 0: S_D = 0.6 > S_B = 0.5 -> the distractor ranks first
    r0 = A.evaluate_setting([c], 0.0, spatial=False, threshold=-1.0, top_ks=(1, 3))
    assert r0["acc@0.5"] == 0.0 and r0["mean_iou"] == 0.0 and r0["hit@3"] == 1.0 and r0["oracle"] == 1.0
    # alpha 1: final_B = 0.5 - 6/60 = 0.4 > final_D = 0.6 - 20/90 = 0.378
    r1 = A.evaluate_setting([c], 1.0, spatial=False, threshold=-1.0, top_ks=(1, 3))
    assert r1["acc@0.5"] == 1.0 and r1["mean_iou"] == pytest.approx(1.0) and r1["no_mask"] == 0.0
    rows = A.alignment_sweep([c], alphas=(0.0, 1.0), spatial=(False,), threshold=-1.0, top_ks=(1, 3))
    assert [r["acc@0.5"] for r in rows] == [0.0, 1.0]
    assert len(A.sweep_figure(rows, thesis_alpha=0.3).axes) == 3


def test_intervals_and_paired_difference_of_two_settings():
    c = _cache()
    # 3 copies of the image: alpha 1 gets every prompt right, alpha 0 none -> a paired difference of exactly +1
    d = A.setting_difference([c, c, c], (1.0, False), (0.0, False), threshold=-1.0)
    assert d["difference"] == 1.0 and d["ci95"] == "[1.000, 1.000]" and d["n_prompts"] == 3
    assert d["verdict"] == "first higher"
    same = A.setting_difference([c], (0.0, False), (0.0, False), threshold=-1.0)
    assert same["difference"] == 0.0 and same["verdict"].startswith("inside the noise")
    r = A.evaluate_setting([c, c], 1.0, spatial=False, threshold=-1.0, top_ks=(1,))
    assert r["acc_ci95"] == "[1.000, 1.000]" and (r["acc_lo"], r["acc_hi"]) == (1.0, 1.0)


def test_similarity_threshold_drops_masks():
    c = _cache()
    r = A.evaluate_setting([c], 1.0, spatial=False, threshold=0.55, top_ks=(1,))  # only D (S = 0.6) survives
    assert r["acc@0.5"] == 0.0 and r["no_mask"] == 0.0
    r = A.evaluate_setting([c], 1.0, spatial=False, threshold=0.9, top_ks=(1,))
    assert r["no_mask"] == 1.0 and r["mean_iou"] == 0.0 and r["n_prompts"] == 1
    assert A.evaluate_setting([c], 0.0, spatial=False, kinds=("shape",))["n_prompts"] == 0


def test_prompt_cases_union_and_dedupe():
    from ovseg.world import Scene, SceneObject

    m = np.zeros((3, 6, 6), bool)
    m[0, :2, :2] = m[1, 4:, 4:] = m[2, :2, 4:] = True
    objs = [SceneObject("red star", "red", "star", (1.0, 1.0), 2.0, 0.0, "filled", False, area=4),
            SceneObject("red star", "red", "star", (5.0, 5.0), 2.0, 0.0, "filled", False, area=4),
            SceneObject("blue ring", "blue", "ring", (5.0, 1.0), 2.0, 0.0, "filled", False, area=4)]
    scene = Scene(np.zeros((6, 6, 3), np.uint8), m, np.zeros((6, 6), np.uint8), objs, "", 0)
    cases = A.prompt_cases(scene, kinds=("class", "colour"))
    by = {c.prompt: c for c in cases}
    assert sorted(by) == ["blue ring", "blue thing", "red star", "red thing"]
    assert by["red star"].gt.sum() == 8 and by["red star"].kind == "class"  # union of the two stars
    np.testing.assert_array_equal(by["blue thing"].gt, m[2])


def test_scoring_figure():
    from ovseg.align import score_masks

    c = _cache()
    scores = score_masks(c.masks.score_weights((10, 10), 0.0, 0.25), c.sim, 0.3)
    fig = A.scoring_figure(np.zeros((10, 10, 3), np.uint8), "thing", c.sim[0].numpy(), c.masks, {"a": scores}, k=3)
    assert len(fig.axes) == 5  # map + colorbar + 3 ranks (the third empty)
