"""All four stages end to end with tiny randomly initialised models of the real classes.

Random weights make the *scores* meaningless; these tests check plumbing: shapes, dtypes, order,
caching, determinism, error paths and the files the CLI writes.
"""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from conftest import tiny_dense_clip
from dummies import get_dummy_inpaint_components, tiny_sam2_model
from ovseg.config import get_balanced_config
from ovseg.errors import InputError
from ovseg.pipeline import OpenVocabSegmentationPipeline


def tiny_config():
    cfg = get_balanced_config(profile="full").replace(**{
        "sam2.points_per_side": 6, "sam2.crop_n_layers": 0, "sam2.pred_iou_thresh": 0.0,
        "sam2.stability_score_thresh": 0.0, "sam2.min_mask_region_area": 0,
        "alignment.similarity_threshold": -1.0, "alignment.score_max_side": 64,
        "inpainting.num_inference_steps": 2, "inpainting.mask_blur": 2.0, "inpainting.mask_dilation": 1,
    })
    return cfg


def tiny_components(cfg):
    from diffusers import StableDiffusionInpaintPipeline

    from ovseg.inpaint import Inpainter
    from ovseg.masks import MaskGenerator

    sd = StableDiffusionInpaintPipeline(**get_dummy_inpaint_components(), requires_safety_checker=False)
    return dict(mask_generator=MaskGenerator(tiny_sam2_model(128), cfg.sam2),
                clip=tiny_dense_clip(), inpainter=Inpainter(sd, cfg.inpainting))


@pytest.fixture(scope="module")
def pipe():
    cfg = tiny_config()
    return OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))


def test_segment_shapes_order_and_records(pipe, scene):
    res = pipe.segment(scene, "red circle", top_k=3)
    assert res.num_candidates > 0 and 1 <= len(res.segmentation_masks) <= 3
    scores = [m.final_score for m in res.segmentation_masks]
    assert scores == sorted(scores, reverse=True)
    for m in res.segmentation_masks:
        assert m.mask.shape == scene.shape[:2] and m.mask.dtype == bool
        x, y, w, h = m.bbox
        assert 0 <= x and 0 <= y and x + w <= scene.shape[1] and y + h <= scene.shape[0]
        assert m.area == int(m.mask.sum()) > 0
        assert m.final_score == pytest.approx(m.mean_similarity - 0.3 * m.background_similarity, abs=1e-5)
    d = res.to_dict()
    assert d["image_size"] == [128, 96] and d["profile"] == "full" and "mask" not in d["masks"][0]
    json.dumps(d)


def test_new_prompt_reuses_masks_and_features(pipe, scene):
    pipe.segment(scene, "red circle")
    calls = pipe.mask_generator.encoder_calls
    feats = pipe._features
    res = pipe.segment(scene, "blue square", top_k=2)
    assert pipe.mask_generator.encoder_calls == calls and pipe._features is feats
    assert set(res.timings) == {"align"}


def test_refilter_reuses_the_image_embedding(scene):
    cfg = tiny_config()
    p = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    before = p.segment(scene, "red circle")
    calls = p.mask_generator.encoder_calls
    stricter = p.refilter(pred_iou_thresh=0.5)
    assert p.mask_generator.encoder_calls == calls and p.config.sam2.pred_iou_thresh == 0.5
    assert len(stricter) <= before.num_candidates and (stricter.predicted_iou > 0.5).all()
    assert p.segment(scene, "red circle").num_candidates == len(stricter)


def test_deterministic_across_fresh_pipelines(scene):
    a = OpenVocabSegmentationPipeline(tiny_config(), **tiny_components(tiny_config())).segment(scene, "red circle")
    b = OpenVocabSegmentationPipeline(tiny_config(), **tiny_components(tiny_config())).segment(scene, "red circle")
    assert [m.index for m in a.segmentation_masks] == [m.index for m in b.segmentation_masks]
    assert [m.final_score for m in a.segmentation_masks] == [m.final_score for m in b.segmentation_masks]


@pytest.mark.parametrize("op,edit", [("remove", None), ("replace", "blue square"), ("style", "green circle")])
def test_segment_and_edit_keeps_outside_pixels(pipe, scene, op, edit):
    res = pipe.segment_and_edit(scene, "red circle", op, edit_prompt=edit, seed=0)
    out = np.asarray(res.edited_image)
    assert out.shape == scene.shape and out.dtype == np.uint8
    assert res.edit["operation"] == op and res.edit["mask_index"] == res.segmentation_masks[0].index
    assert res.edit["region"] == (pipe.config.inpainting.replace_region if op == "replace" else "mask")
    from ovseg.inpaint import prepare_mask

    blended = prepare_mask(res.segmentation_masks[0].mask, 1, 2.0)
    np.testing.assert_array_equal(out[blended == 0], scene[blended == 0])


def test_edit_input_errors_before_any_model(scene):
    cfg = tiny_config()
    comps = tiny_components(cfg)
    p = OpenVocabSegmentationPipeline(cfg, **comps)
    with pytest.raises(InputError, match="replace needs an edit prompt"):
        p.segment_and_edit(scene, "red circle", "replace")
    with pytest.raises(InputError, match="edit_operation must be one of"):
        p.segment_and_edit(scene, "red circle", "explode")
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        p.segment(scene, "red circle", top_k=0)
    assert comps["mask_generator"].encoder_calls == 0


def test_no_candidate_masks_at_all(scene):
    cfg = tiny_config().replace(**{"sam2.pred_iou_thresh": 1.0})  # nothing passes the generator
    p = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    res = p.segment(scene, "red circle")
    assert res.num_candidates == 0 and res.segmentation_masks == []
    sem = p.segment_semantic(scene, ["red circle", "blue square"])
    assert (sem.label_map == -1).all()


def test_no_match_is_an_error_for_edits(scene):
    cfg = tiny_config().replace(**{"alignment.similarity_threshold": 1.0})
    p = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    assert p.segment(scene, "red circle").segmentation_masks == []
    with pytest.raises(InputError, match="must match at least one mask"):
        p.segment_and_edit(scene, "red circle", "remove")


def test_semantic_and_figures(pipe, scene):
    sem = pipe.segment_semantic(scene, ["red circle", "blue square", "grey background"])
    assert sem.label_map.shape == scene.shape[:2] and sem.label_map.dtype == np.int32
    assert sem.label_map.min() >= -1 and sem.label_map.max() < 3
    assert sem.scores.final.shape == (len(sem.masks), 3)
    figs = pipe.visualize_results(pipe.segment(scene, "red circle"))
    assert set(figs) == {"overlay", "masks"} and all(isinstance(f, Figure) for f in figs.values())
    assert isinstance(pipe.visualize_results(sem)["semantic"], Figure)


def test_cli_writes_complete_outputs(tmp_path, scene, monkeypatch, capsys):
    import ovseg.pipeline as P
    from ovseg.cli import main

    cfg = tiny_config()
    comps = tiny_components(cfg)
    monkeypatch.setattr(P, "load_mask_generator", lambda *a, **k: comps["mask_generator"])
    monkeypatch.setattr(P, "load_dense_clip", lambda *a, **k: comps["clip"])
    monkeypatch.setattr(P, "load_inpainter", lambda *a, **k: comps["inpainter"])
    img = tmp_path / "scene.png"
    Image.fromarray(scene).save(img)
    yaml = tmp_path / "tiny.yaml"
    cfg.to_yaml(yaml)
    out = tmp_path / "seg"
    assert main(["segment", str(img), "--prompt", "red circle", "--top-k", "2", "--config", str(yaml),
                 "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(printed["files"]) and "result.json" in files and "overlay.png" in files
    assert len([f for f in files if f.startswith("mask_")]) == len(printed["masks"])
    assert json.loads((out / "result.json").read_text())["config"]["sam2"]["points_per_side"] == 6
    out2 = tmp_path / "rep"
    assert main(["replace", str(img), "--prompt", "red circle", "--edit", "blue square", "--config", str(yaml),
                 "--seed", "3", "--steps", "2", "--out", str(out2)]) == 0
    res = json.loads((out2 / "result.json").read_text())
    assert res["edit"]["seed"] == 3 and res["edit"]["steps"] == 2
    assert Image.open(out2 / "edited.png").size == (128, 96)
