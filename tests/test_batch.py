"""Batch processing (issue: "2. Batch processing"): ``ovseg segment FOLDER|GLOB|LIST.txt``, resume, sharding, bad input.

Most tests run the CLI in-process on tiny random components (a colour-threshold mask generator that counts its calls,
the tiny CLIP, the dummy inpainter): scores are meaningless, the plumbing is what is checked. One test runs the
embedded mini models on two shipped samples and compares a batch sub-folder with a single-image run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_dense_clip
from ovseg.batch import expand_inputs, parse_classes, sub_folder_names
from ovseg.cli import main
from ovseg.errors import InputError
from ovseg.paths import SAMPLES_DIR

MEASURED = ("seconds", "timings_s")  # the only keys of a results.jsonl line that differ between runs


class ColourMasks:
    """Mask generator on any image size: the red pixels, the blue pixels, the rest (those that are not empty).
    ``calls`` counts the images it ran on."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, image: np.ndarray):
        from ovseg.utils import MaskSet

        self.calls += 1
        r, g, b = (image[..., k].astype(int) for k in range(3))
        red = (r > 150) & (g < 100) & (b < 100)
        blue = (b > 150) & (r < 100)
        masks = [m for m in (red, blue, ~(red | blue)) if m.any()]
        n = len(masks)
        return MaskSet.from_masks(np.stack(masks), predicted_iou=np.full(n, 0.9), stability_score=np.full(n, 0.95),
                                  source="sam2")


def scene(k: int, h: int = 96, w: int = 128) -> np.ndarray:
    """(h, w, 3) uint8: grey background, a red disc that moves with k, a blue square."""
    img = np.full((h, w, 3), 200, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    img[(yy - h // 2) ** 2 + (xx - 20 - 6 * k) ** 2 <= 14**2] = (220, 40, 40)
    img[h // 4: h // 4 + 30, w - 50: w - 20] = (40, 80, 220)
    return img


def write_scenes(folder: Path, n: int, prefix: str = "scene") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        p = folder / f"{prefix}_{k}.png"
        Image.fromarray(scene(k)).save(p)
        paths.append(p)
    return paths


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """The CLI's model loaders return tiny components; ``loads`` counts loader calls, ``masks.calls`` images."""
    from test_pipeline import tiny_config

    import ovseg.pipeline as P

    cfg = tiny_config()
    state = SimpleNamespace(masks=ColourMasks(), loads=0, clip=tiny_dense_clip(), inpainter=None)

    def load(what):
        def loader(*a, **k):
            state.loads += 1
            if what == "masks":
                return state.masks
            if what == "clip":
                return state.clip
            if state.inpainter is None:
                from diffusers import StableDiffusionInpaintPipeline

                from dummies import get_dummy_inpaint_components
                from ovseg.inpaint import Inpainter

                sd = StableDiffusionInpaintPipeline(**get_dummy_inpaint_components(), requires_safety_checker=False)
                state.inpainter = Inpainter(sd, cfg.inpainting)
            return state.inpainter
        return loader

    monkeypatch.setattr(P, "load_mask_generator", load("masks"))
    monkeypatch.setattr(P, "load_dense_clip", load("clip"))
    monkeypatch.setattr(P, "load_inpainter", load("inpainting"))
    state.yaml = tmp_path / "tiny.yaml"
    cfg.to_yaml(state.yaml)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    return state


def run(args, capsys):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines()]


def unmeasured(recs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in MEASURED} for r in recs]


# ---- inputs -----------------------------------------------------------------------------------------------------

def test_folder_batch_writes_the_single_image_outputs_results_and_summary(tiny, tmp_path, capsys):
    src = tmp_path / "in"
    paths = write_scenes(src, 3)
    (src / "notes.md").write_text("not an image, not an image suffix: not an input")
    (src / ".hidden.png").write_bytes(b"hidden files are not inputs")
    out = tmp_path / "out"
    rc, stdout, err = run(["segment", src, "--prompt", "red circle", "--config", tiny.yaml, "--top-k", "2",
                           "--out", out], capsys)
    assert rc == 0, err
    assert stdout.strip().splitlines()[-1] == f"3 of 3 image(s) done -> {out / 'results.jsonl'}, {out / 'summary.csv'}"
    assert tiny.masks.calls == 3 and tiny.loads == 2  # models loaded once (SAM 2 + CLIP) for three images
    recs = lines(out / "results.jsonl")
    assert [(r["index"], r["input"], r["name"], r["status"]) for r in recs] == \
        [(k, str(p), f"scene_{k}", "ok") for k, p in enumerate(paths)]
    # each sub-folder holds what a single-image run writes, with the same masks
    single = tmp_path / "single"
    assert run(["segment", paths[1], "--prompt", "red circle", "--config", tiny.yaml, "--top-k", "2",
                "--out", single], capsys)[0] == 0
    one, batch = (json.loads((d / "result.json").read_text()) for d in (single, out / "scene_1"))
    assert sorted(p.name for p in (out / "scene_1").iterdir()) == sorted(p.name for p in single.iterdir()) \
        == sorted(one["files"])
    assert [m["bbox"] for m in batch["masks"]] == [m["bbox"] for m in one["masks"]]
    assert [m["final_score"] for m in batch["masks"]] == pytest.approx([m["final_score"] for m in one["masks"]])
    assert batch["image"] == str(paths[1]) and batch["counts"] == one["counts"]
    # the results line summarises that result.json
    rec = recs[1]
    assert rec["files"] == one["files"] and rec["counts"]["returned"] == len(one["masks"]) == len(rec["masks"])
    assert [m["rank"] for m in rec["masks"]] == list(range(len(rec["masks"])))
    assert [m["area"] for m in rec["masks"]] == [m["area"] for m in one["masks"]]
    assert rec["sha256"] == __import__("hashlib").sha256(paths[1].read_bytes()).hexdigest()
    assert {"masks", "features", "align"} <= set(rec["timings_s"]) and rec["error"] is None
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["name"], r["status"], r["masks"]) for r in rows] == [(f"scene_{k}", "ok", str(len(recs[k]["masks"])))
                                                                  for k in range(3)]
    assert rows[0]["best_score"] == f"{recs[0]['masks'][0]['final_score']:.4f}"
    assert not list((out / ".ovseg-batch" / "tmp").iterdir())  # nothing left half-written


def test_glob_and_txt_list_inputs_in_a_fixed_order(tiny, tmp_path, capsys, monkeypatch):
    a = write_scenes(tmp_path / "a", 2)
    b = write_scenes(tmp_path / "b", 1, prefix="other")
    (tmp_path / "a" / "skip.jpg").write_text("matched by no pattern below")
    monkeypatch.chdir(tmp_path)
    # a quoted glob, expanded by ovseg (** recurses), sorted; default folder ovseg-out/batch-<command>
    rc, stdout, err = run(["segment", "**/*_*.png", "--prompt", "red circle", "--config", tiny.yaml], capsys)
    assert rc == 0, err
    recs = lines(tmp_path / "ovseg-out" / "batch-segment" / "results.jsonl")
    assert [r["input"] for r in recs] == sorted(os.path.join(*p.parts[-2:]) for p in a + b)
    # a .txt list: its order, relative to the list's folder, comments / blanks skipped, a repeated path once
    lst = tmp_path / "lists" / "mine.txt"
    lst.parent.mkdir()
    lst.write_text(f"# my images\n../b/other_0.png\n\n  {a[1]}  \n../a/scene_0.png\n../b/other_0.png\n")
    rc, stdout, err = run(["segment", lst, "--prompt", "red circle", "--config", tiny.yaml], capsys)
    assert rc == 0, err
    recs = lines(tmp_path / "ovseg-out" / "mine-segment" / "results.jsonl")
    assert [r["name"] for r in recs] == ["other_0", "scene_1", "scene_0"]
    assert [Path(r["input"]).resolve() for r in recs] == [b[0].resolve(), a[1].resolve(), a[0].resolve()]
    assert all(r["status"] == "ok" for r in recs)
    assert expand_inputs(str(tmp_path / "a")).paths == [*a, tmp_path / "a" / "skip.jpg"]  # folders: by suffix, sorted


def test_sub_folder_names_are_unique_and_stable():
    paths = [Path(p) for p in ("x/cat.png", "y/cat.png", "cat-1.png", "Dog.jpg", "dog.png", "results.jsonl.png",
                               "solo.png")]
    assert sub_folder_names(paths) == ["cat-2", "cat-3", "cat-1", "Dog-1", "dog-2", "results.jsonl-1", "solo"]
    assert sub_folder_names(paths) == sub_folder_names(list(paths))


# ---- failures, resume, sharding -----------------------------------------------------------------------------------

def test_corrupt_files_are_recorded_and_the_rest_processed(tiny, tmp_path, capsys):
    src = tmp_path / "in"
    write_scenes(src, 2)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.fromarray(scene(0)[:20, :20]).save(src / "tiny.png")
    out = tmp_path / "out"
    rc, stdout, err = run(["segment", src, "--prompt", "red circle", "--config", tiny.yaml, "--out", out], capsys)
    assert rc == 1
    assert stdout.strip().splitlines()[-1] == f"2 of 4 images failed (see {out / 'results.jsonl'})"
    recs = {r["name"]: r for r in lines(out / "results.jsonl")}
    assert [r["status"] for r in recs.values()] == ["error", "ok", "ok", "error"]  # broken, scene_0, scene_1, tiny
    assert recs["broken"]["error"].startswith("image file must be complete and readable; got ") or \
        recs["broken"]["error"].startswith("file must be an image PIL can read")
    assert recs["tiny"]["error"] == (f"image must be at least 32 px on each side; got 20x20 px ({src / 'tiny.png'}); "
                                     "fix: use a larger image or upscale it first")
    assert "\n" not in recs["tiny"]["error"] and recs["tiny"]["files"] == []
    assert not (out / "broken").exists() and not (out / "tiny").exists()
    assert (out / "scene_0" / "result.json").is_file() and (out / "scene_1" / "result.json").is_file()
    assert "Traceback" not in err and f"ovseg: tiny: {recs['tiny']['error']}" in err
    assert tiny.masks.calls == 2


def test_rerun_resumes_and_an_interrupted_image_leaves_nothing(tiny, tmp_path, capsys, monkeypatch):
    from ovseg.pipeline import SegmentationResult

    src = tmp_path / "in"
    paths = write_scenes(src, 3)
    out = tmp_path / "out"
    cmd = ["segment", src, "--prompt", "red circle", "--config", tiny.yaml, "--out", out]
    # interrupted while writing scene_1's folder: its files are not in OUT, and the rerun does it (and only it)
    real_save = SegmentationResult.save

    def save(self, folder):
        if Path(self.source).name == "scene_1.png":
            (Path(folder) / "overlay.png").parent.mkdir(parents=True, exist_ok=True)
            (Path(folder) / "overlay.png").write_bytes(b"half")
            raise KeyboardInterrupt
        return real_save(self, folder)

    monkeypatch.setattr(SegmentationResult, "save", save)
    rc, stdout, err = run(cmd, capsys)
    assert rc == 130 and "ovseg: interrupted" in err
    assert (out / "scene_0" / "result.json").is_file() and not (out / "scene_1").exists()
    assert not (out / "results.jsonl").exists() and not list((out / ".ovseg-batch" / "tmp").iterdir())
    monkeypatch.setattr(SegmentationResult, "save", real_save)
    tiny.masks.calls = 0
    rc, stdout, err = run(cmd, capsys)
    assert rc == 0 and tiny.masks.calls == 2  # scene_1 and scene_2; scene_0 was finished
    assert "1 already done (skipped)" in stdout
    first = (out / "results.jsonl").read_bytes()
    # the same command again: nothing runs, the merged file is the same bytes
    tiny.masks.calls = tiny.loads = 0
    (out / "scene_0" / "mine.txt").write_text("the user's file")
    rc, stdout, err = run(cmd, capsys)
    assert rc == 0 and tiny.masks.calls == 0 and tiny.loads == 0  # no model loaded on the third run
    assert (out / "results.jsonl").read_bytes() == first and "3 already done (skipped)" in stdout
    # new bytes under the same name: only that image again; the user's file in its folder is kept
    Image.fromarray(scene(5)).save(paths[0])
    rc, stdout, err = run(cmd, capsys)
    assert rc == 0 and tiny.masks.calls == 1
    assert (out / "scene_0" / "mine.txt").read_text() == "the user's file"
    assert lines(out / "results.jsonl")[0]["sha256"] == __import__("hashlib").sha256(paths[0].read_bytes()).hexdigest()
    # another request (top-k): everything again
    rc, stdout, err = run(cmd + ["--top-k", "1"], capsys)
    assert rc == 0 and tiny.masks.calls == 4
    assert all(len(r["masks"]) == 1 for r in lines(out / "results.jsonl"))
    assert sorted(p.name for p in (out / "scene_2").iterdir()) == ["mask_00.png", "overlay.png", "result.json"]


def test_a_second_batch_into_the_same_out_is_refused_naming_the_first(tiny, tmp_path, capsys):
    from ovseg.batch import _lock_batch

    src, out = tmp_path / "in", tmp_path / "out"
    write_scenes(src, 2)
    cmd = ["segment", src, "--prompt", "red circle", "--config", tiny.yaml, "--out", out]
    held = _lock_batch(out / ".ovseg-batch", 0)  # another run holds OUT (flock: per open file, so this process too)
    try:
        rc, _, err = run(cmd, capsys)
    finally:
        held.close()
    assert rc == 2 and tiny.masks.calls == 0
    assert f"one batch at a time may write an output folder; got {out / '.ovseg-batch'} is in use by process " \
           f"{os.getpid()}" in err
    rc, _, err = run(cmd, capsys)  # released: the same command runs
    assert rc == 0 and tiny.masks.calls == 2


def test_what_a_killed_run_left_is_repaired_before_the_next_run(tiny, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    write_scenes(src, 3)
    cmd = ["segment", src, "--prompt", "red circle", "--config", tiny.yaml, "--out", out]
    assert run(cmd, capsys)[0] == 0
    state = out / ".ovseg-batch"
    (out / "scene_0" / "mine.txt").write_text("the user's file")
    # killed while writing a new scene_1: a half-written folder in tmp/ (its record is removed: it must run again)
    half = state / "tmp" / "rank0" / "scene_1.abcd_123"
    half.mkdir(parents=True)
    (half / "overlay.png").write_bytes(b"half")
    (state / "records" / "scene_1.json").unlink()
    # killed between _swap_in's two renames: scene_2's earlier folder is in trash/ and its place is empty
    (state / "trash" / "rank0").mkdir(parents=True)
    os.replace(out / "scene_2", state / "trash" / "rank0" / "scene_2.zz9_0abc")
    # killed after the second rename: scene_0 is new, its earlier copy (with the user's file) still in trash/
    aside = state / "trash" / "rank0" / "scene_0.q1w2e3r4"
    shutil.copytree(out / "scene_0", aside)
    (out / "scene_0" / "mine.txt").unlink()
    tiny.masks.calls = 0
    rc, stdout, err = run(cmd, capsys)
    assert rc == 0 and tiny.masks.calls == 1  # scene_1 only: scene_2 came back whole, scene_0 was done
    assert "removed scene_1.abcd_123, a sub-folder a killed run left half-written" in err
    assert "restored scene_2/, moved aside by a killed run" in err
    assert "moved your files of scene_0/ back" in err
    assert (out / "scene_0" / "mine.txt").read_text() == "the user's file"
    assert (out / "scene_2" / "result.json").is_file() and (out / "scene_1" / "result.json").is_file()
    assert (out / "scene_1" / "overlay.png").read_bytes() != b"half"
    assert not (state / "tmp").exists() or not any((state / "tmp").rglob("*"))
    assert not (state / "trash").exists() or not any((state / "trash").rglob("*"))
    assert [r["status"] for r in lines(out / "results.jsonl")] == ["ok", "ok", "ok"]


def test_two_ranks_merge_to_the_single_process_results(tiny, tmp_path, capsys, monkeypatch):
    src = tmp_path / "in"
    write_scenes(src, 4)
    (src / "broken.png").write_text("corrupt")
    one, two = tmp_path / "one", tmp_path / "two"
    rc1, _, _ = run(["segment", src, "--prompt", "red circle", "--config", tiny.yaml, "--out", one], capsys)
    calls = []
    for rank in (0, 1):  # as torchrun sets them (no MASTER_ADDR: the shards run one after the other)
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        tiny.masks.calls = 0
        rc, stdout, err = run(["segment", src, "--prompt", "red circle", "--config", tiny.yaml, "--out", two], capsys)
        calls.append(tiny.masks.calls)
        if rank == 0:  # its shard: broken (failed), scene_1, scene_3; the merged files wait for rank 1
            assert rc == 1 and not (two / "results.jsonl").exists()
            assert stdout.strip() == (f"rank 0 of 2: 3 image(s) of this shard done (1 failed); {two / 'results.jsonl'} "
                                      "is written by the rank that finishes last")
    assert calls == [2, 2] and rc == rc1 == 1
    assert stdout.strip().splitlines()[-1] == f"1 of 5 images failed (see {two / 'results.jsonl'})"
    a, b = lines(one / "results.jsonl"), lines(two / "results.jsonl")
    assert [r["index"] for r in b] == list(range(5)) and unmeasured(a) == unmeasured(b)
    assert (one / "summary.csv").read_text().count("\n") == (two / "summary.csv").read_text().count("\n") == 6


# ---- label maps, edits, the Python API ---------------------------------------------------------------------------

def test_classes_single_image_and_folder(tiny, tmp_path, capsys):
    src = tmp_path / "in"
    paths = write_scenes(src, 2)
    single = tmp_path / "single"
    rc, stdout, err = run(["segment", paths[0], "--classes", "red circle, blue  square", "--config", tiny.yaml,
                           "--out", single], capsys)
    assert rc == 0, err
    res = json.loads((single / "result.json").read_text())
    labels = np.asarray(Image.open(single / "labels.png"))
    assert res["class_names"] == ["red circle", "blue square"] and labels.shape == (96, 128)
    assert set(np.unique(labels)) <= {0, 1, 2} and labels.max() > 0  # threshold -1: every pixel gets a class
    assert res["class_pixels"] == {"red circle": int((labels == 1).sum()), "blue square": int((labels == 2).sum())}
    assert res["files"] == ["labels.png", "semantic.png", "result.json"]
    assert stdout.startswith("label map: ")
    out = tmp_path / "out"
    rc, stdout, err = run(["segment", src, "--classes", "red circle, blue square", "--config", tiny.yaml,
                           "--out", out], capsys)
    assert rc == 0, err
    recs = lines(out / "results.jsonl")
    for rec in recs:
        lab = np.asarray(Image.open(out / rec["name"] / "labels.png"))
        assert rec["class_pixels"] == {"red circle": int((lab == 1).sum()), "blue square": int((lab == 2).sum())}
        assert rec["classes_found"] == [n for n, c in rec["class_pixels"].items() if c]
    assert np.array_equal(np.asarray(Image.open(out / "scene_0" / "labels.png")), labels)


def test_edit_command_over_a_folder(tiny, tmp_path, capsys):
    src = tmp_path / "in"
    write_scenes(src, 2)
    out = tmp_path / "out"
    rc, stdout, err = run(["replace", src, "--prompt", "red circle", "--edit", "blue square", "--config", tiny.yaml,
                           "--steps", "2", "--seed", "4", "--out", out], capsys)
    assert rc == 0, err
    for rec in lines(out / "results.jsonl"):
        assert rec["edit"]["operation"] == "replace" and rec["edit"]["seed"] == 4 and rec["edit"]["steps"] == 2
        assert set(rec["files"]) == {"overlay.png", "mask.png", "edit_mask.png", "edited.png", "result.json"}
        assert Image.open(out / rec["name"] / "edited.png").size == (128, 96)


def test_segment_batch_api_yields_in_order_and_records_errors(tiny, tmp_path):
    from ovseg import OpenVocabSegmentationPipeline
    from ovseg.config import load_config

    pipe = OpenVocabSegmentationPipeline(load_config(str(tiny.yaml)))
    with pytest.raises(InputError, match="either a prompt or class names"):
        pipe.segment_batch([], "red circle", classes=["a"])  # refused when called, not when iterated
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        pipe.segment_batch([], "red circle", top_k=0)
    items = list(pipe.segment_batch([scene(0), tmp_path / "missing.png", scene(1)], "red circle", top_k=1))
    assert [(it.index, it.ok) for it in items] == [(0, True), (1, False), (2, True)]
    assert items[1].result is None and items[1].error.startswith("image file must exist; got ")
    assert len(items[0].result.segmentation_masks) == 1 and items[0].seconds > 0
    direct = pipe.segment(scene(1), "red circle", top_k=1)
    assert items[2].result.segmentation_masks[0].final_score == pytest.approx(direct.segmentation_masks[0].final_score)
    with pytest.raises(InputError, match="image file must exist"):
        list(pipe.segment_batch([tmp_path / "missing.png"], "red circle", on_error="raise"))
    sem = next(pipe.segment_batch([scene(0)], classes=["red circle", "blue square"]))
    assert sem.result.class_names == ["red circle", "blue square"] and sem.result.label_map.shape == (96, 128)


# ---- bad input: one line, before any model loads ------------------------------------------------------------------

def _bad(tmp_path, case):
    src = tmp_path / "in"
    if case == "empty folder":
        src.mkdir()
        (src / "readme.txt").write_text("no images here")
        return [src, "--prompt", "x"]
    if case == "glob":
        return [str(tmp_path / "nowhere" / "*.png"), "--prompt", "x"]
    if case == "list":
        (tmp_path / "l.txt").write_text("# nothing\n\n")
        return [tmp_path / "l.txt", "--prompt", "x"]
    write_scenes(src, 1)
    if case.startswith("classes"):
        return [src, "--classes", {"classes empty": " , ", "classes blank item": "red circle,,blue square",
                                   "classes duplicate": "red circle, blue square, Red  Circle"}[case]]
    if case == "out under a file":
        (tmp_path / "f").write_text("x")
        return [src, "--prompt", "x", "--out", tmp_path / "f" / "sub"]
    if case == "state link":
        (tmp_path / "o").mkdir()
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "o" / ".ovseg-batch").symlink_to(tmp_path / "elsewhere")
        return [src, "--prompt", "x", "--out", tmp_path / "o"]
    raise AssertionError(case)


@pytest.mark.parametrize("case,message", [
    ("empty folder", "an INPUT folder must hold at least one image file (.png .jpg .jpeg .webp .bmp .tif .tiff .gif); "
                     "got {tmp}/in (1 file, none an image; sub-folders are not searched); fix: put images in it"),
    ("glob", "a glob INPUT must match at least one file; got '{tmp}/nowhere/*.png' (0 matches, none a file); fix: "),
    ("list", "an INPUT list must name at least one image path; got {tmp}/l.txt (no path lines); fix: write one"),
    ("classes empty", "--classes must name at least one class (comma-separated); got ' , '; fix: pass e.g."),
    ("classes blank item", "--classes must be comma-separated class names, none of them empty; got "
                           "'red circle,,blue square'; fix: remove the extra comma"),
    ("classes duplicate", "--classes must name each class once (compared ignoring case); got 'Red Circle' twice in "
                          "'red circle, blue square, Red  Circle'; fix: remove the repeated name"),
    ("out under a file", "--out must be a folder ovseg can read and write (a batch resumes from it); got "
                         "{tmp}/f/sub: Not a directory; fix: "),
    ("state link", "--out's .ovseg-batch must be a folder ovseg made (never a link or a file); got {tmp}/o/.ovseg-batch"),
])
def test_bad_batch_input_is_one_line_before_any_model(tiny, tmp_path, capsys, case, message):
    rc, stdout, err = run(["segment", *_bad(tmp_path, case), "--config", tiny.yaml], capsys)
    lines_ = err.strip().splitlines()
    assert rc == 2 and len(lines_) == 1 and "Traceback" not in err, err
    assert lines_[0].startswith("ovseg: error: " + message.format(tmp=tmp_path)), lines_[0]
    assert "fix: " in lines_[0] and tiny.loads == 0 and tiny.masks.calls == 0
    assert not (tmp_path / "in" / "results.jsonl").exists()


def test_unreadable_out_folder_is_refused(tiny, tmp_path, capsys, monkeypatch):
    """An --out that cannot be listed (a batch reads its state to resume). As root, permissions do not stop reads,
    so the refusal is simulated at os.listdir."""
    write_scenes(tmp_path / "in", 1)
    out = tmp_path / "o"
    out.mkdir()
    real = os.listdir

    def listdir(path="."):
        if Path(path) == out:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "listdir", listdir)
    rc, stdout, err = run(["segment", tmp_path / "in", "--prompt", "x", "--config", tiny.yaml, "--out", out], capsys)
    assert rc == 2 and err.strip() == (f"ovseg: error: --out must be a folder ovseg can read and write (a batch resumes "
                                       f"from it); got {out}: Permission denied; fix: pass a readable, writable folder, "
                                       "e.g. --out out/batch")
    assert tiny.loads == 0 and real(out) == []


def test_parse_classes():
    assert parse_classes(" red circle ,blue   square") == ["red circle", "blue square"]
    with pytest.raises(InputError, match="each class once"):
        parse_classes("star, STAR")


# ---- the embedded mini models ------------------------------------------------------------------------------------

def test_mini_profile_folder_equals_single_image_runs(tmp_path, capsys, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(var, raising=False)
    src = tmp_path / "in"
    src.mkdir()
    for name in ("world_1.png", "shapes.png"):
        shutil.copy(SAMPLES_DIR / name, src / name)
    out = tmp_path / "out"
    args = ["--prompt", "red circle", "--set", "alignment.similarity_threshold=-1", "--top-k", "2"]
    rc, stdout, err = run(["segment", src, *args, "--out", out, "--no-progress"], capsys)
    assert rc == 0, err
    for name in ("world_1", "shapes"):
        assert run(["segment", src / f"{name}.png", *args, "--out", tmp_path / name], capsys)[0] == 0
        one = json.loads((tmp_path / name / "result.json").read_text())
        batch = json.loads((out / name / "result.json").read_text())
        assert {k: v for k, v in batch.items() if k != "timings_s"} == \
            {k: v for k, v in one.items() if k not in ("timings_s", "image")} | {"image": str(src / f"{name}.png")}
        for f in one["files"]:
            if f.startswith("mask_"):
                assert np.array_equal(np.asarray(Image.open(out / name / f)), np.asarray(Image.open(tmp_path / name / f)))
    assert [r["name"] for r in lines(out / "results.jsonl")] == ["shapes", "world_1"]
