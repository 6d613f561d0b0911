"""Hostile or broken config files: one line, fast (issue #19)."""

from __future__ import annotations

import os
import time

import pytest

from ovseg.cli import main as cli
from ovseg.errors import ConfigError, InputError
from ovseg.paths import SAMPLES_DIR

# 334 bytes that expand to 9^9 list items when aliases are resolved (minutes and gigabytes with yaml.safe_load)
BOMB = """a: &a ["x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def _run(argv, capsys):
    t0 = time.monotonic()
    rc = cli(argv)
    err = capsys.readouterr().err.strip()
    return rc, err, time.monotonic() - t0


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_yaml_alias_bomb_is_refused_in_a_second(tmp_path, capsys, command):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(BOMB)
    argv = (["segment", str(SAMPLES_DIR / "shapes.png"), "--prompt", "red circle", "--config", str(cfg)]
            if command == "segment" else ["evaluate", "--dataset", "mini", "--config", str(cfg), "--out", str(tmp_path / "o")])
    rc, err, took = _run(argv, capsys)
    assert rc == 2 and took < 1.0 and "\n" not in err
    assert "may not use YAML aliases (*name references); got *a at line 2" in err


def test_random_bytes_as_config_is_one_line(tmp_path, capsys):
    cfg = tmp_path / "noise.yaml"
    cfg.write_bytes(os.urandom(2048) + b"\xff")
    rc, err, _ = _run(["segment", str(SAMPLES_DIR / "shapes.png"), "--prompt", "red circle", "--config", str(cfg)],
                      capsys)
    assert rc == 2 and "\n" not in err
    assert "must be UTF-8 text (YAML)" in err or "must be valid YAML" in err


def test_not_utf8_config_names_the_byte(tmp_path):
    from ovseg.config import load_config

    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("alignment: {background_weight: 0.3}  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"must be UTF-8 text \(YAML\); got .*latin1.yaml: byte 0xe9 at offset 42"):
        load_config(str(cfg))


def test_a_huge_value_is_cut_in_the_error_line():
    err = InputError("rule", "x" * 1_000_000, "fix")
    assert len(str(err)) < 1100 and "(1,000,000 characters)" in str(err)


def test_an_alias_in_a_set_value_is_refused(capsys):
    rc, err, _ = _run(["segment", str(SAMPLES_DIR / "shapes.png"), "--prompt", "red circle",
                       "--set", "clip.extract_layers=*a"], capsys)
    assert rc == 2 and "may not use YAML aliases" in err


@pytest.mark.parametrize("target", ["os.system", "shutil.rmtree", "builtins.eval"])
def test_a_local_sam2_yaml_may_not_name_other_targets(tmp_path, target):
    from ovseg.masks import build_sam2_model

    cfg = tmp_path / "evil.yaml"
    marker = tmp_path / "gone"
    marker.mkdir()
    cfg.write_text(f"model:\n  _target_: sam2.modeling.sam2_base.SAM2Base\n  image_encoder:\n    _target_: {target}\n"
                   f"    _args_: ['{marker}']\n")
    with pytest.raises(ConfigError, match=rf"may only instantiate sam2\.modeling\.\* classes.*_target_ '{target}'"):
        build_sam2_model(str(cfg))
    assert marker.exists()


def test_a_malicious_sam2_pt_is_one_line(tmp_path):
    import torch

    from ovseg.errors import WeightsError
    from ovseg.masks import _load_weights

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"model": {"w": torch.zeros(1)}, "x": Payload()}, tmp_path / "sam2.1_hiera_large.pt")
    with pytest.raises(WeightsError) as exc:
        _load_weights(None, tmp_path / "sam2.1_hiera_large.pt")
    msg = str(exc.value)
    assert "\n" not in msg and "may hold only tensors" in msg and "it names print, which is not data" in msg
