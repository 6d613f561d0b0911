import numpy as np
import pytest
import torch

from ovseg.metrics import confusion_matrix, dense_confusion, metrics_from_confusion, sparse_confusion


def test_hand_computed_case():
    target = np.array([[0, 0, 1, 1],
                       [0, 2, 2, 255]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, 0, 2]])
    cm = confusion_matrix(pred, target, 3)
    # gt 0: pred 0,1,0 -> [2, 1, 0]; gt 1: [0, 2, 0]; gt 2: pred 2, 0 -> [1, 0, 1]; the 255 pixel is ignored
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 2, 0], [1, 0, 1]])
    m = metrics_from_confusion(cm)
    np.testing.assert_allclose(m.iou, [2 / 4, 2 / 3, 1 / 2])
    np.testing.assert_allclose(m.precision, [2 / 3, 2 / 3, 1 / 1])
    np.testing.assert_allclose(m.recall, [2 / 3, 2 / 2, 1 / 2])
    np.testing.assert_allclose(m.f1, [2 / 3, 4 / 5, 2 / 3])
    assert m.pixel_accuracy == pytest.approx(5 / 7)
    assert m.miou == pytest.approx((0.5 + 2 / 3 + 0.5) / 3)


def test_agrees_with_torchmetrics_classes():
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex, MulticlassPrecision, MulticlassRecall

    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (30, 40))
    target[rng.random((30, 40)) < 0.1] = 255
    pred = np.where(rng.random((30, 40)) < 0.7, np.where(target == 255, 0, target), rng.integers(0, 5, (30, 40)))
    m = metrics_from_confusion(confusion_matrix(pred, target, 5))
    p, t = torch.from_numpy(pred).reshape(-1), torch.from_numpy(target).reshape(-1)
    for cls, ours in ((MulticlassJaccardIndex, m.iou), (MulticlassPrecision, m.precision),
                      (MulticlassRecall, m.recall), (MulticlassF1Score, m.f1)):
        ref = cls(num_classes=5, average=None, ignore_index=255)(p, t).numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_absent_classes_are_nan_and_skipped():
    cm = confusion_matrix(np.zeros((4, 4), int), np.zeros((4, 4), int), 3)
    m = metrics_from_confusion(cm)
    assert m.iou[0] == 1 and np.isnan(m.iou[1]) and m.miou == 1.0
    assert np.isnan(m.subset_miou([1, 2]))
    d = m.to_dict(["a", "b", "c"], {"novel": [1, 2]})
    assert d["per_class_iou"]["b"] is None and d["mIoU_novel"] is None


def test_sparse_round_trip_and_additivity():
    rng = np.random.default_rng(1)
    cms = [confusion_matrix(rng.integers(0, 4, (8, 8)), rng.integers(0, 4, (8, 8)), 4) for _ in range(3)]
    total = sum(dense_confusion(sparse_confusion(c), 4) for c in cms)
    np.testing.assert_array_equal(total, sum(cms))
    with pytest.raises(ValueError, match="class indices"):
        confusion_matrix(np.full((2, 2), 4), np.zeros((2, 2), int), 4)


def test_fid_and_clip_score_on_a_clip_extractor():
    from conftest import tiny_dense_clip
    from ovseg.metrics import _clip_pixels, clip_score_metric, fid_metric

    clip = tiny_dense_clip()
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.integers(0, 255, (8, 3, 48, 48), dtype=np.uint8))
    fake = torch.from_numpy(rng.integers(0, 255, (8, 3, 48, 48), dtype=np.uint8))
    fid = fid_metric(clip)
    fid.update(real, real=True)
    fid.update(real, real=False)
    same = float(fid.compute())
    fid.reset()
    fid.update(real, real=True)
    fid.update(fake // 4, real=False)  # much darker images
    assert abs(same) < 1e-3 < float(fid.compute())
    score = clip_score_metric(clip)
    value = float(score(real[:2], ["a red circle", "a blue square"]))
    assert -100.0 <= value <= 100.0
    with torch.no_grad():  # torchmetrics clamps the score at 0, as CLIPScore does
        manual = torch.nn.functional.cosine_similarity(
            clip.model.encode_image(_clip_pixels(clip, real[:2])),
            clip.model.encode_text(clip.tokenizer(["a red circle", "a blue square"]))).clamp_min(0) * 100
    assert value == pytest.approx(float(manual.mean()), abs=1e-3)
