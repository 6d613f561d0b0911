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

__all__ = ["log_path", "record", "entries", "consultations", "is_shipped_test_split"]

_DEFAULT = DATA_DIR / "mini_world" / "TEST_LOG.jsonl"
# what makes two consultations the same one (the date and the command line may differ)
_KEY_FIELDS = ("task", "split", "models", "protocol", "n", "headline")


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


def record(task: str, models: dict[str, str], protocol: str, n: int, headline: dict[str, Any],
           split: str = "test", command: Sequence[str] | str | None = None,
           path: str | os.PathLike | None = None) -> bool:
    """Log one test-split consultation; returns False when an identical result was logged before (nothing written).

    Args:
        task: ``semantic``, ``referring``, ``masks``, ``edits``, ``limitations:<experiment>``, ...
        models: registry name -> checksum (16 hex digits) of every model that produced the numbers.
        protocol: hash of the protocol (the evaluation settings that determine the numbers).
        n: items evaluated (images, prompts or edits).
        headline: the numbers, each ``{"value", "ci95", "n", "unit"}`` (:meth:`ovseg.stats.Interval.to_dict`).
        split: the :data:`ovseg.world.EVAL_SPLITS` task/split the items came from, e.g. ``"scenes/test"``.
        command: what was run (default: this process's command line).
    """
    import fcntl
    import sys

    p = Path(path) if path is not None else log_path()
    if isinstance(command, (list, tuple)):
        command = " ".join(command)
    entry = {"date": _dt.date.today().isoformat(), "task": task, "split": split, "models": dict(sorted(models.items())),
             "protocol": protocol, "n": int(n), "headline": headline,
             "command": command if command is not None else " ".join(["ovseg" if i == 0 else a
                                                                      for i, a in enumerate(sys.argv)])}
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


def consultations(models: dict[str, str] | None = None, path: str | os.PathLike | None = None) -> dict[str, int]:
    """Lines per task, for the lines whose models include every ``name: checksum`` of ``models`` (all lines: None)."""
    counts: dict[str, int] = {}
    for e in entries(path):
        if models is None or all(e["models"].get(k) == v for k, v in models.items()):
            counts[e["task"]] = counts.get(e["task"], 0) + 1
    return counts
