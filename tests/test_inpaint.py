"""Tests for ovseg.inpaint (thesis 3.2.4) with tiny, seeded, offline diffusers pipelines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from ovseg.config import InpaintingConfig
from ovseg.errors import ConfigError, InputError, WeightsError
from ovseg.inpaint import (
    EditResult,
    Inpainter,
    bounding_box_mask,
    classical_remove,
    enclosing_square_mask,
    load_inpaint_pipeline,
    prepare_mask,
    residual_correction,
    select_pipeline_class,
)

try:
    from .dummies import get_dummy_inpaint_components, tiny_clip_tokenizer
except ImportError:  # tests/ is not a package: pytest puts it on sys.path (rootdir-relative "prepend" import)
    from dummies import get_dummy_inpaint_components, tiny_clip_tokenizer

H, W = 40, 56  # non-square input; the tiny model's native size is 32 x 32


def _image(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (h, w, 3)).astype(np.uint8)


def _mask(h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[14:26, 20:34] = True
    return m


def _config(**changes) -> InpaintingConfig:
    # Small dilation / blur so that a 40 x 56 image keeps a region with m == 0.
    base = dict(num_inference_steps=3, mask_dilation=2, mask_blur=2.0)
    base.update(changes)
    return InpaintingConfig(**base)


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    from diffusers import StableDiffusionInpaintPipeline

    path = tmp_path_factory.mktemp("tiny-sd-inpaint")
    pipe = StableDiffusionInpaintPipeline(**get_dummy_inpaint_components(), requires_safety_checker=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sd_pipe(sd_dir):
    return load_inpaint_pipeline(sd_dir)


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    """A tiny SDXL inpainting pipeline: second text encoder with projection, text_time UNet embedding."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    c = get_dummy_inpaint_components()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 time ids x 8 + 32 pooled text
        cross_attention_dim=64,  # 32 + 32: both text encoders' hidden states, concatenated
    )
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**{**c["text_encoder"].config.to_dict(),
                                                                   "projection_dim": 32}))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    pipe = StableDiffusionXLInpaintPipeline(vae=c["vae"], text_encoder=c["text_encoder"], text_encoder_2=text_encoder_2,
                                            tokenizer=c["tokenizer"], tokenizer_2=c["tokenizer"], unet=unet,
                                            scheduler=scheduler)
    path = tmp_path_factory.mktemp("tiny-sdxl-inpaint")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.save_pretrained(path)
    return path


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


# ---- module hygiene ----------------------------------------------------------------------------

def test_import_does_not_load_torch_or_diffusers():
    code = ("import sys, ovseg.inpaint; bad = [m for m in ('torch', 'diffusers', 'transformers', 'cv2') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- tokenizer ---------------------------------------------------------------------------------

def test_tiny_tokenizer_covers_arbitrary_prompts(tmp_path):
    tok = tiny_clip_tokenizer(tmp_path)
    ids = tok("A Red car, café 42!").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == "aredcar,café42!"
    assert tok.model_max_length == 77


# ---- prepare_mask ------------------------------------------------------------------------------

def test_prepare_mask_dilation_grows_area():
    mask = _mask()
    grown = prepare_mask(mask, dilation=3, blur=0.0)
    assert grown.dtype == np.float32 and grown.shape == mask.shape
    assert set(np.unique(grown)) <= {0.0, 1.0}
    assert grown.sum() > mask.sum()
    assert (grown[mask] == 1.0).all()
    # elliptical: the corner diagonal grows less than the side
    assert grown[14, 34 + 2] == 1.0 and grown[14 - 3, 34 + 3] == 0.0


def test_prepare_mask_disabled_steps_is_identity():
    mask = _mask()
    np.testing.assert_array_equal(prepare_mask(mask, 0, 0.0), mask.astype(np.float32))


def test_prepare_mask_blur_feathers_edge_and_is_zero_far_away():
    mask = np.zeros((100, 100), dtype=bool)
    mask[40:60, 40:60] = True
    m = prepare_mask(mask, dilation=5, blur=4.0)
    assert m.dtype == np.float32 and m.min() >= 0.0 and m.max() <= 1.0
    assert 0.0 < m[50, 35] < 1.0 and 0.0 < m[50, 64] < 1.0  # at the dilated edge (35 / 64)
    assert m[50, 50] == pytest.approx(1.0, abs=1e-3)
    assert m[5, 5] == 0.0 and m[95, 95] == 0.0 and m[50, 5] == 0.0  # > dilation + 4 sigma away


@pytest.mark.parametrize(
    "mask, dilation, blur, words",
    [
        (np.zeros((8, 8), np.uint8), 1, 1.0, "bool"),
        (np.zeros((8, 8, 1), bool), 1, 1.0, "HxW bool"),
        (np.zeros((8, 8), bool), -1, 1.0, "dilation must be a non-negative integer"),
        (np.zeros((8, 8), bool), 1, -2.0, "blur must be a finite number >= 0"),
        (np.zeros((8, 8), bool), 1, float("nan"), "blur must be a finite number >= 0"),
    ],
)
def test_prepare_mask_bad_inputs(mask, dilation, blur, words):
    with pytest.raises(InputError, match=words):
        prepare_mask(mask, dilation, blur)


# ---- classical_remove --------------------------------------------------------------------------

def test_classical_remove_preserves_outside_pixels_exactly():
    img = _image()
    mask = _mask()
    out = classical_remove(img, mask, radius=3, dilation=2)
    region = prepare_mask(mask, 2, 0.0) > 0
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out[~region], img[~region])
    assert (out[region] != img[region]).any()


def test_classical_remove_bad_inputs():
    img, mask = _image(), _mask()
    with pytest.raises(InputError, match="radius must be an integer >= 1"):
        classical_remove(img, mask, radius=0, dilation=2)
    with pytest.raises(InputError, match="mask shape must equal the image's HxW"):
        classical_remove(img, mask[:-1], radius=3, dilation=2)
    with pytest.raises(InputError, match="HxWx3 uint8"):
        classical_remove(img.astype(np.float32), mask, radius=3, dilation=2)


# ---- load_inpaint_pipeline ---------------------------------------------------------------------

def test_load_chooses_sd_class_from_config(sd_pipe):
    import torch

    assert type(sd_pipe).__name__ == "StableDiffusionInpaintPipeline"
    assert sd_pipe.unet.dtype == torch.float32  # fp32 on CPU
    assert sd_pipe.unet.config.in_channels == 9
    assert sd_pipe.safety_checker is None


def test_load_dtype_and_device_arguments(sd_dir):
    import torch

    assert load_inpaint_pipeline(sd_dir, dtype="fp16").unet.dtype == torch.float16
    with pytest.raises(InputError, match="dtype must be float16, bfloat16 or float32"):
        load_inpaint_pipeline(sd_dir, dtype="int8")
    with pytest.raises(InputError, match="device must be a torch device string"):
        load_inpaint_pipeline(sd_dir, device="gpu0")


def test_load_chooses_sdxl_class_from_config(sdxl_dir):
    pipe = load_inpaint_pipeline(sdxl_dir)
    assert type(pipe).__name__ == "StableDiffusionXLInpaintPipeline"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = Inpainter(pipe, _config()).edit(_image(), _mask(), "replace", "a red car")
    out, m = np.asarray(res.image), res.mask
    assert out.shape == (H, W, 3)
    np.testing.assert_array_equal(out[m == 0], _image()[m == 0])


def test_select_pipeline_class_uses_config_not_name():
    sd = {"_class_name": "StableDiffusionInpaintPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    assert select_pipeline_class(sd) == "StableDiffusionInpaintPipeline"
    xl = {**sd, "_class_name": "StableDiffusionXLInpaintPipeline"}
    assert select_pipeline_class(xl) == "StableDiffusionXLInpaintPipeline"
    assert select_pipeline_class({**sd, "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"]}) \
        == "StableDiffusionXLInpaintPipeline"
    assert select_pipeline_class({**sd, "text_encoder_2": [None, None]}) == "StableDiffusionInpaintPipeline"
    assert select_pipeline_class(sd, {"addition_embed_type": "text_time"}) == "StableDiffusionXLInpaintPipeline"


def test_load_missing_component_names_it(sd_dir, tmp_path):
    broken = _copy(sd_dir, tmp_path / "no-unet")
    shutil.rmtree(broken / "unet")
    with pytest.raises(WeightsError, match="missing the 'unet' component") as err:
        load_inpaint_pipeline(broken)
    assert "\n" not in str(err.value)


def test_load_missing_model_index(sd_dir, tmp_path):
    broken = _copy(sd_dir, tmp_path / "no-index")
    (broken / "model_index.json").unlink()
    with pytest.raises(WeightsError, match="missing model_index.json"):
        load_inpaint_pipeline(broken)


def test_load_rejects_non_inpainting_unet(sd_dir, tmp_path):
    broken = _copy(sd_dir, tmp_path / "txt2img")
    cfg_path = broken / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["in_channels"] = 4
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match="is not an inpainting model") as err:
        load_inpaint_pipeline(broken)
    assert "4 input channels" in str(err.value)


def test_load_missing_hub_model_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "ovseg-tests/no-such-inpainting-model"
    with pytest.raises(WeightsError) as err:
        load_inpaint_pipeline(name)
    msg = str(err.value)
    assert name in msg and "not in the Hugging Face cache" in msg and "HF_HUB_OFFLINE" in msg
    assert f"hf download {name}" in msg and "ovseg weights download full" in msg
    assert "stable-diffusion-2-inpainting was withdrawn" in msg
    assert "stable-diffusion-v1-5/stable-diffusion-inpainting" in msg and "\n" not in msg


def test_load_repo_id_from_hf_cache_without_network(sd_dir, tmp_path):
    # A fresh interpreter, because huggingface_hub reads HF_HUB_CACHE at import. HF_HUB_OFFLINE is unset on
    # purpose: a cached model must load without contacting the hub (no retries against an unreachable host).
    import os

    repo = tmp_path / "hub" / "models--ovseg-tests--tiny-inpaint"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(sd_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_CACHE"] = str(tmp_path / "hub")
    code = ("from ovseg.inpaint import load_inpaint_pipeline; p = load_inpaint_pipeline('ovseg-tests/tiny-inpaint'); "
            "print(type(p).__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "StableDiffusionInpaintPipeline"
    assert "Retrying" not in out.stderr


def test_load_missing_local_dir(tmp_path):
    with pytest.raises(WeightsError, match="must be an existing local directory or a Hugging Face repo id"):
        load_inpaint_pipeline(str(tmp_path / "nowhere" / "model"))


def test_load_file_instead_of_dir(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(WeightsError, match="not a file"):
        load_inpaint_pipeline(f)


# ---- Inpainter.edit ----------------------------------------------------------------------------

@pytest.mark.parametrize("operation, edit_prompt", [("remove", None), ("replace", "a red car"), ("style", "oil paint")])
def test_edit_size_and_exact_preservation(sd_pipe, operation, edit_prompt):
    img, mask = _image(), _mask()
    res = Inpainter(sd_pipe, _config()).edit(img, mask, operation, edit_prompt, object_prompt="dog")
    assert isinstance(res, EditResult)
    assert res.image.mode == "RGB" and res.image.size == (W, H)
    out = np.asarray(res.image)
    m = res.mask
    assert m.dtype == np.float32 and m.shape == (H, W) and 0.0 <= m.min() and m.max() <= 1.0
    keep = m == 0
    assert keep.sum() > 0.3 * keep.size and (m > 0).sum() >= mask.sum()
    np.testing.assert_array_equal(out[keep], img[keep])  # byte-identical outside the blended mask
    assert (out[mask] != img[mask]).any()
    assert res.operation == operation and res.method == "diffusion"
    assert res.steps == 3 and res.guidance_scale == 7.5 and res.seed == 0


def test_edit_prompts_and_strengths(sd_pipe):
    cfg = _config(strength=0.9, style_strength=0.6)
    inp = Inpainter(sd_pipe, cfg)
    img, mask = _image(), _mask()
    rem = inp.edit(img, mask, "remove", object_prompt="  brown   dog ")
    assert rem.prompt == cfg.remove_prompt
    assert rem.negative_prompt == cfg.negative_prompt + ", brown dog"
    assert rem.strength == 0.9
    rep = inp.edit(img, mask, "replace", "a  red car")
    assert rep.prompt == "a red car" and rep.negative_prompt == cfg.negative_prompt and rep.strength == 0.9
    sty = inp.edit(img, mask, "style", "van gogh painting", num_inference_steps=4)
    assert sty.strength == 0.6 and sty.steps == 4
    unnamed = Inpainter(sd_pipe, _config(remove_negative_object=False)).edit(img, mask, "remove", object_prompt="dog")
    assert unnamed.negative_prompt == cfg.negative_prompt  # the object's name is not appended


def test_bounding_box_mask():
    m = np.zeros((10, 12), dtype=bool)
    m[2, 3] = m[6, 8] = True
    box = bounding_box_mask(m)
    assert box.dtype == bool and box[2:7, 3:9].all() and box.sum() == 5 * 6
    assert not bounding_box_mask(np.zeros((4, 4), dtype=bool)).any()


def test_replace_region_box_repaints_the_box_and_keeps_the_rest(sd_pipe):
    img = _image()
    ring = np.zeros((H, W), dtype=bool)
    ring[14:26, 20:34] = True
    ring[17:23, 24:30] = False  # a hole: the silhouette leaves the centre alone, the box does not
    cfg = _config(replace_region="box", mask_dilation=0, mask_blur=0.0)
    rep = Inpainter(sd_pipe, cfg).edit(img, ring, "replace", "a red car")
    np.testing.assert_array_equal(rep.mask > 0, bounding_box_mask(ring))
    out = np.asarray(rep.image)
    np.testing.assert_array_equal(out[rep.mask == 0], img[rep.mask == 0])
    assert (out[17:23, 24:30] != img[17:23, 24:30]).any()
    # remove and style keep the silhouette
    sty = Inpainter(sd_pipe, cfg).edit(img, ring, "style", "oil paint")
    np.testing.assert_array_equal(sty.mask > 0, ring)
    silhouette = Inpainter(sd_pipe, _config(mask_dilation=0, mask_blur=0.0)).edit(img, ring, "replace", "a red car")
    np.testing.assert_array_equal(silhouette.mask > 0, ring)


def test_residual_correction_removes_a_colour_cast_and_keeps_the_fill_detail():
    rng = np.random.default_rng(0)
    original = rng.uniform(0.2, 0.8, (32, 40, 3)).astype(np.float32)
    mask = np.zeros((32, 40), np.float32)
    mask[10:20, 12:26] = 1.0
    fill = rng.uniform(0.2, 0.8, (32, 40, 3)).astype(np.float32)  # what the model paints inside, with detail
    generated = np.where(mask[:, :, None] > 0, fill, original) + np.float32([0.1, -0.05, 0.0])  # + a colour cast
    out = residual_correction(generated, original, mask, sigma=4.0)
    assert out.dtype == np.float32 and out.shape == generated.shape
    np.testing.assert_allclose(out, np.where(mask[:, :, None] > 0, fill, original), atol=1e-5)  # cast gone, detail kept
    assert residual_correction(generated, original, mask, 0.0) is generated  # 0 = off
    assert residual_correction(generated, original, np.ones_like(mask), 4.0) is generated  # nothing known: unchanged


def test_edit_with_residual_correction_keeps_outside_pixels_exact(sd_pipe):
    img, mask = _image(), _mask()
    plain = Inpainter(sd_pipe, _config()).edit(img, mask, "replace", "a red car", seed=0)
    corrected = Inpainter(sd_pipe, _config(residual_correction_sigma=4.0)).edit(img, mask, "replace", "a red car", seed=0)
    out, keep = np.asarray(corrected.image), corrected.mask == 0
    np.testing.assert_array_equal(out[keep], img[keep])
    assert (out[mask] != np.asarray(plain.image)[mask]).any()  # the fill moved by the measured error


def test_enclosing_square_holds_every_shape_of_the_same_circumcircle():
    from ovseg.world import SceneConfig, render_scene

    # a triangle's enclosing square holds the star the world draws in its place (same circumradius, centre, rotation)
    scfg = SceneConfig(size=(96, 96), n_objects=(1, 1), textured_objects=0.0)
    for seed in range(40):
        scene = render_scene(seed, scfg)
        if not scene.objects or scene.objects[0].shape != "triangle":
            continue
        tri = scene.instance_masks[0]
        square = enclosing_square_mask(tri)
        ys, xs = np.nonzero(square)
        assert square[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all() and (square >= tri).all()
        star = render_scene(seed, scfg, edit=(0, f"{scene.objects[0].colour} star")).instance_masks[0]
        assert (star <= square).all()
        break
    else:
        pytest.fail("no single-triangle scene among 40 seeds")
    # a disc: the square is its bounding box; one pixel: itself; none: nothing; clipped at the border
    yy, xx = np.mgrid[:40, :40]
    disc = (yy - 20) ** 2 + (xx - 18) ** 2 <= 8 ** 2
    np.testing.assert_array_equal(enclosing_square_mask(disc), bounding_box_mask(disc))
    dot = np.zeros((9, 9), dtype=bool)
    dot[4, 5] = True
    np.testing.assert_array_equal(enclosing_square_mask(dot), dot)
    assert not enclosing_square_mask(np.zeros((5, 5), dtype=bool)).any()
    line = np.zeros((20, 20), dtype=bool)
    line[0, :10] = True  # circle: centre (4.5, 0), radius 4.5 + half a pixel; rows 0-5 (cut at the top), columns 0-9
    sq = enclosing_square_mask(line)
    assert sq[:6, :10].all() and sq.sum() == 60


def test_replace_region_enclosing_repaints_the_square(sd_pipe):
    img = _image()
    tri = np.zeros((H, W), dtype=bool)
    for r in range(10):  # a right triangle: its enclosing circle is centred on the hypotenuse
        tri[14 + r, 20:21 + r] = True
    cfg = _config(replace_region="enclosing", mask_dilation=0, mask_blur=0.0)
    rep = Inpainter(sd_pipe, cfg).edit(img, tri, "replace", "a red car")
    np.testing.assert_array_equal(rep.mask > 0, enclosing_square_mask(tri))
    assert (rep.mask > 0).sum() > bounding_box_mask(tri).sum()
    out = np.asarray(rep.image)
    np.testing.assert_array_equal(out[rep.mask == 0], img[rep.mask == 0])


def test_replace_region_box_covering_the_image_is_refused(sd_pipe):
    corners = np.zeros((H, W), dtype=bool)
    corners[0, 0] = corners[-1, -1] = True
    with pytest.raises(InputError, match="mask bounding box must leave some of the image") as err:
        Inpainter(sd_pipe, _config(replace_region="box")).edit(_image(), corners, "replace", "a red car")
    assert "replace_region: mask" in str(err.value)


def test_replace_region_must_be_known():
    from ovseg.config import PipelineConfig

    with pytest.raises(ConfigError, match="replace_region"):
        PipelineConfig(inpainting=_config(replace_region="hull")).validate()


def test_edit_is_deterministic_per_seed(sd_pipe):
    inp = Inpainter(sd_pipe, _config())
    img, mask = _image(), _mask()
    a = np.asarray(inp.edit(img, mask, "replace", "a red car", seed=1).image)
    b = np.asarray(inp.edit(img, mask, "replace", "a red car", seed=1).image)
    c = np.asarray(inp.edit(img, mask, "replace", "a red car", seed=2).image)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_edit_expected_slice(sd_pipe):
    # Reference values from this CPU (torch 2.14.1, diffusers 0.42.1); tolerance covers BLAS / thread differences.
    res = Inpainter(sd_pipe, _config()).edit(_image(), _mask(), "replace", "a red car", seed=0)
    got = np.asarray(res.image)[18:21, 25:28, 0].astype(int).ravel()
    expected = np.array(EXPECTED_SLICE)
    assert np.abs(got - expected).max() <= 2, got.tolist()


EXPECTED_SLICE = [153, 159, 166, 166, 165, 166, 172, 172, 161]


def test_one_ovseg_progress_bar_and_no_library_bars(sd_dir, capfd):
    """Loading prints no diffusers / transformers bar; an edit with progress shows one ovseg bar over the steps
    diffusers runs (int(steps * strength)), and diffusers' own per-step bar never shows."""
    import re

    from diffusers.utils import logging as dlog

    capfd.readouterr()
    pipe = load_inpaint_pipeline(sd_dir)
    err = capfd.readouterr().err
    assert "Loading pipeline components" not in err and "it/s" not in err and "%|" not in err
    assert dlog.is_progress_bar_enabled()  # diffusers' global setting is restored after loading
    quiet = Inpainter(pipe, _config())
    assert pipe._progress_bar_config.get("disable") is True
    quiet.edit(_image(), _mask(), "remove", seed=0, num_inference_steps=4)
    assert "%|" not in capfd.readouterr().err  # progress off: no bar at all
    Inpainter(pipe, _config(style_strength=0.5), progress=True).edit(_image(), _mask(), "style", "a red car", seed=0,
                                                                     num_inference_steps=4)
    assert pipe._progress_bar_config.get("disable") is True
    bars = [seg for seg in re.split(r"[\r\n]+", capfd.readouterr().err) if "%|" in seg]
    assert bars and all(seg.startswith("ovseg inpainting") for seg in bars)
    assert "2/2" in bars[-1]  # 4 steps x strength 0.5


def test_edit_warns_for_far_larger_images(sd_pipe):
    img = _image(h=40, w=136)  # 136 > 4 x 32 px native side
    mask = _mask(40, 136)
    with pytest.warns(UserWarning, match="native 32x32 px"):
        res = Inpainter(sd_pipe, _config()).edit(img, mask, "remove")
    assert res.image.size == (136, 40)


def test_classical_method_via_inpainter():
    cfg = _config(method="classical")
    inp = Inpainter(None, cfg)
    img, mask = _image(), _mask()
    res = inp.edit(img, mask, "remove", object_prompt="dog")
    out = np.asarray(res.image)
    assert res.method == "classical" and res.prompt is None and res.seed is None
    np.testing.assert_array_equal(out[res.mask == 0], img[res.mask == 0])
    with pytest.raises(InputError, match="method 'classical' supports only remove") as err:
        inp.edit(img, mask, "replace", "a red car")
    assert "inpainting.method: diffusion" in str(err.value)


def test_diffusion_without_pipeline_is_config_error():
    with pytest.raises(ConfigError, match="needs a diffusers inpainting pipeline"):
        Inpainter(None, _config())


def _full_mask():
    m = np.ones((H, W), dtype=bool)
    m[0, :5] = False  # 99.8% covered
    return m


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(operation="erase"), "operation must be one of remove, replace, style"),
        (dict(operation="replace", edit_prompt=None), "replace needs a non-empty edit prompt"),
        (dict(operation="style", edit_prompt="   "), "style needs a non-empty edit prompt"),
        (dict(mask=np.zeros((H, W - 1), bool)), "mask shape must equal the image's HxW"),
        (dict(mask=np.zeros((H, W), bool)), "mask is empty: the prompt matched nothing"),
        (dict(mask=_full_mask()), "mask must leave some of the image to inpaint from"),
        (dict(mask=_mask().astype(np.uint8)), "mask must be an HxW bool array"),
        (dict(image=_image().astype(np.float32)), "image must be an HxWx3 uint8 RGB array"),
        (dict(image=_image()[:, :, :1]), "image must be an HxWx3 uint8 RGB array"),
        (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*63 - 1\]"),
        (dict(num_inference_steps=0), "num_inference_steps must be an integer >= 1"),
        (dict(operation="style", edit_prompt="oil", num_inference_steps=1),
         "num_inference_steps x strength must give at least one denoising step"),
    ],
)
def test_edit_bad_inputs(sd_pipe, kwargs, words):
    args = dict(image=_image(), mask=_mask(), operation="remove", edit_prompt=None)
    args.update(kwargs)
    with pytest.raises(InputError, match=words) as err:
        Inpainter(sd_pipe, _config()).edit(**args)
    assert "got " in str(err.value) and "fix: " in str(err.value)


def test_the_mini_profile_loads_an_explicitly_configured_model(sd_dir):
    # a training run's export (any local diffusers directory) is evaluated in the mini profile, not the shipped model
    from ovseg import get_balanced_config
    from ovseg.pipeline import _model_name, load_inpainter

    cfg = get_balanced_config()
    assert cfg.profile == "mini" and _model_name(cfg.inpainting.model, "mini", "inpainting") == "mini-inpainting"
    inp = load_inpainter(cfg.replace(**{"inpainting.model": str(sd_dir)}))
    assert inp.pipe.unet.config.sample_size == 16  # the tiny model's, not the mini model's 32
    assert _model_name("sam2.1-hiera-large", "mini", "sam2") == "mini-sam2"  # full defaults -> the embedded models
    assert _model_name("ViT-L-14-336", "mini", "clip") == "mini-clip"
    assert _model_name("ViT-B-16", "mini", "clip") == "mini-clip"  # the other stages stay pinned
