"""CLI on videos: ``ovseg segment CLIP --prompt P --out DIR`` (a video file, or a frame folder with --video) writes
masks/NNNNN.png, overlay.mp4 and result.json; bad clips fail with one line (video editing: tests/test_video_edit.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ovseg import video as V
from ovseg.cli import EXIT_NO_MATCH, main
from ovseg.world_video import ClipConfig, render_clip

N_FRAMES = 8


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A rendered mini-world clip as an MP4 and as a frame folder: (mp4 path, frames folder, prompt, frames)."""
    root = tmp_path_factory.mktemp("clip")
    c = render_clip(3, ClipConfig(n_frames=N_FRAMES, n_entering=(0, 0)))
    mp4 = V.write_video(root / "clip.mp4", c.frames, fps=10)
    folder = root / "clip_3" / "frames"
    folder.mkdir(parents=True)
    for t, f in enumerate(c.frames):
        Image.fromarray(f).save(folder / f"{t:05d}.png")
    return mp4, folder, c.objects[0].class_name, c.frames


def _run(args, capsys):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("ovseg: error: ") and "fix:" in lines[0] and "Traceback" not in err
    return lines[0]


def _check_outputs(out, n_frames: int) -> dict:
    """masks/ (palette PNGs whose ids agree with result.json), overlay.mp4 (n_frames frames), result.json."""
    doc = json.loads((out / "result.json").read_text())
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"{t:05d}.png" for t in range(n_frames)]
    for name in names:
        with Image.open(out / "masks" / name) as img:
            assert img.mode == "P"
    ids = V.read_id_masks(out)  # (T, H, W)
    assert ids.shape[0] == n_frames
    assert doc["n_frames"] == n_frames and len(doc["frames"]) == n_frames
    object_ids = [o["id"] for o in doc["objects"]]
    assert object_ids and object_ids == list(range(1, len(object_ids) + 1))
    for t, rec in enumerate(doc["frames"]):
        assert rec["frame"] == t
        assert sorted(rec["scores"]) == sorted(str(k) for k in rec["ids"])  # a score for every id, nothing else
        assert all(0.5 < s <= 1 for s in rec["scores"].values())
        present = {int(k) for k in np.unique(ids[t])} - {0}
        assert present <= set(rec["ids"]) <= set(object_ids), (t, present, rec)
    assert (ids[0] == 1).any() and 1 in doc["frames"][0]["ids"]  # the first object is found on frame 0
    overlay, _ = V.read_video(out / "overlay.mp4")
    assert overlay.shape[0] == n_frames
    assert doc["files"][-1] == "result.json" and "overlay.mp4" in doc["files"] and len(doc["files"]) == n_frames + 2
    assert {"sam2", "clip"} <= set(doc["models"]) and doc["models"]["sam2"]["name"] == "mini-sam2"
    assert doc["profile"] == "mini" and doc["settings"]["max_frames"] >= n_frames
    return doc


def test_segment_mp4_writes_masks_overlay_and_result(clip, tmp_path, capsys):
    mp4, _, prompt, frames = clip
    out = tmp_path / "out"
    rc, stdout, err = _run(["segment", mp4, "--prompt", prompt, "--out", out], capsys)
    assert rc == 0, err
    doc = _check_outputs(out, N_FRAMES)
    assert doc["text_prompt"] == prompt and doc["source"] == str(mp4) and doc["fps"] == pytest.approx(10.0)
    assert doc["keyframes"] == [0, 4] and doc["settings"]["keyframe_every"] == V.DEFAULT_KEYFRAME_EVERY == 4  # 8 frames
    assert doc["size"] == [frames.shape[2], frames.shape[1]]
    n = len(doc["objects"])
    lines = stdout.splitlines()
    assert lines[0].startswith(f"{n} object(s) (id") and f"for {prompt!r} in {N_FRAMES} frames" in lines[0]
    assert lines[0].endswith(f"-> {out}") and "overlay.mp4" in lines[1]
    assert "ovseg video" in err  # the progress bar over frames (stderr)


def test_segment_frame_folder_with_video_flag(clip, tmp_path, capsys):
    _, folder, prompt, frames = clip
    out = tmp_path / "out"
    # the clip folder holding frames/ (the mini world's layout) reads its frames/
    rc, stdout, err = _run(["segment", folder.parent, "--video", "--prompt", prompt, "--out", out,
                            "--keyframe-every", "4", "--top-k", "2", "--no-progress"], capsys)
    assert rc == 0, err
    doc = _check_outputs(out, N_FRAMES)
    assert doc["source"] == str(folder) and doc["fps"] is None
    assert doc["keyframes"] == [0, 4] and doc["settings"]["keyframe_every"] == 4 and doc["settings"]["top_k"] == 2
    assert "ovseg video" not in err  # --no-progress


def test_frame_folder_without_video_flag_is_still_a_batch(clip, tmp_path, capsys):
    _, folder, prompt, _ = clip
    small = tmp_path / "frames"
    small.mkdir()
    for name in ("00000.png", "00001.png"):
        (small / name).write_bytes((folder / name).read_bytes())
    out = tmp_path / "out"
    rc, stdout, err = _run(["segment", small, "--prompt", prompt, "--out", out, "--no-progress"], capsys)
    assert rc == 0, err
    assert not (out / "masks").exists() and not (out / "overlay.mp4").exists()
    assert (out / "results.jsonl").is_file() and (out / "00000" / "result.json").is_file()
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    assert "2 of 2 image(s) done" in stdout


def test_prompt_matching_nothing_writes_nothing(clip, tmp_path, capsys):
    mp4, _, prompt, _ = clip
    out = tmp_path / "out"
    rc, stdout, err = _run(["segment", mp4, "--prompt", prompt, "--out", out, "--no-progress",
                            "--set", "alignment.similarity_threshold=1"], capsys)
    assert rc == EXIT_NO_MATCH and rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "matched no object in any of the 2 keyframe(s)" in lines[0], err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()


@pytest.mark.parametrize("as_folder", [False, True])
def test_too_long_clip_names_max_frames(clip, tmp_path, capsys, as_folder):
    mp4, folder, prompt, _ = clip
    args = ["segment", folder, "--video"] if as_folder else ["segment", mp4]
    rc, stdout, err = _run([*args, "--prompt", prompt, "--out", tmp_path / "out", "--max-frames", "3"], capsys)
    assert rc == 2
    line = _one_error_line(err)
    assert "at most --max-frames 3 frames" in line and "pass --max-frames N" in line
    assert f"{N_FRAMES} frames" in line or "more than 3" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content,match", [
    (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(range(256)) * 8, "readable by FFmpeg"),
    (b"", "must not be empty"),
    (b"just some text, not a video\n" * 20, "readable by FFmpeg"),
])
def test_corrupt_video_fails_with_one_line(tmp_path, capsys, content, match):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    rc, stdout, err = _run(["segment", bad, "--prompt", "red circle", "--out", tmp_path / "out"], capsys)
    assert rc == 2
    assert match in _one_error_line(err)
    assert not (tmp_path / "out").exists()


def test_bad_video_requests_fail_before_any_model(clip, tmp_path, capsys):
    mp4, folder, prompt, frames = clip
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.fromarray(frames[0]).save(odd / "00000.png")
    Image.fromarray(frames[1][:64]).save(odd / "00001.png")
    cases = [
        (["segment", odd, "--video", "--prompt", prompt], "all frames of a video must have the same size"),
        (["segment", mp4, "--prompt", prompt, "--keyframe-every", "0"], "--keyframe-every must be a positive"),
        (["segment", mp4, "--prompt", prompt, "--max-frames", "0"], "--max-frames must be a positive"),
        (["segment", mp4, "--classes", "a, b"], "--classes labels single images"),
        (["segment", tmp_path / "missing.mp4", "--prompt", prompt], "a video file or frame folder must exist"),
    ]
    for args, match in cases:
        rc, stdout, err = _run([*args, "--out", tmp_path / "out"], capsys)
        assert rc == 2, (args, err)
        assert match in _one_error_line(err), (args, err)
    assert not (tmp_path / "out").exists()
