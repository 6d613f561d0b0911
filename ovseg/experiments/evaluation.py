"""Chapter 5: segmentation metrics of the thesis method and the baselines under one protocol.

Runs :func:`ovseg.evaluate.run_evaluation` for several methods on one dataset, each in its own
resumable results store, and turns the ``metrics.json`` results into table rows and figures:

* :func:`evaluate_methods` -- one result dict per method (``ovseg.evaluate`` format);
* :func:`summary_rows` -- mIoU (all / base / novel), mean precision / recall / F1, pixel accuracy;
* :func:`per_class_rows` and :func:`per_class_figure` -- per-class IoU, base vs novel;
* :func:`method_figure` -- mIoU per method, base vs novel;
* :func:`benchmark_datasets` / :func:`benchmark_rows` -- the full-profile VOC / COCO-Stuff / ADE20K
  tables with the thesis's reported numbers beside the measured ones;
* :func:`method_model_grid` / :func:`evaluate_grid` / :func:`grid_rows` / :func:`grid_pivot` -- the method x
  model table (issue #22): every method on every CLIP named, the thesis method and its dense ablation both with
  the CLIP's own blocks fused and with its last block alone, one SAM 2 run per image shared by all rows.

Stores are keyed by everything that determines a prediction -- dataset, number of images,
protocol, pipeline configuration and a fingerprint of the model weights -- so rerunning a notebook
reuses finished images (identical numbers: confusion matrices are integer counts) and a changed
setting or a new checkpoint gets a fresh store instead of stale results.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..datasets import SegDataset
    from ..evaluate import EvalProtocol
    from ..pipeline import OpenVocabSegmentationPipeline

__all__ = ["METHOD_LABELS", "BENCHMARKS", "GRID_VARIANTS", "GridEntry", "model_fingerprint", "store_dir",
           "evaluate_methods", "summary_rows", "summary_lines", "per_class_rows", "per_class_figure", "method_figure",
           "benchmark_datasets", "benchmark_rows", "model_label", "noise_sentence", "method_model_grid",
           "evaluate_grid", "grid_rows", "grid_pivot", "grid_figure", "features_label"]

#: Human-readable names of the methods of :data:`ovseg.evaluate.METHODS`.
METHOD_LABELS = {"ovseg": "ovseg (SAM 2 masks + alignment)", "dense": "dense (per-pixel, multi-layer)",
                 "maskclip": "MaskCLIP", "sclip": "SCLIP", "clearclip": "ClearCLIP"}
#: The public benchmarks of Chapter 5 (full profile; the datasets are not shipped).
BENCHMARKS = ("voc", "coco-stuff", "ade20k")
#: Rows of the method x model table per CLIP, as (method, layers): the thesis method (``ovseg``) and its dense
#: per-pixel ablation with the CLIP's ``own`` inference blocks fused (mini: its config.json; full: 6 / 12 / 18 / 24)
#: and with its ``last`` block alone, then the training-free baselines, which read the last block by definition.
#: ``("dense", "last")`` is left out for a CLIP read through the MaskCLIP value path: it *is* the MaskCLIP row.
GRID_VARIANTS = (("ovseg", "own"), ("ovseg", "last"), ("dense", "own"), ("dense", "last"),
                 ("maskclip", "last"), ("sclip", "last"), ("clearclip", "last"))


def model_fingerprint(config: Any) -> str:
    """A short hex string that changes when the weights the config would load change.

    Mini profile: the embedded models' checksums (:func:`ovseg.evaluate._weights_identity`); full profile:
    the model names of the config (the HF cache is content-addressed by them).
    """
    from ..evaluate import _weights_identity

    h = hashlib.sha256()
    if config.profile == "mini":
        h.update(json.dumps(_weights_identity(config), sort_keys=True).encode())
    else:
        h.update(f"{config.sam2.model}|{config.clip.model}|{config.clip.pretrained}".encode())
    return h.hexdigest()[:12]


def store_dir(root: str | Path, dataset: "SegDataset", protocol: "EvalProtocol", config: Any) -> Path:
    """``root/<dataset>-<method>-<n>-<key>``: the results store of one evaluation run.

    ``n`` is the number of images evaluated; ``key`` hashes the dataset (name, split, classes), the
    protocol, the pipeline config and :func:`model_fingerprint`, so two runs share a store exactly
    when they would compute the same predictions.
    """
    n = len(dataset) if protocol.max_images is None else min(len(dataset), protocol.max_images)
    from ..evaluate import _protocol_text

    doc = {"dataset": [dataset.name, dataset.split, list(dataset.class_names), str(Path(dataset.root).resolve())],
           "protocol": asdict(protocol), "pipeline": config.to_dict(), "weights": model_fingerprint(config),
           # the exact text run_evaluation checks before resuming a store: any change there is a new store
           "protocol_text": _protocol_text(protocol, config, dataset)}
    key = hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return Path(root) / f"{dataset.name}-{protocol.method}-{n}-{key}"


def evaluate_methods(dataset: "SegDataset", pipe: "OpenVocabSegmentationPipeline", methods: Sequence[str],
                     n_images: int | None, root: str | Path, protocol: "EvalProtocol | None" = None,
                     progress: bool = False) -> dict[str, dict[str, Any]]:
    """Evaluate each method on the first ``n_images`` images (None = all) under one protocol.

    ``protocol`` supplies the shared settings (its ``method`` and ``max_images`` are replaced).
    Each run resumes from / reuses its store under ``root`` (see :func:`store_dir`).

    Returns:
        method -> the result dict of :func:`ovseg.evaluate.run_evaluation` (``mIoU``, ``mIoU_base``,
        ``per_class_iou``, ... as fractions in [0, 1], None where undefined).
    """
    from ..evaluate import EvalProtocol, run_evaluation

    base = protocol or EvalProtocol()
    results = {}
    for method in methods:
        p = replace(base, method=method, max_images=n_images).validate()
        results[method] = run_evaluation(dataset, pipe, p, store_dir(root, dataset, p, pipe.config), progress=progress)
    return results


def _pct(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(100.0 * v, 1)


def model_label(config: Any, method: str) -> str:
    """The CLIP a method's row ran on, and whether it is the model family the method was designed for.

    The training-free baselines (MaskCLIP, SCLIP, ClearCLIP) change how a *contrastively trained* CLIP's last
    block reads its tokens; the mini CLIP was trained with dense losses for its own ``tokens`` path, so in the mini
    profile they read a model trained for another path and their rows are not like-for-like (issue #18). Another
    mini CLIP selected by ``clip.model`` is named as such; a contrastively trained one (issue #22) is the family
    every method was designed for."""
    if config.profile == "mini":
        from .. import weights as W
        from ..pipeline import _model_name

        own = method in ("ovseg", "dense")
        name = _model_name(config.clip.model, "mini", "clip")
        if name != W.default_model("mini", "clip"):
            return _other_mini_clip_label(name, own)
        return "mini-clip (its own dense-trained tokens path)" if own else \
            "mini-clip (dense-trained for the tokens path, not contrastive: not like-for-like)"
    return f"{config.clip.model} {config.clip.pretrained}"


def _other_mini_clip_label(name: str, own: bool) -> str:
    """:func:`model_label` of a mini CLIP other than the default: its recipe and dense path from its config.json."""
    import json

    from .. import weights as W
    from ..paths import REPO_ROOT

    entry = W.get_entry(name)
    meta = REPO_ROOT / entry.local_dir / "config.json" if entry is not None and entry.local_dir else None
    m = json.loads(meta.read_text(encoding="utf-8")) if meta is not None and meta.is_file() else {}
    if (m.get("training") or {}).get("recipe") != "contrastive":
        return name
    if own:
        return f"{name} (contrastive like real CLIP, read through the full profile's {m.get('dense_path')} path)"
    return f"{name} (contrastive: the model family the method was designed for)"


def _ci(r: dict[str, Any], key: str) -> str | None:
    """``"[75.7, 81.3]"`` (percent) of a result's interval, None without one (:func:`ovseg.evaluate._ci_text`)."""
    from ..evaluate import _ci_text

    return _ci_text((r.get("ci95") or {}).get(key))


def summary_rows(results: dict[str, dict[str, Any]], config: Any = None) -> list[dict[str, Any]]:
    """One row per method: ``mIoU``, ``mIoU_base``, ``mIoU_novel`` with their 95% intervals (``*_ci95``, images
    resampled, :func:`ovseg.evaluate.semantic_intervals`), ``novel_minus_base`` with its paired interval,
    ``precision``, ``recall``, ``F1``, ``pixel_acc`` in percent (1 decimal; None where undefined), ``images`` (n),
    ``split`` and, with ``config``, ``model`` (:func:`model_label`).

    Precision / recall / F1 are means over the classes where they are defined (``ovseg.metrics``).
    """
    rows = []
    for method, r in results.items():
        diff = (r.get("ci95") or {}).get("novel_minus_base") or {}
        rows.append({"method": METHOD_LABELS.get(method, method),
                     **({"model": model_label(config, method)} if config is not None else {}),
                     "mIoU": _pct(r["mIoU"]), "mIoU_ci95": _ci(r, "mIoU"),
                     "mIoU_base": _pct(r.get("mIoU_base")), "base_ci95": _ci(r, "mIoU_base"),
                     "mIoU_novel": _pct(r.get("mIoU_novel")), "novel_ci95": _ci(r, "mIoU_novel"),
                     "novel_minus_base": _pct(diff.get("value")), "diff_ci95": _ci(r, "novel_minus_base"),
                     "precision": _pct(r["mean_precision"]), "recall": _pct(r["mean_recall"]), "F1": _pct(r["mean_f1"]),
                     "pixel_acc": _pct(r["pixel_accuracy"]), "images": r["n_images"], "split": r.get("split")})
    return rows


def summary_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """:func:`summary_rows` as fixed-width text lines (1 decimal, ``-`` where undefined) for printing."""
    def f(v: float | None) -> str:
        return "    -" if v is None else f"{v:5.1f}"

    return [f"{r['method']:32s} mIoU {f(r['mIoU'])} {r.get('mIoU_ci95') or '':14s} base {f(r['mIoU_base'])}  "
            f"novel {f(r['mIoU_novel'])}  novel-base {f(r.get('novel_minus_base'))} {r.get('diff_ci95') or '':14s} "
            f"F1 {f(r['F1'])}  acc {f(r['pixel_acc'])}" for r in rows]


def noise_sentence(row: dict[str, Any]) -> str:
    """Whether novel - base is distinguishable from noise, in words, from a :func:`summary_rows` row."""
    ci = row.get("diff_ci95")
    if ci is None or row.get("novel_minus_base") is None:
        return "novel - base: not measured"
    from ..stats import noise_verdict, parse_interval

    verdict = noise_verdict(*parse_interval(ci), "novel higher", "novel lower")
    return f"novel - base {row['novel_minus_base']:+.1f} points, 95% interval {ci}: {verdict}"


def _split_of(dataset: "SegDataset") -> dict[str, str]:
    """class name -> "base" / "novel" / "-" (background or a dataset without splits)."""
    out = {n: "-" for n in dataset.class_names}
    for split, idx in dataset.splits.items():
        for i in idx:
            out[dataset.class_names[i]] = split
    return out


def _in_gt(results: dict[str, dict[str, Any]], name: str) -> bool:
    """Whether class ``name`` occurs in the ground truth of the evaluated images (recall defined)."""
    return any(r["recall"].get(name) is not None for r in results.values())


def per_class_rows(results: dict[str, dict[str, Any]], dataset: "SegDataset") -> list[dict[str, Any]]:
    """One row per class whose IoU is defined for some method: ``class``, ``split`` (base / novel / -),
    ``in_gt`` (the class occurs in the evaluated ground truth; a class that is only *predicted* has
    IoU 0 and still counts in the mIoU) and, for each method, its IoU in percent (``IoU_<method>``).
    Ordered: base, novel, then the rest; by name within."""
    split = _split_of(dataset)
    order = {"base": 0, "novel": 1}
    rows = []
    for name in dataset.class_names:
        vals = {f"IoU_{m}": _pct(r["per_class_iou"].get(name)) for m, r in results.items()}
        if all(v is None for v in vals.values()):
            continue
        rows.append({"class": name, "split": split[name], "in_gt": _in_gt(results, name), **vals})
    return sorted(rows, key=lambda r: (order.get(r["split"], 2), r["class"]))


def per_class_figure(results: dict[str, dict[str, Any]], dataset: "SegDataset", main: str = "ovseg",
                     compare: str | None = "dense") -> "Figure":
    """Bars: per-class IoU (%) of ``main`` for the classes present in the evaluated ground truth, base
    classes then novel ones (each sorted by IoU), with ``compare``'s IoU as markers and the base / novel
    mIoU (which also count classes that are only predicted, IoU 0) as dashed lines. Background is left out."""
    from matplotlib.figure import Figure

    split = _split_of(dataset)
    r = results[main]
    groups = []
    for s, colour in (("base", "tab:blue"), ("novel", "tab:orange")):
        names = [n for n in dataset.class_names if split[n] == s and _in_gt(results, n)
                 and r["per_class_iou"].get(n) is not None]
        names.sort(key=lambda n: (-r["per_class_iou"][n], n))
        groups.append((s, colour, names))
    only_pred = [n for n in dataset.class_names if split[n] != "-" and not _in_gt(results, n)
                 and r["per_class_iou"].get(n) is not None]
    n = sum(len(g[2]) for g in groups)
    fig = Figure(figsize=(max(6.0, 0.17 * n + 1.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    x0 = 0
    ticks, labels = [], []
    for s, colour, names in groups:
        xs = np.arange(x0, x0 + len(names))
        ious = [100 * r["per_class_iou"][k] for k in names]
        ax.bar(xs, ious, color=colour, width=0.8, label=f"{s} ({main})")
        if compare is not None and compare in results:
            cmp_ = [results[compare]["per_class_iou"].get(k) for k in names]
            ax.plot(xs, [np.nan if v is None else 100 * v for v in cmp_], "k_", ms=7, mew=1.5,
                    label=f"{compare}" if s == "base" else None)
        m = r.get(f"mIoU_{s}")
        if m is not None and len(names):
            ax.hlines(100 * m, xs[0] - 0.4, xs[-1] + 0.4, colors=colour, linestyles="--", lw=1,
                      label=f"mIoU {s} {100 * m:.1f}")
        ticks += list(xs)
        labels += names
        x0 += len(names) + 1
    ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
    ax.set_ylim(0, 105)
    ax.set_xlim(-0.8, max(x0 - 1.2, 0.8))
    ax.set_ylabel("IoU (%)")
    title = (f"Per-class IoU on {r['dataset']}{'/' + r['split'] if r.get('split') else ''} ({r['n_images']} images): "
             "base vs novel compositions")
    if only_pred:
        title += f"\n({len(only_pred)} classes only predicted, never in the ground truth: IoU 0, not shown)"
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    return fig


def method_figure(results: dict[str, dict[str, Any]]) -> "Figure":
    """Grouped bars: mIoU (%) of each method over all classes, base and novel classes."""
    from matplotlib.figure import Figure

    methods = list(results)
    keys = [("mIoU", "all", "0.5"), ("mIoU_base", "base", "tab:blue"), ("mIoU_novel", "novel", "tab:orange")]
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.add_subplot()
    width = 0.26
    for j, (key, label, colour) in enumerate(keys):
        vals = np.array([np.nan if results[m].get(key) is None else 100 * results[m][key] for m in methods])
        xs = np.arange(len(methods)) + (j - 1) * width
        cis = [((results[m].get("ci95") or {}).get(key) or {}).get("ci95") for m in methods]
        err = np.array([[v - 100 * c[0], 100 * c[1] - v] if c and None not in c else [np.nan, np.nan]
                        for v, c in zip(vals, cis)]).T  # (2, M): the 95% interval around each bar
        bars = ax.bar(xs, vals, width=width, color=colour, label=label,
                      yerr=np.clip(err, 0, None) if len(methods) else None, error_kw={"lw": 0.8, "capsize": 2})
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_xticks(np.arange(len(methods)), methods)
    ax.set_ylim(0, 105)
    ax.set_ylabel("mIoU (%)")
    n = results[methods[0]]["n_images"] if methods else 0
    split = results[methods[0]].get("split") if methods else None
    ax.set_title(f"Methods under the same protocol and CLIP ({results[methods[0]]['dataset'] if methods else ''}"
                 f"{'/' + split if split else ''}, {n} images; bars: 95% intervals)")
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    return fig


def benchmark_datasets(names: Sequence[str] = BENCHMARKS, roots: dict[str, str | None] | None = None
                       ) -> tuple[dict[str, "SegDataset"], dict[str, str]]:
    """Load the benchmark datasets that are present.

    Returns:
        (name -> dataset for those found, name -> one-line reason for those missing). A dataset is
        missing when :func:`ovseg.datasets.load_dataset` raises (its message says where it looked).
    """
    from ..datasets import load_dataset
    from ..errors import OvsegError

    found, missing = {}, {}
    for name in names:
        try:
            found[name] = load_dataset(name, (roots or {}).get(name))
        except OvsegError as err:
            missing[name] = str(err)
    return found, missing


def benchmark_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`ovseg.evaluate.table_rows` with the reported numbers of the evaluated datasets: measured
    rows first (``source == "measured"``), then the thesis's and the literature's."""
    from ..evaluate import table_rows

    return table_rows(list(results), reported=True)


# ---- the method x model table (issue #22) ---------------------------------------------------------------------

class _SharedMasks:
    """A SAM 2 :class:`~ovseg.masks.MaskGenerator` shared by the pipelines of a grid, remembering each image's masks
    per settings. The rows of a method x model table differ only in how CLIP is read, so SAM 2 runs once per image
    instead of once per ``ovseg`` row (whose cost is almost all SAM 2). Memory: the masks of every image evaluated
    (mini: about ten 128 x 128 bool masks per image). Everything but :meth:`generate` is the wrapped generator's."""

    def __init__(self, generator: Any):
        self._generator = generator
        self._memo: dict[tuple[str, str], Any] = {}
        self.hits = 0  # generate() calls answered from memory

    def __getattr__(self, name: str) -> Any:  # model, config, encoder_calls, update_config, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._generator, name)

    def generate(self, image: np.ndarray) -> Any:
        from ..masks import _array_key

        key = (_array_key(np.asarray(image)), json.dumps(asdict(self._generator.config), sort_keys=True, default=str))
        if key in self._memo:
            self.hits += 1
        else:
            self._memo[key] = self._generator.generate(image)
        return self._memo[key]


class GridEntry:
    """One row of the method x model table: ``method`` (:data:`ovseg.evaluate.METHODS`) with ``layers`` ``"own"``
    (the CLIP's inference blocks, fused) or ``"last"`` (its last block alone) on the CLIP ``model``, run through
    ``pipe`` (whose config says exactly that: ``clip.model``, and ``clip.extract_layers`` for ``"last"``)."""

    def __init__(self, method: str, layers: str, model: str, pipe: "OpenVocabSegmentationPipeline"):
        self.method, self.layers, self.model, self.pipe = method, layers, model, pipe

    @property
    def key(self) -> str:
        """``"<model>|<method>|<layers>"``, unique in a grid."""
        return f"{self.model}|{self.method}|{self.layers}"

    def __repr__(self) -> str:
        return f"GridEntry({self.key})"


def method_model_grid(models: Sequence[str], methods: Sequence[str] | None = None, profile: str = "mini",
                      device: str = "cpu", config: Any = None) -> list[GridEntry]:
    """The rows of the method x model table: :data:`GRID_VARIANTS` whose method is in ``methods`` (default: all of
    :data:`ovseg.evaluate.METHODS`), for every CLIP in ``models``, in that order.

    Args:
        models: ``clip.model`` values; in the mini profile registry names of mini CLIPs (``ovseg weights list``:
            ``mini-clip``, ``mini-clip-contrastive``), in the full profile open_clip names or registry entries.
        config: the base pipeline config (default: the profile's balanced preset); each row changes only
            ``clip.model`` (not for the config's own CLIP, so its stores and test-log lines stay those of
            :func:`evaluate_methods`) and, for ``"last"``, ``clip.extract_layers``.

    Every pipeline shares one SAM 2 generator that remembers masks (:class:`_SharedMasks`) and every row of one
    CLIP shares its weights (:meth:`ovseg.features.DenseCLIP.with_settings`). A ``"last"`` row is left out when the
    CLIP's own blocks are already its last block alone, and ``("dense", "last")`` when the CLIP is read through the
    MaskCLIP value path and ``maskclip`` is among the methods (the same predictions by construction).

    Raises:
        InputError: an unknown method, no model, or (mini profile) a model that is not a mini CLIP of the registry
            (the mini profile would silently load its default CLIP instead).
    """
    from .. import weights as W
    from ..config import get_balanced_config
    from ..errors import InputError
    from ..evaluate import METHODS
    from ..pipeline import OpenVocabSegmentationPipeline, _model_name, load_mask_generator

    methods = list(METHODS if methods is None else methods)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise InputError("methods must be among " + ", ".join(METHODS), bad, "drop or fix those names")
    if not models:
        raise InputError("the method x model table needs at least one CLIP", list(models),
                         f"pass e.g. models=[{W.default_model(profile, 'clip')!r}]")
    base = config if config is not None else get_balanced_config(profile)
    if profile == "mini":
        minis = W.list_models(profile="mini", stage="clip")
        unknown = [m for m in models if m not in minis]
        if unknown:
            raise InputError("in the mini profile every model must be a mini CLIP of the weights registry", unknown,
                             "use one of: " + ", ".join(minis))
    shared = _SharedMasks(load_mask_generator(base, device))
    grid: list[GridEntry] = []
    for model in models:
        same = _model_name(base.clip.model, base.profile, "clip") == model
        cfg = base if same else base.replace(**{"clip.model": model})
        own = OpenVocabSegmentationPipeline(cfg, device=device, mask_generator=shared)
        clip = own.clip
        last_cfg = cfg.replace(**{"clip.extract_layers": [clip.depth], "clip.layer_weights": None})
        last = OpenVocabSegmentationPipeline(last_cfg, device=device, mask_generator=shared,
                                             clip=clip.with_settings(extract_layers=[clip.depth]))
        for method, layers in GRID_VARIANTS:
            if method not in methods:
                continue
            if layers == "last" and method in ("ovseg", "dense"):
                if list(clip.extract_layers) == [clip.depth]:
                    continue
                if method == "dense" and clip.dense_path == "maskclip" and "maskclip" in methods:
                    continue
                grid.append(GridEntry(method, layers, model, last))
            else:
                grid.append(GridEntry(method, layers, model, own))
    return grid


def evaluate_grid(dataset: "SegDataset", grid: Sequence[GridEntry], n_images: int | None, root: str | Path,
                  protocol: "EvalProtocol | None" = None, progress: bool = False) -> dict[str, dict[str, Any]]:
    """Evaluate every row of ``grid`` (:func:`method_model_grid`) like :func:`evaluate_methods`: each in its own
    resumable store under ``root`` (keyed by its pipeline config, so a row with other blocks or another CLIP never
    reuses another's results), each test-split run logged (:mod:`ovseg.testlog`).

    Returns:
        :attr:`GridEntry.key` -> the result dict of :func:`ovseg.evaluate.run_evaluation`.
    """
    from ..evaluate import EvalProtocol, run_evaluation

    base = protocol or EvalProtocol()
    out = {}
    for e in grid:
        p = replace(base, method=e.method, max_images=n_images).validate()
        out[e.key] = run_evaluation(dataset, e.pipe, p, store_dir(root, dataset, p, e.pipe.config), progress=progress)
    return out


_PATH_NAMES = {"maskclip": "value path", "tokens": "tokens path", "sclip": "SCLIP attention",
               "clearclip": "ClearCLIP attention"}


def features_label(clip: Any, method: str) -> str:
    """How a method reads ``clip`` (a :class:`~ovseg.features.DenseCLIP`): the path and the blocks, e.g.
    ``"value path, blocks 2+4+6+8 of 8 fused"`` (the thesis method on a contrastive CLIP, the full profile's code
    path), ``"tokens path, block 6 of 6"``, ``"SCLIP attention, block 8 of 8"`` (a baseline: its last block)."""
    if method in ("ovseg", "dense"):
        path, layers = clip.dense_path, list(clip.extract_layers)
    else:
        path, layers = method, [clip.depth]
    blocks = f"block {layers[0]}" if len(layers) == 1 else "blocks " + "+".join(str(x) for x in layers)
    return f"{_PATH_NAMES.get(path, path)}, {blocks} of {clip.depth}" + (" fused" if len(layers) > 1 else "")


def _variant_label(method: str, layers: str) -> str:
    """A grid row's method name: the thesis method and the dense ablation say which blocks they fused."""
    if method == "ovseg":
        return "ovseg (SAM 2 masks + alignment)" + (", last block only" if layers == "last" else ", blocks fused")
    if method == "dense":
        return "dense per-pixel" + (", last block only" if layers == "last" else ", blocks fused")
    return METHOD_LABELS.get(method, method)


def grid_rows(results: dict[str, dict[str, Any]], grid: Sequence[GridEntry]) -> list[dict[str, Any]]:
    """:func:`summary_rows` of every grid row, in grid order, with ``model`` (:func:`model_label`), ``features``
    (:func:`features_label`), ``layers`` (``"own"`` / ``"last"``) and ``clip`` (the model name) per row; ``method``
    names the variant (the thesis method and the dense ablation say which blocks they fused)."""
    rows = []
    for e in grid:
        if e.key not in results:
            continue
        row = summary_rows({e.method: results[e.key]}, e.pipe.config)[0]
        row["features"] = features_label(e.pipe.clip, e.method)
        row["layers"] = e.layers
        row["clip"] = e.model
        row["method"] = _variant_label(e.method, e.layers)
        rows.append(row)
    return rows


def grid_pivot(rows: Sequence[dict[str, Any]], key: str = "mIoU") -> list[dict[str, Any]]:
    """The method x model view of :func:`grid_rows`: one row per method variant (``method``), one column per CLIP
    holding ``"<value> <interval>"`` of ``key`` (``mIoU``, ``mIoU_base`` or
    ``mIoU_novel``, percent; ``-`` where that variant was not run on that CLIP)."""
    ci = {"mIoU": "mIoU_ci95", "mIoU_base": "base_ci95", "mIoU_novel": "novel_ci95"}[key]
    models = list(dict.fromkeys(r["clip"] for r in rows))
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        cell = "-" if r[key] is None else f"{r[key]:.1f} {r.get(ci) or ''}".strip()
        out.setdefault(r["method"], {"method": r["method"], **{m: "-" for m in models}})[r["clip"]] = cell
    return list(out.values())


def grid_figure(rows: Sequence[dict[str, Any]]) -> "Figure":
    """Grouped bars: mIoU (%) with its 95% interval per method (x) and CLIP (bar colour), from :func:`grid_rows`."""
    from matplotlib.figure import Figure

    from ..stats import parse_interval

    models = list(dict.fromkeys(r["clip"] for r in rows))
    labels = list(dict.fromkeys(r["method"] for r in rows))
    fig = Figure(figsize=(max(6.4, 1.1 * len(labels) + 1.5), 3.6), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    for j, model in enumerate(models):
        vals, err = [], []
        for label in labels:
            r = next((r for r in rows if r["clip"] == model and r["method"] == label), None)
            v = np.nan if r is None or r["mIoU"] is None else r["mIoU"]
            lo, hi = parse_interval(r["mIoU_ci95"]) if r is not None and r.get("mIoU_ci95") else (np.nan, np.nan)
            vals.append(v)
            err.append([max(0.0, v - lo), max(0.0, hi - v)] if np.isfinite(lo) else [np.nan, np.nan])
        xs = np.arange(len(labels)) + (j - (len(models) - 1) / 2) * width
        bars = ax.bar(xs, vals, width, label=model, yerr=np.array(err).T, error_kw={"lw": 0.8, "capsize": 2})
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    import textwrap

    ax.set_xticks(np.arange(len(labels)), [textwrap.fill(t, 16) for t in labels], fontsize=7)
    ax.set_ylim(0, 105)
    ax.set_ylabel("mIoU (%)")
    n, split = rows[0]["images"], rows[0].get("split")
    ax.set_title(f"Method x CLIP ({split or ''} split, {n} images; bars: 95% intervals over images)", fontsize=9)
    ax.legend(fontsize=7, title="CLIP", title_fontsize=7, loc="upper right")
    return fig
