"""Saving figures and tables with provenance: the one way results reach ``figures/``.

* :func:`save_figure` writes a matplotlib ``Figure`` as PNG (+ PDF/SVG for print) with fixed DPI,
  fonts and no timestamps, atomically.
* :func:`save_table` writes rows as CSV + Markdown + LaTeX, atomically.
* Every file written is recorded in ``MANIFEST.json`` beside it (path, sha256, the notebook and
  cell that made it, parameters, profile, git revision, library versions, model checksums) by
  :func:`record`, under a lock so that parallel writers do not lose entries.

:func:`set_context` names the producer once (a notebook's first cell does it), so individual
calls only say what is specific to them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .io import write_bytes_atomic, write_json_atomic, write_text_atomic
from .paths import FIGURES_DIR, REPO_ROOT

__all__ = ["set_context", "notebook_setup", "output_root", "save_figure", "save_table", "table_text", "record", "STYLE",
           "provenance"]

#: Matplotlib settings for stable output (Agg, fixed DPI and fonts, no hash salt in SVG).
STYLE = {"figure.dpi": 100, "savefig.dpi": 150, "font.family": "DejaVu Sans", "font.size": 9,
         "svg.hashsalt": "ovseg", "pdf.fonttype": 42, "axes.titlesize": 9}

_CONTEXT: dict[str, Any] = {"notebook": None, "parameters": {}, "profile": None, "root": None}


def set_context(notebook: str | None = None, parameters: dict[str, Any] | None = None, profile: str | None = None,
                root: str | Path | None = None) -> None:
    """Name the producer of the following outputs (e.g. the notebook and its papermill parameters).

    ``root`` (relative paths are anchored at the repository root) becomes the default output folder of
    :func:`save_figure` / :func:`save_table`; ``None`` keeps ``figures/``.
    """
    if root is not None:
        root = Path(root)
        root = root if root.is_absolute() else REPO_ROOT / root
    _CONTEXT.update(notebook=notebook, parameters=dict(parameters or {}), profile=profile, root=root)


def output_root() -> Path:
    """Where :func:`save_figure` / :func:`save_table` write by default (``figures/`` unless :func:`set_context` said)."""
    return Path(_CONTEXT["root"] or FIGURES_DIR)


def notebook_setup(notebook: str, parameters: dict[str, Any], profile: str = "mini", out_dir: str | Path | None = None,
                   seed: int = 0) -> Path:
    """First cell of every chapter notebook: stable matplotlib style, seeds, provenance context.

    Args:
        notebook: the notebook's path relative to the repository root (``notebooks/<name>.ipynb``).
        parameters: the papermill parameters the notebook ran with (recorded with every output).
        profile: ``"mini"`` or ``"full"``.
        out_dir: where figures and tables go (relative to the repository root); ``None`` -> ``figures/``.
        seed: seeds numpy's and torch's global generators.

    Returns:
        The output folder (absolute; created).
    """
    import random

    import matplotlib
    import numpy as np

    matplotlib.rcParams.update(STYLE)
    random.seed(seed)
    np.random.seed(seed)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    set_context(notebook, parameters, profile, out_dir)
    root = output_root()
    root.mkdir(parents=True, exist_ok=True)
    return root


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        rev = out.stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (rev + ("+dirty" if dirty else "")) if rev else None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("ovseg", "torch", "sam2", "open_clip_torch", "diffusers", "matplotlib"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _model_checksums() -> dict[str, str]:
    """sha256 of the embedded model files present (the weights a mini-profile figure came from)."""
    from .weights import REGISTRY, sha256_file

    sums = {}
    for entry in REGISTRY.values():
        if entry.local_dir:
            for f in entry.files:
                p = REPO_ROOT / entry.local_dir / f
                if p.is_file() and p.suffix in (".safetensors", ".json", ".yaml"):
                    sums[f"{entry.local_dir}/{f}"] = sha256_file(p)
    return sums


def provenance(cell: str | None = None, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """What produced an output: notebook, cell, parameters, profile, git revision, versions, model checksums."""
    params = {**_CONTEXT["parameters"], **(parameters or {})}
    return {"notebook": _CONTEXT["notebook"], "cell": cell, "parameters": params, "profile": _CONTEXT["profile"],
            "git_revision": _git_revision(), "versions": _versions(), "model_checksums": _model_checksums()}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record(paths: Sequence[Path], cell: str | None = None, parameters: dict[str, Any] | None = None,
           root: Path | None = None) -> None:
    """Add or replace the manifest records of ``paths`` (files under ``root``, default ``figures/``)."""
    root = Path(root or output_root())
    manifest = root / "MANIFEST.json"
    prov = provenance(cell, parameters)
    with _locked(manifest):
        data = json.loads(manifest.read_text()) if manifest.exists() else {"files": {}}
        for p in paths:
            rel = Path(p).resolve().relative_to(root.resolve()).as_posix()
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            data["files"][rel] = {"path": rel, "sha256": digest, **prov}
        data["files"] = dict(sorted(data["files"].items()))
        write_json_atomic(manifest, data)


def save_figure(fig: Any, name: str, cell: str | None = None, formats: Sequence[str] = ("png", "pdf"),
                parameters: dict[str, Any] | None = None, root: Path | None = None) -> list[Path]:
    """Write ``fig`` as ``<root>/<name>.<fmt>`` for each format (atomic, no timestamps) and record it."""
    import matplotlib

    root = Path(root or output_root())
    paths = []
    with matplotlib.rc_context(STYLE):
        for fmt in formats:
            buf = io.BytesIO()
            metadata = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None},
                        "svg": {"Date": None}}.get(fmt, {})
            fig.savefig(buf, format=fmt, metadata=metadata)
            paths.append(write_bytes_atomic(root / f"{name}.{fmt}", buf.getvalue()))
    record(paths, cell, parameters, root)
    return paths


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _tex(s: str) -> str:
    return (s.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace("&", "\\&")
            .replace("#", "\\#"))


def table_text(rows: Sequence[dict[str, Any]], columns: Sequence[str], digits: int = 3,
               groups: Sequence[tuple[str | None, Sequence[dict[str, Any]]]] | None = None) -> dict[str, str]:
    """CSV, Markdown and LaTeX renderings of ``rows``; ``groups`` adds titled sections (Markdown/LaTeX)."""
    groups = list(groups) if groups is not None else [(None, rows)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for _, grp in groups:
        for r in grp:
            writer.writerow([_cell(r.get(c), digits) for c in columns])
    md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    tex = ["\\begin{tabular}{" + "l" * len(columns) + "}", "\\toprule", " & ".join(_tex(c) for c in columns) + " \\\\",
           "\\midrule"]
    for k, (title, grp) in enumerate(groups):
        if title:
            md.append(f"| *{title}* |" + " |" * (len(columns) - 1))
            if k:
                tex.append("\\midrule")
            tex.append(f"\\multicolumn{{{len(columns)}}}{{l}}{{\\emph{{{_tex(title)}}}}} \\\\")
        md += ["| " + " | ".join(_cell(r.get(c), digits) for c in columns) + " |" for r in grp]
        tex += [" & ".join(_tex(_cell(r.get(c), digits)) for c in columns) + " \\\\" for r in grp]
    tex += ["\\bottomrule", "\\end{tabular}"]
    return {"csv": buf.getvalue(), "md": "\n".join(md) + "\n", "tex": "\n".join(tex) + "\n"}


def save_table(rows: Sequence[dict[str, Any]], name: str, columns: Sequence[str] | None = None, cell: str | None = None,
               digits: int = 3, groups: Sequence[tuple[str | None, Sequence[dict[str, Any]]]] | None = None,
               parameters: dict[str, Any] | None = None, root: Path | None = None, manifest: bool = True) -> list[Path]:
    """Write ``<root>/<name>.csv|md|tex`` atomically (and record them in the manifest)."""
    root = Path(root or output_root())
    columns = list(columns or (rows[0].keys() if rows else []))
    text = table_text(rows, columns, digits, groups)
    paths = [write_text_atomic(root / f"{name}.{ext}", text[ext]) for ext in ("csv", "md", "tex")]
    if manifest:
        record(paths, cell, parameters, root)
    return paths
