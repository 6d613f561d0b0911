"""Video evaluation (ovseg.video_eval): J and F against hand-computed values, matching, id switches, the late-object
rule, removal metrics, the DAVIS / Ref-YouTube-VOS loaders, resumable runs and ``ovseg evaluate --task video``."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math

import numpy as np
import pytest
from PIL import Image

from ovseg import video_eval as VE
from ovseg.errors import InputError, OvsegWarning
from ovseg.paths import DATA_DIR
from ovseg.world_video import ClipConfig, davis_palette, render_clip, write_clips


def _square(top: int, left: int, side: int = 10, size: int = 40) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[top:top + side, left:left + side] = True
    return m


# ---- J and F ---------------------------------------------------------------------------------------------------

def test_region_similarity_by_hand():
    gt = _square(10, 10)
    assert VE.region_similarity(_square(10, 12), gt) == pytest.approx(80 / 120)  # 10 x 8 shared, 10 x 12 union
    assert VE.region_similarity(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # empty vs empty (DAVIS)
    assert VE.region_similarity(np.zeros_like(gt), gt) == 0.0


def test_boundary_map_is_the_one_pixel_ring_of_davis():
    """DAVIS's seg2bmap marks pixels whose right / lower / lower-right neighbour differs: for the 10 x 10 square at
    rows and columns 10..19 that is the perimeter of the 11 x 11 box at rows and columns 9..19 (40 pixels)."""
    b = VE.boundary_map(_square(10, 10))
    ring = np.zeros_like(b)
    ring[9:20, 9:20] = True
    ring[10:19, 10:19] = False
    assert b.sum() == 40 and np.array_equal(b, ring)


def test_boundary_f_of_shifted_squares_by_hand():
    """40 x 40 frames: tolerance ceil(0.008 * 56.6) = 1 px, a plus-shaped disk (Manhattan distance 1).

    Shift 3 to the right: of the prediction's 40-pixel ring (rows 9..19, columns 12..22) the top and bottom rows
    match at columns 12..20 (9 + 9: columns 12..19 lie on the true ring, 20 touches its corner) and the left column
    only at rows 10 and 18 (next to the true top and bottom rows): P = 20 / 40; by symmetry R = 20 / 40, F = 0.5.
    Shift 1: every ring pixel is within 1 px of the other ring: F = 1 while J = 90 / 110."""
    gt = _square(10, 10)
    p, r, f = VE.boundary_pr(_square(10, 13), gt)
    assert (p, r, f) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.5))
    assert VE.boundary_f(_square(10, 11), gt) == pytest.approx(1.0)
    assert VE.region_similarity(_square(10, 11), gt) == pytest.approx(90 / 110)
    # a far-away 2 x 2 extra blob adds its 8-pixel ring to the prediction only: P = 40 / 48, R = 1, F = 10 / 11
    extra = gt.copy()
    extra[30:32, 30:32] = True
    p, r, f = VE.boundary_pr(extra, gt)
    assert p == pytest.approx(40 / 48) and r == 1.0 and f == pytest.approx(10 / 11)
    # a larger tolerance (3 px, given in pixels) forgives the 3-pixel shift
    assert VE.boundary_f(_square(10, 13), gt, bound_th=3) == pytest.approx(1.0)
    # DAVIS's empty-boundary conventions
    empty = np.zeros_like(gt)
    assert VE.boundary_pr(empty, empty) == (1.0, 1.0, 1.0)
    assert VE.boundary_pr(empty, gt) == (1.0, 0.0, 0.0) and VE.boundary_pr(gt, empty) == (0.0, 1.0, 0.0)


def test_perfect_prediction_scores_one_and_matching_finds_the_ids():
    t, size = 5, 40
    gt = np.zeros((2, t, size, size), bool)
    for k in range(t):
        gt[0, k] = _square(5 + k, 5)
        if k >= 2:  # the second object enters at frame 2
            gt[1, k] = _square(25, 20 + k)
    ids = np.zeros((t, size, size), np.uint8)
    ids[gt[0]] = 7  # swapped and arbitrary ids
    ids[gt[1]] = 3
    matched, scores = VE.match_objects(ids, gt)
    assert matched == [7, 3]
    assert all(s.j == 1.0 and s.f == 1.0 and s.jf == 1.0 for s in scores)
    one = VE.object_scores(gt[1], gt[1])
    assert one.jf == 1.0 and one.j_frames.shape == (t,)
    # fewer ids than objects: the unmatched object scores against an empty prediction (1 on its empty frames only)
    only = np.where(ids == 7, 7, 0).astype(np.uint8)
    matched, scores = VE.match_objects(only, gt)
    assert matched == [7, None]
    assert scores[1].j == pytest.approx(2 / 5) and scores[1].f == pytest.approx(2 / 5)


def test_hungarian_equals_brute_force():
    rng = np.random.default_rng(0)
    for n, m in ((1, 1), (2, 3), (3, 3), (3, 5), (4, 6)):
        for _ in range(20):
            cost = rng.random((n, m))
            got = VE._hungarian(cost)
            assert len(set(got)) == n and all(0 <= c < m for c in got)
            best = min(sum(cost[i, c] for i, c in enumerate(p)) for p in itertools.permutations(range(m), n))
            assert sum(cost[i, c] for i, c in enumerate(got)) == pytest.approx(best)


# ---- id switches and late objects --------------------------------------------------------------------------------

def test_id_switches_on_a_constructed_sequence():
    """Best ids per frame: 1, 1, 2, none (no id on it), 2, invisible, 1, 3 = 4 tie (smaller wins): 3 switches
    (1 -> 2, 2 -> 1, 1 -> 3); the gap and the invisible frame are skipped."""
    t, size = 8, 20
    gt = np.zeros((t, size, size), bool)
    gt[:, 5:15, 5:15] = True
    gt[5] = False  # invisible
    ids = np.zeros((t, size, size), np.uint8)
    for k, pid in ((0, 1), (1, 1), (2, 2), (4, 2), (6, 1)):
        ids[k, 5:15, 5:15] = pid
    ids[2, 5:7, 5:15] = 1  # a minority of id 1 under id 2
    ids[3, 0:3, 0:3] = 9  # an id elsewhere: does not overlap the object
    ids[5, 5:15, 5:15] = 4  # on an invisible frame: ignored
    ids[7, 5:10, 5:15] = 4  # a tie of 50 pixels each
    ids[7, 10:15, 5:15] = 3
    n, best = VE.id_switches(ids, gt)
    assert best == [1, 1, 2, None, 2, None, 1, 3]
    assert n == 3


def _late_clip(found_at: int | None) -> tuple[VE.EvalClip, np.ndarray]:
    """A 40 x 40 clip of 10 frames: object 1 visible throughout; object 2 (late) appears at frame 3 with 4 px and
    covers 25 px (>= 1% of 1600) from frame 4 (first_large = 4). The prediction tracks object 1 as id 1 and shows
    id 2 on object 2 from ``found_at``; id 2 also sits elsewhere from frame 0 (not on the object)."""
    t, size = 10, 40
    gt = np.zeros((t, size, size), np.uint8)
    gt[:, 2:12, 2:12] = 1
    gt[3, 30:32, 30:32] = 2
    gt[4:, 30:35, 30:35] = 2
    ids = np.zeros_like(gt)
    ids[gt == 1] = 1
    ids[:, 20:22, 0:2] = 2  # the same id on background from frame 0
    if found_at is not None:
        ids[found_at:][gt[found_at:] == 2] = 2
    return VE.EvalClip("late", np.zeros((t, size, size, 3), np.uint8), gt, {1: "red circle", 2: "red circle"}), ids


@pytest.mark.parametrize("found_at, frame, found", [(6, 6, True), (7, 7, False), (4, 4, True), (2, 3, True),
                                                    (None, None, False)])
def test_late_object_found_within_k_frames_of_first_large(found_at, frame, found):
    """K = 2, first_large = 4: found at frame 6 = 4 + K counts, frame 7 does not; the id sitting on the background
    from frame 0 does not count as finding the object (found_at=2: the object's first pixels are at frame 3)."""
    clip, ids = _late_clip(found_at)
    assert VE.first_large_frame(clip.gt == 2) == 4
    rec = VE.evaluate_clip(lambda prompt: ids, clip, VE.class_targets(clip), late_within=2)
    (target,) = rec["targets"]
    assert target["prompt"] == "red circle" and [o["gt_id"] for o in target["objects"]] == [1, 2]
    late = target["objects"][1]
    assert late["late"] and late["first_large"] == 4 and late["matched_id"] == 2
    assert late["found_frame"] == frame and late["found"] is found
    assert not target["objects"][0]["late"] and not target["objects"][0]["found"]


def test_first_large_agrees_with_the_clip_records():
    clip = render_clip(5_000_123, ClipConfig(n_frames=12, size=(64, 64), entry_window=(2, 4), n_entering=(1, 2)))
    for k, o in enumerate(clip.objects):
        assert VE.first_large_frame(clip.instance_masks[:, k]) == o.first_large
        assert (not clip.instance_masks[0, k].any()) == o.late


# ---- removal metrics ---------------------------------------------------------------------------------------------

def test_removal_metrics_on_constructed_arrays():
    rng = np.random.default_rng(1)
    t, h, w = 4, 16, 16
    exact = rng.integers(0, 200, (t, h, w, 3), dtype=np.uint8)
    mask = np.zeros((t, h, w), bool)
    mask[:, 4:8, 4:8] = True
    edited = exact.copy()
    edited[mask] += 10  # every inside value off by exactly 10: MSE 100
    s = VE.removal_metrics(edited, exact, mask)
    assert s.psnr_inside == pytest.approx(10 * math.log10(255 ** 2 / 100))  # 28.13 dB
    assert s.exact_outside and s.psnr_outside == math.inf
    d = s.to_dict()
    assert d["psnr_outside_db"] is None and d["exact_outside"] is True and d["psnr_inside_db"] == pytest.approx(28.1308, abs=1e-3)
    assert s.n_inside == t * 16 and s.n_outside == t * (h * w - 16)
    # one outside value off by 30: MSE = 900 / (3 * n_outside)
    edited[0, 0, 0, 0] = exact[0, 0, 0, 0] + 30
    s = VE.removal_metrics(edited, exact, mask)
    assert not s.exact_outside
    assert s.psnr_outside == pytest.approx(10 * math.log10(255 ** 2 * 3 * s.n_outside / 900))
    # flicker: the inside alternates 100 / 110 while the exact clip is constant there -> 10 levels, excess 10
    exact[mask] = 50
    edited = exact.copy()
    for k in range(t):
        edited[k][mask[k]] = 100 + 10 * (k % 2)
    s = VE.removal_metrics(edited, exact, mask, background_drift=0.0)
    assert s.flicker == pytest.approx(10.0) and s.flicker_exact == 0.0 and s.flicker_excess == pytest.approx(10.0)
    drifting = VE.removal_metrics(edited, exact, mask, background_drift=0.3)
    assert drifting.flicker is None and drifting.to_dict()["flicker_excess"] is None
    with pytest.raises(InputError, match="same clip"):
        VE.removal_metrics(edited[:2], exact, mask)


def test_removal_reference_differs_from_the_clip_only_near_the_object():
    import cv2

    clip = render_clip(5_000_007, ClipConfig(n_frames=4, size=(48, 48), n_entering=(0, 0), n_objects=(2, 2)))
    exact, mask = VE.removal_reference(clip, 0)
    grown = np.stack([cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) for m in mask])
    s = VE.removal_metrics(clip.frames, exact, grown, clip.background_drift)
    assert s.exact_outside  # outside the (dilated) object the object-free clip is the clip, exactly
    if mask.any():
        assert math.isfinite(s.psnr_inside)  # and inside it differs


# ---- loaders -------------------------------------------------------------------------------------------------------

def _palette_png(path, ids):
    img = Image.fromarray(ids.astype(np.uint8))
    img.putpalette(davis_palette())
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _jpeg(path, h=48, w=64, value=120):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _davis_tree(root, semantics=True):
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("bear\n")
    for t in range(2):
        _jpeg(root / "JPEGImages" / "480p" / "bear" / f"{t:05d}.jpg")
        ids = np.zeros((48, 64), np.uint8)
        ids[5:20, 5:20] = 1
        ids[30:40, 30 + t:40 + t] = 2
        ids[0, 0] = 255  # void
        _palette_png(root / "Annotations" / "480p" / "bear" / f"{t:05d}.png", ids)
    if semantics:
        (root / "davis_semantics.json").write_text(json.dumps({"bear": {"1": "bear", "2": "person"}}))
    return root


def test_davis_loader_on_a_fake_tree(tmp_path):
    root = _davis_tree(tmp_path / "DAVIS")
    (src,) = VE.davis_clips(root, require_names=True)
    clip = src.load()
    assert src.name == clip.name == "bear" and clip.frames.shape == (2, 48, 64, 3) and clip.gt.shape == (2, 48, 64)
    assert clip.gt[0, 0, 0] == 0 and set(np.unique(clip.gt)) == {0, 1, 2}  # void 255 -> background
    assert clip.names == {1: "bear", 2: "person"}
    assert [(tg.prompt, tg.gt_ids) for tg in VE.class_targets(clip)] == [("bear", (1,)), ("person", (2,))]


def test_davis_loader_errors_name_the_missing_file(tmp_path):
    root = _davis_tree(tmp_path / "DAVIS", semantics=False)
    with pytest.raises(InputError, match=r"davis_semantics\.json is missing"):
        VE.davis_clips(root, require_names=True)
    (src,) = VE.davis_clips(root)  # without names the clips load, but class prompts are refused
    with pytest.raises(InputError, match="class name for every object"):
        VE.class_targets(src.load())
    with pytest.raises(InputError, match=r"ImageSets/2017/test-dev\.txt is missing.*expected layout"):
        VE.davis_clips(root, split="test-dev")
    (root / "Annotations" / "480p" / "bear" / "00001.png").unlink()
    (src,) = VE.davis_clips(root)
    with pytest.raises(InputError, match=r"00001\.png is missing"):
        src.load()
    import shutil

    shutil.rmtree(root / "Annotations")
    with pytest.raises(InputError, match=r"Annotations/480p/bear is missing"):
        VE.davis_clips(root)


def _ref_tree(root, with_obj_id=True):
    exprs = {"0": {"exp": "a bear walking", "obj_id": "1"}, "1": {"exp": "the person on the right", "obj_id": "2"}}
    if not with_obj_id:
        exprs = {"0": {"exp": "a bear walking"}}
    root.mkdir(parents=True)
    (root / "meta_expressions.json").write_text(json.dumps({"videos": {"vid1": {"expressions": exprs,
                                                                                 "frames": ["00000", "00005"]}}}))
    for stem in ("00000", "00005"):
        _jpeg(root / "JPEGImages" / "vid1" / f"{stem}.jpg")
        ids = np.zeros((48, 64), np.uint8)
        ids[5:20, 5:20] = 1
        ids[30:40, 40:50] = 2
        _palette_png(root / "Annotations" / "vid1" / f"{stem}.png", ids)
    return root


def test_referring_loader_on_a_fake_tree(tmp_path):
    root = _ref_tree(tmp_path / "ref")
    (src,) = VE.referring_clips(root)
    clip = src.load()
    assert clip.frames.shape == (2, 48, 64, 3) and clip.gt.shape == (2, 48, 64)
    assert clip.expressions == [("a bear walking", 1), ("the person on the right", 2)]
    assert [(tg.prompt, tg.gt_ids) for tg in VE.default_targets(clip)] == [("a bear walking", (1,)),
                                                                          ("the person on the right", (2,))]


def test_referring_loader_errors(tmp_path):
    with pytest.raises(InputError, match=r"meta_expressions\.json is missing.*expected layout"):
        VE.referring_clips(tmp_path)
    root = _ref_tree(tmp_path / "valid", with_obj_id=False)
    with pytest.raises(InputError, match=r"\"obj_id\".*withheld"):
        VE.referring_clips(root)
    root = _ref_tree(tmp_path / "ok")
    (root / "JPEGImages" / "vid1" / "00005.jpg").unlink()
    (src,) = VE.referring_clips(root)
    with pytest.raises(InputError, match=r"00005\.jpg is missing"):
        src.load()


# ---- runs ----------------------------------------------------------------------------------------------------------

def _oracle(clip: VE.EvalClip):
    """A segmenter that returns the ground truth of each prompt's objects (ids 1, 2, ... in gt order)."""
    calls = []

    def segment(pipe, frames, prompt, keyframe_every):
        calls.append(prompt)
        tg = next(t for t in VE.default_targets(clip) if t.prompt == prompt)
        ids = np.zeros(clip.gt.shape, np.uint8)
        for n, i in enumerate(tg.gt_ids, start=1):
            ids[clip.gt == i] = n
        return ids
    return segment, calls


def test_evaluate_video_oracle_store_and_resume(tmp_path, monkeypatch):
    clip, _ = _late_clip(None)
    clip.names = {1: "red circle", 2: "blue square"}
    segment, calls = _oracle(clip)
    out = tmp_path / "out"
    s = VE.evaluate_video(None, [clip], keyframe_every=2, out_dir=out, segment=segment, dataset="t", split="dev")
    assert calls == ["red circle", "blue square"]
    assert s["jf"] == 1.0 and s["j"] == 1.0 and s["f"] == 1.0 and s["n_objects"] == 2 and s["n_targets"] == 2
    assert s["late_found"] == 1.0 and s["n_late_objects"] == 1 and s["late_within"] == 2
    assert s["id_switches_per_10_clips"] == 0.0 and s["ci95"]["jf"]["n"] == 2 and s["ci95"]["late_found"]["unit"] == "cases"
    assert json.loads((out / "video.json").read_text())["jf"] == 1.0
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["clip"] == "late"
    # a rerun resumes: nothing is segmented again
    calls.clear()
    assert VE.evaluate_video(None, [clip], keyframe_every=2, out_dir=out, segment=segment, dataset="t")["jf"] == 1.0
    assert calls == []
    # an edited line is not trusted: warned about and recomputed; another protocol (K) recomputes too
    rec = json.loads(lines[0])
    rec["targets"][0]["objects"][0]["JF"] = 0.5
    (out / "results.jsonl").write_text(json.dumps(rec) + "\n")
    with pytest.warns(OvsegWarning, match="checksum"):
        VE.evaluate_video(None, [clip], keyframe_every=2, out_dir=out, segment=segment, dataset="t")
    assert calls == ["red circle", "blue square"]
    calls.clear()
    with pytest.warns(OvsegWarning, match="another protocol"):
        s = VE.evaluate_video(None, [clip], keyframe_every=1, out_dir=out, segment=segment, dataset="t")
    assert len(calls) == 2 and s["late_within"] == 1


def test_id_switches_are_reported_per_clip_and_per_10_clips():
    clip, ids = _late_clip(4)
    ids = ids.copy()
    ids[6:][clip.gt[6:] == 1] = 5  # object 1 changes id at frame 6: one switch
    s = VE.evaluate_video(None, [clip], lambda c: [VE.VideoTarget("red circle", (1, 2))], keyframe_every=2,
                          segment=lambda *a: ids)
    assert s["per_clip"][0]["id_switches"] == 1 and s["id_switches_per_clip"] == 1.0
    assert s["id_switches_per_10_clips"] == 10.0 and s["ci95"]["id_switches_per_10_clips"]["unit"] == "clips"


def test_dev_clips_use_the_shipped_test_config():
    spec = importlib.util.spec_from_file_location("make_samples", DATA_DIR / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert VE.dev_clip_config() == mod.VIDEO_TEST_CONFIG
    from ovseg.world import seed_range

    dev = VE.mini_video_clips("dev", 3)
    assert [s.name for s in dev] == [f"clip_{s:010d}" for s in seed_range("video", "dev").seeds[:3]]
    assert len(VE.mini_video_clips("dev")) == VE.MINI_DEV_CLIPS
    test = VE.mini_video_clips("test", 2)  # names only: nothing is read until a clip is loaded
    assert all(int(s.name[5:]) in seed_range("video", "test").seeds for s in test)
    with pytest.raises(InputError, match="dev and test"):
        VE.mini_video_clips("val")


# ---- CLI -----------------------------------------------------------------------------------------------------------

SMALL = ClipConfig(n_frames=6, n_objects=(2, 3), n_entering=(1, 1), entry_window=(2, 3), split="all")


def _committed_log() -> bytes:
    p = DATA_DIR / "mini_world" / "TEST_LOG.jsonl"
    return p.read_bytes() if p.exists() else b""


def test_cli_video_dev_run_writes_results_resumes_and_logs_nothing(tmp_path, monkeypatch, capsys):
    from ovseg import video
    from ovseg.cli import main
    from ovseg.world import seed_range

    log = tmp_path / "TEST_LOG.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))
    monkeypatch.setattr(VE, "dev_clip_config", lambda: SMALL)  # test-only: short clips
    before = _committed_log()
    out = tmp_path / "dev"
    args = ["evaluate", "--dataset", "mini-video", "--task", "video", "--split", "dev", "--max-images", "1",
            "--keyframe-every", "4", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "J&F" in stdout and f"-> {out}/video.json" in stdout
    seed = seed_range("video", "dev").seeds[0]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["clip"] == f"clip_{seed:010d}"
    doc = json.loads((out / "video.json").read_text())
    clip = render_clip(seed, SMALL)
    visible = [k for k in range(len(clip.objects)) if clip.instance_masks[:, k].any()]
    assert doc["n_clips"] == 1 and doc["n_objects"] == len(visible) and doc["split"] == "dev"
    assert doc["n_targets"] == len({clip.objects[k].class_name for k in visible})
    assert 0.0 <= doc["jf"] <= 1.0 and doc["keyframe_every"] == 4 and doc["profile"] == "mini"
    assert not log.exists() and _committed_log() == before  # dev logs nothing
    # a rerun resumes from results.jsonl: segment_video is not called again

    def refuse(*a, **k):
        raise AssertionError("recomputed a finished clip")

    monkeypatch.setattr(video, "segment_video", refuse)
    assert main(args) == 0, capsys.readouterr().err
    assert (out / "results.jsonl").read_text().splitlines() == lines


def test_cli_video_test_run_logs_one_line(tmp_path, monkeypatch, capsys):
    from ovseg.cli import main
    from ovseg.world import seed_range

    log = tmp_path / "TEST_LOG.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))
    fake_test = write_clips(tmp_path / "video_test", [seed_range("video", "dev").seeds[1]], SMALL)
    monkeypatch.setattr(VE, "video_test_root", lambda: fake_test)  # never the shipped test set in tests
    before = _committed_log()
    out = tmp_path / "test"
    rc = main(["evaluate", "--dataset", "mini-video", "--task", "video", "--split", "test", "--max-images", "1",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    entries = [json.loads(x) for x in log.read_text().splitlines()]
    doc = json.loads((out / "video.json").read_text())
    assert len(entries) == 1 and entries[0]["task"] == "video" and entries[0]["split"] == "video/test"
    assert entries[0]["n"] == doc["n_objects"] and entries[0]["headline"]["jf"] == doc["ci95"]["jf"]
    assert "mini-sam2" in entries[0]["models"] and _committed_log() == before


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "mini-video", "--task", "semantic"], "--task video takes a video dataset"),
    (["--dataset", "mini", "--task", "video"], "--task video takes a video dataset"),
    (["--dataset", "mini", "--keyframe-every", "4"], "--keyframe-every applies to --task video only"),
    (["--dataset", "davis"], "needs --root"),
    (["--dataset", "mini-video", "--split", "val"], "mini-video splits are dev and test"),
    (["--dataset", "mini-video", "--keyframe-every", "0"], "--keyframe-every must be a positive integer"),
])
def test_cli_video_refusals(tmp_path, capsys, extra, message):
    from ovseg.cli import main

    rc = main(["evaluate", *extra, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("ovseg: error: ")


def test_cli_davis_without_semantics_names_the_file(tmp_path, capsys):
    from ovseg.cli import main

    root = _davis_tree(tmp_path / "DAVIS", semantics=False)
    rc = main(["evaluate", "--dataset", "davis", "--root", str(root), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "davis_semantics.json is missing" in err and "expected layout" in err
