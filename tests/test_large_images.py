"""Large photos at bounded memory (issue #19): masks are generated and kept at a working size
(``sam2.max_image_side``), only the returned masks come back to the input's size, and an edit blends only the box
around its mask. Peak memory and time per megapixel are measured by ``benchmarks/large_images.py``, not here.

The exactness tests use an image that is an integer (nearest-neighbour) enlargement of a small one: its area-
downscaled working copy is then the small image itself, so the large run must reproduce the small run exactly,
with every returned mask the same enlargement of the small run's mask.
"""

import numpy as np
import pytest
from test_pipeline import tiny_components, tiny_config

from ovseg.config import MIN_WORKING_SIDE, get_balanced_config
from ovseg.errors import ConfigError
from ovseg.pipeline import OpenVocabSegmentationPipeline
from ovseg.utils import downscale_image, upscale_nearest, working_shape

FACTOR = 6  # the large image is the 96 x 128 test scene enlarged 6x: 576 x 768 px


def enlarge(a: np.ndarray, k: int = FACTOR) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor, written independently of ovseg (numpy repeat)."""
    return np.repeat(np.repeat(a, k, axis=0), k, axis=1)


def pipeline(max_side: int) -> OpenVocabSegmentationPipeline:
    cfg = tiny_config().replace(**{"sam2.max_image_side": max_side})
    return OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))


def test_working_shape_keeps_aspect_and_never_enlarges():
    assert working_shape(6000, 8000, 1024) == (768, 1024)
    assert working_shape(4000, 6000, 512) == (341, 512)
    assert working_shape(96, 128, 1024) == (96, 128)  # small images keep their size
    assert working_shape(6000, 8000, 0) == (6000, 8000)  # 0 = no limit


def test_upscale_nearest_replicates_pixels_and_aligns_centres():
    small = np.arange(12, dtype=np.int32).reshape(3, 4)
    np.testing.assert_array_equal(upscale_nearest(small, (9, 12)), enlarge(small, 3))
    # a non-integer factor: output pixel centres map into the input pixel that contains them
    out = upscale_nearest(np.array([[1, 2]], np.int32), (1, 5))  # centres 0.5..4.5 -> 0.2, 0.6, 1.0, 1.4, 1.8
    np.testing.assert_array_equal(out, [[1, 1, 2, 2, 2]])
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    assert upscale_nearest(mask, (9, 12)).dtype == bool and upscale_nearest(mask, (9, 12)).sum() == 9


def test_area_downscale_of_an_integer_enlargement_is_the_original(scene):
    np.testing.assert_array_equal(downscale_image(enlarge(scene), scene.shape[:2]), scene)


def test_a_large_image_is_segmented_at_the_working_size_and_returned_at_full_size(scene):
    small = pipeline(1024).segment(scene, "red circle", top_k=3)
    big_pipe = pipeline(128)  # the 768 px image works at 128 px: the scene itself
    big = big_pipe.segment(enlarge(scene), "red circle", top_k=3)
    assert big_pipe._masks.shape == scene.shape[:2]  # candidates are kept at the working size
    assert big.image.shape == (96 * FACTOR, 128 * FACTOR, 3) and big.to_dict()["image_size"] == [768, 576]
    assert [m.index for m in big.segmentation_masks] == [m.index for m in small.segmentation_masks]
    assert len(big.segmentation_masks) > 0
    for b, s in zip(big.segmentation_masks, small.segmentation_masks):
        assert b.final_score == pytest.approx(s.final_score, abs=1e-6)
        np.testing.assert_array_equal(b.mask, enlarge(s.mask))  # full size, exact
        assert b.bbox == [v * FACTOR for v in s.bbox] and b.area == s.area * FACTOR**2


def test_semantic_label_map_is_at_the_input_size(scene):
    small = pipeline(1024).segment_semantic(scene, ["red circle", "blue square"])
    big = pipeline(128).segment_semantic(enlarge(scene), ["red circle", "blue square"])
    assert big.masks.shape == scene.shape[:2]
    np.testing.assert_array_equal(big.label_map, enlarge(small.label_map))


def test_the_mask_generator_alone_works_at_the_working_size(scene):
    from dummies import tiny_sam2_model
    from ovseg.masks import MaskGenerator

    cfg = tiny_config().replace(**{"sam2.max_image_side": 128}).sam2
    gen = MaskGenerator(tiny_sam2_model(128), cfg)
    big = gen.generate(enlarge(scene))
    small = gen.generate(scene)
    assert big.shape == scene.shape[:2]
    np.testing.assert_array_equal(big.masks, small.masks)
    assert gen.refilter(max_image_side=0).shape == scene.shape[:2]  # refilter may change it too (last image: scene)


@pytest.mark.filterwarnings("ignore:image .* px is more than 4x the inpainting model's native")
def test_edit_of_a_large_image_keeps_outside_pixels_and_matches_the_whole_image_path(monkeypatch):
    """Above WHOLE_RESIZE_PIXELS the edit resizes in uint8 on the way in and only the edit's box on the way out; on
    the same image the two paths agree within a grey level and both keep every pixel outside the soft mask."""
    from diffusers import StableDiffusionInpaintPipeline

    from dummies import get_dummy_inpaint_components
    from ovseg import inpaint
    from ovseg.inpaint import Inpainter, prepare_mask

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)  # larger than the tiny model's 32 px: enlarged
    mask = np.zeros((300, 420), bool)
    mask[80:190, 150:260] = True
    cfg = tiny_config().inpainting
    sd = StableDiffusionInpaintPipeline(**get_dummy_inpaint_components(), requires_safety_checker=False)
    edit = Inpainter(sd, cfg)
    whole = np.asarray(edit.edit(image, mask, "remove", seed=0).image)
    monkeypatch.setattr(inpaint, "WHOLE_RESIZE_PIXELS", 0)
    lean = np.asarray(edit.edit(image, mask, "remove", seed=0).image)
    outside = prepare_mask(mask, cfg.mask_dilation, cfg.mask_blur) == 0
    np.testing.assert_array_equal(lean[outside], image[outside])
    np.testing.assert_array_equal(whole[outside], image[outside])
    diff = np.abs(lean.astype(int) - whole.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.5
    assert (lean[~outside] != image[~outside]).mean() > 0.5  # the mask really was repainted


def test_overlay_in_bands_equals_the_whole_image_blend():
    from ovseg import viz

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (viz.OVERLAY_ROWS * 2 + 37, 40, 3), dtype=np.uint8)
    masks = [rng.random(image.shape[:2]) < 0.4, rng.random(image.shape[:2]) < 0.4]  # overlapping
    ref = image.astype(np.float32)
    for k, m in enumerate(masks):  # the blend written out once for the whole image
        ref[m] = 0.5 * ref[m] + 0.5 * viz.PALETTE[k].astype(np.float32)
    np.testing.assert_array_equal(viz.overlay_masks(image, masks), ref.round().clip(0, 255).astype(np.uint8))


def test_max_image_side_is_validated():
    with pytest.raises(ConfigError, match=f"max_image_side must be 0 .* at least {MIN_WORKING_SIDE}"):
        get_balanced_config().replace(**{"sam2.max_image_side": 10})
    assert get_balanced_config().sam2.max_image_side == 512  # mini: 4x the mini world's scenes
    assert get_balanced_config(profile="full").sam2.max_image_side == 1024  # SAM 2's own input size


@pytest.mark.filterwarnings("ignore:image .* px is more than 4x the inpainting model's native")
def test_a_phone_sized_jpeg_through_the_cli(tmp_path, monkeypatch):
    """A 24 MP JPEG (6000 x 4000, an ordinary phone photo) through ``ovseg segment`` and ``remove``: every file is
    written at the photo's size. (On tiny random components; peak memory is the benchmark's business.)"""
    from PIL import Image
    from test_pipeline import cli_on_tiny_components

    from ovseg import cli

    scene = np.full((40, 60, 3), 200, np.uint8)
    scene[10:30, 20:40] = (220, 40, 40)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(enlarge(scene, 100)).save(photo, quality=90)  # 6000 x 4000
    _, yaml = cli_on_tiny_components(monkeypatch, tmp_path, scene)
    for cmd in (["segment", str(photo), "--prompt", "red square", "--top-k", "2", "--out", str(tmp_path / "seg")],
                ["remove", str(photo), "--prompt", "red square", "--out", str(tmp_path / "rm")]):
        assert cli.main(cmd + ["--config", str(yaml), "--set", "sam2.max_image_side=256"]) == 0
    for name in ("seg/overlay.png", "seg/mask_00.png", "rm/mask.png", "rm/edit_mask.png", "rm/edited.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size == (6000, 4000), name
