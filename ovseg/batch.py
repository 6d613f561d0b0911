"""Batch processing: ``ovseg segment|remove|replace|style INPUT`` where INPUT is a folder, a glob or a ``.txt`` list.

Inputs (:func:`expand_inputs`), in a deterministic order:

* a folder: its image files (suffix ``.png .jpg .jpeg .webp .bmp .tif .tiff .gif``, any case; not hidden, not in
  sub-folders), sorted by name;
* a glob (quote it so that ovseg, not the shell, expands it; ``**`` recurses): every regular file it matches, sorted;
* a ``.txt`` list: one path per line, in the list's order, relative paths resolved against the list file's folder,
  blank lines and lines starting with ``#`` ignored, a path listed twice processed once.

Outputs, in OUT (``--out``; default ``ovseg-out/<folder or list name>-<command>``, ``ovseg-out/batch-<command>``
for a glob):

* ``OUT/<name>/``: the files a single-image run writes (``SegmentationResult.save`` / ``SemanticResult.save``).
  ``<name>`` is the file's stem; inputs whose stems are equal ignoring case (``a.png``, ``A.jpg``, ``x/a.png``), and a
  stem that is ``results.jsonl`` or ``summary.csv``, get ``<stem>-1``, ``<stem>-2``, ... in input order (a number
  already taken by another input's stem is skipped) (:func:`sub_folder_names`). Each sub-folder is written in
  ``OUT/.ovseg-batch/tmp/`` and renamed into place, so it is complete or absent; files in it that ovseg did not
  write are kept. One run at a time writes an OUT (an flock on ``OUT/.ovseg-batch/lock.rank<r>``; a second run
  names the first one's pid); a run cleans up what a killed run left (:func:`_recover`).
* ``OUT/results.jsonl``: one JSON object per input, in input order (:func:`record_line` lists the keys); equal for
  any number of ranks except the measured ``seconds`` and ``timings_s``.
* ``OUT/summary.csv``: ``index,input,name,status,seconds,masks,best_score,classes_found,error``.
* ``OUT/.ovseg-batch/records/<name>.json``: the per-image records both files are merged from (the resume state).

Resume: an image is skipped when its record says ``ok`` for the same input path, the same sha256 of the file's bytes
and the same request hash (:func:`request_hash`: command, prompt / classes, edit, seed, top-k and the effective
config), and its ``OUT/<name>/result.json`` exists. Failed images are tried again.

Sharding: under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) rank r processes inputs ``i % WORLD_SIZE == r``, as
``ovseg evaluate`` does; the ranks meet at a ``torch.distributed`` barrier (gloo) and rank 0 writes the merged files.
With ``RANK`` / ``WORLD_SIZE`` set but no ``MASTER_ADDR`` (shards run one after another, by hand or in a test), each
rank processes its shard and the rank that finds every input recorded writes them.

Exit status: 0 when every image succeeded, 1 when some failed (the last line says ``F of N images failed (see
OUT/results.jsonl)``), 2 for a bad request (one ``ovseg: error:`` line, before any model loads).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import BatchItem

__all__ = ["IMAGE_SUFFIXES", "BatchInputs", "is_batch_input", "expand_inputs", "sub_folder_names", "parse_classes",
           "request_hash", "file_sha256", "record_line", "merge_records", "rank_and_world", "STATE_DIR"]

#: Suffixes of the files a folder INPUT contributes (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: OUT's hidden state folder: per-image records (``records/``), sub-folders being written (``tmp/rank<r>/``), earlier
#: sub-folders being replaced (``trash/rank<r>/``) and each rank's lock (``lock.rank<r>``).
STATE_DIR = ".ovseg-batch"
_RESERVED = ("results.jsonl", "summary.csv")
_GLOB_CHARS = re.compile(r"[*?\[]")
_CSV_FIELDS = ("index", "input", "name", "status", "seconds", "masks", "best_score", "classes_found", "error")


@dataclass
class BatchInputs:
    """The images of a batch INPUT: ``kind`` (``folder``, ``glob`` or ``list``), ``paths`` in processing order and
    ``label``, the name of the default output folder (``ovseg-out/<label>-<command>``)."""

    kind: str
    paths: list[Path]
    label: str


def is_batch_input(spec: str) -> bool:
    """True when INPUT names several images: an existing folder, an existing ``.txt`` file, or a path that does not
    exist and contains a glob character (``*``, ``?``, ``[``). Anything else is a single image (today's behaviour)."""
    path = Path(spec)
    if path.is_dir():
        return True
    if path.suffix.lower() == ".txt" and path.is_file():
        return True
    return not path.exists() and bool(_GLOB_CHARS.search(spec))


def expand_inputs(spec: str) -> BatchInputs:
    """The images INPUT names (see the module docstring for the rules and the order).

    Raises:
        InputError: a folder with no image files, a glob that matches no file, a list that is not UTF-8 text,
            cannot be read or names no path.
    """
    path = Path(spec)
    if path.is_dir():
        try:
            entries = sorted(path.iterdir(), key=lambda p: p.name)
        except OSError as err:
            raise InputError("an INPUT folder must be readable", f"{path}: {err.strerror}",
                             "check its permissions") from None
        images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                  and p.is_file()]
        if not images:
            files = sum(1 for p in entries if p.is_file())
            raise InputError(f"an INPUT folder must hold at least one image file ({' '.join(IMAGE_SUFFIXES)})",
                             f"{path} ({files} file{'s' * (files != 1)}, none an image; sub-folders are not searched)",
                             f"put images in it, or pass a quoted glob such as \"{path}/**/*.png\"")
        return BatchInputs("folder", images, path.resolve().name or "batch")
    if path.suffix.lower() == ".txt" and path.is_file():
        return BatchInputs("list", _read_list(path), path.stem or "batch")
    matches = sorted(glob.glob(spec, recursive=True))
    files = [Path(m) for m in matches if Path(m).is_file()]
    if not files:
        raise InputError("a glob INPUT must match at least one file", f"{spec!r} ({len(matches)} match"
                         f"{'es' * (len(matches) != 1)}, none a file)",
                         "check the pattern (quote it so that ovseg expands it, e.g. \"photos/*.jpg\"; ** recurses)")
    return BatchInputs("glob", files, "batch")


def _read_list(path: Path) -> list[Path]:
    """Paths of a ``.txt`` list (one a line; relative to the list's folder; blank and ``#`` lines skipped)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise InputError("an INPUT list must be readable", f"{path}: {err.strerror}", "check its permissions") from None
    except UnicodeDecodeError as err:
        raise InputError("an INPUT list must be UTF-8 text, one image path a line", f"{path}: byte {err.start} is not "
                         "UTF-8", "save the list as UTF-8 text") from None
    seen: set[str] = set()
    paths = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        p = Path(entry).expanduser()
        if not p.is_absolute():
            p = path.parent / p
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            paths.append(p)
    if not paths:
        raise InputError("an INPUT list must name at least one image path", f"{path} (no path lines)",
                         "write one image path per line (blank lines and # comments are skipped)")
    return paths


def sub_folder_names(paths: Sequence[Path]) -> list[str]:
    """The output sub-folder of each input: its stem, or ``<stem>-<n>`` when several inputs share that stem (compared
    case-insensitively) or the stem is a reserved name (``results.jsonl``, ``summary.csv``); ``n`` counts 1, 2, ... in
    input order, skipping a name another input already has. A stem that is empty or starts with ``.`` is prefixed
    with ``_``. Deterministic for a given input list."""
    stems = [p.stem if p.stem and not p.stem.startswith(".") else f"_{p.stem}" for p in paths]
    count = Counter(s.lower() for s in stems)
    plain = {s.lower() for s in stems if count[s.lower()] == 1 and s.lower() not in _RESERVED}
    taken = set(plain) | set(_RESERVED)
    last: Counter[str] = Counter()
    names = []
    for s in stems:
        if s.lower() in plain:
            names.append(s)
            continue
        k = last[s.lower()] + 1
        while f"{s}-{k}".lower() in taken:
            k += 1
        last[s.lower()] = k
        taken.add(f"{s}-{k}".lower())
        names.append(f"{s}-{k}")
    return names


def parse_classes(text: str) -> list[str]:
    """``--classes "a, b, c"`` as a list of names (whitespace collapsed).

    Raises:
        InputError: no name, an empty name (``"a,,b"``) or a name given twice (ignoring case).
    """
    names = [" ".join(part.split()) for part in text.split(",")]
    if not any(names):
        raise InputError("--classes must name at least one class (comma-separated)", repr(text),
                         'pass e.g. --classes "red circle, blue square"')
    if not all(names):
        raise InputError("--classes must be comma-separated class names, none of them empty", repr(text),
                         'remove the extra comma, e.g. --classes "red circle, blue square"')
    seen: dict[str, str] = {}
    for name in names:
        if name.lower() in seen:
            raise InputError("--classes must name each class once (compared ignoring case)",
                             f"{name!r} twice in {text!r}", "remove the repeated name")
        seen[name.lower()] = name
    return names


def request_hash(command: str, prompt: str | None, classes: Sequence[str] | None, edit: str | None, seed: int | None,
                 top_k: int, config: dict[str, Any]) -> str:
    """16 hex digits of sha256 over what decides an image's outputs: the command, prompt or classes, edit prompt,
    seed, top-k and the effective config (``ovseg.pipeline.effective_config``)."""
    payload = {"command": command, "prompt": prompt, "classes": list(classes) if classes is not None else None,
               "edit": edit, "seed": seed, "top_k": top_k if classes is None else None, "config": config}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str | None:
    """sha256 (hex) of a file's bytes; None when it cannot be read (its error is recorded when it is processed)."""
    digest = hashlib.sha256()
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def rank_and_world() -> tuple[int, int, Any]:
    """(rank, world size, torch.distributed or None) from the torchrun environment: ``RANK`` / ``WORLD_SIZE``, with
    a process group (``ovseg.evaluate``'s) only when torchrun's ``MASTER_ADDR`` is set too.

    Raises:
        InputError: ``RANK`` / ``WORLD_SIZE`` are not integers with 0 <= RANK < WORLD_SIZE.
    """
    raw = (os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1"))
    try:
        rank, world = int(raw[0]), int(raw[1])
    except ValueError:
        rank, world = -1, 0
    if not 0 <= rank < world:
        raise InputError("RANK and WORLD_SIZE must be integers with 0 <= RANK < WORLD_SIZE (torchrun sets them)",
                         f"RANK={raw[0]!r}, WORLD_SIZE={raw[1]!r}", "unset them, or launch with torchrun")
    if world > 1 and "MASTER_ADDR" in os.environ:
        from .evaluate import _dist

        return _dist()
    return rank, world, None


def _round(value: Any) -> Any:
    """Floats rounded to 6 decimals (JSON lines that do not differ in the last bits between processes)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def record_line(index: int, source: str, name: str, sha256: str | None, key: str, item: "BatchItem | None",
                files: list[str] | None = None, error: str | None = None) -> dict[str, Any]:
    """One line of ``results.jsonl``: ``index`` (input order), ``input`` (the path), ``name`` (sub-folder), ``status``
    (``ok`` / ``error``), ``sha256`` (of the file's bytes), ``request`` (:func:`request_hash`), ``seconds`` and
    ``timings_s`` (measured: the only keys that differ between runs), ``error`` (one line, or null), ``warnings``,
    ``files`` (in ``OUT/<name>/``), and for a result: ``segment`` and the edits: ``counts`` and ``masks`` (rank, final
    score, mean similarity, background similarity, bbox XYWH, area, predicted IoU, stability; best first), the edits
    also ``edit`` (operation, prompt, seed, steps, method, region); ``--classes``: ``class_pixels`` ({name: pixels}),
    ``classes_found`` and ``num_assigned`` / ``num_candidates``."""
    rec: dict[str, Any] = {"index": index, "input": source, "name": name,
                           "status": "error" if error is not None or item is None or not item.ok else "ok",
                           "sha256": sha256, "request": key,
                           "seconds": round(item.seconds, 4) if item is not None else 0.0,
                           "timings_s": {}, "error": error if error is not None else (item.error if item else None),
                           "warnings": list(item.warnings) if item is not None else [], "files": files or []}
    result = item.result if item is not None and rec["status"] == "ok" else None
    if result is None:
        return rec
    d = result.to_dict()
    rec["timings_s"] = d["timings_s"]
    if "class_names" in d:
        rec.update(class_pixels=d["class_pixels"], classes_found=[n for n, c in d["class_pixels"].items() if c > 0],
                   num_assigned=d["num_assigned"], num_candidates=d["num_candidates"])
    else:
        rec["counts"] = _round(d["counts"])
        rec["masks"] = [{"rank": k, **_round(m)} for k, m in enumerate(d["masks"])]
        if d.get("edit"):
            rec["edit"] = {k: d["edit"].get(k) for k in ("operation", "prompt", "seed", "steps", "method", "region")}
    return rec


def _csv_row(rec: dict[str, Any]) -> dict[str, Any]:
    masks = rec.get("masks")
    return {"index": rec["index"], "input": rec["input"], "name": rec["name"], "status": rec["status"],
            "seconds": rec["seconds"], "masks": len(masks) if masks is not None else "",
            "best_score": f"{masks[0]['final_score']:.4f}" if masks else "",
            "classes_found": ";".join(rec.get("classes_found", [])), "error": rec["error"] or ""}


def merge_records(out: Path, records: Sequence[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``OUT/results.jsonl`` (one compact JSON object per record, in the given order) and ``OUT/summary.csv``
    atomically; returns both paths."""
    from .io import write_text_atomic

    lines = "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow(_csv_row(rec))
    return write_text_atomic(out / "results.jsonl", lines), write_text_atomic(out / "summary.csv", buf.getvalue())


# ---- the CLI's batch run --------------------------------------------------------------------------------------------

def check_batch_out(out: Path) -> Path:
    """OUT of a batch: a folder (created) that ovseg can list, read and write, with a state folder that is no
    symbolic link. Checked before any model loads.

    Raises:
        InputError: a file, a folder that cannot be read or written, or a state folder that is a link or a file.
    """
    from .io import check_output_dir

    out = check_output_dir(out, "--out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.listdir(out)  # resuming reads the state folder
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise InputError("--out must be a folder ovseg can read and write (a batch resumes from it)",
                         f"{out}: {err.strerror}", "pass a readable, writable folder, e.g. --out out/batch") from None
    state = out / STATE_DIR
    if state.is_symlink() or (state.exists() and not state.is_dir()):
        raise InputError(f"--out's {STATE_DIR} must be a folder ovseg made (never a link or a file)", str(state),
                         "remove it, or pass another --out")
    return out


def _read_record(path: Path) -> dict[str, Any] | None:
    """A per-image record, or None when it is missing, a link or not a JSON object."""
    if path.is_symlink() or not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _current(rec: dict[str, Any] | None, source: str, sha: str | None, key: str) -> bool:
    """A record of this input path, file content and request (its index may have moved: inputs were added)."""
    return rec is not None and rec.get("input") == source and rec.get("sha256") == sha and rec.get("request") == key


def _lock_batch(state: Path, rank: int) -> Any:
    """Hold ``OUT/.ovseg-batch/lock.rank<r>`` (an exclusive flock) while this rank writes OUT; a second batch into the
    same OUT stops with one line naming the process that holds it. Returns the open lock file (keep it open)."""
    from .io import hold_lock

    link = ("ovseg never writes a batch's state through a symbolic link",
            f"remove the link {STATE_DIR} in OUT (or pass another --out)")
    if state.is_symlink():
        raise InputError(link[0], str(state), link[1])
    try:
        state.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError("OUT must be a writable folder", f"{state}: {err.strerror}", "pass a folder you can write to") \
            from None
    return hold_lock(state / f"lock.rank{rank}", "one batch at a time may write an output folder",
                     "wait for that run to finish, or pass another --out", *link, folder_rule="OUT must be a writable folder")


#: mkdtemp's random suffix: a dot and 8 characters, so a temporary folder's image name is ``entry.name[:-9]``
_TMP_SUFFIX = 9


def _recover(out: Path, tmp_root: Path, trash_root: Path) -> list[str]:
    """Finish what a killed run of this rank left (called under the rank's lock). A half-written sub-folder in
    ``tmp_root`` is deleted (its image has no ok record, so it runs again). An earlier sub-folder moved aside into
    ``trash_root`` is put back when its place is empty (the kill came between the two renames of :func:`_swap_in`),
    else its files that ovseg did not write are moved into the new one, as :func:`_swap_in` would have. Returns one
    line per repaired folder."""
    lines = []
    if tmp_root.is_dir() and not tmp_root.is_symlink():
        for entry in sorted(tmp_root.iterdir()):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            lines.append(f"removed {entry.name}, a sub-folder a killed run left half-written (its image runs again)")
    if trash_root.is_dir() and not trash_root.is_symlink():
        for entry in sorted(trash_root.iterdir()):
            if not entry.is_dir() or entry.is_symlink():
                entry.unlink()
                continue
            target = out / entry.name[:-_TMP_SUFFIX]
            if not target.exists() and not target.is_symlink():
                os.replace(entry, target)
                lines.append(f"restored {target.name}/, moved aside by a killed run")
                continue
            if target.is_dir() and not target.is_symlink():
                _move_user_files(entry, target)
                lines.append(f"moved your files of {target.name}/ back from a folder a killed run left aside")
            shutil.rmtree(entry, ignore_errors=True)
    return lines


def _swap_in(tmp: Path, target: Path, trash_root: Path) -> None:
    """Put the complete folder ``tmp`` at ``target`` by renames: an earlier ``target`` is moved aside, ``tmp`` renamed
    into place, and the files of the earlier folder that ovseg did not write (not listed by its ``result.json``, not
    in ``tmp``) are moved into the new one before the old one is deleted."""

    if not target.exists():
        os.replace(tmp, target)
        return
    trash_root.mkdir(parents=True, exist_ok=True)
    old = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=trash_root))
    old.rmdir()
    os.replace(target, old)
    os.replace(tmp, target)
    _move_user_files(old, target)
    shutil.rmtree(old, ignore_errors=True)


def _move_user_files(old: Path, target: Path) -> None:
    """Move the entries of the earlier folder ``old`` that ovseg did not write (not listed by its ``result.json``)
    into ``target``, unless ``target`` has an entry (or a link) of that name."""
    from .io import listed_outputs

    ours = listed_outputs(old / "result.json")
    for entry in old.iterdir():
        if entry.name not in ours and not (target / entry.name).exists() and not (target / entry.name).is_symlink():
            os.replace(entry, target / entry.name)


def run_batch(args: Any, inputs: BatchInputs, config: Any, out: Path, classes: list[str] | None) -> int:
    """The CLI's batch: validated ``args`` (of ``segment`` / ``remove`` / ``replace`` / ``style``), the expanded
    inputs, the config, OUT (checked) and the parsed ``--classes``. Returns the exit status."""
    from tqdm.auto import tqdm

    from .io import _umask, write_json_atomic
    from .pipeline import OpenVocabSegmentationPipeline, effective_config

    rank, world, dist = rank_and_world()
    device = args.device
    if world > 1 and device == "cuda":  # one GPU per local rank, as ovseg evaluate
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    command = args.command
    edit = getattr(args, "edit", None)
    seed = getattr(args, "seed", None)
    key = request_hash(command, None if classes else args.prompt, classes, edit, seed, args.top_k,
                       effective_config(config))
    paths = inputs.paths
    names = sub_folder_names(paths)
    sources = [str(p) for p in paths]
    state = out / STATE_DIR
    records_dir, tmp_root, trash_root = state / "records", state / "tmp" / f"rank{rank}", state / "trash" / f"rank{rank}"
    own = [i for i in range(len(paths)) if i % world == rank]
    lock = _lock_batch(state, rank)  # one run per OUT (per rank) from here on; released when this function returns
    for line in _recover(out, tmp_root, trash_root):
        print(f"ovseg: {line}", file=sys.stderr)
    shas: dict[int, str | None] = {i: file_sha256(paths[i]) for i in own}
    todo = []
    for i in own:
        rec = _read_record(records_dir / f"{names[i]}.json")
        done = (_current(rec, sources[i], shas[i], key) and rec is not None and rec.get("status") == "ok"
                and (out / names[i] / "result.json").is_file() and not (out / names[i]).is_symlink())
        if not done:
            todo.append(i)
    show = rank == 0 and args.progress is not False
    pipe = OpenVocabSegmentationPipeline(config, device=device, progress=bool(args.progress))
    shown: set[str] = set()
    desc = f"{command} {inputs.kind}" + (f" [rank {rank}/{world}]" if world > 1 else "")
    bar = tqdm(total=len(own), initial=len(own) - len(todo), unit="img", desc=desc, disable=not show, file=sys.stderr)
    try:
        items = pipe.segment_batch((paths[i] for i in todo), None if classes else args.prompt, args.top_k,
                                   classes=classes, operation=command, edit_prompt=edit, seed=seed, warn=False)
        for item in items:
            i = todo[item.index]
            target = out / names[i]
            files: list[str] = []
            error = None
            if item.ok and (target.is_symlink() or (target.exists() and not target.is_dir())):
                error = (f"a batch output sub-folder must be a folder, not a link or a file; got {target}; fix: "
                         "remove it or pass another --out")
            elif item.ok and item.result is not None:
                if item.result.source is None:
                    item.result.source = sources[i]
                tmp_root.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f"{names[i]}.", dir=tmp_root))
                os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; an output folder gets ordinary permissions
                try:
                    files = [p.name for p in item.result.save(tmp)]
                    _swap_in(tmp, target, trash_root)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
            rec = record_line(i, sources[i], names[i], shas[i], key, item, files, error)
            write_json_atomic(records_dir / f"{names[i]}.json", rec)
            for msg in item.warnings:
                if msg not in shown:
                    shown.add(msg)
                    bar.write(f"ovseg: warning: {msg}", file=sys.stderr)
            if rec["status"] != "ok":
                bar.write(f"ovseg: {names[i]}: {rec['error']}", file=sys.stderr)
            bar.update(1)
    finally:
        bar.close()
        for empty in (tmp_root, trash_root):  # a rank's work folders go once they are empty
            try:
                empty.rmdir()
            except OSError:
                pass
        lock.close()
    if dist is not None:
        dist.barrier()
    # merge: every input's record of this request, in input order
    records: list[dict[str, Any] | None] = []
    for i, name in enumerate(names):
        rec = _read_record(records_dir / f"{name}.json")
        sha = shas[i] if i in shas else file_sha256(paths[i])
        records.append(dict(rec, index=i) if rec is not None and _current(rec, sources[i], sha, key) else None)
    if dist is not None:
        dist.barrier()  # every rank has read the records before rank 0 replaces the merged files
        dist.destroy_process_group()
    if any(r is None for r in records):  # shards run one after another: a later rank writes the merged files
        own_failed = sum(1 for i in own if records[i] is not None and records[i]["status"] != "ok")  # type: ignore[index]
        print(f"rank {rank} of {world}: {len(own)} image(s) of this shard done ({own_failed} failed); "
              f"{out / 'results.jsonl'} is written by the rank that finishes last")
        return 1 if own_failed else 0
    complete: list[dict[str, Any]] = [r for r in records if r is not None]
    failed = sum(1 for r in complete if r["status"] != "ok")
    if rank == 0 or dist is None:
        merge_records(out, complete)
    if rank != 0 and dist is not None:
        return 1 if failed else 0
    if args.json:
        for r in complete:
            print(json.dumps(r, ensure_ascii=False))
    skipped = len(own) - len(todo)
    resumed = f", {skipped} already done (skipped)" if skipped else ""
    shard = f" on rank {rank} of {world}" if world > 1 else ""
    summary = (f"{len(complete) - failed} of {len(complete)} image(s) done{resumed}{shard} -> "
               f"{out / 'results.jsonl'}, {out / 'summary.csv'}")
    print(summary, file=sys.stderr if args.json else sys.stdout)
    if failed:
        print(f"{failed} of {len(complete)} images failed (see {out / 'results.jsonl'})",
              file=sys.stderr if args.json else sys.stdout)
        return 1
    return 0
