"""Chapter 5 evaluation: one written-down protocol, resumable and distributed runs, tables.

A run evaluates one method on one dataset under an :class:`EvalProtocol` plus the pipeline's
:class:`~ovseg.config.PipelineConfig` (templates, resolution, sliding window, thresholds). Both are
written to ``OUT/protocol.yaml``; its hash labels every table row.

Durability: every finished image appends one JSON line (stem, sparse confusion matrix, seconds)
to ``OUT/results.rank<r>.jsonl``, flushed and fsync'ed. A restarted run skips every stem already
in any results file, so a killed run recomputes at most the image in flight, and because
confusion matrices are integer counts the final numbers equal an uninterrupted run exactly.

Distribution: under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set) rank r takes images
``i % WORLD_SIZE == r``; at the end the ranks' confusion matrices are summed with
``torch.distributed.all_reduce`` (gloo on CPU, nccl on GPUs) and rank 0 writes ``metrics.json``
and the tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, InputError, OvsegWarning

if TYPE_CHECKING:  # pragma: no cover
    from .datasets import SegDataset
    from .pipeline import OpenVocabSegmentationPipeline

__all__ = ["METHODS", "EvalProtocol", "predict_labels", "run_evaluation", "load_protocol", "REPORTED",
           "write_tables", "table_rows", "referring_evaluation", "mask_recall_evaluation", "models_identity",
           "semantic_intervals"]

#: "ovseg" is the thesis method (SAM 2 masks + alignment); the others are per-pixel dense
#: baselines on the same CLIP: the pipeline's multi-layer features ("dense") or the last block
#: with MaskCLIP's value path, SCLIP's correlative self-attention or ClearCLIP's q-q attention.
METHODS = ("ovseg", "dense", "maskclip", "sclip", "clearclip")

#: Published numbers (mIoU %), shown as "reported" rows next to what ovseg measures.
REPORTED: list[dict[str, Any]] = [
    *({"method": "thesis (reported)", "dataset": d, "split": s, "mIoU": v, "source": "thesis README, Chapter 5"}
      for d, s, v in (("voc", "all", 58.4), ("coco-stuff", "all", 35.9), ("ade20k", "all", 33.2),
                      ("coco-stuff", "base", 45.2), ("coco-stuff", "novel", 32.4))),
    *({"method": f"{m} (reported, ViT-B/16)", "dataset": d, "split": "all", "mIoU": v, "source": src}
      for m, src, vals in (("MaskCLIP", "Zhou et al., ECCV 2022", (43.4, 16.7, 11.9)),
                           ("SCLIP", "Wang et al., 2023", (59.1, 22.4, 16.1)),
                           ("ProxyCLIP", "Lan et al., ECCV 2024", (61.3, 26.5, 20.2)))
      for d, v in zip(("voc", "coco-stuff", "ade20k"), vals)),
]


@dataclass
class EvalProtocol:
    """How predictions are made and scored (written next to every result)."""

    # Method: one of METHODS.
    method: str = "ovseg"
    # Extra prompts for the background class of datasets that have one (SCLIP-style background set);
    # the class's own name is always included.
    background_names: list[str] = field(default_factory=lambda: ["background", "sky", "wall", "floor", "ground"])
    # Pixels whose best-class softmax probability (cosines x logit_scale) is below this become
    # background (datasets with a background class only); 0 = off.
    prob_threshold: float = 0.0
    # Temperature of that softmax (CLIP's learned scale is ~100).
    logit_scale: float = 100.0
    # ovseg: pixels no accepted mask covers take the dense per-pixel argmax ("dense") or background.
    unassigned: str = "dense"
    # Evaluate only the first N images (stem order); None = all.
    max_images: int | None = None

    def validate(self) -> "EvalProtocol":
        if self.method not in METHODS:
            raise ConfigError("protocol.method must be one of " + ", ".join(METHODS), repr(self.method),
                              "e.g. method: ovseg")
        if self.unassigned not in ("dense", "background"):
            raise ConfigError("protocol.unassigned must be 'dense' or 'background'", repr(self.unassigned), "pick one")
        if not 0.0 <= self.prob_threshold < 1.0:
            raise ConfigError("protocol.prob_threshold must be in [0, 1)", self.prob_threshold, "0 turns it off")
        names = self.background_names
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n.strip() for n in names):
            raise ConfigError("protocol.background_names must be a list of non-empty strings", repr(names),
                              "e.g. background_names: [background, sky, wall]")
        if self.max_images is not None and self.max_images < 1:
            raise ConfigError("protocol.max_images must be a positive integer or null", self.max_images, "e.g. 50")
        return self


def load_protocol(spec: str | Path | None, profile: str | None = None) -> tuple[EvalProtocol, Any]:
    """(protocol, pipeline config) from an evaluation YAML: top-level protocol keys plus an optional
    ``pipeline:`` section (a PipelineConfig mapping or a preset name)."""

    from .config import PipelineConfig, load_config, load_user_yaml, read_user_text

    data: dict[str, Any] = {}
    if spec is not None:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError("evaluation config file must exist", str(path), "pass a YAML file or leave --config out")
        data = load_user_yaml(read_user_text(path, "evaluation config"), f"evaluation config {path}") or {}
        if not isinstance(data, dict):
            raise ConfigError("evaluation config must be a mapping", type(data).__name__, "write 'method: ovseg' etc.")
    pipe_spec = data.pop("pipeline", None)
    known = {f for f in EvalProtocol.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown evaluation config key '{unknown[0]}'", repr(data[unknown[0]]),
                          f"valid keys: {', '.join(sorted(known))}, pipeline")
    protocol = EvalProtocol(**data).validate()
    if isinstance(pipe_spec, dict):
        cfg = PipelineConfig.from_dict(pipe_spec)
    else:
        cfg = load_config(pipe_spec)
    if profile is not None:
        cfg = cfg.replace(profile=profile)
    return protocol, cfg


def _protocol_text(protocol: EvalProtocol, config: Any, dataset: "SegDataset") -> str:
    import yaml

    doc = {"dataset": {"name": dataset.name, "split": dataset.split, "classes": len(dataset.class_names)},
           "protocol": asdict(protocol), "pipeline": config.to_dict(), "weights": _weights_identity(config)}
    return yaml.safe_dump(doc, sort_keys=False)


def _weights_identity(config: Any, stages: Sequence[str] = ("sam2", "clip")) -> dict[str, str]:
    """Per embedded model a mini-profile run uses, a checksum of its weights (of its ``SHA256SUMS``, or of
    its files when unpinned), so that results stored for one checkpoint are never resumed with another;
    full-profile models are named by the config. The one checkpoint identity of ovseg's result stores."""
    from .paths import REPO_ROOT
    from .pipeline import _model_name
    from .weights import REGISTRY

    if config.profile != "mini":
        return {}
    out = {}
    for stage in stages:
        name = _model_name(getattr(config, stage).model, "mini", stage)
        entry = REGISTRY.get(name)
        folder = REPO_ROOT / entry.local_dir if entry is not None and entry.local_dir else Path(name).expanduser()
        files = entry.files if entry is not None else sorted(p.name for p in folder.glob("*") if p.is_file())
        out[entry.name if entry is not None else str(name)] = folder_identity(folder, files)
    return out


def folder_identity(folder: Path, files: Sequence[str]) -> str:
    """16 hex digits identifying a model folder's weights: the sha256 of its ``SHA256SUMS`` when pinned, else of the
    sha256 of each of ``files`` in order (``missing`` for an absent file). What the test-set log names a model by."""
    from .weights import sha256_file

    h = hashlib.sha256()
    if (folder / "SHA256SUMS").is_file():
        h.update((folder / "SHA256SUMS").read_bytes())
    else:
        for f in files:
            h.update(sha256_file(folder / f).encode() if (folder / f).is_file() else b"missing")
    return h.hexdigest()[:16]


def models_identity(config: Any, stages: Sequence[str] = ("sam2", "clip")) -> dict[str, str]:
    """Model name -> 16-hex-digit checksum of each model of ``stages`` a run of ``config`` uses: the embedded
    models' pinned sums in the mini profile (:func:`_weights_identity`), the configured ids in the full profile
    (named, not hashed: ``"unhashed"``). What the test-set log records per consultation."""
    if config.profile == "mini":
        return _weights_identity(config, stages)
    return {str(getattr(config, stage).model): "unhashed" for stage in stages}


# ---- prediction ------------------------------------------------------------------------------------------

def _prompts(dataset: "SegDataset", protocol: EvalProtocol) -> tuple[list[str], np.ndarray]:
    """Prompt texts and, for each, the class index it votes for."""
    prompts, owner = [], []
    for c, name in enumerate(dataset.class_names):
        names = [name]
        if c == dataset.background_index:
            names += [n for n in protocol.background_names if n != name]
        for n in names:
            prompts.append(n)
            owner.append(c)
    return prompts, np.asarray(owner, np.int64)


def _dense_clip_for(pipe: "OpenVocabSegmentationPipeline", method: str) -> Any:
    """The pipeline's CLIP read through a baseline's last-block attention (shares the weights)."""
    c = pipe.clip
    if method == "dense":
        return c
    cache = pipe.__dict__.setdefault("_baseline_clips", {})
    if method not in cache:
        cache[method] = c.with_settings(extract_layers=[c.depth], dense_path=method)
    return cache[method]


def predict_labels(pipe: "OpenVocabSegmentationPipeline", image: np.ndarray, prompts: Sequence[str], owner: np.ndarray,
                   protocol: EvalProtocol, background_index: int | None, chunk: int = 32) -> np.ndarray:
    """(H, W) int64 class indices for one image under the protocol."""
    import torch

    h, w = image.shape[:2]
    method = "dense" if protocol.method == "ovseg" else protocol.method
    clip = _dense_clip_for(pipe, method)
    feats = pipe.dense_features(image) if method == "dense" else clip.dense_features(image)
    text = clip.encode_text(list(prompts))  # (T, E)
    # 1. per-pixel best prompt over the dense similarity maps, in chunks of prompts to bound memory
    best = torch.full((h, w), -float("inf"))
    arg = torch.zeros((h, w), dtype=torch.long)
    denom = torch.zeros((h, w))
    for k in range(0, len(prompts), chunk):
        sim = feats.similarity(text[k:k + chunk], size=(h, w), weights=clip.layer_weights)  # (t, H, W)
        val, idx = sim.max(dim=0)
        better = val > best
        best, arg = torch.where(better, val, best), torch.where(better, idx + k, arg)
        if protocol.prob_threshold > 0:
            denom += torch.exp(protocol.logit_scale * (sim - 1.0)).sum(dim=0)  # shifted for stability
    dense = owner[arg.numpy()]  # (H, W) class indices
    if protocol.prob_threshold > 0 and background_index is not None:
        prob = torch.exp(protocol.logit_scale * (best - 1.0)) / denom  # softmax probability of the best prompt
        dense = np.where(prob.numpy() < protocol.prob_threshold, background_index, dense)
    if protocol.method != "ovseg":
        return dense
    # 2. thesis method: each pixel takes the class of the best-scoring SAM 2 mask covering it. The protocol's
    #    background names are outside the mini vocabulary by design, and an image without an assigned mask is
    #    filled below: neither is worth a warning per image.

    from .errors import NoMatchWarning, OutOfDomainWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfDomainWarning)
        warnings.simplefilter("ignore", NoMatchWarning)
        sem = pipe.segment_semantic(image, list(prompts))
    labels = np.where(sem.label_map >= 0, owner[np.maximum(sem.label_map, 0)], -1)
    fill = dense if protocol.unassigned == "dense" or background_index is None else np.full_like(dense, background_index)
    return np.where(labels >= 0, labels, fill).astype(np.int64)


# ---- the durable store ---------------------------------------------------------------------------------------
#
# One JSON line per finished image: {"stem", "cm" (sparse confusion: [[true, pred, count], ...]), "s" (seconds),
# "protocol" (the protocol hash), "sum" (the first 16 hex digits of the sha256 of the other four, canonical JSON)}.
# A line is used only when it is complete, parses, carries its checksum and this run's protocol hash, and names
# classes of this dataset; any other line is reported (file and line number) and its image recomputed. Two valid
# lines that disagree about one image are both rejected and the image recomputed. The store is opened without
# following symbolic links, and one process at a time holds it (an flock on results.rank<r>.lock).

_STORE_KEYS = ("stem", "cm", "s", "protocol")


def _line_checksum(rec: dict[str, Any]) -> str:
    body = json.dumps({k: rec.get(k) for k in _STORE_KEYS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _store_line(stem: str, cm: list[list[int]], seconds: float, protocol_hash: str) -> str:
    rec = {"stem": stem, "cm": cm, "s": seconds, "protocol": protocol_hash}
    rec["sum"] = _line_checksum(rec)
    return json.dumps(rec, separators=(",", ":")) + "\n"


def _check_line(line: str, n_classes: int, protocol_hash: str) -> tuple[dict[str, Any] | None, str]:
    """The record of one store line, or (None, why it cannot be used)."""
    if "\x00" in line:
        return None, "NUL bytes in the line"
    try:
        rec = json.loads(line)
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(rec, dict) or not isinstance(rec.get("stem"), str):
        return None, "not a store record"
    if "sum" not in rec:
        return None, "no checksum (written by an older ovseg, or by hand)"
    if rec["sum"] != _line_checksum(rec):
        return None, "checksum mismatch (the line was changed after it was written)"
    if rec.get("protocol") != protocol_hash:
        return None, f"written under another protocol ({rec.get('protocol')}, this run's is {protocol_hash})"
    cm = rec.get("cm")
    ok = isinstance(cm, list) and all(
        isinstance(e, list) and len(e) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in e)
        and 0 <= e[0] < n_classes and 0 <= e[1] < n_classes and e[2] > 0 for e in cm)
    if not ok:
        return None, f"confusion entries must be [true, predicted, count] with classes 0..{n_classes - 1} and count > 0"
    return rec, ""


def _read_results(out: Path, n_classes: int, protocol_hash: str) -> tuple[dict[str, list[list[int]]], list[str]]:
    """stem -> sparse confusion entries from every rank's results file, and the problems found (one line each:
    file, line number, why; the images concerned are left out, so they are recomputed)."""
    done: dict[str, list[list[int]]] = {}
    conflicted: set[str] = set()
    problems: list[str] = []
    for path in sorted(out.glob("results.rank*.jsonl")):
        if path.is_symlink():
            raise InputError("ovseg never reads or writes a results store through a symbolic link", str(path),
                             "remove the link (or use another --out folder)")
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.endswith("\n"):
                    break  # a line cut by a crash: that image is recomputed
                rec, why = _check_line(line, n_classes, protocol_hash)
                if rec is None:
                    problems.append(f"{path.name} line {number}: {why}")
                    continue
                stem = rec["stem"]
                if stem in done and done[stem] != rec["cm"]:
                    problems.append(f"{path.name} line {number}: disagrees with an earlier line for {stem!r}")
                    conflicted.add(stem)
                done.setdefault(stem, rec["cm"])
    for stem in conflicted:
        done.pop(stem, None)
    return done, problems


def _compact(path: Path, n_classes: int, protocol_hash: str, drop: set[str]) -> int:
    """Rewrite a store without its unusable lines and those of ``drop`` (conflicting images), atomically; the
    removed lines go to ``<store>.rejected`` for inspection. Returns how many lines were removed."""
    from .io import write_text_atomic

    if not path.exists():
        return 0
    keep, rejected = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
        rec, _ = _check_line(line, n_classes, protocol_hash) if line.endswith("\n") else (None, "")
        (keep if rec is not None and rec["stem"] not in drop else rejected).append(line)
    if rejected:
        with _open_store(path.with_suffix(".rejected")) as fh:  # appended, never through a symlink
            fh.writelines(ln if ln.endswith("\n") else ln + "\n" for ln in rejected)
        write_text_atomic(path, "".join(keep))
    return len(rejected)


_LINK_RULE = "ovseg never reads or writes a results store through a symbolic link"
_LINK_FIX = "remove the link (or use another --out folder)"


def _lock_store(out: Path, rank: int) -> Any:
    """Hold ``results.rank<r>.lock`` (an exclusive flock) for this run; a second run into the same --out stops with
    one line naming the process that holds it. Returns the open lock file (keep it open)."""
    from .io import hold_lock

    return hold_lock(out / f"results.rank{rank}.lock", "one ovseg evaluate at a time may write a results store",
                     "wait for that run to finish, or evaluate into another --out folder", _LINK_RULE, _LINK_FIX,
                     folder_rule="--out must be a writable folder")


def _open_nofollow(path: Path, flags: int, mode: str) -> Any:
    """``os.open`` with ``O_NOFOLLOW`` (file created 0644), as a file object; a symlink at ``path`` is an InputError,
    other OSErrors propagate."""
    from .io import open_nofollow

    return open_nofollow(path, flags, mode, _LINK_RULE, _LINK_FIX)


def _open_store(store: Path) -> Any:
    """Open the store (or its .rejected file) for appending without following a symbolic link."""
    return _open_nofollow(store, os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a")


def _repair_tail(path: Path) -> None:
    """Drop a partial last line left by a crash, so appends start on a fresh line."""
    if not path.exists() or path.is_symlink():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


# ---- the runner -----------------------------------------------------------------------------------------------

def _dist() -> tuple[int, int, Any]:
    """(rank, world_size, torch.distributed or None) from the torchrun environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, None
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if os.environ.get("OVSEG_DIST_BACKEND") == "nccl" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size(), dist


def run_evaluation(dataset: "SegDataset", pipe: "OpenVocabSegmentationPipeline", protocol: EvalProtocol,
                   out_dir: str | Path, progress: bool | None = None) -> dict[str, Any] | None:
    """Evaluate ``pipe`` on ``dataset``; returns the metrics dict on rank 0 (None elsewhere)."""
    from .io import write_json_atomic, write_text_atomic
    from .metrics import confusion_matrix, dense_confusion, metrics_from_confusion, sparse_confusion
    from .testlog import is_shipped_test_split, record

    protocol.validate()
    rank, world, dist = _dist()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # 1. the protocol: written once, and a resumed run must match it
    text = _protocol_text(protocol, pipe.config, dataset)
    proto_path = out / "protocol.yaml"
    if proto_path.exists() and proto_path.read_text() != text:
        raise InputError("--out must hold results of the same protocol to resume", str(proto_path),
                         "use a new --out folder, or delete that one to start over")
    if rank == 0 and not proto_path.exists():
        write_text_atomic(proto_path, text)
    protocol_hash = hashlib.sha256(text.encode()).hexdigest()[:12]
    # 2. what is left to do on this rank
    n = len(dataset) if protocol.max_images is None else min(len(dataset), protocol.max_images)
    own = [i for i in range(n) if i % world == rank]
    store = out / f"results.rank{rank}.jsonl"
    c = len(dataset.class_names)
    lock = _lock_store(out, rank)
    try:
        _repair_tail(store)
        done, problems = _read_results(out, c, protocol_hash)
        if problems:
            conflicted = {stem for stem in dataset.stems if stem not in done}
            removed = _compact(store, c, protocol_hash, conflicted)
            warnings.warn(f"{len(problems)} line(s) of the results store in {out} cannot be used and their images are "
                          f"recomputed: " + "; ".join(problems[:10]) + ("; ..." if len(problems) > 10 else "")
                          + (f" ({removed} line(s) moved to {store.name[:-6]}.rejected)" if removed else ""),
                          OvsegWarning, stacklevel=2)
        todo = [i for i in own if dataset.stems[i] not in done]
        prompts, owner = _prompts(dataset, protocol)
        show = (rank == 0) if progress is None else progress
        # 3. evaluate, appending one durable line per image
        from tqdm.auto import tqdm

        with _open_store(store) as fh:
            for i in tqdm(todo, desc=f"evaluate {dataset.name} [{protocol.method}]", unit="img", disable=not show,
                          initial=len(own) - len(todo), total=len(own)):
                start = time.perf_counter()
                sample = dataset[i]
                pred = predict_labels(pipe, sample.image, prompts, owner, protocol, dataset.background_index)
                cm = sparse_confusion(confusion_matrix(pred, sample.label, c, dataset.ignore_index))
                fh.write(_store_line(sample.stem, cm, round(time.perf_counter() - start, 4), protocol_hash))
                fh.flush()
                os.fsync(fh.fileno())
                done[sample.stem] = cm
    finally:
        lock.close()
    # 4. merge: each rank sums its own shard (wherever a stem was stored), then all-reduce
    total = np.zeros((c, c), np.int64)
    for i in own:
        total += dense_confusion(done[dataset.stems[i]], c)
    if dist is not None:
        import torch

        t = torch.from_numpy(total)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        total = t.numpy()
        dist.barrier()
    if rank != 0:
        return None
    # 5. metrics, their bootstrap intervals over images (every rank's lines: rank 0 reads all stores) and tables
    m = metrics_from_confusion(total)
    every, _ = _read_results(out, c, protocol_hash)
    cms = np.stack([dense_confusion(every[dataset.stems[i]], c) for i in range(n)])  # (n, C, C)
    result = {"dataset": dataset.name, "split": dataset.split, "method": protocol.method, "profile": pipe.config.profile,
              "n_images": n, "protocol_hash": protocol_hash,
              **m.to_dict(dataset.class_names, dataset.splits),
              "ci95": {k: iv.to_dict() for k, iv in semantic_intervals(cms, dataset.splits).items()}}
    write_json_atomic(out / "metrics.json", result)
    write_tables(table_rows([result]), out, "table")
    # the thesis method is "semantic", a baseline "semantic:<method>"; "@blocks8" marks a layer ablation
    if is_shipped_test_split(dataset):
        task = "semantic" if protocol.method == "ovseg" else f"semantic:{protocol.method}"
        from .config import CLIPConfig

        layers = list(pipe.config.clip.extract_layers)
        if layers != list(CLIPConfig().extract_layers):  # a layer ablation (mini: not the CLIP's own blocks)
            task += "@blocks" + "+".join(str(x) for x in layers)
        record(task, models_identity(pipe.config), protocol_hash, n,
               {k: v for k, v in result["ci95"].items()}, split="scenes/test", method=protocol.method)
    return result


def semantic_intervals(cms: np.ndarray, splits: dict[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """95% intervals, resampling images (:func:`ovseg.stats.bootstrap_confusion`), of mIoU, pixel accuracy, mean F1,
    the mIoU of each class subset in ``splits`` and, with ``base`` and ``novel``, their paired difference
    ``novel_minus_base`` (one resample of the images feeds both). ``cms``: (n, C, C) per-image confusion matrices."""
    from .metrics import _nanmean, metrics_from_confusion
    from .stats import bootstrap_confusion

    def mean_f1(cm: np.ndarray) -> float:  # the mean over defined classes, as metrics.json's mean_f1
        return _nanmean(metrics_from_confusion(cm).f1)

    out = {"mIoU": bootstrap_confusion(cms, lambda cm: metrics_from_confusion(cm).miou),
           "pixel_accuracy": bootstrap_confusion(cms, lambda cm: metrics_from_confusion(cm).pixel_accuracy),
           "mean_f1": bootstrap_confusion(cms, mean_f1)}
    for name, idx in (splits or {}).items():
        out[f"mIoU_{name}"] = bootstrap_confusion(cms, lambda cm, idx=idx: metrics_from_confusion(cm).subset_miou(idx))
    if splits and "base" in splits and "novel" in splits:
        def diff(cm: np.ndarray) -> float:
            m = metrics_from_confusion(cm)
            return m.subset_miou(splits["novel"]) - m.subset_miou(splits["base"])

        out["novel_minus_base"] = bootstrap_confusion(cms, diff)
    return out


# ---- referring segmentation (issue #3 target) -----------------------------------------------------------------

def referring_evaluation(dataset: "SegDataset", pipe: "OpenVocabSegmentationPipeline", max_images: int | None = None,
                         progress: bool = False) -> dict[str, Any]:
    """Referring segmentation: for every class present in an image, ``segment(image, class_name, top_k=1)``.

    The top-1 mask is scored against the union of that class's ground-truth pixels (IoU); a prompt whose
    ranking is empty (no mask above ``alignment.similarity_threshold``) scores 0. All prompts of an image
    are scored in one alignment pass (the same masks, features and ranking as :meth:`segment`).

    Returns:
        ``{"n_images", "n_prompts", "mean_iou", "mean_iou_base", "mean_iou_novel", "hit_rate"`` (IoU >= 0.5)
        ``, "hit_rate_base", "hit_rate_novel", "per_class": {name: mean IoU}}``.
    """
    from .align import rank_masks
    from .utils import mask_iou, upscale_nearest

    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    novel = set(dataset.splits.get("novel", [])) if dataset.splits else set()
    records: list[tuple[int, float]] = []  # (class index, IoU)
    from tqdm.auto import tqdm

    for i in tqdm(range(n), desc=f"referring {dataset.name}", unit="img", disable=not progress):
        sample = dataset[i]
        present = [int(c) for c in np.unique(sample.label) if c != dataset.ignore_index and c != dataset.background_index]
        if not present:
            continue
        names = [dataset.class_names[c] for c in present]
        masks, scores = pipe.score(sample.image, names)
        for t, c in enumerate(present):
            gt = sample.label == c  # (H, W) bool
            order = rank_masks(scores, t, pipe.config.alignment.similarity_threshold, 1)
            if len(order) == 0:
                records.append((c, 0.0))
                continue
            best = upscale_nearest(masks.masks[int(order[0])], gt.shape)  # working size -> the label's (H, W)
            records.append((c, float(mask_iou(best[None], gt[None])[0, 0])))

    def mean(sel: list[float]) -> float | None:
        return round(float(np.mean(sel)), 4) if sel else None

    from .stats import bootstrap_mean, bootstrap_rate

    ious = [v for _, v in records]
    base = [v for c, v in records if c not in novel]
    nov = [v for c, v in records if c in novel]
    per_class: dict[str, list[float]] = {}
    for c, v in records:
        per_class.setdefault(dataset.class_names[c], []).append(v)
    # 95% intervals: IoU means resample the prompted objects, hit rates the same cases
    ci = {"mean_iou": bootstrap_mean(ious), "mean_iou_base": bootstrap_mean(base), "mean_iou_novel": bootstrap_mean(nov),
          "hit_rate": bootstrap_rate([v >= 0.5 for v in ious]),
          "hit_rate_base": bootstrap_rate([v >= 0.5 for v in base]),
          "hit_rate_novel": bootstrap_rate([v >= 0.5 for v in nov])}
    result = {"dataset": dataset.name, "split": dataset.split, "profile": pipe.config.profile, "n_images": n,
              "n_prompts": len(records), "mean_iou": mean(ious), "mean_iou_base": mean(base),
              "mean_iou_novel": mean(nov), "hit_rate": mean([float(v >= 0.5) for v in ious]),
              "hit_rate_base": mean([float(v >= 0.5) for v in base]),
              "hit_rate_novel": mean([float(v >= 0.5) for v in nov]),
              "ci95": {k: iv.to_dict() for k, iv in ci.items()},
              "per_class": {k: mean(v) for k, v in sorted(per_class.items())}}
    _log_if_test(dataset, "referring", pipe, n, result["ci95"], {"max_images": max_images})
    return result


def _log_if_test(dataset: "SegDataset", task: str, pipe: "OpenVocabSegmentationPipeline", n: int,
                 headline: dict[str, Any], settings: dict[str, Any], stages: Sequence[str] = ("sam2", "clip")) -> None:
    """Append a consultation of the shipped test split to the test log (:mod:`ovseg.testlog`); the protocol hash
    covers the pipeline config and ``settings``."""
    from .testlog import is_shipped_test_split, record

    if not is_shipped_test_split(dataset):
        return
    text = json.dumps({"pipeline": pipe.config.to_dict(), "settings": settings, "task": task}, sort_keys=True)
    record(task, models_identity(pipe.config, stages), hashlib.sha256(text.encode()).hexdigest()[:12], n, headline,
           split="scenes/test")


def mask_recall_evaluation(dataset: "SegDataset", pipe: "OpenVocabSegmentationPipeline",
                           max_images: int | None = None, iou_thresh: float = 0.5,
                           progress: bool = False) -> dict[str, Any]:
    """Class-agnostic object recall of the pipeline's SAM 2 masks (3.2.2, at its config's thresholds): a ground-truth
    instance (``instances/``, fully hidden ones skipped) is recalled when some candidate has IoU >= ``iou_thresh``
    with it. Returns ``recall``, ``mean_best_iou``, ``masks_per_image`` with 95% intervals (``ci95``: recall and mean
    best IoU resample objects, masks per image resample images), ``n_objects``, ``n_images``."""
    from tqdm.auto import tqdm

    from .experiments.masks import load_eval_scene, mask_stats
    from .stats import bootstrap_mean, bootstrap_rate
    from .utils import upscale_nearest

    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    best: list[float] = []
    counts: list[float] = []
    for i in tqdm(range(n), desc=f"masks {dataset.name}", unit="img", disable=not progress):
        scene = load_eval_scene(dataset, i)
        masks = pipe.generate_masks(scene.image)
        if masks.shape != scene.image.shape[:2]:  # a working copy: compare at the label's size
            masks = type(masks).from_masks(np.stack([upscale_nearest(m, scene.image.shape[:2]) for m in masks.masks])
                                           if len(masks) else np.zeros((0, *scene.image.shape[:2]), bool))
        stats = mask_stats(masks, scene.instance_masks, iou_thresh)
        best += [float(v) for v in stats["best_iou"]]
        counts.append(float(stats["n_masks"]))
    ci = {"recall": bootstrap_rate([v >= iou_thresh for v in best]), "mean_best_iou": bootstrap_mean(best),
          "masks_per_image": bootstrap_mean(counts, unit="images")}
    sam2 = pipe.config.sam2
    result = {"dataset": dataset.name, "split": dataset.split, "profile": pipe.config.profile, "n_images": n,
              "n_objects": len(best), "iou_thresh": iou_thresh,
              "thresholds": {"pred_iou_thresh": sam2.pred_iou_thresh, "stability_score_thresh": sam2.stability_score_thresh},
              "recall": ci["recall"].to_dict()["value"], "mean_best_iou": ci["mean_best_iou"].to_dict()["value"],
              "masks_per_image": ci["masks_per_image"].to_dict()["value"],
              "ci95": {k: iv.to_dict() for k, iv in ci.items()}}
    _log_if_test(dataset, "masks", pipe, n, result["ci95"], {"max_images": max_images, "iou_thresh": iou_thresh},
                 stages=("sam2",))
    return result


# ---- tables ----------------------------------------------------------------------------------------------------

def table_rows(results: Sequence[dict[str, Any]], reported: bool = True) -> list[dict[str, Any]]:
    """One row per (method, dataset, split): measured rows, then the published ones for those datasets."""
    rows = []
    for r in results:
        splits = ["all"] + [k[len("mIoU_"):] for k in r if k.startswith("mIoU_")]
        for s in splits:
            v = r["mIoU"] if s == "all" else r[f"mIoU_{s}"]
            ci = (r.get("ci95") or {}).get("mIoU" if s == "all" else f"mIoU_{s}")
            rows.append({"method": f"ovseg:{r['method']} ({r['profile']})", "dataset": r["dataset"], "split": s,
                         "mIoU": None if v is None else round(100 * v, 1), "mIoU_ci95": _ci_text(ci),
                         "pixel_acc": None if s != "all" or r["pixel_accuracy"] is None else round(100 * r["pixel_accuracy"], 1),
                         "mean_F1": None if s != "all" or r["mean_f1"] is None else round(100 * r["mean_f1"], 1),
                         "images": r["n_images"], "protocol": r["protocol_hash"], "source": "measured"})
    if reported:
        datasets = {r["dataset"] for r in results}
        rows += [{"method": p["method"], "dataset": p["dataset"], "split": p["split"], "mIoU": p["mIoU"],
                  "mIoU_ci95": None, "pixel_acc": None, "mean_F1": None, "images": None, "protocol": None,
                  "source": p["source"]}
                 for p in REPORTED if p["dataset"] in datasets]
    return rows


def _ci_text(ci: dict[str, Any] | None) -> str | None:
    """``"[76.1, 82.4]"`` (percent) from an interval record; None without one."""
    if not ci or ci.get("ci95") is None or None in ci["ci95"]:
        return None
    lo, hi = ci["ci95"]
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def write_tables(rows: Sequence[dict[str, Any]], out_dir: str | Path, name: str) -> list[Path]:
    """``name.csv``, ``name.md`` and ``name.tex`` (atomic); measured rows first, published ones in their own section."""
    from .report import save_table

    cols = ["method", "dataset", "split", "mIoU", "mIoU_ci95", "pixel_acc", "mean_F1", "images", "protocol", "source"]
    measured = [r for r in rows if r["source"] == "measured"]
    published = [r for r in rows if r["source"] != "measured"]
    groups = [(None, measured)] + ([("reported in the literature", published)] if published else [])
    return save_table(rows, name, cols, digits=1, groups=groups, root=Path(out_dir), manifest=False)
