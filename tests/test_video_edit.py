"""Video editing (ovseg.video_edit, issue #21 part 4): every frame through the image inpainter, pixels outside the
per-frame soft mask exact, the flicker strategies, bad input, and ``ovseg remove|replace|style CLIP``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ovseg import video as V
from ovseg.config import InpaintingConfig
from ovseg.errors import InputError
from ovseg.inpaint import Inpainter
from ovseg.video_edit import (
    DEFAULT_STRATEGY,
    STRATEGIES,
    NoObjectError,
    VideoEditConfig,
    edit_video,
    select_regions,
)

try:
    from .dummies import get_dummy_inpaint_components
except ImportError:  # tests/ is not a package: pytest puts it on sys.path
    from dummies import get_dummy_inpaint_components

T, H, W = 6, 40, 48


def _clip():
    """A static smooth background (H, W, 3) and T frames with a square moving 3 px a frame, its masks (T, H, W)."""
    yy, xx = np.mgrid[0:H, 0:W]
    bg = np.stack([60 + 2 * xx, 80 + yy, 150 + (xx + yy) % 7], axis=-1).astype(np.uint8)
    frames = np.repeat(bg[None], T, axis=0)
    masks = np.zeros((T, H, W), bool)
    for t in range(T):
        masks[t, 12:24, 8 + 3 * t:20 + 3 * t] = True
    frames[masks] = (220, 30, 30)
    return bg, frames, masks


@pytest.fixture(scope="module")
def inpainter():
    from diffusers import StableDiffusionInpaintPipeline

    sd = StableDiffusionInpaintPipeline(**get_dummy_inpaint_components(), requires_safety_checker=False)
    return Inpainter(sd, InpaintingConfig(num_inference_steps=2, mask_dilation=2, mask_blur=1.0))


class _Pipe:
    """The parts of the pipeline edit_video uses: ``inpainter``, ``config``; ``segment`` returns the given masks
    of the frame (tracking tests)."""

    def __init__(self, inpainter, masks=None, frames=None):
        self.inpainter, self.config, self.masks = inpainter, None, masks
        self.index = {f.tobytes(): i for i, f in enumerate(frames)} if frames is not None else {}

    def segment(self, frame, prompt, top_k=5):
        t = self.index[frame.tobytes()]
        found = [SimpleNamespace(mask=self.masks[t], final_score=0.5)] if self.masks is not None else []
        return SimpleNamespace(segmentation_masks=found)


class _Tracker:
    """SAM2VideoPredictor's API as segment_video uses it, returning the ground-truth mask of its one object."""

    def __init__(self, masks):
        self.masks = masks

    def init_state(self, video_path, offload_video_to_cpu=False, offload_state_to_cpu=False):
        return {"ids": []}

    def _out(self, state, t):
        import torch

        ids = list(state["ids"])
        lg = torch.tensor(np.stack([self.masks[t]] * len(ids)) if ids else np.zeros((0, H, W)), dtype=torch.float32)
        return ids, (lg * 20 - 10)[:, None]

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        if obj_id not in state["ids"]:
            state["ids"].append(obj_id)
        return (frame_idx, *self._out(state, frame_idx))

    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        yield (start_frame_idx, *self._out(state, start_frame_idx))

    def remove_object(self, state, obj_id, strict=False, need_output=True):
        state["ids"].remove(obj_id)

    def reset_state(self, state):
        state["ids"].clear()


def _check_outside_exact(frames, result):
    edited, m = result.frames, result.edit_masks
    assert edited.shape == frames.shape and edited.dtype == np.uint8 and m.shape == frames.shape[:3]
    assert np.array_equal(edited[m == 0], frames[m == 0])  # every pixel outside the soft masks: the input's
    assert (m > 0).any() and not np.array_equal(edited, frames)


@pytest.mark.parametrize("operation,strategy", [("remove", s) for s in STRATEGIES]
                         + [("replace", "fixed-noise"), ("style", "independent")])
def test_outside_mask_exact_for_every_strategy(inpainter, operation, strategy):
    _, frames, masks = _clip()
    masks = masks.copy()
    masks[2] = False  # a frame without the object: unchanged
    edit = None if operation == "remove" else "blue square"
    r = edit_video(_Pipe(inpainter), frames, "red square", operation, edit, masks=masks, strategy=strategy, seed=3)
    _check_outside_exact(frames, r)
    assert np.array_equal(r.frames[2], frames[2]) and r.per_frame[2]["action"] == "unchanged"
    assert r.settings["strategy"] == strategy and r.counts["frames"] == T and r.counts["unchanged"] == 1
    assert r.ids == [1] and r.id_maps.shape == masks.shape
    # the soft mask is the image path's prepare_mask of each frame's object (dilation, then blur)
    from ovseg.inpaint import prepare_mask

    m0 = np.rint(prepare_mask(masks[0], 2, 1.0) * 255).astype(np.uint8)
    assert operation != "remove" or np.array_equal(r.edit_masks[0], m0)


def test_seeds_and_determinism(inpainter):
    _, frames, masks = _clip()
    run = {s: edit_video(_Pipe(inpainter), frames, "red square", masks=masks, strategy=s, seed=7)
           for s in ("independent", "fixed-noise")}
    assert [r["seed"] for r in run["independent"].per_frame] == [7 + t for t in range(T)]
    assert [r["seed"] for r in run["fixed-noise"].per_frame] == [7] * T
    again = edit_video(_Pipe(inpainter), frames, "red square", masks=masks, strategy="fixed-noise", seed=7)
    assert np.array_equal(again.frames, run["fixed-noise"].frames)  # same seed: identical clip
    other = edit_video(_Pipe(inpainter), frames, "red square", masks=masks, strategy="fixed-noise", seed=8)
    assert not np.array_equal(other.frames, again.frames)
    assert DEFAULT_STRATEGY == {"remove": "reuse", "replace": "fixed-noise", "style": "fixed-noise"}
    assert edit_video(_Pipe(inpainter), frames[:2], "red square", masks=masks[:2]).settings["strategy"] == "reuse"


def test_reuse_takes_the_real_background_from_other_frames(inpainter):
    bg, frames, masks = _clip()
    r = edit_video(_Pipe(inpainter), frames, "red square", masks=masks, strategy="reuse", seed=0)
    _check_outside_exact(frames, r)
    # the square moves 3 px a frame: most of what it hides is seen in other frames; the model ran on few frames
    assert r.counts["model_calls"] < T and r.counts["reused"] >= 1
    full = r.edit_masks == 255
    hidden_always = np.logical_and.reduce(np.stack([V_dilate(m) for m in masks]))  # never revealed by any frame
    revealed = full & ~hidden_always[None]
    assert revealed.sum() > 100
    assert np.array_equal(r.frames[revealed], np.broadcast_to(bg, frames.shape)[revealed])  # the true background


def V_dilate(m):
    from ovseg.inpaint import _dilate

    return _dilate(m, 2)


def test_replace_edits_each_object_and_objects_selection(inpainter):
    _, frames, masks = _clip()
    ids = masks.astype(np.uint8)
    ids[:, 30:36, 2:8] = 2  # a second, static object
    r = edit_video(_Pipe(inpainter), frames, "square", "replace", "green circle", masks=ids, seed=1)
    assert r.ids == [1, 2] and r.counts["model_calls"] == 2 * T and r.per_frame[0]["ids"] == [1, 2]
    _check_outside_exact(frames, r)
    one = edit_video(_Pipe(inpainter), frames, "square", "replace", "green circle", masks=ids, objects=[2], seed=1)
    assert one.ids == [2] and not (one.id_maps == 1).any() and one.counts["model_calls"] == T
    assert np.array_equal(one.frames[:, 12:24, 8:20], frames[:, 12:24, 8:20])  # object 1 is not touched
    sel, chosen = select_regions(ids, T, (H, W), "best", scores={1: 0.2, 2: 0.9})
    assert chosen == [2] and set(np.unique(sel)) == {0, 2}
    on_disk, again = select_regions(ids, T, (H, W), "best", scores={1: 0.2, 2: 0.9}, memory_mb=0)
    assert again == [2] and isinstance(on_disk, np.memmap) and np.array_equal(on_disk, sel)  # same ids, in a file


def test_tracking_save_and_no_match(inpainter, tmp_path):
    _, frames, masks = _clip()
    pipe = _Pipe(inpainter, masks, frames)
    r = edit_video(pipe, frames, "red square", keyframe_every=3, predictor=_Tracker(masks), strategy="fixed-noise")
    assert r.tracking["keyframes"] == [0, 3] and np.array_equal(r.id_maps > 0, masks)
    _check_outside_exact(frames, r)
    files = r.save(tmp_path / "out")
    assert [p.name for p in files][0] == "edited.mp4" and files[-1].name == "result.json"
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["files"][-1] == "result.json" and doc["n_frames"] == T and doc["strategy"] == "fixed-noise"
    assert len(doc["frames"]) == T and doc["counts"]["inpainted"] == T and doc["ids"] == [1]
    assert V.read_video(tmp_path / "out" / "edited.mp4")[0].shape == frames.shape
    assert np.array_equal(V.read_id_masks(tmp_path / "out"), r.id_maps)
    # streamed into a folder: the same frames, none kept
    s = edit_video(pipe, frames, "red square", keyframe_every=3, predictor=_Tracker(masks), strategy="fixed-noise",
                   out_dir=tmp_path / "stream")
    assert s.frames is None and np.array_equal(s.edit_masks, r.edit_masks)
    assert json.loads((tmp_path / "stream" / "result.json").read_text())["counts"] == s.counts
    # nothing matched: NoObjectError (an InputError), nothing written
    with pytest.raises(NoObjectError, match="matched no object in any of the 2 keyframe") as err:
        edit_video(_Pipe(inpainter, None, frames), frames, "unicorn", keyframe_every=3, predictor=_Tracker(masks),
                   out_dir=tmp_path / "none")
    assert err.value.fix and not (tmp_path / "none").exists()
    with pytest.raises(NoObjectError, match="empty mask in all"):
        edit_video(_Pipe(inpainter), frames, "red square", masks=np.zeros_like(masks))


def test_bad_input_names_rule_value_and_fix(inpainter, tmp_path):
    _, frames, masks = _clip()
    pipe = _Pipe(inpainter)
    cases = [
        (dict(strategy="median"), "strategy must be one of"),
        (dict(operation="replace", edit_prompt="x", strategy="reuse"), "applies to remove only"),
        (dict(operation="style"), "style needs an edit prompt"),
        (dict(operation="erase"), "operation must be one of"),
        (dict(seed=-1), "seed must be an integer"),
        (dict(objects="some"), "objects must be"),
        (dict(objects=[3]), "objects must name ids present"),
        (dict(ring=0), "ring must be an integer >= 1"),
        (dict(static_threshold=float("nan")), "static_threshold must be a finite number"),
        (dict(masks=masks[:3]), "one mask per frame"),
        (dict(masks=masks.astype(np.float32)), "bools or integer ids"),
        (dict(max_frames=4), "at most max_frames=4 frames"),
    ]
    for kw, match in cases:
        kw = {"masks": masks, **kw}
        args = (kw.pop("operation", "remove"), kw.pop("edit_prompt", None))
        with pytest.raises(InputError, match=match) as err:
            edit_video(pipe, frames, "red square", *args, **kw)
        assert err.value.rule and err.value.value is not None and err.value.fix, kw
    with pytest.raises(InputError, match="at most max_frames"):
        edit_video(pipe, frames, "red square", masks=masks, max_frames=2)
    with pytest.raises(InputError, match="a video file must not be empty"):
        (tmp_path / "empty.mp4").write_bytes(b"")
        edit_video(pipe, tmp_path / "empty.mp4", "red square")
    with pytest.raises(InputError, match="readable by FFmpeg"):
        (tmp_path / "bad.mp4").write_bytes(b"not a video\n" * 50)
        edit_video(pipe, tmp_path / "bad.mp4", "red square")
    with pytest.raises(InputError, match="one text prompt"):
        edit_video(pipe, frames, ["a", "b"], masks=masks)
    with pytest.raises(InputError):
        VideoEditConfig(window=-1).validate()
    assert VideoEditConfig().validate().resolved_strategy == "reuse"


# ---- the CLI, with the mini models --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mini_clip(tmp_path_factory):
    from ovseg.world_video import ClipConfig, render_clip

    root = tmp_path_factory.mktemp("edit-clip")
    c = render_clip(3, ClipConfig(n_frames=4, n_entering=(0, 0), background_motion=0.0))
    return V.write_video(root / "clip.mp4", c.frames, fps=10), c.objects[0].class_name, c.frames


def _run(args, capsys):
    from ovseg.cli import main

    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_remove_video_end_to_end(mini_clip, tmp_path, capsys):
    mp4, prompt, frames = mini_clip
    out = tmp_path / "out"
    rc, stdout, err = _run(["remove", mp4, "--prompt", prompt, "--out", out, "--steps", "2"], capsys)
    assert rc == 0, err
    doc = json.loads((out / "result.json").read_text())
    assert doc["files"][0] == "edited.mp4" and doc["files"][-1] == "result.json" and len(doc["files"]) == 6
    assert doc["operation"] == "remove" and doc["strategy"] == "reuse" and doc["n_frames"] == 4
    assert doc["settings"]["num_inference_steps"] == 2 and doc["tracking"]["keyframes"] == [0]
    assert doc["models"]["inpainting"]["name"] == "mini-inpainting" and doc["source"] == str(mp4)
    edited, info = V.read_video(out / "edited.mp4")
    assert edited.shape == frames.shape and info.fps == pytest.approx(10.0)
    assert stdout.startswith(f"removed {prompt!r} in 4 frames") and "ovseg remove" in err  # the bar over frames


def test_cli_video_edit_refusals(mini_clip, tmp_path, capsys):
    from ovseg.cli import EXIT_NO_MATCH

    mp4, prompt, _ = mini_clip
    out = tmp_path / "out"
    rc, stdout, err = _run(["remove", mp4, "--prompt", prompt, "--out", out, "--no-progress",
                            "--set", "alignment.similarity_threshold=1"], capsys)
    assert rc == EXIT_NO_MATCH and "matched no object" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and stdout == ""
    for args, match in [
        (["remove", mp4, "--max-frames", "2"], "at most --max-frames 2 frames"),
        (["replace", mp4, "--edit", "blue square", "--strategy", "reuse"], "applies to remove only"),
        (["style", mp4], "style needs --edit"),
        (["remove", tmp_path / "missing.mp4"], "a video file or frame folder must exist"),
    ]:
        rc, stdout, err = _run([*args, "--prompt", prompt, "--out", out], capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and match in lines[0] and "fix:" in lines[0], (args, err)
        assert not out.exists()
