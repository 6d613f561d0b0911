"""The four-stage pipeline with the thesis code's API.

>>> from ovseg import OpenVocabSegmentationPipeline
>>> pipe = OpenVocabSegmentationPipeline()                     # mini profile, CPU
>>> result = pipe.segment("data/samples/scene.png", "red circle", top_k=3)
>>> result.segmentation_masks[0].final_score

Models load lazily, stage by stage, the first time a stage runs; masks and dense features are
cached for the last image, so a new prompt on the same image costs only text encoding and one
matrix product (3.2.3). Inputs are validated before any model is loaded.

Results record what produced them: ``models`` (registry name and pinned sha256 of each model that ran),
``config`` (the effective configuration: in the mini profile the embedded models' names and settings, not
the full profile's defaults) and ``counts`` (candidates -> above the similarity threshold -> returned).
:meth:`SegmentationResult.save` writes the CLI's output folder.

In the mini profile, a prompt with words outside the mini CLIP's vocabulary or an image whose longer side
exceeds :data:`MINI_MAX_IMAGE_SIDE` raises one :class:`~ovseg.errors.OutOfDomainWarning` per pipeline and
message: the mini models know only the mini world (coloured shapes in 128 px scenes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import weights as W
from .align import AlignmentScores, rank_masks, score_masks, semantic_segmentation
from .config import MINI_MAX_IMAGE_SIDE as _MINI_MAX_IMAGE_SIDE
from .config import PipelineConfig, load_config
from .errors import InputError, NoMatchWarning, OutOfDomainWarning, OvsegError, WeightsError
from .features import check_prompts
from .io import load_image
from .paths import REPO_ROOT
from .utils import MaskSet, check_device, downscale_image, masks_to_boxes_xywh, score_shape, upscale_nearest, working_shape

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .features import DenseCLIP, DenseFeatures
    from .inpaint import Inpainter
    from .masks import MaskGenerator

__all__ = ["OpenVocabSegmentationPipeline", "SegmentationMask", "SegmentationResult", "SemanticResult", "BatchItem",
           "EDIT_OPERATIONS", "load_mask_generator", "load_dense_clip", "load_inpainter", "effective_config",
           "MINI_WORLD_SIDE", "MINI_MAX_IMAGE_SIDE"]

EDIT_OPERATIONS = ("remove", "replace", "style")

#: Side of the mini world's scenes, pixels (``ovseg.world.SceneConfig.size``); the mini models were trained on them.
MINI_WORLD_SIDE = 128
#: In the mini profile, an image whose longer side exceeds this (4x the mini world's scenes; the shipped samples
#: are 128-256 px) is out of the mini world and triggers an :class:`~ovseg.errors.OutOfDomainWarning`; it is also
#: the mini profile's working size (``sam2.max_image_side``), defined in :mod:`ovseg.config`.
MINI_MAX_IMAGE_SIDE = _MINI_MAX_IMAGE_SIDE

_SOURCE_NAMES = {"sam2": "SAM 2"}


@dataclass
class SegmentationMask:
    """One ranked mask. ``mask`` is (H, W) bool at the input image's size (brought back from the working size,
    nearest neighbour, for an image larger than ``sam2.max_image_side``); ``bbox`` is XYWH pixels and ``area`` the
    pixel count of that full-size mask."""

    mask: np.ndarray
    final_score: float  # S_i - alpha * O_i
    mean_similarity: float  # S_i: weighted mean cosine inside the mask
    background_similarity: float  # O_i: mean cosine outside the mask
    bbox: list[int]
    area: int
    predicted_iou: float
    stability_score: float
    index: int  # row in the image's MaskSet

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "mask"}


@dataclass
class SegmentationResult:
    """Output of :meth:`OpenVocabSegmentationPipeline.segment` (and ``segment_and_edit``)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB input
    text_prompt: str
    segmentation_masks: list[SegmentationMask]  # sorted by final_score, descending
    num_candidates: int  # masks the generator produced before alignment
    mask_source: str  # "sam2", "classical", ...
    profile: str
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    edited_image: "Image.Image | None" = None
    edit: dict[str, Any] | None = None  # operation, prompt, seed, ... when edited
    edit_mask: np.ndarray | None = None  # (H, W) float32 in [0, 1]: the blended repaint mask the edit used (1 = repainted)
    # candidates -> above the similarity threshold -> returned: {"candidates", "mask_source", "sam2_thresholds",
    # "similarity_threshold", "above_threshold", "best_similarity" (highest S_i of any candidate), "top_k",
    # "returned"} (see counts_line)
    counts: dict[str, Any] = field(default_factory=dict)
    # per stage that ran ("sam2", "clip", "inpainting" after an edit): {"name", "stage", "sha256"}, see
    # ovseg.weights.model_record; name None for a component passed to the pipeline
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] | None = None  # the effective configuration (effective_config)
    source: str | None = None  # the image's path when it was given as one
    exif_orientation: int | None = None  # the input's EXIF orientation tag (applied on load: masks are upright)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no arrays): what ``result.json`` holds, less its ``files`` list."""
        h, w = self.image.shape[:2]
        return {"text_prompt": self.text_prompt, "image_size": [w, h], "profile": self.profile,
                "mask_source": self.mask_source, "num_candidates": self.num_candidates, "counts": self.counts,
                "masks": [m.to_dict() for m in self.segmentation_masks],
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()}, "edit": self.edit,
                "models": self.models, "image": self.source, "exif_orientation": self.exif_orientation,
                "config": self.config}

    def counts_line(self) -> str:
        """One line of how many masks passed which filter, e.g.
        ``12 candidates from SAM 2 (predicted IoU > 0.5, stability > 0.7) -> 2 with similarity >= 0.2 -> top-3: 2 returned``."""
        c = self.counts
        if not c:
            return f"{self.num_candidates} candidates -> {len(self.segmentation_masks)} returned"
        source = _SOURCE_NAMES.get(c["mask_source"], c["mask_source"])
        th = c.get("sam2_thresholds")
        filters = f" (predicted IoU > {th['pred_iou_thresh']:g}, stability > {th['stability_score_thresh']:g})" if th else ""
        return (f"{c['candidates']} candidate{'s' * (c['candidates'] != 1)} from {source}{filters} -> "
                f"{c['above_threshold']} with similarity >= {c['similarity_threshold']:g} -> "
                f"top-{c['top_k']}: {c['returned']} returned")

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write the output folder the CLI writes; returns the files written, ``result.json`` last.

        ``overlay.png``: every returned mask over the image, labelled with its rank and final score
        (:func:`ovseg.viz.labelled_overlay`; images under :data:`ovseg.viz.LEGIBLE_SIDE` px are upscaled). ``segment``
        results add ``mask_00.png``, ``mask_01.png``, ... (rank order, 255 = mask); edited results add ``mask.png`` (the
        edited object), ``edit_mask.png`` (the repaint mask actually used, dilated and blurred, 255 = repainted) and
        ``edited.png``. ``result.json`` (:meth:`to_dict` plus ``files``) is written last, so its presence marks a
        complete folder. Every file is written atomically. Files that an earlier run wrote into the folder (listed by
        its ``result.json``) and this run did not are removed; nothing else in the folder is touched.

        Raises:
            InputError: ``out_dir`` exists and is not a folder.
        """
        from .io import save_result_folder
        from .viz import labelled_overlay

        def images() -> Iterator[tuple[str, np.ndarray]]:  # computed one by one as they are written
            yield "overlay.png", labelled_overlay(self.image, self.segmentation_masks)
            if self.edited_image is None:
                for k, m in enumerate(self.segmentation_masks):
                    yield f"mask_{k:02d}.png", m.mask
                return
            yield "mask.png", self.segmentation_masks[0].mask
            if self.edit_mask is not None:
                yield "edit_mask.png", np.rint(self.edit_mask * 255).astype(np.uint8)
            yield "edited.png", self.edited_image

        return save_result_folder(out_dir, images(), self.to_dict)


@dataclass
class SemanticResult:
    """Output of :meth:`OpenVocabSegmentationPipeline.segment_semantic`."""

    image: np.ndarray  # (H, W, 3) uint8
    class_names: list[str]
    label_map: np.ndarray  # (H, W) int32 at the input's size: i -> class_names[i], -1 -> background / unassigned
    mask_labels: np.ndarray  # (N,) int32 class of each candidate mask, -1 if rejected
    scores: AlignmentScores  # (N, C)
    masks: MaskSet  # the candidates, at the working size (sam2.max_image_side)
    timings: dict[str, float] = field(default_factory=dict)
    profile: str | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # as SegmentationResult.models
    config: dict[str, Any] | None = None  # the effective configuration (effective_config)
    source: str | None = None  # the image's path when it was given as one
    exif_orientation: int | None = None

    @property
    def num_assigned(self) -> int:
        """Candidate masks that were given a class (``mask_labels >= 0``)."""
        return int((self.mask_labels >= 0).sum())

    @property
    def empty(self) -> bool:
        """True when no pixel got a class (``label_map`` is all -1); ``segment_semantic`` also warns then."""
        return not bool((self.label_map >= 0).any())

    def class_pixels(self) -> dict[str, int]:
        """Pixels of ``label_map`` given each class, ``{name: count}`` in ``class_names`` order."""
        counts = np.bincount(self.label_map[self.label_map >= 0].ravel(), minlength=len(self.class_names))
        return {name: int(counts[i]) for i, name in enumerate(self.class_names)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no arrays): what ``result.json`` holds, less its ``files`` list. ``class_pixels``
        counts the label map's pixels per class; ``labels.png`` stores class ``i`` as ``i + 1`` (0 = no class)."""
        h, w = self.image.shape[:2]
        return {"class_names": list(self.class_names), "image_size": [w, h], "profile": self.profile,
                "mask_source": self.masks.source, "num_candidates": len(self.masks), "num_assigned": self.num_assigned,
                "class_pixels": self.class_pixels(), "label_encoding": "labels.png value = class index + 1, 0 = no class",
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()}, "models": self.models,
                "image": self.source, "exif_orientation": self.exif_orientation, "config": self.config}

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write the output folder of ``ovseg segment IMAGE --classes ...``; returns the files written, ``result.json``
        last.

        ``labels.png``: the label map at the input's size, class ``i`` of ``class_names`` stored as ``i + 1`` and 0 for
        pixels no class was given (8-bit greyscale PNG, 16-bit for more than 254 classes). ``semantic.png``: each
        class's colour (:data:`ovseg.viz.PALETTE`) blended half over the image. ``result.json``: :meth:`to_dict` plus
        ``files``, written last. Every file is written atomically; an earlier run's listed files this run did not write
        are removed, nothing else is touched (as :meth:`SegmentationResult.save`).

        Raises:
            InputError: ``out_dir`` exists and is not a folder.
        """
        from .io import save_result_folder
        from .viz import PALETTE

        def images() -> Iterator[tuple[str, np.ndarray]]:  # computed one by one as they are written
            dtype = np.uint8 if len(self.class_names) <= 254 else np.uint16
            yield "labels.png", (self.label_map + 1).astype(dtype)
            colours = np.vstack([PALETTE, PALETTE // 2 + 64]).astype(np.float32)
            blend = self.image.astype(np.float32)
            has = self.label_map >= 0
            blend[has] = 0.5 * blend[has] + 0.5 * colours[self.label_map[has] % len(colours)]
            yield "semantic.png", np.rint(blend).astype(np.uint8)

        return save_result_folder(out_dir, images(), self.to_dict)


@dataclass
class BatchItem:
    """One image of :meth:`OpenVocabSegmentationPipeline.segment_batch`.

    ``index`` is the image's position in the iterable given; ``source`` the image as given (a path, PIL image or
    array). Exactly one of ``result`` and ``error`` is set: the result of ``segment`` / ``segment_and_edit`` /
    ``segment_semantic``, or the one-line message of what went wrong with this image. ``seconds`` is the wall time
    of the image (models loaded on the first image included); ``warnings`` the messages of the warnings it raised.
    """

    index: int
    source: Any
    result: "SegmentationResult | SemanticResult | None"
    error: str | None
    seconds: float
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def _one_line(err: BaseException) -> str:
    """An error as one line: an ovseg error's own message, else ``<Type>: <first line>``."""
    if isinstance(err, OvsegError):
        return " ".join(str(err).split())
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first}".rstrip(": ")


# ---- stage loaders ------------------------------------------------------------------------------

def _model_name(cfg_value: str, profile: str, stage: str) -> str:
    """The model a stage loads. The mini profile pins the model-identity fields to its embedded models
    (``config.PROFILE_PINNED_FIELDS``), except an ``inpainting.model`` set explicitly (not the full profile's
    default): an inpainting model is self-contained (a diffusers directory with its own scheduler and tokenizer),
    so a training run's export is evaluated with the mini segmenter instead of being silently replaced. A
    ``clip.model`` naming another mini-profile CLIP entry of the registry (e.g. a contrastively trained mini CLIP)
    is loaded too; its inference settings come with it, like the default's (:func:`_mini_clip_layers` for the
    one exception)."""
    if profile != "mini":
        return cfg_value
    if stage == "inpainting" and cfg_value != W.default_model("full", stage):
        return cfg_value
    entry = W.get_entry(cfg_value)
    if stage == "clip" and entry is not None and (entry.profile, entry.stage) == ("mini", "clip"):
        return cfg_value
    return W.default_model("mini", stage)


def _mini_clip_layers(config: PipelineConfig, meta: dict[str, Any]) -> tuple[list[int], list[float] | None]:
    """The blocks a mini CLIP reads and their fusion weights: its ``config.json``'s ``extract_layers`` (equal
    weights) while ``clip.extract_layers`` keeps the full profile's default (6 / 12 / 18 / 24 of ViT-L/14, which a
    mini CLIP does not have), else the configured ``clip.extract_layers`` and ``clip.layer_weights`` -- the layer
    ablation (e.g. ``--set clip.extract_layers=[8]``: the last block alone) runs in the mini profile too."""
    from .config import CLIPConfig

    if list(config.clip.extract_layers) == list(CLIPConfig().extract_layers):
        return list(meta["extract_layers"]), None
    return list(config.clip.extract_layers), (None if config.clip.layer_weights is None
                                              else list(config.clip.layer_weights))


def effective_config(config: PipelineConfig) -> dict[str, Any]:
    """``config.to_dict()`` with the model-identity fields (``config.PROFILE_PINNED_FIELDS``) as the profile runs them.

    In the full profile that is the config itself. In the mini profile ``sam2.model``, ``clip.model`` and
    ``inpainting.model`` name the models that load (:func:`_model_name`), and the mini CLIP's settings
    (``clip.pretrained``, ``image_size``, ``extract_layers``, ``dense_path``, ``templates``, ``layer_weights``) come
    from its ``config.json``. The dict loads back with ``PipelineConfig.from_dict`` and runs the same models.
    """
    d = config.to_dict()
    if config.profile != "mini":
        return d
    for stage in ("sam2", "clip", "inpainting"):
        d[stage]["model"] = _model_name(d[stage]["model"], "mini", stage)
    entry = W.get_entry(d["clip"]["model"])
    meta = REPO_ROOT / entry.local_dir / "config.json" if entry is not None and entry.local_dir else None
    if meta is not None and meta.is_file():
        m = json.loads(meta.read_text(encoding="utf-8"))
        layers, weights = _mini_clip_layers(config, m)
        d["clip"].update(pretrained=f"{entry.local_dir}/{entry.files[0]}", image_size=m["image_size"],
                         extract_layers=layers, dense_path=m["dense_path"], templates=list(m["templates"]),
                         layer_weights=weights)
    return d


def resolve_sam2(name: str) -> "W.ResolvedWeights":
    """The SAM 2 weights ``name`` (registry entry or local checkpoint / folder) with their registry entry: a local
    checkpoint is matched to its entry by its published file name (e.g. ``sam2.1_hiera_large.pt``), which tells the
    sam2 config it needs. Shared by the image mask generator and the video predictor.

    Raises:
        InputError: a checkpoint whose name matches no entry.
    """
    found = W.resolve(name, "sam2")
    if found.entry is None:  # a local checkpoint file: recognise it by its published file name
        found.entry = next((W.REGISTRY[n] for n in W.list_models(stage="sam2")
                            if found.path.name in W.REGISTRY[n].files), None)
    if found.entry is None:
        raise InputError("sam2.model must be a registry entry or a checkpoint with its published file name "
                         "(the name tells which sam2 config it needs)", repr(name),
                         "use one of: " + ", ".join(W.list_models(stage="sam2")) + ", or keep the file's original name")
    return found


def load_mask_generator(config: PipelineConfig, device: str = "cpu", progress: bool = False) -> "MaskGenerator":
    """SAM 2 mask generator for the config's profile (3.2.2).

    Registry entries name their sam2 config (``arch``); a local checkpoint is matched to its entry
    by its published file name (e.g. ``sam2.1_hiera_large.pt``); an embedded model's folder holds
    its ``config.yaml`` and ``model.safetensors``.
    """
    from .masks import MaskGenerator, build_sam2_model

    found = resolve_sam2(_model_name(config.sam2.model, config.profile, "sam2"))
    arch, checkpoint = found.entry.arch, found.path
    if found.path.is_dir():  # embedded model folder: config + weights side by side
        arch, checkpoint = str(found.path / "config.yaml"), found.path / found.entry.files[0]
    model = build_sam2_model(arch, checkpoint, device)
    return MaskGenerator(model, config.sam2, progress=progress)


def load_dense_clip(config: PipelineConfig, device: str = "cpu") -> "DenseCLIP":
    """Dense CLIP for the config's profile (3.2.1).

    ``clip.model`` is a registry entry (its preprocessing comes with it) or any open_clip
    architecture, with ``clip.pretrained`` an open_clip tag (found in the HF cache) or a local file.
    """
    import open_clip

    from .features import DenseCLIP

    c = config.clip
    name = _model_name(c.model, config.profile, "clip")
    entry = W.get_entry(name)
    if entry is not None and entry.local_dir:  # embedded mini CLIP: architecture and inference settings ship with it
        from .mini_clip import load_mini_clip

        model, tokenizer, m = load_mini_clip(W.resolve(name, "clip").path, device)
        layers, weights = _mini_clip_layers(config, m)
        return DenseCLIP(model, tokenizer, m["mean"], m["std"], extract_layers=layers,
                         dense_path=m["dense_path"], templates=m["templates"], image_size=m["image_size"],
                         window_stride=c.window_stride, sliding_window=c.sliding_window,
                         max_windows_per_side=c.max_windows_per_side, layer_weights=weights, device=device)
    if entry is not None:
        path, arch, pre = W.resolve(name, "clip").path, entry.arch, entry.preprocess
    else:
        if name not in open_clip.list_models():
            raise InputError("clip.model must be a registry entry or an open_clip architecture", repr(name),
                             "see `ovseg weights list` or open_clip.list_models()")
        arch = name
        pre = open_clip.get_pretrained_cfg(arch, c.pretrained) or {}
        path = W.resolve(c.pretrained, "clip").path if Path(c.pretrained).is_file() else _clip_from_cache(arch, c.pretrained, pre)
    model = open_clip.create_model(arch, pretrained=str(path), device=device,
                                   force_quick_gelu=bool(pre.get("quick_gelu", False)), weights_only=True)
    tokenizer = open_clip.get_tokenizer(arch)
    return DenseCLIP(model, tokenizer, pre.get("mean", W.OPENAI_CLIP_MEAN), pre.get("std", W.OPENAI_CLIP_STD),
                     extract_layers=c.extract_layers, dense_path=c.dense_path, templates=c.templates,
                     image_size=c.image_size, window_stride=c.window_stride, sliding_window=c.sliding_window,
                     max_windows_per_side=c.max_windows_per_side, layer_weights=c.layer_weights, device=device)


def _clip_from_cache(arch: str, tag: str, pcfg: dict) -> Path:
    repo = (pcfg.get("hf_hub") or "").strip("/")
    for f in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        hit = W._from_hf_cache(repo, f) if repo else None
        if hit is not None:
            return hit
    raise WeightsError(f"weights for CLIP '{arch}' / '{tag}' are missing",
                         f"nothing in the HF cache {W._hf_cache_dir()} for {repo or '(no hub id known to open_clip)'}",
                         f"run `hf download {repo} open_clip_model.safetensors`" if repo else
                         "pass clip.pretrained as a local checkpoint file")


def load_inpainter(config: PipelineConfig, device: str = "cpu", progress: bool = False) -> "Inpainter":
    """Inpainter for the config's profile (3.2.4); the classical method loads no model."""
    from .inpaint import Inpainter, load_inpaint_pipeline

    if config.inpainting.method == "classical":
        return Inpainter(None, config.inpainting, progress=progress)
    name = _model_name(config.inpainting.model, config.profile, "inpainting")
    found = W.resolve(name, "inpainting")
    return Inpainter(load_inpaint_pipeline(found.path, device=device), config.inpainting, progress=progress)


# ---- the pipeline ---------------------------------------------------------------------------------

class OpenVocabSegmentationPipeline:
    """SAM 2 masks + dense CLIP alignment + diffusion inpainting.

    Args:
        config: a :class:`PipelineConfig`, preset name (``fast`` / ``balanced`` / ``quality``) or YAML path;
            default: the balanced preset in the mini profile.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        verbose: print per-stage timings and show progress bars.
        mask_generator, clip, inpainter: ready components (tests, notebooks); otherwise loaded
            lazily from the weights registry for the config's profile. A result names only the models the
            pipeline loaded itself (``models[stage]["name"]`` is None for a component passed in).
        progress: one tqdm bar (stderr) per long stage: SAM 2 crops, denoising steps (default: ``verbose``).
    """

    def __init__(self, config: PipelineConfig | str | None = None, device: str = "cpu", verbose: bool = False, *,
                 mask_generator: "MaskGenerator | None" = None, clip: "DenseCLIP | None" = None,
                 inpainter: "Inpainter | None" = None, progress: bool | None = None):
        self.config = load_config(config)
        self.device = check_device(device)  # a bad device string or a missing GPU: one line, before any model
        self.verbose = verbose
        self.progress = verbose if progress is None else progress  # tqdm bars for the long stages
        self._mask_generator = mask_generator
        self._clip = clip
        self._inpainter = inpainter
        self._cache_key: str | None = None
        self._image: np.ndarray | None = None  # (H, W, 3) uint8, the last image at its own size
        self._work: np.ndarray | None = None  # (h, w, 3) uint8, its working copy (sam2.max_image_side)
        self._masks: MaskSet | None = None
        self._features: DenseFeatures | None = None
        # earlier images' (image, work, masks, features) while remember_images(n) is active: key -> state, LRU
        self._recent: "OrderedDict[str, tuple[Any, Any, Any, Any]]" = OrderedDict()
        self._keep = 1  # images whose masks and features are kept (1: the last one)
        self.timings: dict[str, float] = {}
        given = {"name": None, "sha256": None, "note": "component passed to the pipeline"}
        self._models: dict[str, dict[str, Any]] = {
            stage: {**given, "stage": stage} for stage, comp in (("sam2", mask_generator), ("clip", clip),
                                                                  ("inpainting", inpainter)) if comp is not None}
        self._warned: set[str] = set()  # OutOfDomainWarning messages already given by this pipeline
        self._exif_orientation: int | None = None  # of the last image loaded (recorded in results)

    # ---- lazily loaded components ----------------------------------------------------------
    @property
    def mask_generator(self) -> "MaskGenerator":
        if self._mask_generator is None:
            with self._timed("load_masks"):
                self._mask_generator = load_mask_generator(self.config, self.device, progress=self.progress)
            self._models["sam2"] = W.model_record(_model_name(self.config.sam2.model, self.config.profile, "sam2"), "sam2")
        return self._mask_generator

    @property
    def clip(self) -> "DenseCLIP":
        if self._clip is None:
            with self._timed("load_clip"):
                self._clip = load_dense_clip(self.config, self.device)
            self._models["clip"] = W.model_record(_model_name(self.config.clip.model, self.config.profile, "clip"), "clip")
        return self._clip

    @property
    def inpainter(self) -> "Inpainter":
        if self._inpainter is None:
            with self._timed("load_inpainting"):
                self._inpainter = load_inpainter(self.config, self.device, progress=self.progress)
            if self.config.inpainting.method == "classical":
                self._models["inpainting"] = {"name": None, "stage": "inpainting", "sha256": None,
                                              "note": "classical OpenCV inpainting (no model)"}
            else:
                name = _model_name(self.config.inpainting.model, self.config.profile, "inpainting")
                self._models["inpainting"] = W.model_record(name, "inpainting")
        return self._inpainter

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.timings[stage] = time.perf_counter() - start
        if self.verbose:
            print(f"[ovseg] {stage}: {self.timings[stage]:.3f} s")

    # ---- cached per-image stages -----------------------------------------------------------
    def _prepare(self, image: Any) -> np.ndarray:
        """Load the image (cached: masks and features are kept for the last one) and make its working copy:
        the image itself, or for a longer side above ``sam2.max_image_side`` an area-downscaled copy that SAM 2
        and CLIP run on (masks are kept at that size; :meth:`_full_size` brings back only those returned)."""
        info: dict[str, Any] = {}
        arr = load_image(image, info)
        self._exif_orientation = info.get("exif_orientation")
        work = working_shape(*arr.shape[:2], self.config.sam2.max_image_side)
        digest = hashlib.blake2b(digest_size=16)
        digest.update(np.ascontiguousarray(arr).data)  # no copy of a large image's bytes
        key = digest.hexdigest() + str(arr.shape) + str(work)
        if key != self._cache_key:
            hit = self._recent.pop(key, None)
            if self._keep > 1 and self._cache_key is not None:  # remember_images: keep the outgoing image's stages
                self._recent[self._cache_key] = (self._image, self._work, self._masks, self._features)
                self._recent.move_to_end(self._cache_key)
                while len(self._recent) > self._keep - 1:
                    self._recent.popitem(last=False)
            if hit is not None:
                self._cache_key = key
                self._image, self._work, self._masks, self._features = hit
            else:
                self._cache_key, self._image, self._masks, self._features = key, arr, None, None
                self._work = downscale_image(arr, work)
        return arr

    @contextmanager
    def remember_images(self, n: int) -> Iterator[None]:
        """Within the block, keep the masks and dense features of the last ``n`` images (not only the last one), so
        that prompts revisiting an image (the keyframes of a clip, one prompt after another) reuse its SAM 2 and
        CLIP passes. Results are the same; memory grows by ``n - 1`` images' masks and features, freed on exit."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError("remember_images takes a positive number of images", repr(n), "pass e.g. 8")
        old = self._keep
        self._keep = max(old, n)
        try:
            yield
        finally:
            self._keep = old
            self._recent.clear()

    @staticmethod
    def _full_size(mask: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, list[int], int]:
        """A working-size (h, w) bool mask at the input's (H, W) (nearest neighbour), with its XYWH box and area."""
        full = upscale_nearest(mask, shape)  # (H, W) bool
        return full, [int(v) for v in masks_to_boxes_xywh(full[None])[0]], int(np.count_nonzero(full))

    def refilter(self, **changes: Any) -> MaskSet | None:
        """Change SAM 2 settings (thresholds, NMS, crop layers, ...) for this pipeline.

        ``changes`` are :class:`~ovseg.config.SAM2Config` field names. The last image's masks are
        regenerated from its cached image embeddings (the encoder does not run again) and returned;
        ``None`` when no image has been processed yet.
        """
        self.config = self.config.replace(**{f"sam2.{k}": v for k, v in changes.items()})
        self.mask_generator.update_config(self.config.sam2)
        self._masks = None
        self._recent.clear()
        return None if self._image is None else self.generate_masks(self._image)

    def generate_masks(self, image: Any) -> MaskSet:
        """3.2.2: candidate masks of an image (cached for the last image), at the working size: the image's own,
        or for a longer side above ``sam2.max_image_side`` the downscaled copy SAM 2 ran on (``masks.shape``)."""
        self._prepare(image)
        if self._masks is None:
            with self._timed("masks"):
                self._masks = self.mask_generator.generate(self._work)
        return self._masks

    def dense_features(self, image: Any) -> "DenseFeatures":
        """3.2.1: multi-layer dense CLIP features (cached for the last image) of its working copy (see
        :meth:`generate_masks`; CLIP resizes to a few windows of ``clip.image_size`` anyway)."""
        self._prepare(image)
        if self._features is None:
            with self._timed("features"):
                self._features = self.clip.dense_features(self._work)
        return self._features

    def score(self, image: Any, prompts: Sequence[str]) -> tuple[MaskSet, AlignmentScores]:
        """3.2.3: alignment scores of every candidate mask against every prompt."""
        prompts = check_prompts(list(prompts))
        masks = self.generate_masks(image)
        feats = self.dense_features(image)
        with self._timed("align"):
            a = self.config.alignment
            shape = score_shape(*masks.shape, a.score_max_side)
            text = self.clip.encode_text(prompts)  # (T, E)
            sim = feats.similarity(text, size=shape, weights=self.clip.layer_weights)  # (T, h, w)
            width = a.boundary_width if a.spatial_weighting else 0.0
            weights = masks.score_weights(shape, width, a.boundary_min_weight)  # (N, h*w)
            scores = score_masks(weights, sim, a.background_weight)
        return masks, scores

    def _model_info(self, stage: str) -> dict[str, Any]:
        """Provenance record of the model a stage ran (see :func:`ovseg.weights.model_record`)."""
        return dict(self._models.get(stage) or {"name": None, "stage": stage, "sha256": None, "note": "unknown"})

    # ---- out-of-domain check (mini profile) ------------------------------------------------
    def _check_domain(self, image: np.ndarray, prompts: Sequence[str], load: bool = True,
                      stacklevel: int = 3) -> str | None:
        """Warn (:class:`OutOfDomainWarning`, once per message and pipeline) when the mini models ran on what they
        do not know: words outside the mini CLIP's vocabulary (they become ``<unk>``), or an image whose longer side
        exceeds :data:`MINI_MAX_IMAGE_SIDE`. Only when the mini CLIP is the CLIP (its tokenizer has ``<unk>``);
        with ``load=False`` a CLIP not loaded yet is not loaded (and nothing is checked). Returns the message, or None."""
        if self._clip is None and not load:
            return None
        tok = self.clip.tokenizer
        if not (hasattr(tok, "unk_id") and hasattr(tok, "encode")):
            return None
        reasons = []
        unknown = list(dict.fromkeys(w for p in prompts for w in re.findall(r"[^\W_]+", p.lower())
                                     if tok.unk_id in tok.encode(w)))
        blank = [p for p in prompts if all(t == tok.unk_id for t in tok.encode(p))]  # e.g. only emoji / CJK
        if blank:
            shown = ", ".join(repr(p) for p in blank[:4]) + (", ..." if len(blank) > 4 else "")
            reasons.append(f"the prompt {shown} has no known tokens in this profile (it reads as <unk> only)")
        unknown = [w for w in unknown if not any(w in p.lower() for p in blank)]
        if unknown:
            words = ", ".join(repr(w) for w in unknown[:8]) + (", ..." if len(unknown) > 8 else "")
            reasons.append(f"{words} {'is' if len(unknown) == 1 else 'are'} not in their vocabulary")
        h, w = image.shape[:2]
        if max(h, w) > MINI_MAX_IMAGE_SIDE:
            reasons.append(f"the image is {w}x{h} px, more than {MINI_MAX_IMAGE_SIDE // MINI_WORLD_SIDE}x the "
                           f"mini world's {MINI_WORLD_SIDE} px scenes")
        if not reasons:
            return None
        msg = (f"the mini profile's models know only the mini world (coloured shapes in {MINI_WORLD_SIDE} px scenes): "
               f"{' and '.join(reasons)}, so its masks and scores mean little here; for real images and free text "
               "use the full profile: `ovseg weights download full`, then `--profile full` "
               "(API: get_balanced_config(profile='full'))")
        if msg not in self._warned:
            self._warned.add(msg)
            warnings.warn(msg, OutOfDomainWarning, stacklevel=stacklevel)
        return msg

    # ---- public API (thesis README) -------------------------------------------------------
    def _begin(self, image: Any, text_prompt: str, top_k: int) -> tuple[np.ndarray, str]:
        """Validate a segment request before touching a model; returns the (H, W, 3) uint8 image and the prompt."""
        if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
            raise InputError("top_k must be a positive integer", repr(top_k), "pass e.g. top_k=5")
        if not isinstance(text_prompt, str):
            n = f"a {type(text_prompt).__name__} of {len(text_prompt)}" if hasattr(text_prompt, "__len__") else \
                type(text_prompt).__name__
            raise InputError("segment takes one text prompt (a str)", n,
                             "call segment once per prompt, or segment_semantic(image, [names...]) to give every pixel "
                             "one of several classes")
        self.config.validate()  # fields assigned after construction are checked at each call
        prompt = check_prompts(text_prompt)[0]
        arr = self._prepare(image)
        self.timings = {}
        return arr, prompt

    def _segment(self, arr: np.ndarray, prompt: str, top_k: int, source: Any) -> SegmentationResult:
        top_k = int(top_k)  # a numpy integer is welcome; the result records a plain int
        masks, scores = self.score(arr, [prompt])
        a = self.config.alignment
        order = rank_masks(scores, 0, a.similarity_threshold, top_k)
        ranked = []
        for i in order:  # only the returned masks are brought to the input's size
            if masks.shape == arr.shape[:2]:
                full, bbox, area = masks.masks[i], [int(v) for v in masks.bbox[i]], int(masks.area[i])
            else:
                full, bbox, area = self._full_size(masks.masks[i], arr.shape[:2])
            ranked.append(SegmentationMask(mask=full, final_score=float(scores.final[i, 0]),
                                           mean_similarity=float(scores.mean_similarity[i, 0]),
                                           background_similarity=float(scores.outside_similarity[i, 0]),
                                           bbox=bbox, area=area, predicted_iou=float(masks.predicted_iou[i]),
                                           stability_score=float(masks.stability_score[i]), index=int(i)))
        sam2 = self.config.sam2
        counts = {"candidates": len(masks), "mask_source": masks.source,
                  "sam2_thresholds": {"pred_iou_thresh": sam2.pred_iou_thresh,
                                      "stability_score_thresh": sam2.stability_score_thresh}
                  if masks.source == "sam2" else None,
                  "similarity_threshold": a.similarity_threshold,
                  "above_threshold": int((scores.mean_similarity[:, 0] >= a.similarity_threshold).sum()),
                  "best_similarity": float(scores.mean_similarity[:, 0].max()) if len(masks) else None,
                  "top_k": top_k, "returned": len(ranked)}
        path = str(source) if isinstance(source, (str, os.PathLike)) else None
        return SegmentationResult(arr, prompt, ranked, len(masks), masks.source, self.config.profile, dict(self.timings),
                                  counts=counts, models={k: self._model_info(k) for k in ("sam2", "clip")},
                                  config=effective_config(self.config), source=path,
                                  exif_orientation=self._exif_orientation)

    def segment(self, image: Any, text_prompt: str, top_k: int = 5) -> SegmentationResult:
        """Masks matching ``text_prompt``, best first.

        Args:
            image: path, PIL image or (H, W, 3) uint8 array.
            text_prompt: free text, e.g. ``"red car"``.
            top_k: how many masks to return (>= 1).

        Returns:
            :class:`SegmentationResult`: at most ``top_k`` masks whose mean similarity passed
            ``alignment.similarity_threshold`` (``counts`` says how many candidates passed each step; the list
            may be empty), with the models and effective config that produced them.

        Warns:
            OutOfDomainWarning: mini profile only, see :meth:`_check_domain`.
        """
        arr, prompt = self._begin(image, text_prompt, top_k)
        self._check_domain(arr, [prompt], load=self.config.profile == "mini")  # before the long stages when cheap
        result = self._segment(arr, prompt, top_k, image)
        self._check_domain(arr, [prompt])  # the CLIP that ran (a warning already given is not repeated)
        return result

    def segment_and_edit(self, image: Any, text_prompt: str, edit_operation: str, edit_prompt: str | None = None,
                         top_k: int = 5, seed: int | None = None) -> SegmentationResult:
        """Segment ``text_prompt`` and edit the best mask: ``remove``, ``replace`` or ``style``.

        Raises:
            InputError: a bad request, or no mask passed the similarity threshold (the message gives the counts).
        """
        # 1. validate the edit request before any model runs
        if edit_operation not in EDIT_OPERATIONS:
            raise InputError("edit_operation must be one of remove, replace, style", repr(edit_operation),
                             "pass edit_operation='remove' (or replace / style with an edit_prompt)")
        if edit_operation != "remove":
            if edit_prompt is None or not str(edit_prompt).strip():
                raise InputError(f"{edit_operation} needs an edit prompt describing the new content", repr(edit_prompt),
                                 'pass edit_prompt="..." (CLI: --edit "...")')
            edit_prompt = check_prompts(edit_prompt)[0]
        from .inpaint import check_seed

        seed = check_seed(seed)
        arr, prompt = self._begin(image, text_prompt, top_k)
        prompts = [prompt] + ([edit_prompt] if edit_operation != "remove" else [])
        self._check_domain(arr, prompts, load=self.config.profile == "mini")
        # 2. segment
        result = self._segment(arr, prompt, top_k, image)
        self._check_domain(arr, prompts)
        if not result.segmentation_masks:
            raise InputError("the prompt must match at least one mask to edit", f"{text_prompt!r} ({result.counts_line()})",
                             "try another wording, or lower alignment.similarity_threshold "
                             "(CLI: --set alignment.similarity_threshold=0.1)")
        # 3. edit the best mask
        best = result.segmentation_masks[0]
        with self._timed("inpainting"):
            edit = self.inpainter.edit(result.image, best.mask, edit_operation, edit_prompt=edit_prompt,
                                       object_prompt=result.text_prompt, seed=seed)
        result.edited_image = edit.image
        result.edit_mask = edit.mask
        result.edit = {"operation": edit.operation, "prompt": edit.prompt, "negative_prompt": edit.negative_prompt,
                       "seed": edit.seed, "steps": edit.steps, "guidance_scale": edit.guidance_scale,
                       "strength": edit.strength, "method": edit.method, "mask_index": best.index,
                       # what was repainted: the silhouette, or for replace inpainting.replace_region
                       "region": self.config.inpainting.replace_region if edit.operation == "replace" else "mask"}
        result.models["inpainting"] = self._model_info("inpainting")
        result.timings = dict(self.timings)
        return result

    def segment_semantic(self, image: Any, class_names: Sequence[str] | str) -> SemanticResult:
        """Label every pixel with one of ``class_names`` (or -1) via the best-scoring covering mask.

        Warns:
            NoMatchWarning: no mask was assigned a class (``result.empty`` is then True, ``num_assigned`` 0).
            OutOfDomainWarning: mini profile only, see :meth:`_check_domain`.
        """
        # a single name is one class (not its characters); fields assigned to the config since are checked here
        names = check_prompts([class_names] if isinstance(class_names, str) else list(class_names))
        self.config.validate()
        arr = self._prepare(image)
        self.timings = {}
        self._check_domain(arr, names, load=self.config.profile == "mini")
        masks, scores = self.score(arr, names)
        self._check_domain(arr, names)
        threshold = self.config.alignment.similarity_threshold
        label_map, mask_labels = semantic_segmentation(masks, scores, threshold)  # (h, w) at the working size
        label_map = upscale_nearest(label_map, arr.shape[:2])  # (H, W) int32
        result = SemanticResult(arr, names, label_map, mask_labels, scores, masks, dict(self.timings),
                                profile=self.config.profile, models={k: self._model_info(k) for k in ("sam2", "clip")},
                                config=effective_config(self.config),
                                source=str(image) if isinstance(image, (str, os.PathLike)) else None,
                                exif_orientation=self._exif_orientation)
        if result.empty:
            source = _SOURCE_NAMES.get(masks.source, masks.source)
            warnings.warn(f"no mask was assigned any of the {len(names)} class names ({len(masks)} candidates from "
                          f"{source}, none with similarity >= {threshold:g} to its best class): every pixel is -1 "
                          "(SemanticResult.empty); lower alignment.similarity_threshold or check the class names",
                          NoMatchWarning, stacklevel=2)
        return result

    def segment_batch(self, images: Iterable[Any], prompt: str | None = None, top_k: int = 5, *,
                      classes: Sequence[str] | None = None, operation: str = "segment", edit_prompt: str | None = None,
                      seed: int | None = None, on_error: str = "record", warn: bool = True) -> Iterator[BatchItem]:
        """Run one request over many images with the models loaded once; yields a :class:`BatchItem` per image, in
        the order of ``images``.

        Args:
            images: paths, PIL images or (H, W, 3) uint8 arrays (any iterable; consumed lazily).
            prompt: the text prompt (``segment`` and the edit operations).
            top_k: masks per image (>= 1).
            classes: class names instead of ``prompt``: every image gets a label map (:meth:`segment_semantic`);
                only with ``operation="segment"``.
            operation: ``segment``, or an edit: ``remove``, ``replace``, ``style`` (:meth:`segment_and_edit`).
            edit_prompt, seed: of the edit operations.
            on_error: ``"record"``: an image that fails with an :class:`~ovseg.errors.OvsegError` (unreadable or
                corrupt file, too small, no mask to edit, ...) or a ``RuntimeError`` / ``MemoryError`` is yielded with
                ``error`` set and the batch goes on; ``"raise"``: the first such error propagates. Missing weights
                (:class:`~ovseg.errors.WeightsError`) always propagate: every image would fail the same way.
            warn: re-emit each image's warnings after recording them in ``BatchItem.warnings`` (False: only recorded).

        Raises:
            InputError: a bad request (prompt, classes, operation, top_k, edit prompt, seed, on_error), before any
                image is read or model loaded.
        """
        if on_error not in ("record", "raise"):
            raise InputError("on_error must be 'record' or 'raise'", repr(on_error), "pass on_error='record'")
        if operation not in ("segment", *EDIT_OPERATIONS):
            raise InputError("operation must be one of segment, remove, replace, style", repr(operation),
                             "pass operation='segment' (or an edit operation)")
        if (prompt is None) == (classes is None):
            raise InputError("segment_batch takes either a prompt or class names", f"prompt={prompt!r}, classes={classes!r}",
                             "pass prompt='red circle', or classes=['red circle', 'blue square'] for label maps")
        if classes is not None:
            if operation != "segment":
                raise InputError("class names (label maps) go with operation='segment' only", repr(operation),
                                 "drop classes, or use operation='segment'")
            names = check_prompts([classes] if isinstance(classes, str) else list(classes))
        else:
            if not isinstance(prompt, str):
                raise InputError("segment_batch takes one text prompt (a str)", type(prompt).__name__,
                                 "pass classes=[...] for several class names")
            prompt = check_prompts(prompt)[0]
        if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 1:
            raise InputError("top_k must be a positive integer", repr(top_k), "pass e.g. top_k=5")
        if operation != "segment":
            from .inpaint import check_seed

            check_seed(seed)
            if operation != "remove" and (edit_prompt is None or not str(edit_prompt).strip()):
                raise InputError(f"{operation} needs an edit prompt describing the new content", repr(edit_prompt),
                                 'pass edit_prompt="..." (CLI: --edit "...")')
        recorded = (OvsegError, RuntimeError, MemoryError) if on_error == "record" else ()

        def run() -> Iterator[BatchItem]:
            for index, image in enumerate(images):
                start = time.perf_counter()
                result: SegmentationResult | SemanticResult | None = None
                error: str | None = None
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    try:
                        if classes is not None:
                            result = self.segment_semantic(image, names)
                        elif operation == "segment":
                            result = self.segment(image, prompt, top_k=top_k)
                        else:
                            result = self.segment_and_edit(image, prompt, operation, edit_prompt=edit_prompt,
                                                           top_k=top_k, seed=seed)
                    except WeightsError:
                        raise
                    except recorded as err:
                        error = _one_line(err)
                if warn:
                    for w in caught:
                        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                yield BatchItem(index, image, result, error, time.perf_counter() - start,
                                [str(w.message) for w in caught])

        return run()

    def visualize_results(self, result: SegmentationResult | SemanticResult) -> dict[str, Any]:
        """Matplotlib figures for a result: ``overlay`` (+ ``masks``, ``edit`` when present)."""
        from . import viz

        if not isinstance(result, (SegmentationResult, SemanticResult)):
            raise InputError("visualize_results takes a result of segment / segment_and_edit / segment_semantic",
                             type(result).__name__, "pass the object those methods return")
        if isinstance(result, SemanticResult):
            return {"semantic": viz.semantic_figure(result)}
        figs = {"overlay": viz.overlay_figure(result), "masks": viz.masks_figure(result)}
        if result.edited_image is not None:
            figs["edit"] = viz.edit_figure(result)
        return figs

    def segment_video(self, frames: Any, text_prompt: str, keyframe_every: int | None = None, **kwargs: Any) -> Any:
        """Segment and track ``text_prompt`` through a video with this pipeline on keyframes and SAM 2's video
        predictor in between: :func:`ovseg.video.segment_video` (its arguments and its
        :class:`~ovseg.video.VideoSegmentationResult`)."""
        from .video import DEFAULT_KEYFRAME_EVERY, segment_video

        k = DEFAULT_KEYFRAME_EVERY if keyframe_every is None else keyframe_every
        return segment_video(self, frames, text_prompt, k, **kwargs)
