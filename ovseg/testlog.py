"""The test-set access log: every evaluation on a mini-world ``test`` split leaves one line (issue #18).

``data/mini_world/TEST_LOG.jsonl`` is committed. A line records the date, the task, the split's seed range, the
models (registry name -> first 16 hex digits of the pinned sha256), the protocol hash, ``n`` and the headline
numbers with their 95% intervals, and the command. A reader can count how often the test split was consulted for
a shipped model (:func:`consultations`), and every number the README or a model card reports from a test split is
in it (tested).

One line per *distinct* result: a rerun with the same models and protocol that reproduces a logged result exactly
reveals nothing new and appends nothing, so regenerating the figures leaves the log (and ``git status``) unchanged.
Any other result (new numbers, models, protocol or sample size) is a new consultation and is appended. The file
is appended under an exclusive lock and never through a symbolic link. ``OVSEG_TEST_LOG`` names another file
(the test suite sets it, so tests never write the committed log).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .paths import DATA_DIR

__all__ = ["log_path", "record", "record_experiment", "interval", "entries", "consultations", "is_shipped_test_split",
           "latest", "quoted_table", "shipped_models", "card_section", "write_card_section", "QUOTED", "CARD_TASKS"]

_DEFAULT = DATA_DIR / "mini_world" / "TEST_LOG.jsonl"
# what makes two consultations the same one (the date and the command line may differ)
_KEY_FIELDS = ("task", "split", "models", "protocol", "n", "headline", "method")


def log_path() -> Path:
    """The log file: ``$OVSEG_TEST_LOG`` if set, else ``data/mini_world/TEST_LOG.jsonl``."""
    env = os.environ.get("OVSEG_TEST_LOG")
    return Path(env) if env else _DEFAULT


def is_shipped_test_split(dataset: Any) -> bool:
    """True for the mini world's shipped test split (``load_dataset("mini", split="test")``)."""
    try:
        return dataset.name == "mini" and Path(dataset.root).resolve() == (DATA_DIR / "mini_world" / "test").resolve()
    except (AttributeError, OSError, TypeError):
        return False


def entries(path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Every line of the log (an absent log has none)."""
    p = Path(path) if path is not None else log_path()
    if not p.is_file():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def _key(entry: dict[str, Any]) -> str:
    return json.dumps({k: entry.get(k) for k in _KEY_FIELDS}, sort_keys=True)


def _default_command() -> str:
    """What this process runs, as a reader would type it: ``notebook notebooks/<name>.ipynb {parameters}`` inside a
    kernel started by :func:`ovseg.nbrun.execute_notebook` (which sets ``OVSEG_NOTEBOOK``), ``python <script> ...``
    for a script, ``python -m <package> ...`` for a module, else the program's name and arguments."""
    import shlex
    import sys

    if "ipykernel" in sys.modules:
        return f"notebook {os.environ['OVSEG_NOTEBOOK']}" if os.environ.get("OVSEG_NOTEBOOK") else "a Jupyter notebook"
    argv = list(sys.argv) or [""]
    prog, args = Path(argv[0]), [shlex.quote(a) for a in argv[1:]]
    if prog.name == "__main__.py":
        head = ["python", "-m", prog.parent.name]
    elif prog.suffix == ".py":
        from .paths import REPO_ROOT

        try:
            shown = prog.resolve().relative_to(REPO_ROOT.resolve()).as_posix()
        except ValueError:
            shown = prog.as_posix()
        head = ["python", shown]
    else:
        head = [prog.name or "python"]
    return " ".join(head + args)


def record(task: str, models: dict[str, str], protocol: str, n: int, headline: dict[str, Any],
           split: str = "test", command: Sequence[str] | str | None = None,
           path: str | os.PathLike | None = None, method: str | None = None) -> bool:
    """Log one test-split consultation; returns False when an identical result was logged before (nothing written).

    Args:
        task: ``semantic``, ``referring``, ``masks``, ``edits``, ``limitations:<experiment>``, ...
        models: registry name -> checksum (16 hex digits) of every model that produced the numbers.
        protocol: hash of the protocol (the evaluation settings that determine the numbers).
        n: items evaluated (images, prompts or edits).
        headline: the numbers, each ``{"value", "ci95", "n", "unit"}`` (:meth:`ovseg.stats.Interval.to_dict`).
        split: the :data:`ovseg.world.EVAL_SPLITS` task/split the items came from, e.g. ``"scenes/test"``.
        command: what was run (default: this process's command line).
        method: the segmentation method, for semantic evaluations (``ovseg`` or a baseline).
    """
    import fcntl

    p = Path(path) if path is not None else log_path()
    if isinstance(command, (list, tuple)):
        command = " ".join(command)
    entry = {"date": _dt.date.today().isoformat(), "task": task, "split": split, "models": dict(sorted(models.items())),
             "protocol": protocol, "n": int(n), "headline": headline, **({"method": method} if method else {}),
             "command": command if command is not None else _default_command()}
    entry = json.loads(json.dumps(entry))  # plain JSON types, so that the key compares equal to a read-back line
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        import errno

        from .errors import InputError

        why = "it is a symbolic link, which ovseg never writes through" if err.errno == errno.ELOOP else err.strerror
        raise InputError("the test-set log must be a regular file ovseg can append to", f"{p}: {why}",
                         "restore data/mini_world/TEST_LOG.jsonl from git (or set OVSEG_TEST_LOG)") from None
    with os.fdopen(fd, "r+", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.seek(0)
        seen = {_key(json.loads(line)) for line in fh.read().splitlines() if line.strip()}
        if _key(entry) in seen:
            return False
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return True


def interval(value: float, lo: float, hi: float, n: int, unit: str) -> dict[str, Any]:
    """One headline number for :func:`record`: ``{"value", "ci95": [lo, hi], "n", "unit"}`` (4 decimals)."""
    return {"value": round(float(value), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)], "n": int(n),
            "unit": unit}


def record_experiment(task: str, config: Any, n: int, headline: dict[str, Any], protocol: dict[str, Any],
                      split: str, stages: Sequence[str] = ("sam2", "clip"),
                      extra_models: dict[str, str] | None = None) -> bool:
    """:func:`record` for a notebook experiment run on a mini-world test split: the models of ``stages`` from
    ``config`` (:func:`ovseg.evaluate.models_identity`) and ``extra_models`` (weights no stage names, e.g. the video
    tracker's), the protocol hash of ``protocol`` (the experiment's parameters) with the pipeline settings. Does
    nothing (returns False) unless the profile is ``mini`` and ``split`` (``"<task>/<split>"`` of
    :data:`ovseg.world.EVAL_SPLITS`) ends in ``/test``."""
    import hashlib

    from .evaluate import models_identity

    if not split.endswith("/test") or getattr(config, "profile", None) != "mini":
        return False
    doc = {"task": task, "split": split, "pipeline": config.to_dict(), **protocol}
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return record(task, {**models_identity(config, stages), **(extra_models or {})}, digest, n, headline, split=split)


def consultations(models: dict[str, str] | None = None, path: str | os.PathLike | None = None) -> dict[str, int]:
    """Lines per task, for the lines whose models include every ``name: checksum`` of ``models`` (all lines: None)."""
    counts: dict[str, int] = {}
    for e in entries(path):
        if models is None or all(e["models"].get(k) == v for k, v in models.items()):
            counts[e["task"]] = counts.get(e["task"], 0) + 1
    return counts


# ---- what the README and the model cards quote ---------------------------------------------------------------

#: The headline numbers quoted from the log: task -> [(key in the line's headline, label, scale)].
QUOTED: dict[str, list[tuple[str, str, float]]] = {
    "semantic": [("mIoU", "semantic mIoU, all classes (%)", 100), ("mIoU_base", "semantic mIoU, base classes (%)", 100),
                 ("mIoU_novel", "semantic mIoU, novel classes (%)", 100),
                 ("novel_minus_base", "novel - base mIoU (points, paired)", 100)],
    "referring": [("mean_iou_base", "referring top-1 mask IoU, base", 1),
                  ("mean_iou_novel", "referring top-1 mask IoU, novel", 1),
                  ("hit_rate", "referring top-1 IoU >= 0.5 rate", 1)],
    "masks": [("recall", "SAM 2 object recall at IoU >= 0.5 (mini thresholds)", 1)],
    "edits": [("success_remove", "edit success: remove (%)", 100),
              ("success_replace_base", "edit success: replace, base class (%)", 100),
              ("success_replace_novel", "edit success: replace, novel class (%)", 100),
              ("success_style", "edit success: restyle (%)", 100)],
    "video": [("jf", "text-prompted video J&F (mini-video)", 1), ("late_found", "late objects found within K frames", 1),
              ("id_switches_per_10_clips", "id switches per 10 clips", 1)],
}


def latest(task: str, models: dict[str, str], path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The logged line of ``task`` for exactly ``models`` with the largest n (the last of those), or None."""
    hits = [(e["n"], i, e) for i, e in enumerate(entries(path))
            if e["task"] == task and e["models"] == dict(sorted(models.items()))]
    return max(hits, key=lambda h: h[:2])[2] if hits else None


def quoted_table(shipped: dict[str, dict[str, str]], path: str | os.PathLike | None = None) -> str:
    """Markdown table of the :data:`QUOTED` numbers of the latest logged line per task for the ``shipped`` models
    (task -> models identity), each ``value [95% interval]`` with its n; the README embeds it verbatim (tested)."""
    lines = ["| test split (logged) | value [95% interval] | n | logged |", "|---|---|---|---|"]
    for task, keys in QUOTED.items():
        e = latest(task, shipped[task], path)
        if e is None:
            continue
        for label, value, iv in _quoted(e, keys):
            lines.append(f"| {label} | {value} | {iv['n']} {iv['unit']} | {e['date']}, protocol {e['protocol']} |")
    return "\n".join(lines)


def _quoted(entry: dict[str, Any], keys: Sequence[tuple[str, str, float]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, ``"value [lo, hi]"`` scaled and rounded, interval record) of each :data:`QUOTED` key a line has."""
    out = []
    for key, label, scale in keys:
        iv = entry["headline"].get(key)
        if not iv or iv.get("value") is None:
            continue
        d = 1 if scale == 100 else 3
        lo, hi = iv["ci95"]
        out.append((label, f"{iv['value'] * scale:.{d}f} [{lo * scale:.{d}f}, {hi * scale:.{d}f}]", iv))
    return out


#: Where each embedded model's card quotes the log: the tasks whose numbers it reports.
CARD_TASKS: dict[str, tuple[str, ...]] = {"mini-sam2": ("masks",), "mini-clip": ("semantic", "referring"),
                                          "mini-inpainting": ("edits",), "mini-clip-contrastive": ("semantic",),
                                          "mini-sam2-video": ("video",)}
CARD_HEADING = "## Test split (data/mini_world/test, logged in data/mini_world/TEST_LOG.jsonl)"


def card_section(name: str, folder: str | os.PathLike, path: str | os.PathLike | None = None) -> str:
    """The *Test split* section of model ``name``'s card (markdown, from :data:`CARD_HEADING` on): for each task of
    :data:`CARD_TASKS`, the :data:`QUOTED` numbers of the logged line with the largest n among those whose models
    include this folder's weights (:func:`ovseg.evaluate.folder_identity`), or, for a model never evaluated on the
    test split (a fresh export), the command that does it. Trainers write it on export (:func:`write_card_section`)."""
    from .evaluate import folder_identity
    from .weights import REGISTRY

    checksum = folder_identity(Path(folder), REGISTRY[name].files)
    lines = [CARD_HEADING, ""]
    for task in CARD_TASKS[name]:
        hits = [(e["n"], i, e) for i, e in enumerate(entries(path)) if e["task"] == task
                and e["models"].get(name) == checksum]
        if not hits:
            from .edit_eval import SHIPPED_TEST_EDITS_N

            cmd = {"edits": f"mini --task edits --split test --max-images {SHIPPED_TEST_EDITS_N}",
                   "video": "mini-video --task video --split test"}.get(task, f"mini --task {task} --split test")
            lines.append(f"- {task}: not evaluated on the test split with these weights ({checksum}) yet: "
                         f"`ovseg evaluate --dataset {cmd} --out OUT`")
            continue
        e = max(hits, key=lambda h: h[:2])[2]
        for label, value, iv in _quoted(e, QUOTED[task]):
            lines.append(f"- {label}: {value}, n = {iv['n']} {iv['unit']} (logged {e['date']}, protocol "
                         f"{e['protocol']}, models {', '.join(f'{k} {v}' for k, v in sorted(e['models'].items()))})")
    return "\n".join(lines) + "\n"


def write_card_section(name: str, folder: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Replace (or append) the *Test split* section of ``folder/MODEL_CARD.md`` with :func:`card_section`; the rest
    of the card is kept. Written atomically."""
    from .io import write_text_atomic

    card = Path(folder) / "MODEL_CARD.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    head, sep, rest = text.partition(CARD_HEADING)
    tail = ""
    if sep:
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1:] if nxt >= 0 else ""
    body = head.rstrip("\n") + "\n\n" + card_section(name, folder, path) + ("\n" + tail if tail else "")
    write_text_atomic(card, body)
    return card


def shipped_models() -> dict[str, dict[str, str]]:
    """task -> the identity (:func:`ovseg.evaluate.models_identity`) of the mini models each task runs."""
    from .config import get_balanced_config
    from .evaluate import models_identity
    from .video_eval import video_models_identity

    cfg = get_balanced_config()
    return {"semantic": models_identity(cfg), "referring": models_identity(cfg),
            "masks": models_identity(cfg, ("sam2",)), "edits": models_identity(cfg, ("sam2", "clip", "inpainting")),
            "video": video_models_identity(cfg)}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ovseg.testlog``: the README's table of logged test numbers; ``--counts``: consultations per task."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m ovseg.testlog", description=main.__doc__)
    p.add_argument("--counts", action="store_true", help="lines per task for the shipped models")
    p.add_argument("--cards", action="store_true", help="rewrite the Test split section of each embedded model's card")
    args = p.parse_args(argv)
    if args.cards:
        from .paths import REPO_ROOT
        from .weights import REGISTRY

        for name in CARD_TASKS:
            print(f"-> {write_card_section(name, REPO_ROOT / REGISTRY[name].local_dir)}")
        return 0
    shipped = shipped_models()
    if args.counts:
        for task, models in shipped.items():
            print(f"{task:10} {consultations(models).get(task, 0)} consultation(s) for {models}")
        return 0
    print(quoted_table(shipped))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
