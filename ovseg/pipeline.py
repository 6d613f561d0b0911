"""The four-stage pipeline with the thesis code's API.

>>> from ovseg import OpenVocabSegmentationPipeline
>>> pipe = OpenVocabSegmentationPipeline()                     # mini profile, CPU
>>> result = pipe.segment("data/samples/scene.png", "red circle", top_k=3)
>>> result.segmentation_masks[0].final_score

Models load lazily, stage by stage, the first time a stage runs; masks and dense features are
cached for the last image, so a new prompt on the same image costs only text encoding and one
matrix product (3.2.3). Inputs are validated before any model is loaded.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import weights as W
from .align import AlignmentScores, rank_masks, score_masks, semantic_segmentation
from .config import PipelineConfig, load_config
from .errors import InputError, WeightsError
from .features import check_prompts
from .io import load_image
from .utils import MaskSet, score_shape

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from .features import DenseCLIP, DenseFeatures
    from .inpaint import Inpainter
    from .masks import MaskGenerator

__all__ = ["OpenVocabSegmentationPipeline", "SegmentationMask", "SegmentationResult", "SemanticResult",
           "EDIT_OPERATIONS", "load_mask_generator", "load_dense_clip", "load_inpainter"]

EDIT_OPERATIONS = ("remove", "replace", "style")


@dataclass
class SegmentationMask:
    """One ranked mask. ``mask`` is (H, W) bool at the input image's size; ``bbox`` is XYWH pixels."""

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

    def to_dict(self) -> dict[str, Any]:
        h, w = self.image.shape[:2]
        return {"text_prompt": self.text_prompt, "image_size": [w, h], "profile": self.profile,
                "mask_source": self.mask_source, "num_candidates": self.num_candidates,
                "masks": [m.to_dict() for m in self.segmentation_masks],
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()}, "edit": self.edit}


@dataclass
class SemanticResult:
    """Output of :meth:`OpenVocabSegmentationPipeline.segment_semantic`."""

    image: np.ndarray  # (H, W, 3) uint8
    class_names: list[str]
    label_map: np.ndarray  # (H, W) int32: i -> class_names[i], -1 -> background / unassigned
    mask_labels: np.ndarray  # (N,) int32 class of each candidate mask, -1 if rejected
    scores: AlignmentScores  # (N, C)
    masks: MaskSet
    timings: dict[str, float] = field(default_factory=dict)


# ---- stage loaders ------------------------------------------------------------------------------

def _model_name(cfg_value: str, profile: str, stage: str) -> str:
    """The model a stage loads. The mini profile pins the model-identity fields to its embedded models
    (``config.PROFILE_PINNED_FIELDS``), except an ``inpainting.model`` set explicitly (not the full profile's
    default): an inpainting model is self-contained (a diffusers directory with its own scheduler and tokenizer),
    so a training run's export is evaluated with the mini segmenter instead of being silently replaced."""
    if profile != "mini":
        return cfg_value
    if stage == "inpainting" and cfg_value != W.default_model("full", stage):
        return cfg_value
    return W.default_model("mini", stage)


def load_mask_generator(config: PipelineConfig, device: str = "cpu", progress: bool = False) -> "MaskGenerator":
    """SAM 2 mask generator for the config's profile (3.2.2).

    Registry entries name their sam2 config (``arch``); a local checkpoint is matched to its entry
    by its published file name (e.g. ``sam2.1_hiera_large.pt``); an embedded model's folder holds
    its ``config.yaml`` and ``model.safetensors``.
    """
    from .masks import MaskGenerator, build_sam2_model

    name = _model_name(config.sam2.model, config.profile, "sam2")
    found = W.resolve(name, "sam2")
    if found.entry is None:  # a local checkpoint file: recognise it by its published file name
        found.entry = next((W.REGISTRY[n] for n in W.list_models(stage="sam2")
                            if found.path.name in W.REGISTRY[n].files), None)
    if found.entry is None:
        raise InputError("sam2.model must be a registry entry or a checkpoint with its published file name "
                         "(the name tells which sam2 config it needs)", repr(name),
                         "use one of: " + ", ".join(W.list_models(stage="sam2")) + ", or keep the file's original name")
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
        return DenseCLIP(model, tokenizer, m["mean"], m["std"], extract_layers=m["extract_layers"],
                         dense_path=m["dense_path"], templates=m["templates"], image_size=m["image_size"],
                         window_stride=c.window_stride, sliding_window=c.sliding_window,
                         max_windows_per_side=c.max_windows_per_side, device=device)
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
                         f"looked in the HF cache for {repo or '(no hub id known to open_clip)'}",
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
            lazily from the weights registry for the config's profile.
    """

    def __init__(self, config: PipelineConfig | str | None = None, device: str = "cpu", verbose: bool = False, *,
                 mask_generator: "MaskGenerator | None" = None, clip: "DenseCLIP | None" = None,
                 inpainter: "Inpainter | None" = None, progress: bool | None = None):
        self.config = load_config(config)
        self.device = device
        self.verbose = verbose
        self.progress = verbose if progress is None else progress  # tqdm bars for the long stages
        self._mask_generator = mask_generator
        self._clip = clip
        self._inpainter = inpainter
        self._cache_key: str | None = None
        self._image: np.ndarray | None = None
        self._masks: MaskSet | None = None
        self._features: DenseFeatures | None = None
        self.timings: dict[str, float] = {}

    # ---- lazily loaded components ----------------------------------------------------------
    @property
    def mask_generator(self) -> "MaskGenerator":
        if self._mask_generator is None:
            with self._timed("load_masks"):
                self._mask_generator = load_mask_generator(self.config, self.device, progress=self.progress)
        return self._mask_generator

    @property
    def clip(self) -> "DenseCLIP":
        if self._clip is None:
            with self._timed("load_clip"):
                self._clip = load_dense_clip(self.config, self.device)
        return self._clip

    @property
    def inpainter(self) -> "Inpainter":
        if self._inpainter is None:
            with self._timed("load_inpainting"):
                self._inpainter = load_inpainter(self.config, self.device, progress=self.progress)
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
        arr = load_image(image)
        key = hashlib.blake2b(arr.tobytes(), digest_size=16).hexdigest() + str(arr.shape)
        if key != self._cache_key:
            self._cache_key, self._image, self._masks, self._features = key, arr, None, None
        return arr

    def refilter(self, **changes: Any) -> MaskSet | None:
        """Change SAM 2 settings (thresholds, NMS, crop layers, ...) for this pipeline.

        ``changes`` are :class:`~ovseg.config.SAM2Config` field names. The last image's masks are
        regenerated from its cached image embeddings (the encoder does not run again) and returned;
        ``None`` when no image has been processed yet.
        """
        self.config = self.config.replace(**{f"sam2.{k}": v for k, v in changes.items()})
        self.mask_generator.update_config(self.config.sam2)
        self._masks = None
        return None if self._image is None else self.generate_masks(self._image)

    def generate_masks(self, image: Any) -> MaskSet:
        """3.2.2: candidate masks of an image (cached for the last image)."""
        arr = self._prepare(image)
        if self._masks is None:
            with self._timed("masks"):
                self._masks = self.mask_generator.generate(arr)
        return self._masks

    def dense_features(self, image: Any) -> "DenseFeatures":
        """3.2.1: multi-layer dense CLIP features (cached for the last image)."""
        arr = self._prepare(image)
        if self._features is None:
            with self._timed("features"):
                self._features = self.clip.dense_features(arr)
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

    # ---- public API (thesis README) -------------------------------------------------------
    def segment(self, image: Any, text_prompt: str, top_k: int = 5) -> SegmentationResult:
        """Masks matching ``text_prompt``, best first.

        Args:
            image: path, PIL image or (H, W, 3) uint8 array.
            text_prompt: free text, e.g. ``"red car"``.
            top_k: how many masks to return (>= 1).
        """
        # 1. validate everything before touching a model
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise InputError("top_k must be a positive integer", repr(top_k), "pass e.g. top_k=5")
        prompt = check_prompts(text_prompt)[0]
        arr = self._prepare(image)
        self.timings = {}
        # 2. masks, features, alignment
        masks, scores = self.score(arr, [prompt])
        # 3. rank and package
        order = rank_masks(scores, 0, self.config.alignment.similarity_threshold, top_k)
        ranked = [SegmentationMask(mask=masks.masks[i], final_score=float(scores.final[i, 0]),
                                   mean_similarity=float(scores.mean_similarity[i, 0]),
                                   background_similarity=float(scores.outside_similarity[i, 0]),
                                   bbox=[int(v) for v in masks.bbox[i]], area=int(masks.area[i]),
                                   predicted_iou=float(masks.predicted_iou[i]),
                                   stability_score=float(masks.stability_score[i]), index=int(i))
                  for i in order]
        return SegmentationResult(arr, prompt, ranked, len(masks), masks.source, self.config.profile, dict(self.timings))

    def segment_and_edit(self, image: Any, text_prompt: str, edit_operation: str, edit_prompt: str | None = None,
                         top_k: int = 5, seed: int | None = None) -> SegmentationResult:
        """Segment ``text_prompt`` and edit the best mask: ``remove``, ``replace`` or ``style``."""
        # 1. validate the edit request before any model runs
        if edit_operation not in EDIT_OPERATIONS:
            raise InputError("edit_operation must be one of remove, replace, style", repr(edit_operation),
                             "pass edit_operation='remove' (or replace / style with an edit_prompt)")
        if edit_operation != "remove":
            if edit_prompt is None or not str(edit_prompt).strip():
                raise InputError(f"{edit_operation} needs an edit prompt describing the new content", repr(edit_prompt),
                                 'pass edit_prompt="..." (CLI: --edit "...")')
            edit_prompt = check_prompts(edit_prompt)[0]
        # 2. segment
        result = self.segment(image, text_prompt, top_k=top_k)
        if not result.segmentation_masks:
            raise InputError("the prompt must match at least one mask to edit", repr(text_prompt),
                             "try another wording, or lower alignment.similarity_threshold")
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
        result.timings = dict(self.timings)
        return result

    def segment_semantic(self, image: Any, class_names: Sequence[str]) -> SemanticResult:
        """Label every pixel with one of ``class_names`` (or -1) via the best-scoring covering mask."""
        names = check_prompts(list(class_names))
        arr = self._prepare(image)
        self.timings = {}
        masks, scores = self.score(arr, names)
        label_map, mask_labels = semantic_segmentation(masks, scores, self.config.alignment.similarity_threshold)
        return SemanticResult(arr, names, label_map, mask_labels, scores, masks, dict(self.timings))

    def visualize_results(self, result: SegmentationResult | SemanticResult) -> dict[str, Any]:
        """Matplotlib figures for a result: ``overlay`` (+ ``masks``, ``edit`` when present)."""
        from . import viz

        if isinstance(result, SemanticResult):
            return {"semantic": viz.semantic_figure(result)}
        figs = {"overlay": viz.overlay_figure(result), "masks": viz.masks_figure(result)}
        if result.edited_image is not None:
            figs["edit"] = viz.edit_figure(result)
        return figs
