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
from ovseg.errors import InputError, NoMatchWarning
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


def test_remember_images_reuses_earlier_images_and_forgets_on_exit(scene):
    cfg = tiny_config()
    p = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    other = np.ascontiguousarray(scene[::-1])
    first = p.segment(scene, "red circle")
    p.segment(other, "red circle")
    calls = p.mask_generator.encoder_calls
    with p.remember_images(2):
        p.segment(scene, "red circle")  # replaced before the block: computed again
        assert p.mask_generator.encoder_calls == calls + 1
        p.segment(other, "red circle")  # the current image at the block's start is kept
        again = p.segment(scene, "blue square")  # kept: no SAM 2 / CLIP pass
        p.segment(other, "blue square")
        assert p.mask_generator.encoder_calls == calls + 1
    assert not p._recent  # forgotten on exit: the last image (other) only
    assert [m.mask.tolist() for m in p.segment(scene, "red circle").segmentation_masks] == \
        [m.mask.tolist() for m in first.segmentation_masks]
    assert again.num_candidates == first.num_candidates
    with pytest.raises(InputError, match="remember_images takes a positive number"):
        with p.remember_images(0):
            pass


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
    assert res.counts_line() == ("0 candidates from SAM 2 (predicted IoU > 1, stability > 0) -> 0 with similarity >= -1 "
                                 "-> top-5: 0 returned")
    with pytest.warns(NoMatchWarning, match=r"\(0 candidates from SAM 2, none with similarity >= -1"):
        sem = p.segment_semantic(scene, ["red circle", "blue square"])
    assert (sem.label_map == -1).all() and sem.empty


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


def cli_on_tiny_components(monkeypatch, tmp_path, scene, mask_generator=None):
    """Make the CLI's model loaders return tiny random components (tests only); returns (image path, config yaml)."""
    import ovseg.pipeline as P

    cfg = tiny_config()
    comps = tiny_components(cfg)
    if mask_generator is not None:
        comps["mask_generator"] = mask_generator
    monkeypatch.setattr(P, "load_mask_generator", lambda *a, **k: comps["mask_generator"])
    monkeypatch.setattr(P, "load_dense_clip", lambda *a, **k: comps["clip"])
    monkeypatch.setattr(P, "load_inpainter", lambda *a, **k: comps["inpainter"])
    img = tmp_path / "scene.png"
    Image.fromarray(scene).save(img)
    yaml = tmp_path / "tiny.yaml"
    cfg.to_yaml(yaml)
    return img, yaml


def test_cli_writes_complete_outputs(tmp_path, scene, monkeypatch, capsys):
    from ovseg.cli import main

    img, yaml = cli_on_tiny_components(monkeypatch, tmp_path, scene)
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


# ---- issue #23: what a result records, and the output folder it writes -----------------------------------------

class FixedMasks:
    """A mask generator that returns five fixed masks of the ``scene`` fixture (several masks to rank)."""

    def generate(self, image):
        from ovseg.utils import MaskSet

        yy, xx = np.mgrid[0:96, 0:128]
        disc = (yy - 48) ** 2 + (xx - 32) ** 2 <= 20**2
        square = np.zeros((96, 128), bool)
        square[28:68, 76:116] = True
        return MaskSet.from_masks(np.stack([disc, square, ~(disc | square), disc & (yy < 48), square & (xx < 96)]),
                                  predicted_iou=np.full(5, 0.9), stability_score=np.full(5, 0.95), source="sam2")


@pytest.fixture(scope="module")
def ranked():
    """A pipeline with five fixed candidate masks and every mask returned (threshold -1)."""
    cfg = tiny_config()
    return OpenVocabSegmentationPipeline(cfg, **dict(tiny_components(cfg), mask_generator=FixedMasks()))

def test_counts_say_how_many_passed_each_step(scene):
    """counts: candidates -> above the similarity threshold -> top-k -> returned, consistent with the scores."""
    cfg = tiny_config()
    p = OpenVocabSegmentationPipeline(cfg, **dict(tiny_components(cfg), mask_generator=FixedMasks()))
    masks, scores = p.score(scene, ["red circle"])
    threshold = float(np.median(scores.mean_similarity[:, 0]))  # about half the candidates pass
    p.config = p.config.replace(**{"alignment.similarity_threshold": threshold})
    res = p.segment(scene, "red circle", top_k=2)
    above = int((scores.mean_similarity[:, 0] >= threshold).sum())
    assert len(masks) == 5 and 2 <= above < 5
    c = res.counts
    assert c["candidates"] == len(masks) == res.num_candidates and c["above_threshold"] == above
    assert c["returned"] == len(res.segmentation_masks) == min(above, 2) and c["top_k"] == 2
    assert c["similarity_threshold"] == threshold and c["best_similarity"] == pytest.approx(float(scores.mean_similarity.max()))
    assert res.counts_line() == (f"5 candidates from SAM 2 (predicted IoU > 0, stability > 0) -> "
                                 f"{above} with similarity >= {threshold:g} -> top-2: 2 returned")
    assert res.to_dict()["counts"] == c


def test_injected_components_are_not_named(pipe, scene):
    """A result names only models the pipeline loaded itself; the config block is the config's (full profile)."""
    res = pipe.segment(scene, "red circle")
    assert set(res.models) == {"sam2", "clip"}
    assert all(m["name"] is None and m["sha256"] is None for m in res.models.values())
    assert res.config["sam2"]["model"] == "sam2.1-hiera-large" and res.config["profile"] == "full"
    edited = pipe.segment_and_edit(scene, "red circle", "remove", seed=0)
    assert set(edited.models) == {"sam2", "clip", "inpainting"}


def test_effective_config_names_the_mini_models():
    from ovseg.config import PipelineConfig
    from ovseg.pipeline import effective_config

    d = effective_config(get_balanced_config("mini"))
    assert (d["sam2"]["model"], d["clip"]["model"], d["inpainting"]["model"]) == ("mini-sam2", "mini-clip", "mini-inpainting")
    assert d["clip"]["image_size"] == 128 and d["clip"]["pretrained"] == "data/models/mini-clip/model.safetensors"
    assert PipelineConfig.from_dict(d).clip.model == "mini-clip"  # loads back
    full = effective_config(get_balanced_config("full"))
    assert full == get_balanced_config("full").to_dict()


def test_save_writes_exactly_this_runs_files(ranked, scene, tmp_path):
    pipe = ranked
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a user's file: never touched
    (out / "mask_07.png").write_bytes(b"user's, not listed by any result.json")
    many = pipe.segment(scene, "red circle", top_k=3)
    assert len(many.segmentation_masks) == 3
    files = many.save(out)
    assert [p.name for p in files] == ["overlay.png", "mask_00.png", "mask_01.png", "mask_02.png", "result.json"]
    one = pipe.segment(scene, "red circle", top_k=1)
    one.save(out)
    assert sorted(p.name for p in out.iterdir()) == ["mask_00.png", "mask_07.png", "notes.txt", "overlay.png", "result.json"]
    saved = json.loads((out / "result.json").read_text())
    assert saved["files"] == ["overlay.png", "mask_00.png", "result.json"] and saved["counts"]["returned"] == 1
    assert (out / "notes.txt").read_text() == "mine"
    # a tampered result.json cannot make a rerun delete a user's file
    saved["files"] += ["notes.txt", "../x.png", "mask_07.png"]
    (out / "result.json").write_text(json.dumps(saved))
    (tmp_path / "x.png").write_bytes(b"outside")
    one.save(out)
    assert (out / "notes.txt").exists() and (tmp_path / "x.png").exists() and not (out / "mask_07.png").exists()
    # an edit rerun into the same folder replaces the segment files by the edit's
    pipe.segment_and_edit(scene, "red circle", "remove", seed=0).save(out)
    assert sorted(p.name for p in out.iterdir()) == ["edit_mask.png", "edited.png", "mask.png", "notes.txt",
                                                     "overlay.png", "result.json"]
    with pytest.raises(InputError, match="output folder must be a folder"):
        one.save(out / "notes.txt")


def test_overlay_is_labelled_and_legible(ranked, scene):
    pipe = ranked
    from ovseg.viz import LEGIBLE_SIDE, PALETTE, labelled_overlay, overlay_masks

    res = pipe.segment(scene, "red circle", top_k=2)
    img = labelled_overlay(scene, res.segmentation_masks)
    s = -(-LEGIBLE_SIDE // 128)  # 128 px wide scene -> upscaled 3x
    assert img.shape == (96 * s, 128 * s, 3) and img.dtype == np.uint8
    plain = np.kron(overlay_masks(scene, [m.mask for m in res.segmentation_masks]), np.ones((s, s, 1), np.uint8))
    for k, m in enumerate(res.segmentation_masks):  # each box is outlined in its colour, with a label near its corner
        x, y, w, h = (v * s for v in m.bbox)
        colour = PALETTE[k]
        assert (img[y + h // 2, x] == colour).all() or (img[y + h // 2, x + 1] == colour).all()
        near = img[max(y - 40, 0):y + 40, max(x - 10, 0):x + 120]
        assert (near == colour).all(axis=-1).sum() > 100  # the label's filled background
    changed = (img != plain).any(axis=-1)
    assert 0 < changed.mean() < 0.2  # labels and outlines only: the overlay itself is unchanged
    empty = labelled_overlay(scene, [], empty_text="no mask matched 'x'")
    assert (empty[:10, :40] != np.kron(scene, np.ones((s, s, 1), np.uint8))[:10, :40]).any()


def test_zero_masks_say_no_match(scene):
    cfg = tiny_config().replace(**{"alignment.similarity_threshold": 1.0})
    p = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    res = p.segment(scene, "red circle")
    assert res.segmentation_masks == [] and res.counts["above_threshold"] == 0 and res.counts["returned"] == 0
    figs = p.visualize_results(res)
    titles = [ax.get_title() for ax in figs["overlay"].axes]
    texts = [t.get_text() for ax in figs["masks"].axes for t in ax.texts]
    assert any(t.startswith("no mask matched 'red circle'") for t in titles) and not any("top-0" in t for t in titles)
    assert any("no mask matched 'red circle'" in t for t in texts)
    with pytest.warns(NoMatchWarning, match="no mask was assigned any of the 2 class names") as rec:
        sem = p.segment_semantic(scene, ["red circle", "blue square"])
    assert len(rec) == 1 and sem.empty and sem.num_assigned == 0
    with pytest.raises(InputError, match=r"must match at least one mask to edit; got .red circle. \(1 candidate from "
                                         r"SAM 2 .* -> 0 with similarity >= 1 -> top-5: 0 returned\)"):
        p.segment_and_edit(scene, "red circle", "remove")


def test_semantic_with_assignments_is_not_empty(pipe, scene):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NoMatchWarning)
        sem = pipe.segment_semantic(scene, ["red circle", "blue square"])  # threshold -1: every mask is assigned
    assert not sem.empty and sem.num_assigned == len(sem.masks) > 0
