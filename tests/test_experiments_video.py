"""ovseg.experiments.video: the dev comparison's rows, the late-object finder and the strip figure (no models)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ovseg.errors import InputError  # noqa: E402
from ovseg.experiments import video as XV  # noqa: E402
from ovseg.video_eval import ClipSource, EvalClip, evaluate_video  # noqa: E402


def _clip(name: str, enter: int | None) -> EvalClip:
    t, h, w = 12, 40, 40
    gt = np.zeros((t, h, w), np.uint8)
    gt[:, 5:15, 5:15] = 1  # object 1, there from frame 0
    if enter is not None:
        gt[enter:, 20:32, 20:32] = 2  # object 2 enters at `enter` (144 px = 9% of the frame)
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[gt == 1] = (255, 0, 0)
    frames[gt == 2] = (0, 0, 255)
    return EvalClip(name, frames, gt, {1: "red square", 2: "blue square"})


def test_find_late_object_skips_objects_present_at_frame_0_and_entries_too_close_to_the_end():
    sources = [ClipSource("a", lambda: _clip("a", None)), ClipSource("b", lambda: _clip("b", 10)),
               ClipSource("c", lambda: _clip("c", 3))]
    clip, prompt, k, large = XV.find_late_object(sources)  # b's entry at 10 is within 4 frames of the end (11)
    assert (clip.name, prompt, k, large) == ("c", "blue square", 2, 3)
    assert XV.find_late_object(sources[:2]) is None
    assert XV.find_late_object(sources[:2], margin=1)[0].name == "b"


def test_tracking_rows_from_an_evaluation_with_oracle_ids():
    clip = _clip("c", 3)

    def oracle(pipe, frames, prompt, k):  # ids that follow the ground truth, found at the first keyframe
        want = [i for i, n in clip.names.items() if n == prompt]
        out = np.where(np.isin(clip.gt, want), clip.gt, 0).astype(np.uint8)
        out[:4] = np.where(out[:4] == 2, 0, out[:4])
        return out

    summary = evaluate_video(None, [clip], keyframe_every=4, segment=oracle)
    rows = XV.tracking_rows([summary | {"label": "oracle", "seconds_per_frame": 0.01}])
    assert rows[0]["setting"] == "oracle" and rows[0]["objects"] == 2 and rows[0]["late objects"] == 1
    # object 2 is found one frame after it enters (J = F = 0 on that frame): J&F (1 + 11 / 12) / 2
    assert rows[0]["J&F"].startswith("0.958") and rows[0]["late found"].startswith("1.00")
    assert rows[0]["id switches / 10 clips"].startswith("0.0") and rows[0]["s / frame"] == 0.01


def test_track_strip_figure_rows_titles_and_bad_input():
    clip = _clip("c", 3)
    fig = XV.track_strip_figure(clip.frames[2:], clip.gt[2:], every=3, gt=clip.gt[2:], title="t", first_frame=2)
    axes = fig.axes
    assert len(axes) == 2 * 4 and axes[0].get_title() == "frame 2" and axes[1].get_title() == "frame 5"
    assert axes[0].get_ylabel() == "tracked" and axes[4].get_ylabel() == "ground truth"
    with pytest.raises(InputError, match="one clip"):
        XV.track_strip_figure(clip.frames, clip.gt[:5])
    with pytest.raises(InputError, match="every must be a positive integer"):
        XV.track_strip_figure(clip.frames, clip.gt, every=0)


def test_compare_tracking_refuses_bad_arguments():
    with pytest.raises(InputError, match="n_clips must be a positive integer"):
        XV.compare_tracking(None, [XV.TrackSetting()], 0)
    with pytest.raises(InputError, match="at least one setting"):
        XV.compare_tracking(None, [], 2)
    assert XV.TrackSetting(4, False).label == "K=4, refresh off, IoU 0.1, parts 0.5, re-id, new >= 0.7 x best, " \
                                              "grouped, drift, fit 0.5"
    old = XV.TrackSetting(4, True, reidentify=False, new_object_ratio=0, group_detections=False, recover_drift=False,
                          refresh_fit=0)
    assert old.label == "K=4, refresh on, IoU 0.1, parts 0.5" and old.kwargs()["new_object_ratio"] == 0


def test_removal_clips_take_static_test_clips_and_their_largest_object():
    clips = XV.removal_clips("test", 2)
    assert len(clips) == 2
    for clip, k in clips:
        assert clip.background_drift == 0
        areas = clip.instance_masks.sum(axis=(0, 2, 3))
        assert areas[k] == areas.max()
    with pytest.raises(InputError, match="dev or test"):
        XV.removal_clips("train", 1)


def test_removal_rows_pair_flicker_with_the_baseline():
    from ovseg.video_edit import StrategyMeasurement

    base = StrategyMeasurement("independent", ["a", "b"], [20.0, 22.0], [True, True], [8.0, 6.0], [1.0, 1.0], [4, 4],
                               [1.0, 1.0])
    reuse = StrategyMeasurement("reuse", ["a", "b"], [21.0, 23.0], [True, False], [2.0, 3.0], [1.0, 1.0], [1, 2],
                                [0.5, 0.5])
    rows = XV.removal_rows({"independent": base, "reuse": reuse})
    assert rows[0]["flicker reduction vs independent"] == "-" and rows[1]["outside exact"] == "1/2"
    assert rows[1]["flicker reduction vs independent"].startswith("3.00")  # mean of 8/2 and 6/3
    assert rows[1]["PSNR inside (dB)"].startswith("22.00") and rows[1]["model calls / clip"] == 1.5
    with pytest.raises(InputError, match="strategies must be some of"):
        XV.removal_comparison(None, [], ["magic"], 4)
    with pytest.raises(InputError, match="n_frames must be an integer >= 2"):
        XV.removal_comparison(None, [], ["reuse"], 1)


def test_a_logged_removal_comparison_names_the_tracker_weights(tmp_path, monkeypatch):
    from ovseg import testlog
    from ovseg.config import PipelineConfig
    from ovseg.evaluate import folder_identity
    from ovseg.paths import REPO_ROOT
    from ovseg.video_edit import StrategyMeasurement
    from ovseg.weights import REGISTRY

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))
    base = StrategyMeasurement("independent", ["a"], [20.0], [True], [8.0], [1.0], [4], [1.0])
    tracked = StrategyMeasurement("reuse, tracked", ["a"], [21.0], [True], [2.0], [1.0], [1], [0.5])
    cfg = PipelineConfig()  # the mini profile's defaults: mini-sam2 detects, mini-sam2-video tracks
    assert XV.log_removal_test({"independent": base, "reuse, tracked": tracked}, cfg, 24, "test")
    models = testlog.entries(log)[0]["models"]
    video = REGISTRY["mini-sam2-video"]
    assert models["mini-sam2-video"] == folder_identity(REPO_ROOT / video.local_dir, video.files)
    assert {"mini-sam2", "mini-clip", "mini-inpainting"} <= set(models)
    assert not XV.log_removal_test({"independent": base}, cfg, 24, "dev")  # dev is never logged
    # the protocol names the scoring and the tracker's settings: a change of either is a new protocol
    import functools

    from ovseg import video

    first = testlog.entries(log)[0]["protocol"]
    monkeypatch.setattr(video, "VideoTrackConfig", functools.partial(video.VideoTrackConfig, refresh_fit=0.25))
    assert XV.log_removal_test({"independent": base, "reuse, tracked": tracked}, cfg, 24, "test")
    monkeypatch.setattr(XV, "REMOVAL_SCORING", "object only")
    assert XV.log_removal_test({"independent": base, "reuse, tracked": tracked}, cfg, 24, "test")
    protocols = [e["protocol"] for e in testlog.entries(log)]
    assert len(set(protocols)) == 3 and protocols[0] == first


def test_removal_comparison_scores_every_pixel_the_object_changes_as_inside(monkeypatch):
    import ovseg.video_edit as VE
    import ovseg.video_eval as VEV

    frames = np.full((4, 32, 32, 3), 100, np.uint8)
    obj = np.zeros((4, 32, 32), bool)
    obj[:, 10:20, 10:20] = True  # the object's visible pixels
    frames[obj] = (0, 0, 255)
    exact = np.full_like(frames, 100)
    exact[:, 22, 10] = (110, 100, 100)  # an occluder's rim over the object's hidden part: it changes without it
    clip = SimpleNamespace(name="c", frames=frames, background_drift=0.0,
                           objects=[SimpleNamespace(class_name="blue square")])
    monkeypatch.setattr(VEV, "removal_reference", lambda c, k: (exact, obj))

    def perfect_inside_the_object(pipe, fr, prompt, op, seed=0, masks=None, strategy=None, objects="all"):
        out = fr.copy()
        out[obj[:len(fr)]] = exact[:len(fr)][obj[:len(fr)]]  # a removal that is exact on the object's pixels
        return SimpleNamespace(frames=out, edit_masks=obj[:len(fr)].astype(np.uint8), counts={"model_calls": 1},
                               timings={"total": 0.1})

    monkeypatch.setattr(VE, "edit_video", perfect_inside_the_object)
    m = XV.removal_comparison(None, [(clip, 0)], ["reuse"], 4, tracked=False)["reuse"]
    # the rim pixel (2 px beyond the object's grown mask) is scored inside: the edit kept every pixel it must keep
    assert m.exact_outside == [True] and 20 < m.psnr_inside[0] < 60
