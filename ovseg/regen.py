"""Regenerate every figure and table from the chapter notebooks, and check that nothing drifted.

``python -m ovseg.regen run`` (what ``nox -s figures`` calls) executes each notebook in
``notebooks/`` headlessly with papermill in a fresh kernel, with the parameters of
``notebooks/figures.yaml`` (plus ``out_dir``), into a staging folder; executed copies go to
``build/notebooks/``. Only when every notebook succeeded does the staging folder replace
``figures/`` (so a failing run never leaves a half-regenerated ``figures/``). Then the manifest is
checked: every file listed, with its sha256, and produced by a notebook.

``python -m ovseg.regen check`` regenerates into a temporary folder and compares with the committed
``figures/`` within :data:`TOLERANCE` (tables cell by cell, figures by pixels); ``--only`` limits it
to some notebooks.

``python -m ovseg.regen clean`` strips notebooks for review (outputs, execution counts, widget
state), keeping the outputs of cells marked ``# NBVAL_CHECK_OUTPUT``: those are what ``nbval`` compares.
``python -m ovseg.regen bless`` re-executes notebooks with their default parameters and stores the
outputs of those marked cells (run it after an intended change of a printed number).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, OvsegError
from .paths import FIGURES_DIR, REPO_ROOT

__all__ = ["NOTEBOOKS_DIR", "TOLERANCE", "RunSpec", "run_spec", "list_notebooks", "figure_parameters", "run_notebooks",
           "regenerate",
           "check_manifest", "compare_outputs", "clean_notebook", "is_clean", "CHECK_MARK"]

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
BUILD_DIR = REPO_ROOT / "build" / "notebooks"
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"

#: Drift tolerance of ``check``: numeric table cells (a number, or an interval such as ``[0.41, 0.55]``) may
#: differ by ``table_atol`` (absolute; thread scheduling and the CPU model move float sums in the last bits) or by
#: one unit of their last printed decimal, whichever is larger (a value on a rounding boundary, e.g. 6.65 printed
#: with one decimal, flips between 6.6 and 6.7 on float noise); other text cells must be equal.
#: A PNG may differ by at most ``png_mean_abs`` grey levels on average and in at most
#: ``png_frac_changed`` of its pixels by more than ``png_pixel_tol`` levels (antialiasing, not content).
TOLERANCE = {"table_atol": 2e-3, "png_mean_abs": 1.0, "png_pixel_tol": 32, "png_frac_changed": 0.005}

_IGNORED = {"MANIFEST.json", "MANIFEST.lock"}


def list_notebooks(names: Sequence[str] | None = None) -> list[Path]:
    """The chapter notebooks in run order (file name order), or the ones named (stem or prefix)."""
    found = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    if not names:
        return found
    out = []
    for name in names:
        hits = [p for p in found if p.stem == name] or [p for p in found if p.stem.startswith(name)]
        if not hits:
            raise InputError("a notebook name must match a notebook in notebooks/", name,
                             "use one of: " + ", ".join(p.stem for p in found))
        out += [h for h in hits if h not in out]
    return out


@dataclass(frozen=True)
class RunSpec:
    """How ``run`` executes one notebook (``notebooks/figures.yaml``: ``defaults`` and one entry per notebook)."""

    parameters: dict[str, Any] = field(default_factory=dict)  # papermill parameters on top of out_dir
    timeout: float = 1800.0  # seconds one cell may run; past it the run stops naming the cell
    stall: float = 120.0  # seconds the kernel may sit idle (no output, no CPU) while a cell is pending -> retry once


_SPEC_KEYS = {"parameters", "timeout", "stall"}


def _spec_table() -> dict[str, Any]:
    import yaml

    path = NOTEBOOKS_DIR / "figures.yaml"
    table = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    unknown = set(table) - {"defaults", "notebooks"}
    if unknown:
        raise InputError("notebooks/figures.yaml has two sections, defaults and notebooks", sorted(unknown),
                         "move per-notebook entries under notebooks:")
    return table


def _check_spec(where: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or set(entry) - _SPEC_KEYS:
        raise InputError(f"an entry of notebooks/figures.yaml may only set {sorted(_SPEC_KEYS)}", f"{where}: {entry!r}",
                         "put papermill parameters under parameters:")
    for key in ("timeout", "stall"):
        if key in entry and not (isinstance(entry[key], (int, float)) and entry[key] > 0):
            raise InputError(f"{key} in notebooks/figures.yaml must be a positive number of seconds",
                             f"{where}.{key}: {entry[key]!r}", f"e.g. {key}: 600")
    return entry


def run_spec(notebook: Path) -> RunSpec:
    """The :class:`RunSpec` of a notebook: ``figures.yaml``'s ``defaults`` overridden by its own entry."""
    table = _spec_table()
    defaults = _check_spec("defaults", table.get("defaults") or {})
    own = _check_spec(notebook.stem, (table.get("notebooks") or {}).get(notebook.stem) or {})
    merged = {**defaults, **own, "parameters": {**(defaults.get("parameters") or {}), **(own.get("parameters") or {})}}
    return RunSpec(**merged)


def figure_parameters(notebook: Path) -> dict[str, Any]:
    """The papermill parameters ``figures/`` is made with (``notebooks/figures.yaml``), without ``out_dir``."""
    return dict(run_spec(notebook).parameters)


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def run_notebooks(notebooks: Sequence[Path], out_dir: Path, build_dir: Path = BUILD_DIR,
                  parameters: dict[str, dict[str, Any]] | None = None, log: Any = print,
                  specs: dict[str, RunSpec] | None = None) -> dict[str, float]:
    """Execute ``notebooks`` with papermill (fresh ``python3`` kernel each) writing outputs into ``out_dir``.

    Each cell runs under the notebook's timeout; a stall (kernel idle while the client waits, see
    :mod:`ovseg.nbrun`) is retried once in a fresh kernel. ``log`` receives one line per cell
    (``cell i/N (title)`` and the elapsed time) and a table of notebook times at the end.

    Returns seconds per notebook (by stem). Raises :class:`OvsegError` naming the notebook, the cell and
    what to do when one fails, times out or stalls twice.
    """
    from .nbrun import NotebookFailed, NotebookStall, NotebookTimeout, execute_notebook

    build_dir.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    rows: list[tuple[str, int, float, str]] = []
    for nb in notebooks:
        spec = (specs or {}).get(nb.stem) or run_spec(nb)
        params = {**spec.parameters, **((parameters or {}).get(nb.stem) or {}), "out_dir": str(out_dir)}
        dest = build_dir / nb.name
        shown = {k: v for k, v in params.items() if k != "out_dir"}
        log(f"[regen] {nb.stem} {json.dumps(shown) if shown else ''}".rstrip())
        t0 = time.perf_counter()
        n_cells = 0
        for attempt in (1, 2):
            def progress(i: int, n: int, title: str, still: bool = False, _nb: str = nb.stem, _t0: float = t0) -> None:
                nonlocal n_cells
                n_cells = n
                log(f"[regen]   {_nb} cell {i}/{n} ({title}) {_clock(time.perf_counter() - _t0)}"
                    + (" still running" if still else ""))

            try:
                execute_notebook(nb, dest, params, NOTEBOOKS_DIR, spec.timeout, spec.stall, progress=progress)
                break
            except NotebookStall as stall:
                if attempt == 1:
                    log(f"[regen]   {nb.stem} stalled: {stall}; retrying once in a fresh kernel")
                    continue
                raise OvsegError(f"every notebook must run to its end: {nb.name} stalled twice", str(stall),
                                 f"rerun `python3 scripts/nox.py -s figures -- {nb.stem}`; if it stalls again, raise "
                                 f"stall for {nb.stem} in notebooks/figures.yaml or report it with {dest}") from None
            except NotebookTimeout as err:
                raise OvsegError(f"every cell must finish within its timeout ({spec.timeout:.0f} s for {nb.stem})",
                                 str(err), f"raise timeout for {nb.stem} in notebooks/figures.yaml if the machine is "
                                 f"just slow; the executed copy is {dest}") from None
            except NotebookFailed as err:
                raise OvsegError(f"every notebook must execute: {nb.name} failed", str(err),
                                 f"open the executed copy {dest} to see the traceback") from None
        times[nb.stem] = round(time.perf_counter() - t0, 1)
        rows.append((nb.stem, n_cells, times[nb.stem], "retried after a stall" if attempt == 2 else ""))
        log(f"[regen]   {nb.stem} done in {_clock(times[nb.stem])}")
    if rows:
        width = max(len(r[0]) for r in rows)
        log(f"[regen] {'notebook':{width}}  cells      time")
        for stem, n, secs, note in rows:
            log(f"[regen] {stem:{width}}  {n:5d}  {_clock(secs):>8}  {note}".rstrip())
        log(f"[regen] {'total':{width}}         {_clock(sum(r[2] for r in rows)):>8}")
    return times


#: Staging folders of ``run`` are ``<figures parent>/.figures-*``; each holds its owner's pid here.
_OWNER = ".owner-pid"


def _remove_stale_stages(parent: Path) -> list[Path]:
    """Delete ``.figures-*`` staging folders left by runs that were killed (their owner process is gone)."""
    import psutil

    removed = []
    for stage in parent.glob(".figures-*"):
        if not stage.is_dir() or stage.is_symlink():
            continue
        try:
            pid = int((stage / _OWNER).read_text())
        except (OSError, ValueError):
            pid = None
        if pid is not None and pid != os.getpid() and psutil.pid_exists(pid):
            continue  # another run is using it
        shutil.rmtree(stage, ignore_errors=True)
        removed.append(stage)
    return removed


def _keep_unchanged_records(stage: Path, reference: Path) -> int:
    """Keep the reference's file and manifest record for every staged output that reproduces it, so that a run that
    reproduces the committed outputs leaves ``figures/`` and MANIFEST.json unchanged (``git status`` clean).

    Outputs are grouped by name stem (a figure's PNG + PDF, a table's CSV + Markdown + LaTeX), made by the same
    notebook, cell, parameters and profile. A group reproduces the reference when every file is byte-identical, or
    when its PNG / CSV is within :data:`TOLERANCE` of the reference's (the drift check's own rule: thread scheduling
    moves float sums in the last bits; a PDF is a rendering of the same Figure as its PNG, Markdown / LaTeX of the
    same rows as the CSV). Then the reference's bytes replace the staged ones and its record (git revision,
    versions) is kept. Returns the number of files kept.
    """
    from .io import write_bytes_atomic, write_json_atomic

    old, new = _manifest(reference), _manifest(stage)
    same = ("notebook", "cell", "parameters", "profile")
    groups: dict[str, list[str]] = {}
    for rel in new:
        groups.setdefault(rel.rsplit(".", 1)[0], []).append(rel)
    kept = 0
    for members in groups.values():
        prevs = [old.get(rel) for rel in members]
        if any(p is None or any(p.get(k) != new[rel].get(k) for k in same) for p, rel in zip(prevs, members)):
            continue
        if not all((reference / rel).is_file() for rel in members):
            continue
        identical = all(p["sha256"] == new[rel]["sha256"] for p, rel in zip(prevs, members))
        if not identical:
            anchors = [rel for rel in members if rel.endswith((".png", ".csv"))]
            if not anchors or any(
                    (compare_images if rel.endswith(".png") else compare_tables)(reference / rel, stage / rel)
                    for rel in anchors):
                continue
        for p, rel in zip(prevs, members):
            if p["sha256"] != new[rel]["sha256"]:
                write_bytes_atomic(stage / rel, (reference / rel).read_bytes())
            new[rel] = p
            kept += 1
    if kept:
        write_json_atomic(stage / "MANIFEST.json", {"files": dict(sorted(new.items()))})
    return kept


def regenerate(names: Sequence[str] | None = None, figures_dir: Path = FIGURES_DIR, log: Any = print) -> dict[str, float]:
    """Run the notebooks into a staging folder, then replace ``figures_dir`` with it (all or nothing).

    With ``names`` only those notebooks run, and only their files (by manifest record) are replaced: the stage
    is completed with the other files and swapped in whole (:func:`_swap_in`), so ``figures_dir`` always matches its
    manifest. Outputs that reproduce the current ones (:func:`_keep_unchanged_records`) are kept with their manifest
    records. Staging folders of killed runs are removed first.
    """
    notebooks = list_notebooks(names)
    specs = {nb.stem: run_spec(nb) for nb in notebooks}  # a bad figures.yaml fails before anything runs
    figures_dir = Path(figures_dir)
    figures_dir.parent.mkdir(parents=True, exist_ok=True)
    if _recover(figures_dir):
        log(f"[regen] restored {figures_dir.name}/ from {figures_dir.name}.old (an interrupted run)")
    for stale in _remove_stale_stages(figures_dir.parent):
        log(f"[regen] removed {stale.name}, left by an interrupted run")
    stage = Path(tempfile.mkdtemp(prefix=".figures-", dir=figures_dir.parent))
    try:
        (stage / _OWNER).write_text(str(os.getpid()))
        t0 = time.perf_counter()
        times = run_notebooks(notebooks, stage, log=log, specs=specs)
        times["total"] = round(time.perf_counter() - t0, 1)
        (stage / "MANIFEST.lock").unlink(missing_ok=True)
        (stage / _OWNER).unlink(missing_ok=True)
        kept = _keep_unchanged_records(stage, figures_dir)
        log(f"[regen] {kept} of {len(_manifest(stage))} outputs reproduce figures/ (identical, or within the drift "
            "tolerance): kept as they are")
        if names:  # the other notebooks' files join the staged ones: figures/ is swapped whole, never patched
            _complete_stage(stage, figures_dir, {f"notebooks/{nb.name}" for nb in notebooks})
        _swap_in(stage, figures_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    problems = check_manifest(figures_dir)
    if problems:
        raise OvsegError("every file in figures/ must be in MANIFEST.json with its sha256, made by a notebook",
                         "; ".join(problems[:5]), "rerun `python3 scripts/nox.py -s figures` (all notebooks)")
    return times


def _complete_stage(stage: Path, figures_dir: Path, notebooks: set[str]) -> None:
    """Copy into ``stage`` the files of ``figures_dir`` that other notebooks made (by manifest record) and merge the
    manifests, so that the stage is the whole new ``figures/``: a run of some notebooks replaces exactly their files.
    Files in no record are not carried over (as in a full run: ``figures/`` holds only what its manifest lists)."""
    from .io import write_json_atomic

    files = {rel: rec for rel, rec in _manifest(figures_dir).items() if rec.get("notebook") not in notebooks}
    for rel in files:
        src = figures_dir / rel
        if src.is_file() and not src.is_symlink() and not (stage / rel).exists():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, stage / rel)
    files.update(_manifest(stage))
    write_json_atomic(stage / "MANIFEST.json", {"files": dict(sorted(files.items()))})


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    ok = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    return ok


def _swap_in(stage: Path, figures_dir: Path) -> None:
    """Make ``stage`` the new ``figures_dir``; the old content ends up at ``stage`` (removed by the caller).

    Atomic where the kernel can exchange two directories; elsewhere two renames through ``<figures>.old``, which
    :func:`_recover` puts back if a run died between them.
    """
    if figures_dir.is_dir() and not figures_dir.is_symlink() and _exchange(stage, figures_dir):
        return
    old = figures_dir.with_name(figures_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if figures_dir.exists() or figures_dir.is_symlink():
        figures_dir.rename(old)
    stage.rename(figures_dir)
    if old.exists():
        old.rename(stage)


def _recover(figures_dir: Path) -> bool:
    """Put ``<figures>.old`` back when a run died between the two renames of :func:`_swap_in`."""
    old = figures_dir.with_name(figures_dir.name + ".old")
    if not figures_dir.exists() and old.is_dir():
        old.rename(figures_dir)
        return True
    return False


def _manifest(root: Path) -> dict[str, dict[str, Any]]:
    path = Path(root) / "MANIFEST.json"
    return json.loads(path.read_text())["files"] if path.exists() else {}


def check_manifest(root: Path = FIGURES_DIR) -> list[str]:
    """Problems with ``root``'s manifest: unlisted files, missing files, wrong sha256, no producing notebook."""
    root = Path(root)
    files = _manifest(root)
    problems = []
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name not in _IGNORED}
    for rel in sorted(on_disk - set(files)):
        problems.append(f"{rel}: not in the manifest")
    for rel, rec in files.items():
        p = root / rel
        if not p.is_file():
            problems.append(f"{rel}: listed but missing")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != rec.get("sha256"):
            problems.append(f"{rel}: sha256 differs from the manifest")
        if not str(rec.get("notebook") or "").startswith("notebooks/"):
            problems.append(f"{rel}: not produced by a notebook ({rec.get('notebook')!r})")
    return problems


def _read_csv(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text())))


def _num(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf|nan"
_INTERVAL = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")


def _numbers(s: str) -> list[tuple[float, float]] | None:
    """(value, unit of its last printed decimal) of a numeric cell: a number or a ``[low, high]`` interval; None
    for other text. ``"6.7"`` -> [(6.7, 0.1)]; ``"[0.41, 0.55]"`` -> [(0.41, 0.01), (0.55, 0.01)]; an integer such
    as a count ``"200"`` -> [(200.0, 0.0)] (no rounding slack)."""
    s = s.strip()
    m = _INTERVAL.fullmatch(s)
    parts = [m.group(1), m.group(2)] if m else [s]
    out = []
    for p in parts:
        v = _num(p)
        if v is None:
            return None
        mantissa = p.lower().split("e")[0]
        if "." not in mantissa:  # an integer (a count such as n): no rounding slack
            out.append((v, 0.0))
            continue
        exponent = int(p.lower().split("e")[1]) if "e" in p.lower() else 0
        out.append((v, 10.0 ** (exponent - len(mantissa.split(".")[1]))))
    return out


def _close(u: str, v: str, atol: float) -> bool | None:
    """Whether two numeric cells agree within the drift tolerance (see :data:`TOLERANCE`); None when either is
    not numeric."""
    nu, nv = _numbers(u), _numbers(v)
    if nu is None or nv is None or len(nu) != len(nv):
        return None
    for (x, ux), (y, uy) in zip(nu, nv):
        if math.isnan(x) or math.isnan(y) or math.isinf(x) or math.isinf(y):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
            continue
        if abs(x - y) > max(atol, ux, uy) * (1 + 1e-9):
            return False
    return True


def compare_tables(a: Path, b: Path, atol: float = TOLERANCE["table_atol"]) -> list[str]:
    """Cell-by-cell differences between two CSV tables beyond the tolerance of :data:`TOLERANCE` (numbers and
    intervals: ``atol`` or one unit of the last printed decimal) or at all (other text)."""
    ra, rb = _read_csv(a), _read_csv(b)
    if len(ra) != len(rb):
        return [f"{a.name}: {len(ra)} rows vs {len(rb)}"]
    out = []
    for i, (x, y) in enumerate(zip(ra, rb)):
        if len(x) != len(y):
            out.append(f"{a.name} row {i}: {len(x)} cells vs {len(y)}")
            continue
        for j, (u, v) in enumerate(zip(x, y)):
            close = _close(u, v, atol)
            if close is not None:
                if not close:
                    out.append(f"{a.name} row {i} col {j}: {u} vs {v}")
            elif u != v:
                out.append(f"{a.name} row {i} col {j}: {u!r} vs {v!r}")
    return out


def compare_images(a: Path, b: Path, tol: dict[str, float] = TOLERANCE) -> list[str]:
    """Differences between two PNGs beyond the pixel tolerance."""
    import numpy as np
    from PIL import Image

    x = np.asarray(Image.open(a).convert("RGBA"), dtype=np.int16)
    y = np.asarray(Image.open(b).convert("RGBA"), dtype=np.int16)
    if x.shape != y.shape:
        return [f"{a.name}: size {x.shape[1]}x{x.shape[0]} vs {y.shape[1]}x{y.shape[0]}"]
    d = np.abs(x - y)
    mean, frac = float(d.mean()), float((d.max(axis=-1) > tol["png_pixel_tol"]).mean())
    if mean > tol["png_mean_abs"] or frac > tol["png_frac_changed"]:
        return [f"{a.name}: mean |diff| {mean:.2f} levels, {100 * frac:.2f}% pixels changed"]
    return []


def compare_outputs(reference: Path, candidate: Path, notebooks: set[str] | None = None) -> list[str]:
    """Drift of ``candidate`` against ``reference`` (both figures folders with manifests), within :data:`TOLERANCE`.

    Tables are compared through their CSV (Markdown / LaTeX are renderings of the same rows), figures
    through their PNG (PDF / SVG are renderings of the same Figure). ``notebooks`` limits the reference
    files to those made by these notebooks (``notebooks/<name>.ipynb``).
    """
    ref, cand = _manifest(reference), _manifest(candidate)
    if notebooks is not None:
        ref = {k: v for k, v in ref.items() if v.get("notebook") in notebooks}
    out = [f"{rel}: no longer produced" for rel in sorted(set(ref) - set(cand))]
    out += [f"{rel}: new output, not in the reference" for rel in sorted(set(cand) - set(ref))]
    for rel in sorted(set(ref) & set(cand)):
        if rel.endswith(".csv"):
            out += compare_tables(Path(reference) / rel, Path(candidate) / rel)
        elif rel.endswith(".png"):
            out += compare_images(Path(reference) / rel, Path(candidate) / rel)
    return out


# ---- notebook hygiene ----------------------------------------------------------------------------
def _keeps_output(cell: dict[str, Any]) -> bool:
    return cell.get("cell_type") == "code" and CHECK_MARK in "".join(cell.get("source", ""))


def clean_notebook(nb: dict[str, Any], keep_checked: bool = True) -> dict[str, Any]:
    """The notebook as committed: no outputs (except marked cells' text outputs), no execution counts,
    no widget state, minimal metadata."""
    nb = json.loads(json.dumps(nb))
    meta = nb.get("metadata", {})
    nb["metadata"] = {k: meta[k] for k in ("kernelspec", "language_info") if k in meta}
    if "language_info" in nb["metadata"]:
        nb["metadata"]["language_info"] = {"name": "python"}
    for cell in nb.get("cells", []):
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = {"tags": tags} if tags else {}
        if cell.get("cell_type") != "code":
            continue
        cell["execution_count"] = None
        if keep_checked and _keeps_output(cell):
            outs = []
            for o in cell.get("outputs", []):
                if o.get("output_type") == "stream":
                    outs.append({"name": o["name"], "output_type": "stream", "text": o["text"]})
                elif o.get("output_type") in ("execute_result", "display_data") and "text/plain" in o.get("data", {}):
                    outs.append({"data": {"text/plain": o["data"]["text/plain"]}, "metadata": {},
                                 "output_type": "execute_result", "execution_count": 1})
            cell["outputs"] = outs
            # nbval treats a cell with outputs but no execution count as an error ("unrun reference cell"):
            # a constant count keeps it checkable without churn between runs
            cell["execution_count"] = 1 if outs else None
        else:
            cell["outputs"] = []
    return nb


def _dump(nb: dict[str, Any]) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def is_clean(path: Path) -> bool:
    """Whether a committed notebook is exactly what :func:`clean_notebook` makes of it."""
    text = Path(path).read_text()
    return text == _dump(clean_notebook(json.loads(text)))


def _clean_file(path: Path, source: dict[str, Any] | None = None) -> bool:
    from .io import write_text_atomic

    text = Path(path).read_text()
    new = _dump(clean_notebook(source if source is not None else json.loads(text)))
    if new != text:
        write_text_atomic(path, new)
        return True
    return False


def bless(notebooks: Sequence[Path], log: Any = print) -> None:
    """Execute with default parameters (a scratch out_dir) and store the marked cells' outputs."""
    import papermill as pm

    with tempfile.TemporaryDirectory() as tmp:
        for nb in notebooks:
            dest = Path(tmp) / nb.name
            log(f"[bless] {nb.name}")
            pm.execute_notebook(str(nb), str(dest), parameters={"out_dir": str(Path(tmp) / "out")}, kernel_name="python3",
                                cwd=str(NOTEBOOKS_DIR), progress_bar=False)
            executed = json.loads(dest.read_text())
            # papermill adds an "injected-parameters" cell: drop it before storing
            executed["cells"] = [c for c in executed["cells"]
                                 if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
            _clean_file(nb, executed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ovseg.regen", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="regenerate figures/ from the notebooks")
    r.add_argument("--only", nargs="*", default=None, help="notebook names or prefixes (default: all)")
    c = sub.add_parser("check", help="regenerate into a temporary folder and compare with figures/")
    c.add_argument("--only", nargs="*", default=None)
    s = sub.add_parser("clean", help="strip notebooks for review (keeps # NBVAL_CHECK_OUTPUT outputs)")
    s.add_argument("--check", action="store_true", help="only report notebooks that are not clean (exit 1)")
    b = sub.add_parser("bless", help="re-execute and store the outputs nbval checks")
    b.add_argument("--only", nargs="*", default=None)
    args = p.parse_args(argv)

    def _terminate(signum: int, frame: Any) -> None:  # SIGTERM unwinds like Ctrl-C: staging folders are removed
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.cmd == "run":
            times = regenerate(args.only)
            print(f"[regen] figures/ regenerated in {times['total']:.1f} s: " + json.dumps(times))
        elif args.cmd == "check":
            notebooks = list_notebooks(args.only)
            with tempfile.TemporaryDirectory() as tmp:
                # a drift check reproduces published numbers, it does not report new ones: its test-split
                # evaluations go to a log in the temporary folder (only `run`, which publishes, writes the committed one)
                os.environ.setdefault("OVSEG_TEST_LOG", str(Path(tmp) / "TEST_LOG.jsonl"))
                out = Path(tmp) / "figures"
                run_notebooks(notebooks, out, build_dir=Path(tmp) / "executed")
                drift = compare_outputs(FIGURES_DIR, out, {f"notebooks/{nb.name}" for nb in notebooks})
            if drift:
                print("[regen] drift beyond tolerance " + json.dumps(TOLERANCE) + ":\n  " + "\n  ".join(drift))
                return 1
            print(f"[regen] no drift in the outputs of {len(notebooks)} notebook(s) (tolerance {json.dumps(TOLERANCE)})")
        elif args.cmd == "clean":
            dirty = [nb for nb in list_notebooks() if not is_clean(nb)]
            if args.check:
                for nb in dirty:
                    print(f"not clean: {nb.relative_to(REPO_ROOT)} (run python -m ovseg.regen clean)")
                return 1 if dirty else 0
            for nb in dirty:
                _clean_file(nb)
                print(f"cleaned {nb.relative_to(REPO_ROOT)}")
        elif args.cmd == "bless":
            # nbval-size runs (the notebooks' small defaults) are not reported numbers: their log stays in build/
            os.environ.setdefault("OVSEG_TEST_LOG", str(REPO_ROOT / "build" / "test-log" / "bless.jsonl"))
            bless(list_notebooks(args.only))
    except OvsegError as exc:
        print(f"ovseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ovseg: interrupted; figures/ is unchanged (outputs are swapped in only when every notebook ran)",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
