"""CLI: bad input fails with one line, before any model is loaded; outputs are complete or absent."""

import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from ovseg.cli import main

SAMPLE = os.path.join(os.path.dirname(__file__), "..", "data", "samples", "shapes.png")


@pytest.fixture
def img(tmp_path, scene):
    p = tmp_path / "scene.png"
    Image.fromarray(scene).save(p)
    return p


def _run(args, capsys):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("make,args,match", [
    (None, ["segment", "{missing}", "--prompt", "x"], "image file must exist"),
    ("empty", ["segment", "{f}", "--prompt", "x"], "must not be empty"),
    ("text", ["segment", "{f}", "--prompt", "x"], "must be an image PIL can read"),
    ("tiny", ["segment", "{f}", "--prompt", "x"], "at least 32 px"),
    ("ok", ["segment", "{f}", "--prompt", "   "], "not empty or whitespace"),
    ("ok", ["segment", "{f}", "--prompt", "x", "--config", "turbo"], "fast, balanced, quality"),
    ("ok", ["segment", "{f}", "--prompt", "x", "--config", "{yaml}"], "unknown config key 'sam2.bogus'"),
    ("ok", ["segment", "{f}", "--prompt", "x", "--top-k", "0"], "--top-k must be a positive integer"),
    ("ok", ["replace", "{f}", "--prompt", "x"], "replace needs --edit"),
    ("ok", ["style", "{f}", "--prompt", "x", "--edit", " "], "style needs --edit"),
])
def test_bad_input_one_line_no_model(tmp_path, scene, capsys, make, args, match):
    f = tmp_path / "in.png"
    if make == "empty":
        f.write_bytes(b"")
    elif make == "text":
        f.write_text("not an image")
    elif make == "tiny":
        Image.fromarray(scene[:20, :20]).save(f)
    elif make == "ok":
        Image.fromarray(scene).save(f)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("sam2:\n  bogus: 1\n")
    args = [a.format(f=f, missing=tmp_path / "missing.png", yaml=yaml) for a in args]
    rc, out, err = _run(args, capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ovseg: error: ") and match in lines[0]
    assert "fix:" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "ovseg-out").exists()


def test_validation_happens_before_torch_is_imported(tmp_path):
    """A bad prompt must fail without importing torch (that is, before any model could load)."""
    code = ("import sys; from ovseg.cli import main; "
            f"rc = main(['segment', {SAMPLE!r}, '--prompt', ' ']); print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["2", "False"], out


def test_full_profile_without_weights_gives_the_download_hint(tmp_path, capsys, monkeypatch, img):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, err = _run(["segment", img, "--prompt", "red circle", "--profile", "full", "--out", tmp_path / "o"], capsys)
    assert rc == 3
    assert "weights for sam2 model 'sam2.1-hiera-large' are missing" in err
    assert "ovseg weights download full" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "result.json").exists()


def test_weights_list_and_verify(capsys):
    rc, out, err = _run(["weights", "list"], capsys)
    assert rc == 0 and "sam2.1-hiera-large" in out and "mini-clip" in out
    rc, out, err = _run(["weights", "verify", "nope"], capsys)
    assert rc == 2 and "registry name" in err


def test_align_benchmark_json_last_line(capsys):
    rc, out, err = _run(["benchmark", "--stage", "align", "--json", "--repeats", "1"], capsys)
    assert rc == 0
    res = json.loads(out.strip().splitlines()[-1])
    assert {"align_ms", "loop_ms", "matmul_ms"} <= set(res)
    assert res["max_abs_diff"] < 1e-4  # vectorised == loop


def test_python_dash_m(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ovseg", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "segment" in out.stdout and "benchmark" in out.stdout


# ---- issue #23: the first hour of a new user ------------------------------------------------------------------

@pytest.fixture
def tiny(monkeypatch, tmp_path, scene):
    """The CLI on tiny random components with five fixed candidate masks: (image path, config yaml path)."""
    from test_pipeline import FixedMasks, cli_on_tiny_components

    return cli_on_tiny_components(monkeypatch, tmp_path, scene, mask_generator=FixedMasks())


def test_no_match_is_said_without_nan(tiny, tmp_path, capsys):
    img, yaml = tiny
    out = tmp_path / "o"
    rc, stdout, err = _run(["segment", img, "--prompt", "red circle", "--config", yaml, "--out", out,
                            "--set", "alignment.similarity_threshold=1"], capsys)
    assert rc == 0 and "nan" not in stdout
    lines = stdout.splitlines()
    assert lines[0] == f"no mask matched 'red circle' (profile full) -> {out}"
    assert lines[1].startswith("  5 candidates from SAM 2 (predicted IoU > 0, stability > 0) -> 0 with similarity >= 1 "
                               "-> top-5: 0 returned; try another wording, or a threshold under the best candidate's")
    assert "--set alignment.similarity_threshold=" in lines[1]
    res = json.loads((out / "result.json").read_text())
    assert res["counts"]["returned"] == 0 and res["files"] == ["overlay.png", "result.json"]


def test_top_k_counts_are_printed_and_recorded(tiny, tmp_path, capsys):
    img, yaml = tiny
    out = tmp_path / "o"
    rc, stdout, err = _run(["segment", img, "--prompt", "red circle", "--config", yaml, "--out", out, "--top-k", "3"], capsys)
    assert rc == 0
    assert stdout.splitlines()[1] == ("  5 candidates from SAM 2 (predicted IoU > 0, stability > 0) -> 5 with similarity "
                                      ">= -1 -> top-3: 3 returned")
    counts = json.loads((out / "result.json").read_text())["counts"]
    assert (counts["candidates"], counts["above_threshold"], counts["top_k"], counts["returned"]) == (5, 5, 3, 3)
    # a rerun into the same folder leaves exactly the files it wrote (and the user's)
    (out / "mine.txt").write_text("keep")
    assert _run(["segment", img, "--prompt", "red circle", "--config", yaml, "--out", out, "--top-k", "1"], capsys)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["mask_00.png", "mine.txt", "overlay.png", "result.json"]


def test_set_overrides_reach_the_result(tiny, tmp_path, capsys):
    img, yaml = tiny
    out = tmp_path / "o"
    rc, stdout, err = _run(["segment", img, "--prompt", "red circle", "--config", yaml, "--out", out,
                            "--set", "alignment.background_weight=0.5", "--set", "sam2.use_m2m=true",
                            "--set", "clip.extract_layers=[2, 4]"], capsys)
    assert rc == 0
    cfg = json.loads((out / "result.json").read_text())["config"]
    assert cfg["alignment"]["background_weight"] == 0.5 and cfg["sam2"]["use_m2m"] is True
    assert cfg["clip"]["extract_layers"] == [2, 4] and cfg["sam2"]["points_per_side"] == 6  # the rest from the YAML


@pytest.mark.parametrize("args,match", [
    (["--set", "alignment.similarity_threshold"], "--set takes KEY=VALUE with a dotted config key; got "
                                                  "'alignment.similarity_threshold'"),
    (["--set", "alignment.bogus=1"], "unknown config key 'alignment.bogus'; got 1; fix: valid keys here are"),
    (["--set", "nope.x=1"], "unknown config key 'nope.x'"),
    (["--set", "alignment.similarity_threshold=5"], "alignment.similarity_threshold must be in [-1.0, 1.0]; got 5.0"),
    (["--set", "sam2.use_m2m=maybe"], "sam2.use_m2m must be true or false; got 'maybe'"),
    (["--set", "clip.templates=[a"], "the value of --set clip.templates must be valid YAML; got '[a'"),
])
def test_bad_set_is_one_line_before_any_model(img, tmp_path, capsys, args, match):
    for command in (["segment", img, "--prompt", "x", "--out", tmp_path / "o"], ["benchmark"],
                    ["evaluate", "--dataset", "mini", "--out", tmp_path / "e"]):
        rc, out, err = _run(command + args, capsys)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("ovseg: error: ") and match in lines[0], err
        assert "fix: " in lines[0]
    assert not (tmp_path / "o").exists() and not (tmp_path / "e").exists()


def test_out_that_is_a_file_is_refused(img, tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("a file")
    rc, out, err = _run(["segment", img, "--prompt", "red circle", "--out", target], capsys)
    assert rc == 2 and err.strip() == (f"ovseg: error: --out must be a folder (ovseg writes several files into it); got "
                                       f"{target} (a file); fix: pass a folder path that does not exist yet or is a "
                                       "folder, e.g. --out ovseg-out/run1")
    assert target.read_text() == "a file"


@pytest.mark.parametrize("op,extra,verb", [
    ("remove", [], "removed 'red circle'"),
    ("replace", ["--edit", "blue square"], "replaced 'red circle' with 'blue square'"),
    ("style", ["--edit", "green circle"], "restyled 'red circle' as 'green circle'"),
])
def test_edit_commands_say_what_was_edited_and_where(tiny, tmp_path, capsys, monkeypatch, op, extra, verb):
    img, yaml = tiny
    monkeypatch.chdir(tmp_path)  # the default output folder: ovseg-out/<image stem>-<command>
    rc, stdout, err = _run([op, img, "--prompt", "red circle", *extra, "--config", yaml, "--steps", "2"], capsys)
    out = os.path.join("ovseg-out", f"scene-{op}")
    assert rc == 0
    first, second = stdout.splitlines()
    assert first.startswith(verb + " (mask #1 of 5, final score ") and first.endswith(f"2 steps) -> {out}/edited.png")
    assert second.endswith(f"; overlay.png, mask.png, edit_mask.png, result.json in {out}")
    assert (tmp_path / out / "edited.png").is_file()
    assert json.loads((tmp_path / out / "result.json").read_text())["edit"]["operation"] == op


def test_remove_takes_no_edit_and_help_names_the_default_folder(img, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["remove", str(img), "--prompt", "red circle", "--edit", "x"])
    assert exit_.value.code == 2 and "remove takes no --edit" in capsys.readouterr().err
    for command in ("segment", "remove", "replace", "style"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        assert f"default: ovseg-out/<image stem>-{command})" in text
        assert ("--edit" in text) == (command in ("replace", "style"))
        assert "--set KEY=VALUE" in text and "alignment.similarity_threshold=0.1" in text


def test_only_ovseg_warnings_get_the_ovseg_prefix():
    code = ("import warnings, ovseg.benchmark as B\n"
            "from ovseg.cli import main\n"
            "from ovseg.errors import OvsegWarning\n"
            "def fake(repeats):\n"
            "    warnings.warn('from a library', UserWarning)\n"
            "    warnings.warn('from ovseg', OvsegWarning)\n"
            "    return {'align_ms': 1.0, 'loop_ms': 1.0, 'matmul_ms': 1.0, 'n_masks': 1, 'n_layers': 1, 'n_prompts': 1,"
            " 'size': 1}\n"
            "B.align_benchmark = fake\n"
            "before = warnings.formatwarning\n"
            "main(['benchmark', '--stage', 'align'])\n"
            "print(warnings.formatwarning is before)\n")
    res = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, check=True)
    assert "ovseg: warning: from ovseg\n" in res.stderr
    assert "UserWarning: from a library" in res.stderr and "ovseg: warning: from a library" not in res.stderr
    assert res.stdout.strip().splitlines()[-1] == "True"  # the global format is restored after main


def test_weights_list_has_header_sizes_and_total(capsys, monkeypatch, tmp_path):
    import dataclasses

    import huggingface_hub.constants as c

    from ovseg import weights as W

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    entry = W.REGISTRY["sam2.1-hiera-tiny"]
    monkeypatch.setitem(W.REGISTRY, entry.name, dataclasses.replace(entry, download_size=155_000_000))
    rc, out, err = _run(["weights", "list", "--profile", "mini"], capsys)
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == ["profile", "stage", "name", "source", "size", "status"]
    row = next(line for line in lines if " mini-sam2 " in line)
    assert f" {W.present_size('mini-sam2') / 1e6:.1f} MB  present (repository" in row
    total = sum(W.present_size(n) for n in W.list_models("mini"))
    assert lines[-1] == f"total: {total / 1e6:.1f} MB present in 5 of 5 entries"
    rc, out, err = _run(["weights", "list", "--profile", "full"], capsys)
    rows = out.splitlines()
    assert "155.0 MB  missing" in next(r for r in rows if " sam2.1-hiera-tiny " in r)
    assert "        -  missing" in next(r for r in rows if " sam2.1-hiera-large " in r)  # size unknown to the registry
    assert rows[-1] == "total: 0.0 MB present in 0 of 7 entries; 7 missing (155.0 MB known to download, 6 of unknown size)"


def test_weights_download_lists_the_plan_and_refuses_offline(tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc, out, err = _run(["weights", "download", "full"], capsys)
    assert rc == 3
    assert out.splitlines()[0] == ("ovseg weights download full: 3 of 3 model(s) to fetch into the Hugging Face cache "
                                   f"{tmp_path / 'hub'}")
    assert "sam2.1-hiera-large       facebook/sam2.1-hiera-large/sam2.1_hiera_large.pt  size unknown" in out
    assert "sd2-inpainting" in out and "ViT-L-14-336" in out
    assert err.strip().endswith("fix: HF_HUB_OFFLINE is set, so nothing is downloaded: run `HF_HUB_OFFLINE=0 ovseg "
                                "weights download full` (or `unset HF_HUB_OFFLINE` first)")
    assert len(err.strip().splitlines()) == 1
