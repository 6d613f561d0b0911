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
    # provenance names the models that ran (not the full profile's defaults), with their pinned checksums
    assert json.loads((tmp_path / "result.json").read_text()) == out
    assert (out["config"]["sam2"]["model"], out["config"]["clip"]["model"]) == ("mini-sam2", "mini-clip")
    assert out["config"]["inpainting"]["model"] == "mini-inpainting" and out["config"]["clip"]["image_size"] == 128
    assert set(out["models"]) == {"sam2", "clip"}  # no edit ran
    for stage, name in (("sam2", "mini-sam2"), ("clip", "mini-clip")):
        sums = dict(reversed(line.split()) for line in (MODELS / name / "SHA256SUMS").read_text().splitlines())
        assert out["models"][stage] == {"name": name, "stage": stage, "sha256": sums}


def test_out_of_domain_prompt_or_image_warns_once(pipe):
    from ovseg.errors import OutOfDomainWarning

    wide = np.full((96, 640, 3), 200, np.uint8)  # longer side 640 > 512 px
    wide[30:60, 300:340] = (220, 40, 40)
    with pytest.warns(OutOfDomainWarning) as rec:
        res = pipe.segment(wide, "woman in uniform")
        pipe.segment(wide, "woman in uniform")  # the same message is not repeated
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "'woman', 'uniform' are not in their vocabulary" in msg and "'in'" not in msg
    assert "the image is 640x96 px, more than 4x the mini world's 128 px scenes" in msg
    assert "`ovseg weights download full`, then `--profile full`" in msg
    assert res.counts["returned"] == len(res.segmentation_masks)
    # the check itself (what segment / segment_and_edit / segment_semantic call): words only, image only
    scene = np.zeros((128, 128, 3), np.uint8)
    with pytest.warns(OutOfDomainWarning) as rec:
        words = pipe._check_domain(scene, ["red lamp"])
        size = pipe._check_domain(np.zeros((96, 513, 3), np.uint8), ["red circle"])
    assert [str(w.message) for w in rec] == [words, size]
    assert words.split(": ", 1)[1].startswith("'lamp' is not in their vocabulary, so")
    assert size.split(": ", 1)[1].startswith("the image is 513x96 px, more than 4x") and "vocabulary" not in size
    # a prompt the mini tokenizer cannot represent at all (emoji, CJK): said as such
    with pytest.warns(OutOfDomainWarning) as rec:
        blank = pipe._check_domain(scene, ["\U0001F534"])
        cjk = pipe._check_domain(scene, ["\u8d64\u3044\u5186"])
    assert len(rec) == 2 and "the prompt '\U0001F534' has no known tokens in this profile" in blank
    assert "has no known tokens in this profile" in cjk and "not in their vocabulary" not in cjk


def test_shipped_samples_and_world_prompts_do_not_warn(pipe):
    from ovseg.io import load_image
    from ovseg.world import CLASS_NAMES, SceneConfig, referring_prompts, render_scene

    samples = sorted(SAMPLES_DIR.glob("*.png"))
    prompts = CLASS_NAMES + [p["prompt"] for s in range(20) for p in referring_prompts(render_scene(s, SceneConfig()))]
    assert len(samples) >= 5
    for path in samples:
        assert pipe._check_domain(load_image(path), prompts) is None, path


def test_cli_prints_the_out_of_domain_warning_once(tmp_path):
    """The CLI, end to end: one 'ovseg: warning:' line naming the full profile; no 'nan' on stdout."""
    import subprocess
    import sys

    from PIL import Image

    img = tmp_path / "photo.png"
    Image.fromarray(np.full((96, 640, 3), 90, np.uint8)).save(img)
    res = subprocess.run([sys.executable, "-m", "ovseg", "segment", str(img), "--prompt", "woman in uniform", "--out",
                          str(tmp_path / "o"), "--config", "fast"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    warned = [line for line in res.stderr.splitlines() if line.startswith("ovseg: warning:")]
    assert len(warned) == 1 and "--profile full" in warned[0] and "ovseg weights download full" in warned[0]
    assert "nan" not in res.stdout and ("no mask matched 'woman in uniform'" in res.stdout or "mask(s)" in res.stdout)


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
        assert res["models"]["inpainting"]["name"] == "mini-inpainting" and res["models"]["inpainting"]["sha256"]
        assert res["config"]["inpainting"]["model"] == "mini-inpainting"
        printed = capsys.readouterr().out
        verb = "removed 'white star'" if op == "remove" else "replaced 'white star' with 'blue circle'"
        assert printed.startswith(verb) and f"-> {out / 'edited.png'}\n" in printed
    capsys.readouterr()
    assert main(["replace", str(SAMPLES_DIR / "world_1.png"), "--prompt", "white star", "--out", str(tmp_path / "x")]) == 2
    assert "needs --edit" in capsys.readouterr().err and not (tmp_path / "x" / "edited.png").exists()
