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
