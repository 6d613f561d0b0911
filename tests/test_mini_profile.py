"""The embedded mini profile end to end, with the shipped checkpoints (plumbing, not quality:
quality is measured by `ovseg evaluate --dataset mini` and reported in the model cards)."""

import json

import numpy as np
import pytest

from ovseg.paths import DATA_DIR, SAMPLES_DIR

MODELS = DATA_DIR / "models"
pytestmark = pytest.mark.skipif(
    not all((MODELS / m / f).exists() for m, f in (("mini-clip", "model.safetensors"), ("mini-sam2", "model.safetensors"))),
    reason="mini checkpoints not in this checkout")


@pytest.fixture(scope="module")
def pipe():
    import torch

    from ovseg import OpenVocabSegmentationPipeline

    torch.manual_seed(0)
    return OpenVocabSegmentationPipeline()  # no arguments: mini profile, balanced preset, CPU


def test_default_pipeline_is_the_mini_profile(pipe):
    from ovseg.masks import MaskGenerator

    assert pipe.config.profile == "mini"
    assert isinstance(pipe.mask_generator, MaskGenerator)
    assert pipe.clip.image_size == 128 and pipe.clip.dense_path == "tokens"


def test_segment_any_size_image(pipe):
    res = pipe.segment(SAMPLES_DIR / "world_0.png", "red circle", top_k=3)  # 256 x 192, not the model size
    assert res.profile == "mini" and res.mask_source == "sam2" and res.num_candidates > 0
    for m in res.segmentation_masks:
        assert m.mask.shape == (192, 256)
    sem = pipe.segment_semantic(SAMPLES_DIR / "world_1.png", ["red circle", "blue square", "green star"])
    assert sem.label_map.shape == (192, 256)


def test_cli_segment_on_a_sample(tmp_path, capsys):
    from ovseg.cli import main

    assert main(["segment", str(SAMPLES_DIR / "shapes.png"), "--prompt", "red circle", "--out", str(tmp_path),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["profile"] == "mini" and (tmp_path / "result.json").exists() and (tmp_path / "overlay.png").exists()
    assert np.isfinite([m["final_score"] for m in out["masks"]]).all()


@pytest.mark.skipif(not (MODELS / "mini-inpainting" / "model_index.json").exists(), reason="mini inpainting not trained")
def test_cli_edits_with_the_mini_inpainting_model(tmp_path, capsys):
    """remove / replace through the CLI: the shipped diffusers model, files written, outside pixels kept."""
    from PIL import Image

    from ovseg import get_balanced_config
    from ovseg.cli import main
    from ovseg.inpaint import prepare_mask, replace_region_mask

    src = np.asarray(Image.open(SAMPLES_DIR / "world_1.png").convert("RGB"))
    for op, extra in (("remove", []), ("replace", ["--edit", "blue circle"])):
        out = tmp_path / op
        assert main([op, str(SAMPLES_DIR / "world_1.png"), "--prompt", "white star", *extra, "--steps", "4",
                     "--seed", "1", "--out", str(out)]) == 0
        res = json.loads((out / "result.json").read_text())
        assert res["edit"]["method"] == "diffusion" and res["edit"]["steps"] == 4
        edited = np.asarray(Image.open(out / "edited.png").convert("RGB"))
        mask = np.asarray(Image.open(out / "mask.png")) > 0
        cfg = get_balanced_config().inpainting  # the CLI's config: the balanced preset's dilation and blur
        region = replace_region_mask(mask, cfg.replace_region) if op == "replace" else mask
        assert res["edit"]["region"] == (cfg.replace_region if op == "replace" else "mask")
        blended = np.asarray(Image.open(out / "edit_mask.png"))  # (H, W) uint8, 255 = repainted
        assert np.array_equal(blended, np.rint(prepare_mask(region, cfg.mask_dilation, cfg.mask_blur) * 255))
        keep = blended == 0
        assert edited.shape == src.shape and np.array_equal(edited[keep], src[keep]) and (edited != src).any()
        assert res["files"] == ["overlay.png", "mask.png", "edit_mask.png", "edited.png", "result.json"]
    capsys.readouterr()
    assert main(["replace", str(SAMPLES_DIR / "world_1.png"), "--prompt", "white star", "--out", str(tmp_path / "x")]) == 2
    assert "needs --edit" in capsys.readouterr().err and not (tmp_path / "x" / "edited.png").exists()
