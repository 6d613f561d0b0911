"""The main job cannot hang: cell timeouts, the stall watchdog and its one retry, progress lines, a clean
figures/ and manifest (ovseg.nbrun, ovseg.regen.run_notebooks / regenerate). Real kernels, tiny notebooks."""

from __future__ import annotations

import json
import time

import pytest

from ovseg import regen
from ovseg.errors import OvsegError

pytest.importorskip("papermill")

# A cell that reproduces the failure seen in the main job: the kernel runs the cell, reports itself idle, and
# its execute_reply never reaches the client (here: dropped on purpose). Without the watchdog nbclient waits
# for it forever (papermill's default has no timeout). With MARKER set, only the first run drops its reply.
LOSE_REPLY = '''import os, IPython
kernel = IPython.get_ipython().kernel
send = kernel.session.send
def drop_reply(stream, msg_or_type, *args, **kwargs):
    if msg_or_type == "execute_reply":
        kernel.session.send = send
        return {"content": {"status": "ok"}}
    return send(stream, msg_or_type, *args, **kwargs)
if not (MARKER and os.path.exists(MARKER)):
    if MARKER:
        open(MARKER, "w").close()
    kernel.session.send = drop_reply
print("cell ran")'''


def _notebook(path, *cells, parameters="MARKER = ''\nout_dir = 'x'"):
    def code(src, tags=()):
        return {"cell_type": "code", "execution_count": None, "metadata": {"tags": list(tags)}, "outputs": [],
                "source": src}

    def with_id(cell, k):
        return {**cell, "id": f"cell-{k}"}

    body = [code(parameters, ["parameters"])]
    for c in cells:
        body.append({"cell_type": "markdown", "metadata": {}, "source": "## " + c[3:]} if c.startswith("md:") else code(c))
    nb = {"cells": [with_id(c, k) for k, c in enumerate(body)], "nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}}
    path.write_text(json.dumps(nb))
    return path


def _run(tmp_path, nb, spec, parameters=None):
    lines: list[str] = []
    t0 = time.monotonic()
    try:
        regen.run_notebooks([nb], tmp_path / "out", build_dir=tmp_path / "executed", log=lines.append,
                            specs={nb.stem: spec}, parameters={nb.stem: parameters or {}})
        err = None
    except OvsegError as exc:
        err = exc
    return err, lines, time.monotonic() - t0


def test_a_stalling_notebook_ends_the_run_within_its_timeout(tmp_path):
    nb = _notebook(tmp_path / "stalls.ipynb", "md:Setup", "x = 1", "md:Lost reply", LOSE_REPLY, "print('never reached')")
    err, lines, took = _run(tmp_path, nb, regen.RunSpec(timeout=120, stall=3))
    assert err is not None and took < 60, (took, lines)  # two stalls of ~3 s and two kernel starts, far below 120 s
    msg = str(err)
    assert "stalls.ipynb stalled twice" in msg
    assert "cell 4/5 (Lost reply)" in msg and "reply never arrived" in msg  # injected parameters are cell 2
    assert "fix: rerun `python3 scripts/nox.py -s figures -- stalls`" in msg and "\n" not in msg
    assert sum("retrying once in a fresh kernel" in ln for ln in lines) == 1


def test_a_stall_is_retried_once_in_a_fresh_kernel(tmp_path):
    nb = _notebook(tmp_path / "flaky.ipynb", "md:Lost reply", LOSE_REPLY, "md:After", "print('done')")
    err, lines, _ = _run(tmp_path, nb, regen.RunSpec(timeout=120, stall=3),
                         parameters={"MARKER": str(tmp_path / "stalled-once")})
    assert err is None, err
    assert any("flaky stalled" in ln and "retrying" in ln for ln in lines)
    executed = json.loads((tmp_path / "executed" / "flaky.ipynb").read_text())
    outputs = ["".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", [])]
    assert outputs == ["cell ran\n", "done\n"]  # the second kernel ran the notebook to its end
    assert lines[-2].split()[1:] == ["flaky", "4", lines[-2].split()[3], "retried", "after", "a", "stall"]


def test_a_cell_over_its_timeout_stops_the_run_naming_it(tmp_path):
    nb = _notebook(tmp_path / "busy.ipynb", "md:Busy loop", "import time\nt = time.time()\nwhile time.time() - t < 120: pass")
    err, _, took = _run(tmp_path, nb, regen.RunSpec(timeout=3, stall=60))
    assert err is not None and took < 30
    assert "every cell must finish within its timeout (3 s for busy)" in str(err)
    assert "cell 3/3 (Busy loop)" in str(err) and "raise timeout for busy in notebooks/figures.yaml" in str(err)


def test_a_failing_cell_is_named_with_the_error(tmp_path):
    nb = _notebook(tmp_path / "fails.ipynb", "md:Divide", "1 / 0")
    err, _, _ = _run(tmp_path, nb, regen.RunSpec(timeout=60, stall=30))
    assert "fails.ipynb failed" in str(err) and "cell 3/3 (Divide): ZeroDivisionError: division by zero" in str(err)


def test_progress_lines_and_final_table(tmp_path):
    nb = _notebook(tmp_path / "ok.ipynb", "md:First step", "a = 1", "md:Second step", "# a comment title\nb = a + 1")
    err, lines, _ = _run(tmp_path, nb, regen.RunSpec(timeout=60, stall=30))
    assert err is None, err
    cells = [ln for ln in lines if " cell " in ln]
    assert [ln.split(" cell ")[1].rsplit(" ", 1)[0] for ln in cells] == [
        "1/4 (parameters)", "2/4 (injected parameters)", "3/4 (First step)", "4/4 (Second step)"]
    assert all(ln.rsplit(" ", 1)[1].count(":") == 1 for ln in cells)  # elapsed m:ss
    assert lines[-3].split() == ["[regen]", "notebook", "cells", "time"] and lines[-2].split()[1:3] == ["ok", "4"]
    assert lines[-1].split()[1] == "total"
    log = (tmp_path / "executed" / "ok.kernel.log").read_text()
    assert "without encryption" not in log  # the kernel talks over IPC, not TCP
    import psutil

    kernels = [p for p in psutil.Process().children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
    assert kernels == []  # each notebook's kernel is shut down when it ends


def test_keep_unchanged_records(tmp_path):
    from ovseg import report

    ref, stage = tmp_path / "ref", tmp_path / "stage"
    report.set_context("notebooks/x.ipynb", {"n": 1}, "mini")
    for root in (ref, stage):
        report.save_table([{"a": 1}], "same", root=root)
    report.save_table([{"a": 1}], "changes", root=ref)
    report.save_table([{"a": 2}], "changes", root=stage)
    atol = regen.TOLERANCE["table_atol"]
    report.save_table([{"m": 0.5}], "jitter", root=ref, digits=4)
    report.save_table([{"m": 0.5 + atol / 2}], "jitter", root=stage, digits=4)  # float noise, inside the drift rule
    new = json.loads((stage / "MANIFEST.json").read_text())["files"]
    for rec in new.values():  # a later run at another revision
        rec["git_revision"] = "f" * 40
    (stage / "MANIFEST.json").write_text(json.dumps({"files": new}))
    assert regen._keep_unchanged_records(stage, ref) == 6  # same.* and jitter.*
    old = json.loads((ref / "MANIFEST.json").read_text())["files"]
    kept = json.loads((stage / "MANIFEST.json").read_text())["files"]
    assert kept["same.csv"] == old["same.csv"]  # identical bytes: the record (and its revision) is unchanged
    for ext in ("csv", "md", "tex"):  # within tolerance: the reference's bytes and record, the whole group
        assert kept[f"jitter.{ext}"] == old[f"jitter.{ext}"]
        assert (stage / f"jitter.{ext}").read_bytes() == (ref / f"jitter.{ext}").read_bytes()
    assert kept["changes.csv"]["git_revision"] == "f" * 40 and kept["changes.csv"]["sha256"] != old["changes.csv"]["sha256"]
    assert (stage / "changes.csv").read_text() == "a\n2\n"
    assert regen.check_manifest(stage) == []


def test_regenerate_twice_leaves_the_manifest_unchanged_and_no_staging(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    (nbdir / "figures.yaml").write_text("defaults: {timeout: 60, stall: 30}\nnotebooks:\n  tab: {parameters: {n: 2}}\n")
    _notebook(nbdir / "tab.ipynb", "from ovseg import report\n"
              "report.notebook_setup('notebooks/tab.ipynb', {'n': n}, out_dir=out_dir)\n"
              "report.save_table([{'n': n, 'sq': n * n}], 'squares', cell='table')",
              parameters="n = 1\nout_dir = 'build/figures'")
    monkeypatch.setattr(regen, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(regen, "BUILD_DIR", tmp_path / "build")
    figures = tmp_path / "figures"
    stale = tmp_path / ".figures-killed"
    stale.mkdir()
    (stale / regen._OWNER).write_text("999999999")  # a run killed long ago
    lines: list[str] = []
    regen.regenerate(figures_dir=figures, log=lines.append)
    first = (figures / "MANIFEST.json").read_bytes()
    assert (figures / "squares.csv").read_text() == "n,sq\n2,4\n"
    assert any("removed .figures-killed" in ln for ln in lines) and not stale.exists()
    manifest = json.loads(first)
    manifest["files"]["squares.csv"]["git_revision"] = "0" * 40  # as if made at another revision
    (figures / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    before = (figures / "MANIFEST.json").read_bytes()
    regen.regenerate(figures_dir=figures, log=lines.append)
    assert json.loads((figures / "MANIFEST.json").read_bytes()) == json.loads(before)
    assert not list(tmp_path.glob(".figures-*"))


@pytest.mark.parametrize("exchange", [True, False])
def test_only_some_notebooks_swaps_figures_whole(tmp_path, monkeypatch, exchange):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    (nbdir / "figures.yaml").write_text("defaults: {timeout: 60, stall: 30}\nnotebooks: {a: {}, b: {}}\n")
    for name in ("a", "b"):
        _notebook(nbdir / f"{name}.ipynb", "from ovseg import report\n"
                  f"report.notebook_setup('notebooks/{name}.ipynb', {{'v': v}}, out_dir=out_dir)\n"
                  f"report.save_table([{{'v': v}}], '{name}', cell='table')", parameters="v = 1\nout_dir = 'x'")
    monkeypatch.setattr(regen, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(regen, "BUILD_DIR", tmp_path / "build")
    if not exchange:  # a system without renameat2: two renames through figures.old
        monkeypatch.setattr(regen, "_exchange", lambda a, b: False)
    figures = tmp_path / "figures"
    regen.regenerate(figures_dir=figures, log=lambda *_: None)
    b_before = (figures / "b.csv").stat()
    (figures / "notes.txt").write_text("not made by a notebook\n")
    (nbdir / "a.ipynb").write_text((nbdir / "a.ipynb").read_text().replace("v = 1", "v = 2"))
    regen.regenerate(["a"], figures_dir=figures, log=lambda *_: None)
    assert (figures / "a.csv").read_text() == "v\n2\n" and (figures / "b.csv").read_text() == "v\n1\n"
    assert (figures / "b.csv").stat().st_mtime == b_before.st_mtime  # copied with its metadata, not rewritten
    assert not (figures / "notes.txt").exists()  # figures/ holds what its manifest lists, as after a full run
    assert set(json.loads((figures / "MANIFEST.json").read_text())["files"]) == {"a.csv", "a.md", "a.tex", "b.csv",
                                                                               "b.md", "b.tex"}
    assert regen.check_manifest(figures) == []
    assert not list(tmp_path.glob(".figures-*")) and not (tmp_path / "figures.old").exists()


def test_a_run_killed_between_the_two_renames_is_recovered(tmp_path):
    figures = tmp_path / "figures"
    old = tmp_path / "figures.old"
    old.mkdir()
    (old / "MANIFEST.json").write_text('{"files": {}}')
    assert regen._recover(figures) and (figures / "MANIFEST.json").exists() and not old.exists()
    assert not regen._recover(figures)  # nothing to do when figures/ exists


def test_a_long_cell_reports_that_it_is_still_running(tmp_path):
    from ovseg import nbrun

    nb = _notebook(tmp_path / "long.ipynb", "md:Long step", "import time\nt = time.time()\nwhile time.time() - t < 3.5: pass")
    calls: list[tuple] = []
    nbrun.execute_notebook(nb, tmp_path / "out.ipynb", {}, tmp_path, timeout=60, stall=30, heartbeat=1,
                           progress=lambda *a, **k: calls.append((*a, k.get("still", False))))
    assert calls[:2] == [(1, 2, "parameters", False), (2, 2, "Long step", False)]  # no parameters: nothing injected
    still = [c for c in calls if c[3]]
    assert 2 <= len(still) <= 4 and all(c[:3] == (2, 2, "Long step") for c in still)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_stops_the_main_job_within_seconds_and_leaves_nothing_behind(tmp_path, signame):
    import os
    import signal
    import subprocess
    import sys

    import psutil

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "figures.yaml").write_text("defaults: {timeout: 600, stall: 300}\nnotebooks: {long: {}}\n")
    _notebook(tmp_path / "notebooks" / "long.ipynb", "md:Long", "import time\nt = time.time()\nwhile time.time() - t < 120: pass")
    env = {**os.environ, "OVSEG_ROOT": str(tmp_path)}  # the repository root the paths are anchored at
    # the child gets SIGINT's default disposition, as a job started from a terminal has: a test run started in the
    # background of a non-interactive shell (`pytest ... &`) ignores SIGINT, and a child inherits that (Python then
    # never turns Ctrl-C into KeyboardInterrupt)
    proc = subprocess.Popen([sys.executable, "-m", "ovseg.regen", "run"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stdout:  # wait until the long cell runs
        lines.append(line)
        if "cell 3/3 (Long)" in line:
            break
    kernels = [p for p in psutil.Process(proc.pid).children(recursive=True) if "ipykernel" in " ".join(p.cmdline())]
    assert len(kernels) == 1 and list(tmp_path.glob(".figures-*"))
    proc.send_signal(getattr(signal, signame))
    t0 = time.monotonic()
    rc = proc.wait(timeout=30)
    assert rc == 130 and time.monotonic() - t0 < 10
    assert "ovseg: interrupted; figures/ is unchanged" in proc.stderr.read()
    assert not list(tmp_path.glob(".figures-*")) and not (tmp_path / "figures").exists()
    psutil.wait_procs(kernels, timeout=10)
    assert not any(k.is_running() and k.status() != psutil.STATUS_ZOMBIE for k in kernels)


def test_a_test_log_line_written_in_a_notebook_names_the_notebook_and_its_parameters(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))  # the kernel inherits it
    cell = ('from ovseg import testlog\n'
            'testlog.record("t", {"m": "a" * 16}, "p", 1, {"r": {"value": 1, "ci95": [1, 1], "n": 1, "unit": "x"}})')
    nb = _notebook(tmp_path / "logs.ipynb", cell, parameters="split = 'dev'\nout_dir = 'x'")
    err, _, _ = _run(tmp_path, nb, regen.RunSpec(timeout=60, stall=30), parameters={"split": "test"})
    assert err is None, err
    from ovseg import testlog

    assert [e["command"] for e in testlog.entries(log)] == ['notebook notebooks/logs.ipynb {"split": "test"}']
    import os

    assert "OVSEG_NOTEBOOK" not in os.environ  # set for the kernel only while it runs
