"""The evaluation store cannot lie (issue #19): checksummed lines, tampered / broken / conflicting lines reported
and recomputed, no writes through symbolic links, one writer at a time."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import warnings

import pytest
from test_evaluate import _metrics, make_folder

from ovseg.errors import InputError, OvsegWarning
from ovseg.evaluate import EvalProtocol, _store_line, run_evaluation


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from test_pipeline import tiny_components, tiny_config

    from ovseg.datasets import load_dataset
    from ovseg.pipeline import OpenVocabSegmentationPipeline

    data = make_folder(tmp_path_factory.mktemp("data") / "ds")
    cfg = tiny_config()
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    dataset = load_dataset("folder", data)
    protocol = EvalProtocol(method="ovseg", background_names=["background"])
    ref = tmp_path_factory.mktemp("ref")
    run_evaluation(dataset, pipe, protocol, ref, progress=False)
    return dataset, pipe, protocol, ref


def _rerun(setup, out):
    dataset, pipe, protocol, _ = setup
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_evaluation(dataset, pipe, protocol, out, progress=False)
    return [str(w.message) for w in caught if issubclass(w.category, OvsegWarning)]


def _copy(setup, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(setup[3], out)
    return out, out / "results.rank0.jsonl"


def test_every_line_carries_its_checksum_and_protocol(setup):
    lines = (setup[3] / "results.rank0.jsonl").read_text().splitlines()
    proto = json.loads((setup[3] / "metrics.json").read_text())["protocol_hash"]
    for line in lines:
        rec = json.loads(line)
        assert rec["protocol"] == proto and len(rec["sum"]) == 16
        assert _store_line(rec["stem"], rec["cm"], rec["s"], proto) == line + "\n"


def test_an_edited_count_is_reported_and_recomputed(setup, tmp_path):
    out, store = _copy(setup, tmp_path)
    lines = store.read_text().splitlines(keepends=True)
    rec = json.loads(lines[2])
    rec["cm"][0][2] += 1000  # what a hand edit does: the checksum no longer matches
    lines[2] = json.dumps(rec, separators=(",", ":")) + "\n"
    store.write_text("".join(lines))
    (out / "metrics.json").unlink()
    msgs = _rerun(setup, out)
    assert len(msgs) == 1 and "results.rank0.jsonl line 3: checksum mismatch" in msgs[0]
    assert _metrics(out) == _metrics(setup[3])
    assert (out / "results.rank0.rejected").read_text() == lines[2]  # kept for inspection, out of the store
    assert _rerun(setup, out) == []  # reported once, not at every resume


def test_a_conflicting_duplicate_placed_first_is_not_used(setup, tmp_path):
    out, store = _copy(setup, tmp_path)
    lines = store.read_text().splitlines(keepends=True)
    rec = json.loads(lines[0])
    other = [[e[0], (e[1] + 1) % 3, e[2]] for e in rec["cm"]]  # a well-formed, checksummed, wrong line
    fake = _store_line(rec["stem"], other, rec["s"], rec["protocol"])
    store.write_text(fake + "".join(lines))
    msgs = _rerun(setup, out)
    assert len(msgs) == 1 and f"line 2: disagrees with an earlier line for {rec['stem']!r}" in msgs[0]
    assert _metrics(out) == _metrics(setup[3])
    assert sum(json.loads(x)["stem"] == rec["stem"] for x in store.read_text().splitlines()) == 1


@pytest.mark.parametrize("bad, why", [
    ("{not json\n", "not valid JSON"),
    ('{"stem": "im00", "cm": [[0, 0, 5]]}\x00\n', "NUL bytes"),
    ("OUT_OF_RANGE", "confusion entries must be [true, predicted, count] with classes 0..2"),
    ("OTHER_PROTOCOL", "written under another protocol"),
    ('{"stem": "im01", "cm": [[0, 0, 5]], "s": 0.1}\n', "no checksum"),
])
def test_broken_lines_are_reported_with_their_line_number(setup, tmp_path, bad, why):
    out, store = _copy(setup, tmp_path)
    lines = store.read_text().splitlines(keepends=True)
    rec = json.loads(lines[1])
    if bad == "OUT_OF_RANGE":
        bad = _store_line(rec["stem"], [[0, 7, 3]], rec["s"], rec["protocol"])
    elif bad == "OTHER_PROTOCOL":
        bad = _store_line(rec["stem"], rec["cm"], rec["s"], "0123456789ab")
    lines[1] = bad
    store.write_text("".join(lines))
    msgs = _rerun(setup, out)
    assert len(msgs) == 1 and f"results.rank0.jsonl line 2: {why}" in msgs[0]
    assert _metrics(out) == _metrics(setup[3])


def test_the_store_is_never_written_through_a_symlink(setup, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("do not touch\n")
    (out / "results.rank0.jsonl").symlink_to(target)
    with pytest.raises(InputError, match="never reads or writes a results store through a symbolic link"):
        _rerun(setup, out)
    assert target.read_text() == "do not touch\n"


def test_a_second_writer_is_refused_naming_the_holder(setup, tmp_path):
    out, _ = _copy(setup, tmp_path)
    with open(out / "results.rank0.lock", "w") as fh:  # another run holds the store
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("4242")
        fh.flush()
        with pytest.raises(InputError, match=r"one ovseg evaluate at a time.*in use by process 4242.*another --out"):
            _rerun(setup, out)
    assert _rerun(setup, out) == []  # free again once the holder is gone
    assert (out / "results.rank0.lock").read_text() == str(os.getpid())
