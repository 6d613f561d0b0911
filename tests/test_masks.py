"""ovseg.masks: SAM 2 automatic mask generation on a tiny random-weight SAM 2 (CPU, seconds).

Random weights predict arbitrary IoUs, so most tests use zero thresholds and ``box_nms_thresh=1``
(no box NMS) to get many masks out; what is tested is the plumbing, caching and filtering logic.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from ovseg.config import SAM2Config
from ovseg.errors import ConfigError, InputError, WeightsError
from ovseg.masks import SAM2_CONFIGS, MaskGenerator, build_sam2_model, mask_coverage
from ovseg.utils import MaskSet

try:
    from .dummies import tiny_sam2_model
except ImportError:  # tests/ is not a package: pytest puts it on sys.path (rootdir-relative "prepend" import)
    from dummies import tiny_sam2_model

H, W = 160, 224  # non-square, larger than the model's 128 px input

# Everything passes the quality filters; no duplicate suppression; crop layers off.
LOOSE = SAM2Config(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0,
                   crop_n_layers=0, min_mask_region_area=0)


@pytest.fixture(scope="module")
def model():
    return tiny_sam2_model(image_size=128, seed=0)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """(160, 224, 3) uint8: blue background, a green square near each corner, a red square in the middle."""
    img = np.full((H, W, 3), (90, 120, 200), np.uint8)
    for y, x in [(10, 10), (10, W - 40), (H - 40, 10), (H - 40, W - 40)]:
        img[y:y + 30, x:x + 30] = (20, 180, 40)
    img[65:95, 97:127] = (200, 50, 50)
    return img


def _same(a: MaskSet, b: MaskSet) -> bool:
    names = ("masks", "predicted_iou", "stability_score", "bbox", "area", "point_coords", "crop_box")
    return all(np.array_equal(getattr(a, n), getattr(b, n)) for n in names)  # NaN != NaN: none expected


def _row_keys(ms: MaskSet) -> set[tuple]:
    """One hashable identity per mask: prompt point, score and pixels."""
    return {(tuple(ms.point_coords[i]), float(ms.predicted_iou[i]), ms.masks[i].tobytes()) for i in range(len(ms))}


def test_import_is_cheap():
    code = "import sys, ovseg.masks; print(any(m in sys.modules for m in ('torch', 'sam2', 'hydra')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_feature_sizes_match_sam2_for_1024_and_follow_image_size():
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from ovseg.masks import _backbone_feature_sizes

    def sizes(image_size: int) -> list[tuple[int, int]]:
        return _backbone_feature_sizes(SimpleNamespace(image_size=image_size, backbone_stride=16, num_feature_levels=3))

    assert sizes(1024) == SAM2ImagePredictor(SimpleNamespace(image_size=1024))._bb_feat_sizes  # sam2's hard-coded
    assert sizes(128) == [(32, 32), (16, 16), (8, 8)]


def test_generate_types_shapes_and_order(model, image):
    gen = MaskGenerator(model, LOOSE)
    ms = gen.generate(image)
    n = len(ms)
    assert n == 4 * 4 * 3  # 16 prompts x 3 multimask outputs, nothing filtered
    assert ms.source == "sam2" and ms.shape == (H, W)
    assert ms.masks.shape == (n, H, W) and ms.masks.dtype == bool
    for name, dtype, shape in [("bbox", np.int64, (n, 4)), ("crop_box", np.int64, (n, 4)), ("area", np.int64, (n,)),
                               ("predicted_iou", np.float32, (n,)), ("stability_score", np.float32, (n,)),
                               ("point_coords", np.float32, (n, 2))]:
        arr = getattr(ms, name)
        assert arr.dtype == dtype and arr.shape == shape, name
    x, y, w, h = ms.bbox.T
    assert (x >= 0).all() and (y >= 0).all() and (w >= 0).all() and (h >= 0).all()
    assert (x + w <= W).all() and (y + h <= H).all()
    # XYWH box of a non-empty mask: top-left pixel and the full pixel extent
    nonempty = ms.area > 0
    rows, cols = ms.masks.any(axis=2), ms.masks.any(axis=1)  # (N, H), (N, W)
    np.testing.assert_array_equal(x[nonempty], cols[nonempty].argmax(1))
    np.testing.assert_array_equal(y[nonempty], rows[nonempty].argmax(1))
    np.testing.assert_array_equal(x[nonempty] + w[nonempty], W - cols[nonempty][:, ::-1].argmax(1))
    np.testing.assert_array_equal(y[nonempty] + h[nonempty], H - rows[nonempty][:, ::-1].argmax(1))
    np.testing.assert_array_equal(ms.area, ms.masks.reshape(n, -1).sum(1))
    assert ((ms.predicted_iou >= 0) & (ms.predicted_iou <= 1)).all()
    assert ((ms.stability_score >= 0) & (ms.stability_score <= 1)).all()
    assert ms.stability_score.max() > 0  # the tiny model's logits are not all near zero
    assert (np.diff(ms.predicted_iou) <= 0).all()  # sorted, highest predicted IoU first
    assert (ms.crop_box == [0, 0, W, H]).all()
    px, py = ms.point_coords.T
    assert ((px >= 0) & (px <= W) & (py >= 0) & (py <= H)).all()
    assert gen.encoder_calls == 1
    assert 0.0 < mask_coverage(ms) <= 1.0


def test_deterministic_for_same_seed(image):
    a = MaskGenerator(tiny_sam2_model(seed=0), LOOSE).generate(image)
    b = MaskGenerator(tiny_sam2_model(seed=0), LOOSE).generate(image)
    c = MaskGenerator(tiny_sam2_model(seed=1), LOOSE).generate(image)
    assert _same(a, b)
    assert not _same(a, c)


def test_stricter_thresholds_keep_a_subset_above_threshold(model, image):
    gen = MaskGenerator(model, LOOSE)
    loose = gen.generate(image)
    iou_t = float(np.median(loose.predicted_iou))
    stab_t = float(np.median(loose.stability_score))
    # Without NMS (box_nms_thresh=1) filtering is monotone: stricter -> subset.
    strict = gen.refilter(pred_iou_thresh=iou_t, stability_score_thresh=stab_t)
    assert 0 < len(strict) < len(loose)
    assert (strict.predicted_iou > iou_t).all() and (strict.stability_score >= stab_t).all()
    assert _row_keys(strict) <= _row_keys(loose)
    expected = (loose.predicted_iou > iou_t) & (loose.stability_score >= stab_t)
    assert len(strict) == expected.sum()


def test_refilter_equals_fresh_generate_without_encoder_run(model, image):
    gen = MaskGenerator(model, LOOSE)
    first = gen.generate(image)
    assert gen.encoder_calls == 1
    changes = dict(pred_iou_thresh=0.45, box_nms_thresh=0.7, points_per_side=6, stability_score_offset=0.5)
    refiltered = gen.refilter(**changes)
    assert gen.encoder_calls == 1  # decoder and filtering only
    fresh_gen = MaskGenerator(model, dataclasses.replace(LOOSE, **changes))
    assert _same(refiltered, fresh_gen.generate(image))
    assert fresh_gen.encoder_calls == 1
    assert gen.last_config == dataclasses.replace(LOOSE, **changes)
    # refilter is for one call only; generating the same image again reuses the embedding
    assert gen.config == LOOSE
    assert _same(gen.generate(image), first) and gen.encoder_calls == 1
    m2m = gen.refilter(use_m2m=True, multimask_output=False)  # the quality preset's refinement step
    assert len(m2m) == 4 * 4 and gen.encoder_calls == 1
    gen.update_config(pred_iou_thresh=0.45)
    assert gen.config.pred_iou_thresh == 0.45
    assert (gen.generate(image).predicted_iou > 0.45).all() and gen.encoder_calls == 1


def test_new_image_replaces_the_cache(model, image):
    gen = MaskGenerator(model, LOOSE)
    other = image.copy()
    other[:40] = 0  # (the fixture is symmetric under flips)
    gen.generate(image)
    b = gen.generate(other)
    assert gen.encoder_calls == 2
    assert _same(gen.refilter(), b)  # refilter works on the most recent image
    gen.generate(image)
    assert gen.encoder_calls == 3  # only the most recent image is cached
    gen.clear_cache()
    with pytest.raises(InputError, match="generate"):
        gen.refilter()


def test_crop_layers_encode_each_crop_once_and_keep_masks_inside_crops(model, image):
    from sam2.utils.amg import generate_crop_boxes

    cfg = dataclasses.replace(LOOSE, crop_n_layers=1, crop_nms_thresh=1.0, crop_n_points_downscale_factor=1,
                              mask_threshold=2.0)  # a higher logit cut gives the tiny model localized masks
    gen = MaskGenerator(model, dataclasses.replace(cfg, crop_n_layers=0))
    gen.generate(image)
    assert gen.encoder_calls == 1
    ms = gen.refilter(crop_n_layers=1)
    assert gen.encoder_calls == 1 + 4  # whole image cached, 2x2 crops encoded once each
    boxes_xyxy, _ = generate_crop_boxes((H, W), 1, cfg.crop_overlap_ratio)
    expected = {(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes_xyxy}
    found = {tuple(b) for b in ms.crop_box.tolist()}
    assert found <= expected and len(found) > 1  # masks from the whole image and from crops
    # sam2 keeps empty masks (stability 0/0 = NaN) at stability_score_thresh=0; MaskGenerator drops them
    assert (ms.area > 0).all() and np.isfinite(ms.stability_score).all()
    for mask, (x, y, w, h) in zip(ms.masks, ms.crop_box):
        outside = mask.copy()
        outside[y:y + h, x:x + w] = False
        assert not outside.any()
    fresh = MaskGenerator(model, cfg)
    assert _same(fresh.generate(image), ms) and fresh.encoder_calls == 5


def test_progress_bar_counts_crops(model, image, capsys):
    gen = MaskGenerator(model, dataclasses.replace(LOOSE, crop_n_layers=1), progress=True)
    gen.generate(image)
    err = capsys.readouterr().err
    assert "5/5" in err and "crop" in err


@pytest.mark.parametrize("bad, match", [
    (np.zeros((32, 32), np.uint8), "shape"),
    (np.zeros((32, 32, 4), np.uint8), "shape"),
    (np.zeros((2, 32, 32, 3), np.uint8), "shape"),
    (np.zeros((32, 32, 3), np.float32), "uint8"),
    (np.zeros((0, 32, 3), np.uint8), "1x1"),
    ([[[0, 0, 0]]], "numpy"),
])
def test_bad_images_raise_input_error(model, bad, match):
    with pytest.raises(InputError, match=match):
        MaskGenerator(model, LOOSE).generate(bad)


def test_refilter_errors(model, image):
    gen = MaskGenerator(model, LOOSE)
    with pytest.raises(InputError, match="generate"):
        gen.refilter(pred_iou_thresh=0.5)
    gen.generate(image)
    with pytest.raises(ConfigError, match="unknown sam2 setting 'pred_iou'"):
        gen.refilter(pred_iou=0.5)
    with pytest.raises(ConfigError, match="pred_iou_thresh"):
        gen.refilter(pred_iou_thresh=1.5)
    with pytest.raises(ConfigError, match="model"):
        gen.refilter(model="sam2.1-hiera-large")
    with pytest.raises(ConfigError):
        MaskGenerator(model, {"points_per_side": 4})


def test_mask_coverage():
    masks = np.zeros((2, 4, 5), bool)
    masks[0, :2] = True  # 10 px
    masks[1, 1:3] = True  # 10 px, 5 of them shared
    assert mask_coverage(MaskSet.from_masks(masks)) == pytest.approx(15 / 20)
    assert mask_coverage(MaskSet.empty((4, 5))) == 0.0


def test_sam2_config_names_exist():
    import importlib.resources

    root = importlib.resources.files("sam2")
    assert {"sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"} <= set(SAM2_CONFIGS)
    assert all(root.joinpath(name).is_file() for name in SAM2_CONFIGS.values())
    with pytest.raises(ConfigError, match="sam2 config"):
        build_sam2_model("sam2.1_hiera_xl")
    with pytest.raises(ConfigError, match="compose"):  # hydra's error, before anything is instantiated
        build_sam2_model("sam2.1_hiera_t", overrides=["model.not_a_key=1"])
    with pytest.raises(ConfigError, match="override strings"):
        build_sam2_model("sam2.1_hiera_t", overrides=["model.image_size"])


def test_missing_or_corrupt_checkpoint_raises_weights_error(tmp_path):
    with pytest.raises(WeightsError, match="existing file"):
        tiny_sam2_model(checkpoint=tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="readable"):
        tiny_sam2_model(checkpoint=bad)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip(model, tmp_path, suffix):
    import torch
    from safetensors.torch import save_file

    sd = model.state_dict()
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".pt":
        torch.save({"model": sd}, path)
    else:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    loaded = tiny_sam2_model(seed=1, checkpoint=path)  # seed 1 init is overwritten by the file
    assert not loaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, sd[key]), key


def test_checkpoint_key_mismatch_names_keys(model, tmp_path):
    import torch

    sd = dict(model.state_dict())
    sd.pop("no_mem_embed")
    sd["extra.weight"] = torch.zeros(1)
    path = tmp_path / "keys.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(WeightsError, match="no_mem_embed") as err:
        tiny_sam2_model(checkpoint=path)
    assert "extra.weight" in str(err.value) and "keys.pt" in str(err.value)
    sd = dict(model.state_dict())
    sd["no_mem_embed"] = torch.zeros(1, 1, 7)
    torch.save(sd, path)  # a bare state dict is accepted too
    with pytest.raises(WeightsError, match="shapes"):
        tiny_sam2_model(checkpoint=path)


def test_local_yaml_config_matches_package_config(model, tmp_path):
    import importlib.resources

    import torch

    src = importlib.resources.files("sam2").joinpath("configs/sam2.1/sam2.1_hiera_t.yaml")
    local = tmp_path / "mini.yaml"
    with importlib.resources.as_file(src) as path:
        shutil.copy(path, local)
    from_file = tiny_sam2_model(seed=0, config=local)  # same seed + architecture -> same init
    assert from_file.sam_mask_decoder.dynamic_multimask_via_stability  # build_sam2's postprocessing overrides
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in from_file.state_dict().items())
    with pytest.raises(ConfigError, match="does not have"):
        build_sam2_model(str(local), overrides=["model.not_a_key=1"])


def test_min_mask_region_area_removes_small_islands(model, image):
    """ovseg runs sam2's postprocess_small_regions (which sam2 1.1.0 defines but never calls)."""
    import cv2

    plain = MaskGenerator(model, LOOSE).generate(image)

    def smallest_island(m):
        n, _, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=8)
        return stats[1:, cv2.CC_STAT_AREA].min() if n > 1 else 10**9

    assert min(smallest_island(m) for m in plain.masks) < 100  # the test image has something to remove
    filtered = MaskGenerator(model, dataclasses.replace(LOOSE, min_mask_region_area=100)).generate(image)
    assert len(filtered) > 0
    assert all(smallest_island(m) >= 100 for m in filtered.masks)
    np.testing.assert_array_equal(filtered.area, filtered.masks.reshape(len(filtered), -1).sum(1))


def test_crop_layers_with_no_surviving_masks_return_an_empty_set(model, image):
    """sam2 1.1.0 crashes in its crop NMS when a crop yields no mask; ovseg returns an empty MaskSet."""
    strict = dataclasses.replace(LOOSE, crop_n_layers=1, pred_iou_thresh=1.0)
    ms = MaskGenerator(model, strict).generate(image)
    assert len(ms) == 0 and ms.masks.shape == (0, *image.shape[:2])
