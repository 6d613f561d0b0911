"""Training states are data, never code: --resume reads them with weights_only=True (issue #19)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg.cli import main as cli
from ovseg.paths import DATA_DIR
from ovseg.train import load_state, numpy_rng_from_tensors, numpy_rng_to_tensors


class _Payload:
    """Unpickling this runs ``open(marker, 'w')`` -- what a crafted state.pt does with weights_only=False."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _crafted_state(path, marker):
    torch.save({"step": 3, "model": {}, "config": {}, "cfg": {}, "evil": _Payload(marker)}, path)


@pytest.mark.parametrize("model", ["mini-clip", "mini-sam2", "mini-inpainting"])
def test_resume_from_a_crafted_state_runs_nothing_and_says_so_in_one_line(tmp_path, capsys, model):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "pwned"
    _crafted_state(out / "state.pt", marker)
    rc = cli(["train", model, "--out", str(out), "--resume", "--minutes", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and not marker.exists()
    assert err.startswith("ovseg: error: a training state may hold only tensors and plain values") and "\n" not in err
    assert "it names io.open, which is not data" in err and "fix: use a state.pt written by `ovseg train`" in err


def test_the_crafted_state_would_run_code_if_unpickled(tmp_path):
    # guards the test above: the payload is live (so the refusal, not a harmless file, is what kept the marker away)
    marker = tmp_path / "pwned"
    _crafted_state(tmp_path / "state.pt", marker)
    torch.load(tmp_path / "state.pt", weights_only=False)
    assert marker.exists()


def test_truncated_state_is_one_line(tmp_path):
    torch.save({"step": 1, "w": torch.zeros(1000)}, tmp_path / "state.pt")
    raw = (tmp_path / "state.pt").read_bytes()
    (tmp_path / "state.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(Exception, match="a training state must be a complete torch file") as exc:
        load_state(tmp_path / "state.pt")
    assert "\n" not in str(exc.value)


def test_committed_states_load_safely():
    # mini-clip's shipped state stores numpy's RNG as a numpy array (format 1): allowed, nothing else is
    for name in ("mini-clip", "mini-sam2", "mini-inpainting"):
        state = load_state(DATA_DIR / "train" / name / "state.pt")
        assert int(state["step"]) > 0, name
    rng = load_state(DATA_DIR / "train" / "mini-clip" / "state.pt")["numpy_rng"]
    restored = numpy_rng_from_tensors(rng)
    assert restored[0] == "MT19937" and restored[1].dtype == np.uint32 and restored[1].shape == (624,)


def test_numpy_rng_state_round_trips_through_tensors(tmp_path):
    np.random.seed(7)
    np.random.standard_normal()  # leaves a cached gaussian
    saved = np.random.get_state()
    torch.save({"numpy_rng": numpy_rng_to_tensors(saved)}, tmp_path / "s.pt")
    expected = np.random.standard_normal(5)
    np.random.seed(0)
    np.random.set_state(numpy_rng_from_tensors(load_state(tmp_path / "s.pt")["numpy_rng"]))
    assert np.array_equal(np.random.standard_normal(5), expected)
    torch.load(tmp_path / "s.pt", weights_only=True)  # the new format needs no allow-listed numpy globals at all
