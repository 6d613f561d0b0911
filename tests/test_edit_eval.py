import math
from types import SimpleNamespace

import numpy as np
import pytest

from ovseg.edit_eval import build_edit_set, classify_region, evaluate_edits, psnr_ssim_outside
from ovseg.paths import DATA_DIR
from ovseg.world import CLASS_NAMES, NOVEL_CLASSES


def test_edit_set_is_deterministic_and_well_formed():
    a, b = build_edit_set(6), build_edit_set(6)
    assert [c.seed for c in a] == [c.seed for c in b]
    assert [c.operation for c in a] == ["remove", "replace", "style"] * 2
    for c in a:
        assert c.mask.dtype == bool and c.mask.sum() >= 300 and c.image.shape[:2] == c.mask.shape
        if c.operation == "remove":
            assert c.target == "background" and c.edit_prompt is None
        else:
            assert c.edit_prompt == c.target and c.target in CLASS_NAMES and c.target != c.object_class
        if c.operation == "style":
            assert c.target.split()[1] == c.object_class.split()[1]  # shape kept
    replaces = [c for c in build_edit_set(12) if c.operation == "replace"]
    assert any(c.novel_prompt and c.target in NOVEL_CLASSES for c in replaces)
    assert any(not c.novel_prompt for c in replaces)


def test_psnr_ssim_outside():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 40, 3), np.uint8)
    blended = np.zeros((40, 40), np.float32)
    blended[10:20, 10:20] = 1
    out = img.copy()
    out[10:20, 10:20] = 0
    psnr, ssim = psnr_ssim_outside(img, out, blended)
    assert math.isinf(psnr) and 0.5 < ssim <= 1.0
    out[0, 0] = 255 - out[0, 0]
    assert math.isfinite(psnr_ssim_outside(img, out, blended)[0])


def test_evaluate_edits_with_tiny_models():
    from test_pipeline import tiny_components, tiny_config

    from ovseg.pipeline import OpenVocabSegmentationPipeline

    cfg = tiny_config()
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    cases = build_edit_set(3)
    assert classify_region(pipe, cases[0].image, cases[0].mask, CLASS_NAMES) in ["background", *CLASS_NAMES]
    res = evaluate_edits(pipe, cases, realism=False)
    assert res["n_edits"] == 3 and res["psnr_outside_min_db"] == "inf"  # outside pixels preserved exactly
    assert {r["operation"] for r in res["edits"]} == {"remove", "replace", "style"}
    assert res["success_replace_base"] is None  # the one replace case (index 1) has a novel prompt
    # each rate is the fraction of its cases whose region the classifier now reads as the target (one case each)
    for r in res["edits"]:
        key = "success_" + r["operation"] + ("_novel" if r["operation"] == "replace" else "")
        assert res[key] == float(r["found"] == r["target"]) and r["success"] == (r["found"] == r["target"])


class _WorldOracle:
    """``classify_region`` stand-in that knows the mini world: the label whose exact rendering of the case's scene
    (object ``object_index`` removed, or drawn as that class) is nearest the image, over the whole image. On an
    unedited scene that is the object's own class; on the world's exact edit, the case's target."""

    def __init__(self, cases):
        self.cases = {c.mask.tobytes(): c for c in cases}
        self.renders = {}

    def __call__(self, pipe, image, mask, names):
        from ovseg.edit_eval import _edit_scene_config
        from ovseg.world import render_scene

        case = self.cases[mask.tobytes()]
        if case.seed not in self.renders:  # (label, image) per candidate, once per scene
            self.renders[case.seed] = [(name, render_scene(case.seed, _edit_scene_config(),
                                                           edit=(case.object_index, None if name == "background"
                                                                 else name)).image.astype(np.int16))
                                       for name in ["background", *names]]
        return min(self.renders[case.seed], key=lambda nr: np.abs(nr[1] - image).mean())[0]


class _StandInEditor:
    """``pipe.inpainter`` stand-in: ``edit`` returns ``answer(case)`` for the case whose mask it is given."""

    def __init__(self, cases, answer):
        self.cases, self.answer = {c.mask.tobytes(): c for c in cases}, answer

    def edit(self, image, mask, operation, **kw):
        import cv2
        from PIL import Image

        out = self.answer(self.cases[mask.tobytes()])
        # the blended mask: the region grown by 8 px
        grown = cv2.dilate(mask.astype(np.uint8), np.ones((17, 17), np.uint8)).astype(np.float32)
        return SimpleNamespace(image=Image.fromarray(out), mask=grown, method="stand-in")


def test_evaluate_edits_scores_the_worlds_exact_edits_1_and_unedited_or_wrong_ones_0(monkeypatch):
    # 6 cases: remove, replace (novel), style, remove, replace (base), style. The outcome of each is known
    # without the code under test: the world's exact edit shows the target; the untouched scene still shows the
    # object; an edit to another class than the target shows that class.
    from ovseg.config import get_balanced_config
    from ovseg.edit_eval import _edit_scene_config, exact_edit
    from ovseg.world import render_scene

    cases = build_edit_set(6)
    assert [(c.operation, c.novel_prompt) for c in cases] == [
        ("remove", False), ("replace", True), ("style", False), ("remove", False), ("replace", False), ("style", False)]
    oracle = _WorldOracle(cases)
    monkeypatch.setattr("ovseg.edit_eval.classify_region", oracle)
    # preservation is tested above (test_psnr_ssim_outside); here only success counts: skip the SSIM (~0.5 s a call)
    monkeypatch.setattr("ovseg.edit_eval.psnr_ssim_outside", lambda before, after, blended: (math.inf, 1.0))
    for c in cases:  # the oracle itself: the unedited region is the object, the exact edit the target
        assert oracle(None, c.image, c.mask, CLASS_NAMES) == c.object_class
        assert oracle(None, exact_edit(c), c.mask, CLASS_NAMES) == c.target

    def run(answer):
        pipe = SimpleNamespace(config=get_balanced_config("mini"), inpainter=_StandInEditor(cases, answer))
        return evaluate_edits(pipe, cases, realism=False)

    rates = ("success_remove", "success_replace_base", "success_replace_novel", "success_style")
    exact = run(exact_edit)
    assert {k: exact[k] for k in rates} == dict.fromkeys(rates, 1.0)
    assert [r["found"] for r in exact["edits"]] == [c.target for c in cases]
    unedited = run(lambda c: c.image)
    assert {k: unedited[k] for k in rates} == dict.fromkeys(rates, 0.0)
    assert [r["found"] for r in unedited["edits"]] == [c.object_class for c in cases]

    def wrong(c):  # replace / style to a class that is neither the target nor the object (remove: left as is)
        other = next(n for n in CLASS_NAMES if n not in (c.target, c.object_class))
        return c.image if c.operation == "remove" else render_scene(c.seed, _edit_scene_config(),
                                                                    edit=(c.object_index, other)).image

    wrongly = run(wrong)
    assert {k: wrongly[k] for k in rates} == dict.fromkeys(rates, 0.0)
    # half right: the exact edit for the first three cases only -> remove 1/2, replace novel 1, base 0, style 1/2
    mixed = run(lambda c: exact_edit(c) if cases.index(c) < 3 else c.image)
    assert {k: mixed[k] for k in rates} == {"success_remove": 0.5, "success_replace_base": 0.0,
                                            "success_replace_novel": 1.0, "success_style": 0.5}


@pytest.mark.parametrize("profile", ["mini"])
def test_realism_metrics_name_their_extractor(profile):
    from test_pipeline import tiny_components, tiny_config

    from ovseg.pipeline import OpenVocabSegmentationPipeline

    cfg = tiny_config().replace(profile=profile)
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    res = evaluate_edits(pipe, build_edit_set(2, operations=("replace",)), realism=True)
    assert res["fid_features"] == "mini CLIP image embeddings" and res["clip_score_model"] == "mini CLIP"
    assert math.isfinite(res["fid"]) and 0 <= res["clip_score"] <= 100


def test_fid_needs_two_edits_and_says_so_with_none():
    from test_pipeline import tiny_components, tiny_config

    from ovseg.pipeline import OpenVocabSegmentationPipeline

    cfg = tiny_config().replace(profile="mini")
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    res = evaluate_edits(pipe, build_edit_set(1, operations=("replace",)), realism=True)
    assert res["fid"] is None and res["n_edits"] == 1 and res["clip_score"] is not None


def test_classical_removal_reports_zero_diffusion_steps():
    from test_pipeline import tiny_components, tiny_config

    from ovseg.pipeline import OpenVocabSegmentationPipeline

    cfg = tiny_config().replace(**{"inpainting.method": "classical"})
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    res = evaluate_edits(pipe, build_edit_set(1, operations=("remove",)), realism=False)
    assert res["method"] == "classical" and res["steps"] == 0 and res["psnr_outside_min_db"] == "inf"


def test_exact_edit_changes_only_the_object_and_needs_a_world_case():
    import cv2

    from ovseg.edit_eval import EditCase, exact_edit
    from ovseg.errors import InputError

    for case in build_edit_set(6):
        out = exact_edit(case)
        changed = (out != case.image).any(-1)  # (H, W) bool
        assert out.shape == case.image.shape and out.dtype == np.uint8 and changed.any()
        if case.operation != "replace":  # a new shape may cover pixels the old one did not
            near = cv2.dilate(case.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            assert not (changed & ~near).any()  # the rest of the scene is drawn exactly as before
        else:
            assert changed[case.mask].mean() > 0.2
    c = build_edit_set(1)[0]
    with pytest.raises(InputError, match="object_index"):
        exact_edit(EditCase(c.seed, c.image, c.mask, c.operation, c.object_class, c.edit_prompt, c.target, False))


def test_upright_exact_edits_turn_only_the_replacements_upright():
    from ovseg.edit_eval import _edit_scene_config, exact_edit
    from ovseg.errors import InputError
    from ovseg.world import render_scene

    n = 0
    for case in build_edit_set(18):  # 6 replacements: a star, a cross and a triangle among them
        up = exact_edit(case, "upright")
        if case.operation != "replace":
            np.testing.assert_array_equal(up, exact_edit(case))  # remove / style: the world's exact edit
            continue
        want = render_scene(case.seed, _edit_scene_config(), edit=(case.object_index, case.target), edit_rotation=0.0)
        np.testing.assert_array_equal(up, want.image)
        n += (up != exact_edit(case)).any()  # a rotated triangle / star / ... differs from its upright drawing
    assert n >= 2
    with pytest.raises(InputError, match="replace_rotation must be"):
        exact_edit(build_edit_set(1)[0], "sideways")


class _IdentityVAE:
    """Stand-in ``AutoencoderKL`` whose latents are the image itself: a round trip changes nothing."""

    def __init__(self):
        import torch

        self.dtype = torch.float32

    def encode(self, x):
        from types import SimpleNamespace

        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: x))

    def decode(self, z):
        from types import SimpleNamespace

        return SimpleNamespace(sample=z)


def test_edit_ceiling_through_a_lossless_vae_equals_the_exact_ceiling():
    from test_pipeline import tiny_components, tiny_config

    from ovseg.edit_eval import edit_ceiling
    from ovseg.pipeline import OpenVocabSegmentationPipeline

    cfg = tiny_config()
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    res = edit_ceiling(pipe, build_edit_set(6), vae=_IdentityVAE())
    assert res["n_edits"] == 6 and res["exact"] == res["vae"]
    assert set(res["exact"]) == {"success_remove", "success_replace_base", "success_replace_novel", "success_style",
                                 "ci95"}
    assert set(res["exact"]["ci95"]) == set(res["exact"]) - {"ci95"}
    assert edit_ceiling(pipe, build_edit_set(3))["vae"] is None


@pytest.mark.skipif(not (DATA_DIR / "models" / "mini-clip" / "model.safetensors").exists(), reason="no mini CLIP")
def test_exact_removals_are_background_to_the_mini_segmenter():
    from ovseg import OpenVocabSegmentationPipeline
    from ovseg.edit_eval import edit_ceiling

    pipe = OpenVocabSegmentationPipeline()  # mini profile
    cases = build_edit_set(4, operations=("remove",))
    assert edit_ceiling(pipe, cases)["exact"]["success_remove"] == 1.0


def test_a_stored_result_stands_only_for_the_configuration_that_made_it(tmp_path, monkeypatch):
    """shipped_test_result recomputes the identity (models, settings, cases) and refuses a stale file."""
    import json

    from ovseg import edit_eval
    from ovseg.config import get_balanced_config

    path = tmp_path / "edits_test.json"
    monkeypatch.setattr(edit_eval, "shipped_test_path", lambda: path)
    cfg = get_balanced_config()
    got, why = edit_eval.shipped_test_result(cfg)
    assert got is None and "missing" in why
    summary = {"n_edits": 3, "split": "edits/test", "edits": [],
               **edit_eval.result_identity(cfg, build_edit_set(3, split="test"))}
    path.write_text(json.dumps(summary))
    got, why = edit_eval.shipped_test_result(cfg)
    assert got == summary and "3 test edits" in why
    # another setting (guidance) or other cases (the dev edits) make it stale, with the command that refreshes it
    other = cfg.replace(**{"inpainting.guidance_scale": 7.5})
    got, why = edit_eval.shipped_test_result(other)
    assert got is None and "protocol" in why and "--split test --max-images 3" in why
    path.write_text(json.dumps({**summary, **edit_eval.result_identity(cfg, build_edit_set(3, split="dev"))}))
    assert edit_eval.shipped_test_result(cfg)[0] is None
    path.write_text(json.dumps({**summary, "models": {"mini-sam2": "0" * 16}}))
    got, why = edit_eval.shipped_test_result(cfg)
    assert got is None and "models" in why


def test_reproducing_stored_rows_logs_nothing(tmp_path, monkeypatch):
    from test_pipeline import tiny_components, tiny_config

    from ovseg import testlog
    from ovseg.edit_eval import reproduce_rows
    from ovseg.pipeline import OpenVocabSegmentationPipeline

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))
    cfg = tiny_config().replace(**{"inpainting.method": "classical"})
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    stored = evaluate_edits(pipe, build_edit_set(2, operations=("remove",), split="test"), realism=False, log=False)
    assert testlog.entries(log) == []
    pairs = reproduce_rows(pipe, {**stored, "n_edits": 2}, 1)
    assert len(pairs) == 1 and pairs[0][0]["seed"] == pairs[0][1]["seed"] and pairs[0][0]["found"] == pairs[0][1]["found"]
    assert testlog.entries(log) == [] and reproduce_rows(pipe, stored, 0) == []


def test_an_interrupted_edit_evaluation_resumes_from_its_work_folder_with_the_same_result(tmp_path):
    from test_pipeline import tiny_components, tiny_config

    from ovseg.errors import InputError
    from ovseg.pipeline import OpenVocabSegmentationPipeline

    cfg = tiny_config().replace(profile="mini")  # realism on mini CLIP features (Inception needs a download)
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    cases = build_edit_set(4)
    whole = evaluate_edits(pipe, cases, realism=True, log=False)  # no work folder: the reference

    real_edit, calls = pipe.inpainter.edit, []

    def crash_on_third(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the run is stopped during its third edit
        return real_edit(*args, **kwargs)

    pipe.inpainter.edit = crash_on_third
    with pytest.raises(KeyboardInterrupt):
        evaluate_edits(pipe, cases, realism=True, log=False, work_dir=tmp_path / "work")
    assert len(list((tmp_path / "work" / "rows").glob("*.json"))) == 2  # the two finished edits were kept
    calls.clear()
    pipe.inpainter.edit = lambda *a, **k: (calls.append(a[2]), real_edit(*a, **k))[1]
    resumed = evaluate_edits(pipe, cases, realism=True, log=False, work_dir=tmp_path / "work")
    assert calls == [cases[2].operation, cases[3].operation]  # only the edits not stored ran again
    # stored rows and lossless stored images give the uninterrupted run's numbers, FID and CLIP score included
    def timeless(summary):  # wall-clock seconds differ between runs; everything else must not
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in summary["edits"]]
        return {**{k: v for k, v in summary.items() if k != "seconds_per_edit"}, "edits": rows}

    assert timeless(resumed) == timeless(whole)
    assert math.isfinite(whole["fid"]) and whole["clip_score"] is not None
    calls.clear()
    smaller = evaluate_edits(pipe, cases[:3], realism=False, log=False, work_dir=tmp_path / "work")
    assert timeless(smaller)["edits"] == timeless(whole)["edits"][:3] and calls == []  # every edit reused
    # a damaged row file is named, not a JSON traceback
    row = next((tmp_path / "work" / "rows").glob("*.json"))
    good = row.read_text()
    row.write_text(good[:10])
    with pytest.raises(InputError, match="row files must be the JSON ovseg wrote"):
        evaluate_edits(pipe, cases, realism=False, log=False, work_dir=tmp_path / "work")
    row.write_text(good)
    # another sampling seed decides other edits: its run must not mix in these rows
    with pytest.raises(InputError, match="same models, settings and sampling seed"):
        evaluate_edits(pipe, cases, seed=1, realism=False, log=False, work_dir=tmp_path / "work")
