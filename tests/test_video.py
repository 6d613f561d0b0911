"""ovseg.video: video I/O, id-mask PNGs, the SAM 2 video predictor and text-prompted tracking (segment_video)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from ovseg import video as V
from ovseg.errors import InputError, NoMatchWarning
from ovseg.paths import REPO_ROOT

MINI_SAM2 = REPO_ROOT / "data" / "models" / "mini-sam2"


def _smooth_frames(t: int = 4, h: int = 48, w: int = 64) -> np.ndarray:
    """(T, H, W, 3) uint8 smooth gradients moving over time (H.264 reproduces them closely)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = [np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 40.0 * i + 60)], axis=-1) for i in range(t)]
    return np.stack(out).round().astype(np.uint8)


def _save_png(path, arr) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


# ---- I/O ----------------------------------------------------------------------------------------------------------

def test_mp4_round_trip_close_and_fps(tmp_path):
    frames = _smooth_frames()
    path = V.write_video(tmp_path / "clip.mp4", frames, fps=10)
    back, info = V.read_video(path)
    assert back.shape == frames.shape and back.dtype == np.uint8
    assert info.kind == "file" and info.fps == pytest.approx(10.0)
    err = np.abs(back.astype(int) - frames.astype(int))
    assert err.mean() < 3.0, err.mean()  # lossy, but close
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left
    # frame order is kept: each decoded frame is closest to its own input frame
    blue = back[..., 2].mean(axis=(1, 2))
    assert np.all(np.diff(blue) > 20)


def test_mp4_odd_size_is_padded_and_iterables_stream(tmp_path):
    frames = _smooth_frames(3, 33, 47)
    V.write_video(tmp_path / "odd.mp4", iter(list(frames)), fps=24)
    back, info = V.read_video(tmp_path / "odd.mp4")
    assert back.shape == (3, 34, 48, 3)
    assert np.abs(back[:, :33, :47].astype(int) - frames.astype(int)).mean() < 3.0
    assert info.fps == pytest.approx(24.0)


def test_write_video_replaces_a_symlink_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep me")
    link = tmp_path / "out.mp4"
    link.symlink_to(target)
    V.write_video(link, _smooth_frames(2), fps=5)
    assert target.read_text() == "keep me"
    assert not link.is_symlink() and V.read_video(link)[0].shape[0] == 2


def test_write_video_bad_input(tmp_path):
    with pytest.raises(InputError, match="must end in"):
        V.write_video(tmp_path / "x.gif", _smooth_frames(2))
    with pytest.raises(InputError, match="fps"):
        V.write_video(tmp_path / "x.mp4", _smooth_frames(2), fps=0)
    with pytest.raises(InputError, match="same size"):
        V.write_video(tmp_path / "x.mp4", [_smooth_frames(1)[0], _smooth_frames(1, 40, 40)[0]])
    assert not (tmp_path / "x.mp4").exists()


def test_png_folder_round_trip_is_exact_in_natural_order(tmp_path):
    frames = _smooth_frames(3)
    for name, f in zip(["2.png", "10.png", "1.png"], frames[[1, 2, 0]]):  # natural order: 1, 2, 10
        _save_png(tmp_path / "clip" / name, f)
    (tmp_path / "clip" / "notes.txt").write_text("not a frame")
    back, info = V.read_video(tmp_path / "clip")
    assert np.array_equal(back, frames)
    assert info.kind == "folder" and info.fps is None and info.frame_names == ["1.png", "2.png", "10.png"]


def test_a_clip_over_the_memory_budget_is_read_into_a_temporary_file_with_the_same_frames(tmp_path, monkeypatch):
    import os
    import tempfile

    frames = _smooth_frames(5)  # (5, H, W, 3)
    for i, f in enumerate(frames):
        _save_png(tmp_path / "clip" / f"{i:05d}.png", f)
    V.write_video(tmp_path / "clip.mp4", frames, fps=5)
    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))
    one_and_a_half = 1.5 * frames[0].nbytes / 2 ** 20  # MiB: two frames do not fit
    for source in (tmp_path / "clip", tmp_path / "clip.mp4"):
        in_ram, _ = V.read_video(source)
        on_disk, _ = V.read_video(source, memory_mb=one_and_a_half)
        assert not isinstance(in_ram, np.memmap) and isinstance(on_disk, np.memmap) and not on_disk.flags.writeable
        assert np.array_equal(in_ram, on_disk)
    assert np.array_equal(V.read_video(tmp_path / "clip", memory_mb=one_and_a_half)[0], frames)
    assert os.listdir(spill) == []  # the temporary file is unlinked at once: nothing is left behind
    ids = V.clip_array((4, 8, 8), np.uint8, memory_mb=0)
    assert isinstance(ids, np.memmap) and not ids.any()
    ids[2, 3, 3] = 7
    assert ids[2, 3, 3] == 7 and type(V.clip_array((4, 8, 8))) is np.ndarray
    with pytest.raises(InputError, match="memory_mb must be a number of MiB >= 0"):
        V.read_video(tmp_path / "clip", memory_mb=-1)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="temporary folder must be writable"):
        V.read_video(tmp_path / "clip", memory_mb=0)


def test_dataset_root_with_video_name(tmp_path):
    from ovseg.world_video import ClipConfig, clip_name, write_clips

    root = write_clips(tmp_path / "mini", [7], ClipConfig(n_frames=3, n_entering=(0, 0), size=(64, 64)))
    frames, info = V.read_video(root, video=clip_name(7))
    assert frames.shape == (3, 64, 64, 3) and info.source.endswith("frames")
    davis = tmp_path / "DAVIS" / "JPEGImages" / "480p" / "bear"
    for i, f in enumerate(_smooth_frames(2)):
        _save_png(davis / f"{i:05d}.png", f)
    assert V.read_video(tmp_path / "DAVIS", video="bear")[0].shape == (2, 48, 64, 3)
    with pytest.raises(InputError, match="clip 'cat' must be a frame folder"):
        V.read_video(tmp_path / "DAVIS", video="cat")


def test_bad_video_inputs_have_clear_messages(tmp_path):
    # unreadable / corrupt / truncated files
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video" * 50)
    with pytest.raises(InputError, match="readable by FFmpeg"):
        V.read_video(junk)
    good = V.write_video(tmp_path / "good.mp4", _smooth_frames(4), fps=8)
    (tmp_path / "cut.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputError, match="video file must"):
        V.read_video(tmp_path / "cut.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="must not be empty"):
        V.read_video(tmp_path / "empty.mp4")
    with pytest.raises(InputError, match="must exist"):
        V.read_video(tmp_path / "missing.mp4")
    # a clip over the limit names the limit and how to lift it
    with pytest.raises(InputError, match=r"max_frames=3.*pass max_frames=N"):
        V.read_video(good, max_frames=3)
    # a folder without images, and one with frames of different sizes
    (tmp_path / "noimg").mkdir()
    (tmp_path / "noimg" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="must contain image files"):
        V.read_video(tmp_path / "noimg")
    mixed = tmp_path / "mixed"
    _save_png(mixed / "00000.png", _smooth_frames(1, 40, 40)[0])
    _save_png(mixed / "00001.png", _smooth_frames(1, 40, 40)[0])
    _save_png(mixed / "00002.png", _smooth_frames(1, 40, 48)[0])
    with pytest.raises(InputError, match=r"00002\.png is 48x40 px, but 00000\.png is 40x40 px"):
        V.read_video(mixed)
    with pytest.raises(InputError, match=r"max_frames=2"):
        V.read_video(mixed, max_frames=2)


def test_zero_frame_video_is_refused(tmp_path):
    import av

    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w") as out:  # a video stream that never receives a frame
        s = out.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        out.start_encoding()
    with pytest.raises(InputError, match="at least one frame"):
        V.read_video(path)


# ---- id masks and overlays -----------------------------------------------------------------------------------------

def test_palette_id_masks_round_trip(tmp_path):
    from PIL import Image

    from ovseg.world_video import davis_palette

    ids = np.random.default_rng(0).integers(0, 4, size=(3, 20, 30)).astype(np.uint8)
    ids[0, 0, 0] = 255
    paths = V.write_id_masks(tmp_path, ids)
    assert [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
    with Image.open(paths[0]) as img:
        assert img.mode == "P" and tuple(img.getpalette()[:12]) == davis_palette()[:12]
    assert np.array_equal(V.read_id_masks(tmp_path), ids)
    V.write_id_masks(tmp_path, ids[:1])  # a shorter rerun removes the stale frames
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == ["00000.png"]
    with pytest.raises(InputError, match=r"\[0, 255\]"):
        V.write_id_masks(tmp_path, np.full((1, 4, 4), 300))


def test_masks_folder_symlink_is_refused(tmp_path):
    real = tmp_path / "elsewhere"
    real.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "masks").symlink_to(real)
    with pytest.raises(InputError, match="symbolic link"):
        V.write_id_masks(tmp_path / "out", np.zeros((1, 4, 4), np.uint8))
    assert not list(real.iterdir())


def test_overlay_needs_masks_of_the_frames_size():
    frames = _smooth_frames(2)
    with pytest.raises(InputError, match=r"masks 30x20 px, frames 64x48 px"):
        V.overlay_frames(frames, np.zeros((2, 20, 30), np.uint8))
    with pytest.raises(InputError, match="one id mask per frame"):
        V.overlay_frames(frames, np.zeros((3, 48, 64), np.uint8))
    ids = np.zeros((2, 48, 64), np.uint8)
    ids[:, 10:20, 10:20] = 1
    out = list(V.overlay_frames(frames, ids))
    assert len(out) == 2 and np.array_equal(out[0][30:, 30:], frames[0][30:, 30:])  # background untouched
    assert not np.array_equal(out[0][12:18, 12:18], frames[0][12:18, 12:18])  # the object is coloured


# ---- the SAM 2 video predictor --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mini_predictor():
    return V.build_sam2_video_predictor_from(MINI_SAM2)


@pytest.fixture(scope="module")
def small_clip():
    from ovseg.world_video import ClipConfig, render_clip

    return render_clip(3, ClipConfig(n_frames=4, n_entering=(0, 0), n_objects=(2, 2)))


def test_predictor_builds_from_the_mini_folder_with_its_weights(mini_predictor):
    import torch
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    from ovseg.masks import build_sam2_model

    assert isinstance(mini_predictor, SAM2VideoPredictor) and mini_predictor.image_size == 128
    assert mini_predictor.fill_hole_area == 0 and mini_predictor.binarize_mask_from_pts_for_mem_enc
    image_model = build_sam2_model(str(MINI_SAM2 / "config.yaml"), MINI_SAM2 / "model.safetensors")
    theirs = image_model.state_dict()
    for name, value in mini_predictor.state_dict().items():
        assert torch.equal(value, theirs[name]), name


def test_local_yaml_cannot_choose_the_class(tmp_path):
    from ovseg.errors import ConfigError

    bad = tmp_path / "config.yaml"
    bad.write_text((MINI_SAM2 / "config.yaml").read_text().replace("sam2.modeling.sam2_base.SAM2Base",
                                                                   "sam2.sam2_video_predictor.SAM2VideoPredictor", 1))
    with pytest.raises(ConfigError, match="may only instantiate sam2.modeling"):
        V.build_sam2_video_predictor_from(bad, MINI_SAM2 / "model.safetensors")


def test_model_frames_match_sam2s_own_loader(tmp_path, small_clip):
    import torch
    from sam2.utils.misc import _load_img_as_tensor

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    frames = V._ModelFrames(small_clip.frames, 128, True, mean, std, torch.device("cpu"))
    _save_png(tmp_path / "f.png", small_clip.frames[2])
    ref, h, w = _load_img_as_tensor(str(tmp_path / "f.png"), 128)
    ref = (ref.float() - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert len(frames) == 4 and (h, w) == (128, 128)
    assert torch.allclose(frames[2], ref, atol=1e-5)


def test_mini_predictor_propagates_a_frame0_mask(mini_predictor, small_clip):
    import sam2.sam2_video_predictor as svp
    from sam2.utils.misc import load_video_frames

    gt = small_clip.instance_maps  # (T, H, W)
    out = V.propagate_masks(mini_predictor, small_clip.frames, gt[0])
    assert out.shape == gt.shape and out.dtype == np.uint8
    assert set(np.unique(out)) <= set(np.unique(gt[0]))
    for k in np.unique(gt[0])[1:]:  # frame 0 is the given mask (sam2 uses a mask input as the output)
        assert V._iou(out[0] == k, gt[0] == k) > 0.8
    assert svp.load_video_frames is load_video_frames  # the narrow hooks are undone
    assert svp.tqdm.__module__.startswith("tqdm")
    with pytest.raises(InputError, match="frames' size"):
        V.propagate_masks(mini_predictor, small_clip.frames, gt[0][:64])


def test_full_config_with_random_weights_propagates(small_clip):
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    # SAM 2.1 Hiera-T, random weights, at 256 px (Hiera-L or 1024 px take seconds per frame on a CPU core)
    pred = V.build_sam2_video_predictor_from("sam2.1_hiera_t", overrides=["++model.image_size=256"])
    assert isinstance(pred, SAM2VideoPredictor) and pred.image_size == 256
    out = V.propagate_masks(pred, small_clip.frames[:3], small_clip.instance_maps[0], offload_video_to_cpu=True,
                            offload_state_to_cpu=True)
    assert out.shape == (3, 128, 128)


# ---- segment_video: id logic with a stub pipeline and an oracle tracker -----------------------------------------

def _scene():
    """12 frames of 48x48: A (a square) everywhere; B enters at frame 5; C leaves after frame 3."""
    t, h, w = 12, 48, 48
    gt = np.zeros((t, 3, h, w), bool)
    for i in range(t):
        gt[i, 0, 5:17, 5 + i:17 + i] = True  # A moves right
        if i >= 5:
            gt[i, 1, 30:42, 30:42] = True  # B
        if i <= 3:
            gt[i, 2, 30:40, 2:12] = True  # C
    frames = np.full((t, h, w, 3), 200, np.uint8)
    frames[:, :, :, 0] = np.arange(t, dtype=np.uint8)[:, None, None]  # each frame unique (the stub's key)
    for k, colour in enumerate([(255, 0, 0), (0, 0, 255), (0, 255, 0)]):
        frames[gt[:, k]] = colour
        frames[:, :, :, 0][gt[:, k]] = np.broadcast_to(np.arange(t, dtype=np.uint8)[:, None, None], gt[:, k].shape)[gt[:, k]]
    return frames, gt


class _StubPipe:
    """segment() returns the ground-truth masks of the frame (plus a near-duplicate of A)."""

    def __init__(self, frames, gt, duplicate=True, empty=False, shape=None):
        self.index = {f.tobytes(): i for i, f in enumerate(frames)}
        self.gt, self.duplicate, self.empty, self.shape, self.calls = gt, duplicate, empty, shape, []

    def segment(self, frame, prompt, top_k=5):
        t = self.index[frame.tobytes()]
        self.calls.append(t)
        found = []
        if not self.empty:
            for k in range(self.gt.shape[1]):
                if self.gt[t, k].any():
                    m = self.gt[t, k] if self.shape is None else np.zeros(self.shape, bool)
                    found.append(SimpleNamespace(mask=m, final_score=0.5 - 0.02 * k))  # all >= 0.7 x best
            if self.duplicate and self.gt[t, 0].any():
                eroded = self.gt[t, 0].copy()
                eroded[np.flatnonzero(eroded.any(axis=1))[0]] = False  # A without its top row
                found.append(SimpleNamespace(mask=eroded, final_score=0.2))
        return SimpleNamespace(segmentation_masks=found[:top_k])


class _OracleTracker:
    """The SAM2VideoPredictor API subset segment_video uses, tracking by ground truth: an id given a mask follows the
    ground-truth object that mask overlaps most."""

    def __init__(self, gt):
        self.gt, self.removed, self.inits = gt, [], 0

    def init_state(self, video_path, offload_video_to_cpu=False, offload_state_to_cpu=False):
        self.inits += 1
        assert isinstance(video_path, V._InMemoryVideo)
        return {"objects": {}}

    def _logits(self, state, t):
        import torch

        ids = list(state["objects"])
        masks = [self.gt[t, state["objects"][k]] for k in ids]
        logits = torch.tensor(np.stack(masks) if masks else np.zeros((0,) + self.gt.shape[2:]), dtype=torch.float32)
        return ids, (logits * 20 - 10)[:, None]

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        ious = [V._iou(mask.numpy(), self.gt[frame_idx, j]) for j in range(self.gt.shape[1])]
        state["objects"][obj_id] = int(np.argmax(ious))
        return (frame_idx, *self._logits(state, frame_idx))

    def propagate_in_video(self, state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
        assert max_frame_num_to_track == 0
        yield (start_frame_idx, *self._logits(state, start_frame_idx))

    def remove_object(self, state, obj_id, strict=False, need_output=True):
        self.removed.append(obj_id)
        del state["objects"][obj_id]

    def reset_state(self, state):
        state["objects"].clear()


def test_segment_video_ids_entering_and_timeout(tmp_path):
    frames, gt = _scene()
    pipe, tracker = _StubPipe(frames, gt), _OracleTracker(gt)
    r = V.segment_video(pipe, frames, "square", keyframe_every=3, lost_timeout=2, predictor=tracker)
    assert pipe.calls == [0, 3, 6, 9] == r.keyframes
    # A (id 1) and C (id 2) from frame 0, the duplicate of A matched, not a new object; B (id 3) at keyframe 6
    assert r.first_frames == {1: 0, 2: 0, 3: 6}
    assert r.counts["new_objects"] == 3 and r.counts["matched"] >= 3
    for t in range(12):  # stable ids: every A pixel is id 1 in every frame
        assert np.all(r.id_maps[t][gt[t, 0]] == 1)
    assert not (r.id_maps[5] == 3).any() and np.all(r.id_maps[6][gt[6, 1]] == 3)  # B only once a keyframe found it
    assert np.array_equal(r.id_maps[4], gt[4, 0].astype(np.uint8))  # background stays 0, C is gone
    assert np.array_equal(r.id_maps[8], gt[8, 0] * np.uint8(1) + gt[8, 1] * np.uint8(3))
    # C: last seen at frame 3, empty from 4; dropped when empty for more than 2 frames (frame 6)
    c = r.objects[1]
    assert (c.id, c.last_frame, c.dropped_frame) == (2, 3, 6) and tracker.removed == [2]
    assert r.objects[0].dropped_frame is None and r.objects[0].last_frame == 11
    assert set(r.scores[4]) == {1} and r.scores[0][1] > 0.99 and set(r.text_scores[6]) == {1, 3}
    assert tracker.inits == 1
    # the files
    files = r.save(tmp_path / "out")
    names = [p.relative_to(tmp_path / "out").as_posix() for p in files]
    assert names[:2] == ["masks/00000.png", "masks/00001.png"] and names[-2:] == ["overlay.mp4", "result.json"]
    assert np.array_equal(V.read_id_masks(tmp_path / "out"), r.id_maps)
    assert V.read_video(tmp_path / "out" / "overlay.mp4")[0].shape == (12, 48, 48, 3)
    doc = json.loads((tmp_path / "out" / "result.json").read_text())
    assert doc["text_prompt"] == "square" and doc["settings"]["keyframe_every"] == 3
    assert [o["id"] for o in doc["objects"]] == [1, 2, 3] and doc["frames"][4]["ids"] == [1]
    assert doc["files"][-1] == "result.json" and len(doc["files"]) == 14
    # over the memory budget, the id maps are a temporary file's map, with the same values
    spilled = V.segment_video(_StubPipe(frames, gt), frames, "square", keyframe_every=3, lost_timeout=2,
                              predictor=_OracleTracker(gt), memory_mb=0)
    assert isinstance(spilled.id_maps, np.memmap) and np.array_equal(spilled.id_maps, r.id_maps)


def test_segment_video_iou_threshold_and_max_objects():
    frames, gt = _scene()
    # at IoU threshold 1.0 the near-duplicate of A (A less its top row) is no longer A by IoU, but it lies wholly
    # inside A: a part of A (contain_threshold), not a new object
    r = V.segment_video(_StubPipe(frames, gt), frames, "square", keyframe_every=3, iou_threshold=1.0,
                        predictor=_OracleTracker(gt))
    assert r.first_frames[1] == 0 and len([o for o in r.objects if o.first_frame == 0]) == 2
    r = V.segment_video(_StubPipe(frames, gt, duplicate=False), frames, "square", keyframe_every=3, max_objects=1,
                        predictor=_OracleTracker(gt))
    assert list(r.first_frames) == [1] and r.counts["over_max_objects"] > 0


class _ForgetfulTracker(_OracleTracker):
    """Tracks an object only on the frame it was last given a mask and the next 3 frames (a weak memory)."""

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        state.setdefault("given", {})[obj_id] = frame_idx
        self.masks_given = getattr(self, "masks_given", 0) + 1
        return super().add_new_mask(state, frame_idx, obj_id, mask)

    def _logits(self, state, t):
        ids, logits = super()._logits(state, t)
        for i, k in enumerate(ids):
            if t - state.get("given", {}).get(k, t) > 3:
                logits[i] = -10.0
        return ids, logits


def test_segment_video_refresh_corrects_tracks_on_keyframes():
    frames, gt = _scene()
    on = V.segment_video(_StubPipe(frames, gt, duplicate=False), frames, "square", keyframe_every=3, lost_timeout=20,
                         predictor=_ForgetfulTracker(gt))
    off = V.segment_video(_StubPipe(frames, gt, duplicate=False), frames, "square", keyframe_every=3, lost_timeout=20,
                          refresh=False, reidentify=False, predictor=_ForgetfulTracker(gt))
    assert on.settings["refresh"] is True and off.settings["refresh"] is False
    assert on.counts["refreshed"] == on.counts["matched"] > 0 and off.counts["refreshed"] == 0
    # A is present on every frame: with refresh it is id 1 on all of them (each keyframe renews it, the tracker
    # keeps it 3 frames); without, it is lost on frames 4 and 5, and found again as a new object at keyframe 6
    assert all(np.all(on.id_maps[t][gt[t, 0]] == 1) for t in range(12)) and len(on.objects) == 3
    assert np.all(off.id_maps[3][gt[3, 0]] == 1) and not off.id_maps[5][gt[5, 0]].any()
    assert np.all(off.id_maps[6][gt[6, 0]] == 3) and len(off.objects) == 4  # A again, with a new id
    # re-identification: A, empty on keyframe 6, overlaps its last mask (frame 3): it gets id 1 back
    back = V.segment_video(_StubPipe(frames, gt, duplicate=False), frames, "square", keyframe_every=3, lost_timeout=20,
                           refresh=False, reidentify=True, predictor=_ForgetfulTracker(gt))
    assert back.counts["reidentified"] >= 1 and np.all(back.id_maps[6][gt[6, 0]] == 1)
    assert [o.id for o in back.objects] == [1, 2, 3] and back.settings["reidentify"] is True
    with pytest.raises(InputError, match="refresh must be True or False"):
        V.segment_video(_StubPipe(frames, gt), frames, "square", refresh="yes")


class _PartPipe(_StubPipe):
    """A's mask, then a small patch 60% inside A (a SAM 2 subpart that spills over), scored lower."""

    def segment(self, frame, prompt, top_k=5):
        t = self.index[frame.tobytes()]
        a = self.gt[t, 0]
        ys, xs = np.nonzero(a)
        part = np.zeros_like(a)
        y0, x0 = ys.min(), xs.max() - 2  # 3 columns inside A, 2 outside
        part[y0:y0 + 4, x0:x0 + 5] = True
        return SimpleNamespace(segmentation_masks=[SimpleNamespace(mask=a, final_score=0.5),
                                                   SimpleNamespace(mask=part, final_score=0.3)])


def test_segment_video_parts_of_a_tracked_object_get_no_new_id():
    frames, gt = _scene()
    r = V.segment_video(_PartPipe(frames, gt), frames, "square", keyframe_every=3, min_area=4,
                        predictor=_OracleTracker(gt))
    assert [o.id for o in r.objects] == [1] and r.settings["contain_threshold"] == 0.5
    r = V.segment_video(_PartPipe(frames, gt), frames, "square", keyframe_every=3, min_area=4, contain_threshold=1.0,
                        new_object_ratio=0, predictor=_OracleTracker(gt))  # (its 0.3 is under 0.7 x 0.5)
    assert len(r.objects) > 1  # the patch is only 60% inside A: a new object when parts must lie wholly inside
    with pytest.raises(InputError, match=r"contain_threshold must be a number in \(0, 1\]"):
        V.segment_video(_PartPipe(frames, gt), frames, "square", contain_threshold=0)


class _StillTracker(_OracleTracker):
    """Tracks each id by the last mask it was given (a still scene)."""

    def __init__(self):
        super().__init__(None)

    def _logits(self, state, t):
        import torch

        ids = list(state["objects"])
        masks = np.stack([state["objects"][k] for k in ids]) if ids else np.zeros((0, 40, 40), bool)
        return ids, (torch.tensor(masks, dtype=torch.float32) * 20 - 10)[:, None]

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        state["objects"][obj_id] = mask.numpy().copy()
        return (frame_idx, *self._logits(state, frame_idx))


def _halves_scene():
    """8 unique frames; a 20 x 20 square and its left / right halves (40 x 40 px)."""
    frames = np.zeros((8, 40, 40, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(8, dtype=np.uint8)[:, None, None]  # each frame unique
    whole = np.zeros((40, 40), bool)
    whole[10:30, 10:30] = True
    left, right = whole.copy(), whole.copy()
    left[:, 20:], right[:, :20] = False, False
    return frames, whole, left, right


def _pipe_of(per_frame):
    """A pipe whose segment returns per_frame(frame index) = [(mask, final_score), ...]."""

    class Pipe:
        def segment(self, frame, prompt, top_k=5):
            return SimpleNamespace(segmentation_masks=[SimpleNamespace(mask=m, final_score=s)
                                                       for m, s in per_frame(int(frame[0, 0, 0]))])

    return Pipe()


def test_segment_video_merges_an_object_tracked_in_two_parts_when_asked():
    frames, whole, left, right = _halves_scene()
    # frame 0: the object in two halves (SAM 2 split it); frame 4: whole
    pipe = _pipe_of(lambda t: [(whole, 0.5)] if t == 4 else [(left, 0.5), (right, 0.5)])
    merged = V.segment_video(pipe, frames, "square", keyframe_every=4, merge_parts=True, predictor=_StillTracker())
    assert merged.counts["merged"] == 1 and merged.first_frames == {1: 0, 2: 0}
    assert merged.objects[1].dropped_frame == 4 and merged.objects[0].dropped_frame is None
    assert set(np.unique(merged.id_maps[:4])) == {0, 1, 2} and np.all(merged.id_maps[4:][:, whole] == 1)
    kept = V.segment_video(pipe, frames, "square", keyframe_every=4, predictor=_StillTracker())
    assert kept.counts["merged"] == 0 and kept.objects[1].dropped_frame is None  # default: both parts stay
    with pytest.raises(InputError, match="merge_parts must be True or False"):
        V.segment_video(pipe, frames, "square", merge_parts=1)


def test_segment_video_groups_the_parts_of_one_object_on_a_keyframe():
    frames, whole, left, right = _halves_scene()
    # SAM 2's masks of one object: a half (best text score), the whole, the other half (no overlap with the first)
    pipe = _pipe_of(lambda t: [(left, 0.6), (whole, 0.55), (right, 0.5)])
    apart = V.segment_video(pipe, frames, "square", keyframe_every=4, group_detections=False,
                            predictor=_StillTracker())
    assert apart.first_frames == {1: 0, 2: 0}  # ungrouped: the other half is no part of the first: a second id
    grouped = V.segment_video(pipe, frames, "square", keyframe_every=4, predictor=_StillTracker())  # the default
    # grouped: the whole matches the first half, so the other half matches the whole: one object, prompted with
    # the whole (it holds the first half and is twice its size)
    assert grouped.first_frames == {1: 0} and grouped.settings["group_detections"] is True
    assert all(np.array_equal(grouped.id_maps[t], whole.astype(np.uint8)) for t in range(8))
    # on keyframe 4 only halves are found: both are id 1, the track is corrected with the best-scoring one
    halves = _pipe_of(lambda t: [(whole, 0.6)] if t == 0 else [(left, 0.6), (right, 0.4)])
    r = V.segment_video(halves, frames, "square", keyframe_every=4, group_detections=True, predictor=_StillTracker())
    assert list(r.first_frames) == [1] and r.counts["refreshed"] == 1
    assert np.array_equal(r.id_maps[4], left.astype(np.uint8))
    with pytest.raises(InputError, match="group_detections must be True or False"):
        V.segment_video(pipe, frames, "square", group_detections="yes")


def test_segment_video_new_object_ratio_ignores_weak_detections():
    frames, whole, left, right = _halves_scene()
    other = np.zeros((40, 40), bool)
    other[32:38, 2:8] = True  # another object, far from the square
    pipe = _pipe_of(lambda t: [(whole, 0.6), (other, 0.3)])
    both = V.segment_video(pipe, frames, "square", keyframe_every=4, new_object_ratio=0, predictor=_StillTracker())
    assert both.first_frames == {1: 0, 2: 0} and both.counts["weak"] == 0
    strong = V.segment_video(pipe, frames, "square", keyframe_every=4, predictor=_StillTracker())  # default 0.7
    assert strong.first_frames == {1: 0} and strong.counts["weak"] == 2  # 0.3 < 0.7 x 0.6 on both keyframes
    assert V.segment_video(pipe, frames, "square", keyframe_every=4, new_object_ratio=0.5,
                           predictor=_StillTracker()).first_frames == {1: 0, 2: 0}  # 0.3 >= 0.5 x 0.6
    for bad in (1.5, -0.1, True, "0.7"):
        with pytest.raises(InputError, match=r"new_object_ratio must be a number in \[0, 1\]"):
            V.segment_video(pipe, frames, "square", new_object_ratio=bad)


class _DriftingTracker(_StillTracker):
    """Like _StillTracker, but on frame 2 object 1's track slides onto ``onto`` (another object) and stays there."""

    def __init__(self, onto):
        super().__init__()
        self.onto = onto

    def _logits(self, state, t):
        if t == 2 and 1 in state["objects"]:
            state["objects"][1] = self.onto.copy()
        return super()._logits(state, t)


def test_segment_video_recover_drift_gives_a_drifted_track_its_object_back():
    frames, whole, left, right = _halves_scene()
    neighbour = np.zeros((40, 40), bool)
    neighbour[31:39, 31:39] = True  # not the prompt's object: no detection supports it
    pipe = _pipe_of(lambda t: [(whole, 0.6)])
    plain = V.segment_video(pipe, frames, "square", keyframe_every=4, reidentify=True, recover_drift=False,
                            predictor=_DriftingTracker(neighbour))
    # id 1 drifted onto the neighbour on frame 2: on keyframe 4 the square overlaps no track: a new id (a switch)
    assert plain.first_frames == {1: 0, 2: 4} and np.all(plain.id_maps[4][whole] == 2)
    back = V.segment_video(pipe, frames, "square", keyframe_every=4, predictor=_DriftingTracker(neighbour))  # default
    # recover_drift: id 1, unsupported on keyframe 4, has the square as its last detection: the square is id 1 again
    assert back.first_frames == {1: 0} and back.counts["reidentified"] == 1
    assert np.all(back.id_maps[4][whole] == 1) and not (back.id_maps[4][neighbour]).any()
    assert np.all(back.id_maps[2][neighbour] == 1)  # frames 2-3 keep the drift: only a keyframe corrects it
    # recover_drift needs reidentify
    assert V.segment_video(pipe, frames, "square", keyframe_every=4, reidentify=False,
                           predictor=_DriftingTracker(neighbour)).first_frames == {1: 0, 2: 4}


def test_segment_video_refresh_fit_prefers_the_detection_that_fits_the_track():
    frames, whole, left, right = _halves_scene()
    blob = whole.copy()
    blob[10:30, 30:40] = True  # the object and a strip of its neighbour: 600 px, IoU 0.67 with the object
    pipe = _pipe_of(lambda t: [(whole, 0.6)] if t == 0 else [(blob, 0.6), (whole, 0.55)])
    by_score = V.segment_video(pipe, frames, "square", keyframe_every=4, refresh_fit=0, predictor=_StillTracker())
    assert np.array_equal(by_score.id_maps[4], blob.astype(np.uint8))  # the best text score corrects the track
    fit = V.segment_video(pipe, frames, "square", keyframe_every=4, predictor=_StillTracker())  # default 0.5
    # 0.6 + 0.5 x 0.67 < 0.55 + 0.5 x 1.0: the close fit corrects it; both are the one object
    assert fit.settings["refresh_fit"] == 0.5 and list(fit.first_frames) == [1]
    assert np.array_equal(fit.id_maps[4], whole.astype(np.uint8))
    with pytest.raises(InputError, match="refresh_fit must be a number >= 0"):
        V.segment_video(pipe, frames, "square", refresh_fit=-1)


def test_segment_video_prune_weak_drops_a_track_matched_only_weakly():
    frames, whole, left, right = _halves_scene()
    other = np.zeros((40, 40), bool)
    other[32:38, 2:8] = True
    # frame 0 shows only `other` (the prompt's object is not in view): it starts a track; from frame 2 the square
    # is there and scores twice as high: `other` matches its track weakly on keyframes 2, 4, 6
    pipe = _pipe_of(lambda t: [(other, 0.6)] if t == 0 else [(whole, 0.6), (other, 0.3)])
    kept = V.segment_video(pipe, frames, "square", keyframe_every=2, predictor=_StillTracker())
    assert kept.first_frames == {1: 0, 2: 2} and kept.objects[0].dropped_frame is None and kept.counts["pruned"] == 0
    pruned = V.segment_video(pipe, frames, "square", keyframe_every=2, prune_weak=2, predictor=_StillTracker())
    assert pruned.counts["pruned"] == 1 and pruned.objects[0].dropped_frame == 4  # weak on keyframes 2 and 4
    assert (pruned.id_maps[3][other] == 1).all() and not (pruned.id_maps[4:] == 1).any()
    assert np.all(pruned.id_maps[7][whole] == 2)
    with pytest.raises(InputError, match="prune_weak must be an integer >= 0"):
        V.segment_video(pipe, frames, "square", prune_weak=-1)


def test_segment_video_no_match_writes_nothing(tmp_path):
    frames, gt = _scene()
    tracker = _OracleTracker(gt)
    with pytest.warns(NoMatchWarning, match="matched no object"):
        r = V.segment_video(_StubPipe(frames, gt, empty=True), frames, "unicorn", keyframe_every=4, predictor=tracker)
    assert r.empty and not r.id_maps.any() and tracker.inits == 0  # no predictor state was ever built
    with pytest.raises(InputError, match="matched no object"):
        r.save(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_segment_video_bad_input():
    frames, gt = _scene()
    with pytest.raises(InputError, match="frames' size"):
        V.segment_video(_StubPipe(frames, gt, shape=(10, 10)), frames, "square", predictor=_OracleTracker(gt))
    with pytest.raises(InputError, match="keyframe_every must be an integer >= 1"):
        V.segment_video(_StubPipe(frames, gt), frames, "square", keyframe_every=0)
    with pytest.raises(InputError, match="iou_threshold"):
        V.segment_video(_StubPipe(frames, gt), frames, "square", iou_threshold=0)
    with pytest.raises(InputError, match="max_frames=5"):
        V.segment_video(_StubPipe(frames, gt), frames, "square", max_frames=5)
    with pytest.raises(InputError, match="same size"):
        V.segment_video(_StubPipe(frames, gt), [frames[0], frames[1][:40]], "square")
    with pytest.raises(InputError, match="at least 32 px"):
        V.segment_video(_StubPipe(frames, gt), frames[:, :20], "square")


# ---- segment_video with the mini pipeline --------------------------------------------------------------------------

def test_segment_video_mini_pipeline_end_to_end(tmp_path):
    from ovseg import OpenVocabSegmentationPipeline
    from ovseg.world_video import ClipConfig, render_clip

    clip = render_clip(3, ClipConfig(n_frames=5, n_entering=(0, 0)))
    prompt = clip.objects[1].class_name
    pipe = OpenVocabSegmentationPipeline()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoMatchWarning)
        r = pipe.segment_video(clip.frames, prompt, keyframe_every=2, progress=True)
    assert r.keyframes == [0, 2, 4] and r.id_maps.shape == (5, 128, 128) and r.id_maps.dtype == np.uint8
    assert not r.empty  # the mini pipeline finds the prompt on frame 0
    ids = [o.id for o in r.objects]
    assert ids == list(range(1, len(ids) + 1)) and all(o.first_frame in r.keyframes for o in r.objects)
    for t in range(5):
        present = set(np.unique(r.id_maps[t])) - {0}
        assert present <= set(r.scores[t]) and present <= {o.id for o in r.objects if o.first_frame <= t}
    assert r.objects[0].first_frame == 0 and (r.id_maps[0] == 1).any()
    written = r.save(tmp_path / "out")
    assert written[-1].name == "result.json" and (tmp_path / "out" / "overlay.mp4").stat().st_size > 0
    assert V.video_predictor_for(pipe) is V.video_predictor_for(pipe)  # cached per pipeline


@pytest.fixture(scope="module")
def tracking_predictor():
    return V.build_sam2_video_predictor_from(REPO_ROOT / "data" / "models" / "mini-sam2-video")


def test_tracking_forgets_only_outputs_no_later_frame_reads(tracking_predictor, monkeypatch):
    """sam2 keeps every frame's outputs; segment_video drops those a forward step never reads again, so the state
    stays bounded on long clips while the id maps are exactly those of a run that keeps everything."""
    from ovseg.world_video import ClipConfig, render_clip

    clip = render_clip(5, ClipConfig(n_frames=30, n_entering=(0, 0), n_objects=(2, 2)))
    gt = np.stack([clip.instance_maps == k for k in (1, 2)], axis=1)  # (T, 2, H, W)
    window = max(tracking_predictor.num_maskmem, tracking_predictor.max_obj_ptrs_in_encoder) + 1
    sizes = []
    real_propagate = tracking_predictor.propagate_in_video

    def spy(state, *args, **kwargs):  # the state's stored frames per object, before each step
        sizes.append(max((len(o["non_cond_frame_outputs"]), len(o["cond_frame_outputs"]))
                         for o in state["output_dict_per_obj"].values()))
        yield from real_propagate(state, *args, **kwargs)

    monkeypatch.setattr(tracking_predictor, "propagate_in_video", spy)
    cap = tracking_predictor.max_cond_frames_in_attn

    def run():
        return V.segment_video(_StubPipe(clip.frames, gt, duplicate=False), clip.frames, "x", keyframe_every=2,
                               max_cond_frames=3, predictor=tracking_predictor, keep_frames=False)

    bounded = run()
    assert tracking_predictor.max_cond_frames_in_attn == cap  # the predictor's own setting is restored
    assert bounded.counts["outputs_dropped"] > 0 and max(s[0] for s in sizes) <= window
    assert max(s[1] for s in sizes) <= 3 + window // 2  # the 3 most recent prompts + those inside the window
    sizes.clear()
    monkeypatch.setattr(V, "_forget_frames", lambda *a: 0)  # keep everything
    kept = run()
    assert max(s[0] for s in sizes) >= 20  # without forgetting, the state holds (nearly) every frame
    assert np.array_equal(bounded.id_maps, kept.id_maps) and bounded.scores == kept.scores
