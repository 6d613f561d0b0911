"""Bad values of the CLI's own flags stop before any model loads, with one line (issue #19)."""

from __future__ import annotations

import time

import pytest

from ovseg.cli import main as cli
from ovseg.paths import SAMPLES_DIR

SAMPLE = str(SAMPLES_DIR / "shapes.png")


@pytest.mark.parametrize("argv, rule", [
    (["remove", SAMPLE, "--prompt", "red circle", "--seed", "-1"], "seed must be an integer in [0, 2**63 - 1]; got -1"),
    (["replace", SAMPLE, "--prompt", "red circle", "--edit", "blue star", "--seed", str(2**70)],
     f"seed must be an integer in [0, 2**63 - 1]; got {2**70}"),
    (["segment", SAMPLE, "--prompt", "red circle", "--device", "tpu"], "device must be cpu, cuda, cuda:N or mps; got 'tpu'"),
    (["segment", SAMPLE, "--prompt", "red circle", "--device", "cuda"], "device cuda needs a CUDA GPU that torch can see"),
    (["benchmark", "--device", "cuda:3"], "device cuda needs a CUDA GPU"),
    (["evaluate", "--dataset", "mini", "--device", "gpu", "--out", "OUT"], "device must be cpu, cuda, cuda:N or mps"),
])
def test_bad_flags_are_one_line_before_any_model(argv, rule, capsys, tmp_path):
    import torch

    if "cuda" in " ".join(argv) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    t0 = time.monotonic()
    rc = cli(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("ovseg: error: ") and rule in err and "\n" not in err
    assert time.monotonic() - t0 < 10  # nothing was loaded


def test_evaluate_background_names_must_be_a_list_of_names(tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("background_names: 5\n")
    rc = cli(["evaluate", "--dataset", "mini", "--config", str(cfg), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "protocol.background_names must be a list of non-empty strings; got 5" in err


@pytest.mark.parametrize("kind", ["file", "under a file"])
def test_evaluate_out_must_be_a_writable_folder(tmp_path, capsys, kind):
    f = tmp_path / "taken"
    f.write_text("x")
    out = f if kind == "file" else f / "sub"
    t0 = time.monotonic()
    rc = cli(["evaluate", "--dataset", "mini", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and time.monotonic() - t0 < 10
    assert ("--out must be a folder (ovseg writes several files into it)" in err if kind == "file"
            else "--out must be a folder ovseg can write to" in err and "Not a directory" in err)


def test_api_rejects_a_bad_device_and_seed_with_ovseg_errors():
    from ovseg import OpenVocabSegmentationPipeline
    from ovseg.errors import InputError

    with pytest.raises(InputError, match="device must be cpu, cuda, cuda:N or mps"):
        OpenVocabSegmentationPipeline(device="tpu")
    pipe = OpenVocabSegmentationPipeline()
    with pytest.raises(InputError, match=r"seed must be an integer in \[0, 2\*\*63 - 1\]"):
        pipe.segment_and_edit(SAMPLE, "red circle", "remove", seed=2**70)
    assert pipe._mask_generator is None  # refused before any model loaded
