"""3.2.2 class-agnostic mask proposals with SAM 2 automatic mask generation.

A point grid (``points_per_side`` x ``points_per_side``, thesis: 32 x 32) prompts SAM 2 on the
whole image and, with ``crop_n_layers > 0``, on overlapping crops (layer i: (2**i)**2 crops); masks
whose predicted IoU / stability score fail the thresholds (thesis: 0.88 / 0.95) are dropped and
duplicates are removed by box NMS. All of that is sam2's own ``SAM2AutomaticMaskGenerator``; this
module only builds the model (:func:`build_sam2_model`), adapts the generator to models whose input
size is not 1024 px, caches image embeddings so thresholds can be re-tuned without re-running the
image encoder (:meth:`MaskGenerator.refilter`) and packs the result into a :class:`~ovseg.utils.MaskSet`.

Conventions: images are ``(H, W, 3)`` ``uint8`` RGB (HWC); boxes are XYWH pixels of the input image.
Importing this module is cheap: torch, hydra and sam2 are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import PipelineConfig, SAM2Config
from .errors import ConfigError, InputError, WeightsError
from .utils import MaskSet, downscale_image, working_shape

if TYPE_CHECKING:  # pragma: no cover - typing only
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
    from sam2.modeling.sam2_base import SAM2Base

__all__ = ["SAM2_CONFIGS", "build_sam2_model", "MaskGenerator", "mask_coverage"]

#: Short names -> sam2 package config names (resolved by hydra inside the ``sam2`` package).
SAM2_CONFIGS: dict[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}

# The overrides sam2.build_sam.build_sam2(apply_postprocessing=True) appends to the user's; repeated
# here only for local YAML files, which hydra's compose (package configs only) cannot load.
_SAM2_POSTPROCESSING_OVERRIDES = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)

_MAX_KEYS_SHOWN = 5


# ---- model ----------------------------------------------------------------------------------

def build_sam2_model(
    config: str,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    *,
    model_class: type | None = None,
) -> "SAM2Base":
    """Build a SAM 2 model (``sam2.modeling.sam2_base.SAM2Base``) in eval mode on ``device``.

    Args:
        config: a key of :data:`SAM2_CONFIGS` (``"sam2.1_hiera_l"``), a sam2 package config name
            (``"configs/sam2.1/sam2.1_hiera_l.yaml"``), or the path of a local YAML file with the
            same schema (a top-level ``model:`` node with hydra ``_target_`` entries).
        checkpoint: ``.pt`` file as released by Meta (``{"model": state_dict}``; a bare state dict
            is accepted too) or a ``.safetensors`` file holding the state dict. ``None`` keeps the
            random initialisation (tests and timing only).
        device: torch device string, e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        overrides: hydra overrides applied to the config, e.g. ``["++model.image_size=512"]``.
            As in ``sam2.build_sam.build_sam2(apply_postprocessing=True)``, the dynamic-multimask
            overrides are appended after them.
        model_class: build this subclass of ``SAM2Base`` instead of the config's top-level ``_target_``
            (e.g. ``sam2.sam2_video_predictor.SAM2VideoPredictor``, as ``sam2.build_sam.build_sam2_video_predictor``
            does with an override). It is a class object chosen by the caller's code, never a YAML string, so a
            local YAML's own targets stay limited to ``sam2.modeling.*``; None keeps the config's target.

    Raises:
        ConfigError: ``config`` is neither a known sam2 config nor an existing YAML file.
        WeightsError: the checkpoint is missing, unreadable, or its keys/shapes do not match the model.
    """
    import torch
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides)
    for item in overrides:
        if not isinstance(item, str) or ("=" not in item and not item.startswith("~")):
            raise ConfigError("sam2 overrides must be hydra override strings", repr(item),
                              "write e.g. '++model.image_size=512'")
    chosen = _class_target(model_class)
    local = _local_yaml(config)
    try:
        if local is not None:
            model = _instantiate_local_config(local, overrides + list(_SAM2_POSTPROCESSING_OVERRIDES),
                                              model_class=model_class)
        else:
            from sam2.build_sam import build_sam2

            # Built on CPU without weights, then loaded here: sam2's _load_checkpoint only raises a
            # bare RuntimeError and cannot read .safetensors. A model_class is one more override (first, as in
            # sam2's build_sam2_video_predictor); package configs are sam2's own files, not user YAML.
            extra = [f"++model._target_={chosen}"] if chosen is not None else []
            model = build_sam2(_package_config_name(config), ckpt_path=None, device="cpu", mode="eval",
                               hydra_overrides_extra=extra + overrides, apply_postprocessing=True)
    except (HydraException, OmegaConfBaseException) as err:  # bad override syntax/key, failed instantiate
        # the whole reason, on one line (hydra splits it over several)
        reason = " ".join(ln.strip() for ln in str(err).strip().splitlines() if ln.strip()) or type(err).__name__
        raise ConfigError("sam2 model config and overrides must compose and build", f"{config}: {reason}",
                          "check the override keys against the config (use '++key=value' to add a key)") from None
    if checkpoint is not None:
        _load_weights(model, Path(checkpoint))
    model = model.to(torch.device(device))
    model.eval()
    return model


def _local_yaml(config: str) -> Path | None:
    """The path of ``config`` when it names an existing local YAML file, else None."""
    if config in SAM2_CONFIGS:
        return None
    path = Path(config).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    return None


def _package_config_name(config: str) -> str:
    """Map a short name or sam2 package config name to the name hydra's compose expects."""
    import importlib.resources

    name = SAM2_CONFIGS.get(config, config)
    root = importlib.resources.files("sam2")
    if root.joinpath(name).is_file():
        return name
    raise ConfigError("sam2 config must be a key of ovseg.masks.SAM2_CONFIGS, a sam2 config name or an existing "
                      "YAML file", repr(config), "use e.g. 'sam2.1_hiera_l' or a path to a local model YAML")


def _class_target(model_class: type | None) -> str | None:
    """The hydra ``_target_`` (dotted path) of ``model_class``, a ``SAM2Base`` subclass; None for None."""
    if model_class is None:
        return None
    from sam2.modeling.sam2_base import SAM2Base

    if not (isinstance(model_class, type) and issubclass(model_class, SAM2Base)):
        raise ConfigError("model_class must be SAM2Base or a subclass of it", repr(model_class),
                          "pass e.g. sam2.sam2_video_predictor.SAM2VideoPredictor")
    return f"{model_class.__module__}.{model_class.__qualname__}"


def _instantiate_local_config(path: Path, overrides: list[str], model_class: type | None = None) -> Any:
    """Instantiate ``model`` of a local YAML as sam2's build_sam2 does: overrides, resolve, instantiate.

    ``model_class`` (a class object from the caller's code, see :func:`build_sam2_model`) replaces the top-level
    ``_target_`` after the YAML's own targets passed the ``sam2.modeling.*`` check."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml / omegaconf errors have no common base class
        raise ConfigError("sam2 model YAML must be readable", f"{path}: {err}", "fix the YAML file") from None
    if not OmegaConf.is_dict(cfg) or "model" not in cfg:
        raise ConfigError("sam2 model YAML must have a top-level 'model' node", str(path),
                          "start from sam2's configs/sam2.1/sam2.1_hiera_t.yaml")
    absent = object()
    for ov in OverridesParser.create().parse_overrides(overrides):
        key = ov.key_or_group
        exists = OmegaConf.select(cfg, key, default=absent, throw_on_missing=False) is not absent
        if ov.is_delete():
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent) if parent else cfg
            if node is not None and leaf in node:
                del node[leaf]
            continue
        if ov.is_add() and exists:
            raise ConfigError(f"sam2 override '+{key}' adds a key that already exists", str(path),
                              f"use '++{key}=...' or '{key}=...'")
        if not (ov.is_add() or ov.is_force_add()) and not exists:
            raise ConfigError(f"sam2 override '{key}' sets a key the config does not have", str(path),
                              f"use '++{key}=...' to add it")
        OmegaConf.update(cfg, key, ov.value(), merge=True, force_add=True)
    OmegaConf.resolve(cfg)
    for target in _targets(OmegaConf.to_container(cfg.model)):
        if not (isinstance(target, str) and target.startswith(_ALLOWED_TARGET_PREFIX)):
            raise ConfigError(f"a local sam2 model YAML may only instantiate {_ALLOWED_TARGET_PREFIX}* classes "
                              "(hydra builds whatever _target_ names: a YAML could otherwise run code)",
                              f"{path}: _target_ {target!r}", "use the _target_ entries of sam2's own model configs")
    chosen = _class_target(model_class)
    if chosen is not None:  # set after the check: the class comes from ovseg's code, not from the file
        cfg.model._target_ = chosen
    return instantiate(cfg.model, _recursive_=True)


#: The only ``_target_`` prefix a local sam2 model YAML may name (sam2's own model configs use nothing else).
_ALLOWED_TARGET_PREFIX = "sam2.modeling."


def _targets(node: Any) -> list[Any]:
    """Every ``_target_`` value in a nested config (dicts and lists)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_":
                found.append(value)
            else:
                found += _targets(value)
    elif isinstance(node, list):
        for item in node:
            found += _targets(item)
    return found


def _load_weights(model: Any, path: Path) -> None:
    """Load a ``.pt`` (``{"model": sd}`` or bare sd) or ``.safetensors`` state dict into ``model`` strictly."""
    import torch

    if not path.is_file():
        raise WeightsError("sam2 checkpoint must be an existing file", str(path),
                           "download it (see 'ovseg weights list') or pass the correct path")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and safetensors errors share no base class
        from .errors import refused_global

        text, name_of = str(err), refused_global(err)
        if name_of:  # torch's weights_only refusal: many lines of advice to load it unsafely; one line here
            raise WeightsError("a sam2 .pt checkpoint may hold only tensors (it is loaded with weights_only=True; "
                               "nothing in it is executed)", f"{path}: it names {name_of}, which is not data",
                               "use Meta's released checkpoint (ovseg weights download full)") from None
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")[:200]
        raise WeightsError("sam2 checkpoint must be a readable .pt or .safetensors file",
                           f"{path}: {type(err).__name__}: {first}", "re-download the checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError("sam2 checkpoint must hold a state dict (optionally under the key 'model')",
                           str(path), "save it as torch.save({'model': model.state_dict()}, path)")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        first = str(err).strip().splitlines()[1:1 + _MAX_KEYS_SHOWN]
        raise WeightsError("sam2 checkpoint tensor shapes must match the model config",
                           f"{path}: " + " ".join(line.strip() for line in first),
                           "pass the config the checkpoint was trained with") from None
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[:_MAX_KEYS_SHOWN]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[:_MAX_KEYS_SHOWN]}")
        raise WeightsError("sam2 checkpoint keys must match the model config", f"{path}: " + "; ".join(parts),
                           "pass the config the checkpoint was trained with")


# ---- automatic mask generation ----------------------------------------------------------------

# SAM2Config fields that are arguments of SAM2AutomaticMaskGenerator (all but ``model`` and ovseg's working size).
_OWN_FIELDS = ("model", "max_image_side")
_AMG_FIELDS = tuple(f.name for f in dataclasses.fields(SAM2Config) if f.name not in _OWN_FIELDS)


class MaskGenerator:
    """SAM 2 automatic mask generation with a cached image embedding.

    Wraps sam2's ``SAM2AutomaticMaskGenerator`` (``output_mode="binary_mask"``) built from a
    :class:`~ovseg.config.SAM2Config`. Two adaptations, both without copying sam2 code:

    * sam2 1.1.0's ``SAM2ImagePredictor`` hard-codes the backbone feature sizes of a 1024 px model;
      they are derived from ``model.image_size`` instead, so models of any input size work.
    * the predictor's ``set_image`` is wrapped on the instance: the image-encoder output of every
      crop (``_features`` / ``_orig_hw``) is cached, keyed by a hash of the crop's bytes and shape,
      for the most recent image only. :meth:`refilter` and a repeated :meth:`generate` of the same
      image therefore only run the prompt encoder / mask decoder and the filtering. With
      ``crop_n_layers = L`` the cache holds 1 + 4 + ... + 4**L crops; for a 1024 px model that is
      about 16 MB of float32 features per crop (image_embed 256x64x64, high-res 32x256x256 and
      64x128x128), kept on the model's device: 80 MB at L = 1, 336 MB at L = 2.

    Attributes:
        config: the current settings (a copy of the one passed in; see :meth:`update_config`).
        encoder_calls: number of real image-encoder runs (cache misses) since construction.
        last_config: the settings of the most recent :meth:`generate` / :meth:`refilter`.

    Args:
        model: a SAM 2 model from :func:`build_sam2_model` (any ``image_size``), in eval mode.
        config: generation settings; every field but ``model`` is passed to sam2's generator.
        progress: show a tqdm bar over the crops (1 + 4 + ... per image) while generating.

    ``min_mask_region_area``: sam2 1.1.0 passes it only to ``SAM2ImagePredictor`` (hole / sprinkle
    filling on low-res logits through the compiled ``sam2._C`` CUDA extension, skipped with a warning
    where sam2 was installed without it) and never calls its own ``postprocess_small_regions``. ovseg
    calls that method on the merged masks (:func:`_amg_class`), so the threshold works on every install.

    Not thread-safe: one generator serves one caller at a time.
    """

    def __init__(self, model: "SAM2Base", config: SAM2Config, progress: bool = False):
        if not isinstance(config, SAM2Config):
            raise ConfigError("MaskGenerator needs a SAM2Config", type(config).__name__,
                              "pass PipelineConfig().sam2 or SAM2Config(...)")
        self.model = model
        self.config = _validated(config)
        self.progress = progress
        self.encoder_calls = 0
        self.last_config: SAM2Config | None = None
        self._image: np.ndarray | None = None  # (H, W, 3) uint8, private copy of the last image
        self._image_key: str | None = None
        self._crop_cache: dict[tuple[str, tuple[int, ...]], tuple[dict[str, Any], list[tuple[int, int]]]] = {}
        self._on_crop: Callable[[], None] | None = None
        self._amg = self._build_amg(self.config)

    # ---- public API ---------------------------------------------------------------------
    def generate(self, image: np.ndarray) -> MaskSet:
        """Masks of ``image``, sorted by predicted IoU, highest first (ties keep sam2's order).

        Empty masks are dropped (sam2 keeps them, with a NaN stability score, when
        ``stability_score_thresh`` is 0).

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB array (HWC). It is copied; later edits to the array do
                not affect :meth:`refilter`.

        Returns:
            :class:`~ovseg.utils.MaskSet` (``source="sam2"``): ``masks`` (N, h, w) bool at the working
            size (the input's size, or for an image whose longer side exceeds ``config.max_image_side`` the
            area-downscaled copy SAM 2 ran on: :func:`~ovseg.utils.working_shape`), ``bbox`` / ``crop_box``
            (N, 4) int64 XYWH pixels of that size, ``predicted_iou`` / ``stability_score``
            (N,) float32, ``area`` (N,) int64, ``point_coords`` (N, 2) float32 (x, y) prompts.
            ``bbox`` is the tight pixel extent (x0, y0, width, height), recomputed from the masks.

        Raises:
            InputError: ``image`` is not an (H, W, 3) uint8 array.
        """
        image = _check_image(image)
        key = _array_key(image)
        if key != self._image_key:  # a different image: drop the previous image's embeddings
            self._crop_cache.clear()
            self._image, self._image_key = image.copy(), key
        return self._run(self._amg, self.config)

    def refilter(self, **changes: Any) -> MaskSet:
        """Re-run generation on the last image with some settings changed, reusing its embeddings.

        ``changes`` are :class:`~ovseg.config.SAM2Config` field names (``pred_iou_thresh``,
        ``stability_score_thresh``, ``box_nms_thresh``, ``points_per_side``, ``crop_n_layers``, ...)
        applied on top of :attr:`config` for this call only (use :meth:`update_config` to keep
        them). Only crops not encoded before (new ``crop_n_layers`` / ``crop_overlap_ratio``) run the
        image encoder; the result equals ``generate`` with the same settings.

        Raises:
            InputError: no image has been generated yet.
            ConfigError: unknown field, ``model``, or a value out of range.
        """
        if self._image is None:
            raise InputError("refilter needs a previous generate(image) on this MaskGenerator", "no image yet",
                             "call generate(image) first")
        if "model" in changes:
            raise ConfigError("refilter cannot change sam2.model (the weights)", repr(changes["model"]),
                              "build a new model and MaskGenerator")
        config = _replace(self.config, changes)
        amg = self._amg if config == self.config else self._build_amg(config)
        return self._run(amg, config)

    def update_config(self, config: SAM2Config | None = None, **changes: Any) -> SAM2Config:
        """Change the settings persistently (a new config and/or field changes); returns the new config.

        The embedding cache is kept: the next :meth:`generate` of the same image reuses it.
        """
        base = self.config if config is None else config
        if not isinstance(base, SAM2Config):
            raise ConfigError("update_config needs a SAM2Config", type(base).__name__, "pass SAM2Config(...)")
        new = _replace(base, changes) if changes else _validated(base)
        self.config, self._amg = new, self._build_amg(new)
        return new

    def clear_cache(self) -> None:
        """Forget the last image and its embeddings (frees their memory)."""
        self._crop_cache.clear()
        self._image = self._image_key = None

    # ---- internals ----------------------------------------------------------------------
    def _build_amg(self, config: SAM2Config) -> "SAM2AutomaticMaskGenerator":
        with warnings.catch_warnings():  # sam2 1.1.0 scripts its transforms with torch.jit, which torch now deprecates
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            amg = _amg_class()(self.model, output_mode="binary_mask", **{name: getattr(config, name) for name in _AMG_FIELDS})
        predictor = amg.predictor
        # Small regions are cleaned on the final masks (_amg_class); the predictor's own low-res
        # variant needs sam2's CUDA extension, so it is switched off for identical results everywhere.
        predictor._transforms.max_hole_area = predictor._transforms.max_sprinkle_area = 0.0
        predictor._bb_feat_sizes = _backbone_feature_sizes(self.model)
        predictor.set_image = self._caching_set_image(predictor, predictor.set_image)
        return amg

    def _caching_set_image(self, predictor: Any, encode: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], None]:
        """An instance-level replacement of ``predictor.set_image`` that caches per-crop embeddings."""

        def set_image(image: np.ndarray) -> None:  # image: (h, w, 3) uint8 crop
            key = (_array_key(image), tuple(image.shape))
            hit = self._crop_cache.get(key)
            if hit is None:
                encode(image)  # sam2: reset, transform, image encoder -> predictor._features
                self.encoder_calls += 1
                self._crop_cache[key] = (predictor._features, list(predictor._orig_hw))
            else:
                predictor.reset_predictor()
                # _features: {"image_embed": (1, C, s/16, s/16), "high_res_feats": [(1, C/8, s/4, s/4),
                # (1, C/4, s/8, s/8)]}; read-only for the decoder, so sharing the tensors is safe.
                predictor._features, predictor._orig_hw = hit[0], list(hit[1])
                predictor._is_image_set, predictor._is_batch = True, False
            if self._on_crop is not None:
                self._on_crop()

        return set_image

    def _run(self, amg: "SAM2AutomaticMaskGenerator", config: SAM2Config) -> MaskSet:
        import torch

        image = self._image  # (H, W, 3) uint8, set by generate()
        if image is None:
            raise InputError("mask generation needs an image", "no image yet", "call generate(image) first")
        image = downscale_image(image, working_shape(*image.shape[:2], config.max_image_side))  # (h, w, 3) uint8
        h, w = image.shape[:2]
        with self._progress_bar(amg, (h, w)), torch.inference_mode():
            records = amg.generate(image)
        self.last_config = config
        masks = MaskSet.from_records(records, (h, w), source="sam2")
        # Empty masks only survive sam2's filters when stability_score_thresh == 0 (their stability
        # score is 0/0 = NaN); they are never useful proposals and would divide by zero downstream.
        keep = np.flatnonzero(masks.area > 0)  # (K,)
        order = keep[np.argsort(-masks.predicted_iou[keep], kind="stable")]  # (K,) highest predicted IoU first
        return masks.filter(order)

    @contextlib.contextmanager
    def _progress_bar(self, amg: "SAM2AutomaticMaskGenerator", shape: tuple[int, int]) -> Iterator[None]:
        if not self.progress:
            yield
            return
        from sam2.utils.amg import generate_crop_boxes
        from tqdm.auto import tqdm

        crop_boxes, _ = generate_crop_boxes(shape, amg.crop_n_layers, amg.crop_overlap_ratio)
        with tqdm(total=len(crop_boxes), desc="ovseg SAM 2 crops", unit="crop") as bar:
            self._on_crop = lambda: bar.update(1)
            try:
                yield
            finally:
                self._on_crop = None


@functools.lru_cache(maxsize=1)
def _amg_class() -> type:
    """sam2's generator plus two repairs of sam2 1.1.0, without changing what it computes.

    A crop that yields no mask gets an empty (0, 4) ``crop_boxes`` tensor (sam2 stores a (0,)
    tensor that crashes its cross-crop NMS whenever ``crop_n_layers > 0``).

    ``SAM2AutomaticMaskGenerator.postprocess_small_regions`` (fill holes and drop islands smaller
    than ``min_mask_region_area`` with OpenCV, then box NMS preferring untouched masks) is run on the
    merged masks, as segment-anything's ``generate`` does. It is sam2's own method; only the call is
    added, so the threshold means the same with or without sam2's CUDA extension.
    """
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    class _Generator(SAM2AutomaticMaskGenerator):
        def _process_crop(self, *args: Any, **kwargs: Any) -> Any:
            data = super()._process_crop(*args, **kwargs)
            if len(data["rles"]) == 0:  # sam2 1.1.0 leaves a (0,) tensor here, which breaks its crop NMS
                import torch

                data["crop_boxes"] = torch.zeros((0, 4), dtype=torch.int64)
            return data

        def _generate_masks(self, image: np.ndarray) -> Any:
            data = super()._generate_masks(image)
            if self.min_mask_region_area > 0:
                nms = max(self.box_nms_thresh, self.crop_nms_thresh)
                data = self.postprocess_small_regions(data, self.min_mask_region_area, nms)
            return data

    return _Generator


def _backbone_feature_sizes(model: Any) -> list[tuple[int, int]]:
    """(h, w) of the backbone levels the SAM decoder reads, finest first.

    sam2 1.1.0's SAM2ImagePredictor hard-codes [(256, 256), (128, 128), (64, 64)], i.e. a 1024 px
    input. The lowest-resolution level has stride ``model.backbone_stride`` (16: the size the
    prompt encoder is built for, ``image_size // backbone_stride``) and each finer level doubles the
    resolution (Hiera halves it per stage; the FPN neck with scalp=1 keeps strides 4, 8, 16).
    """
    size, stride, levels = int(model.image_size), int(model.backbone_stride), int(model.num_feature_levels)
    sizes = []
    for i in range(levels):
        s = size // (stride >> (levels - 1 - i))
        sizes.append((s, s))
    return sizes


def _check_image(image: Any) -> np.ndarray:
    """Validate an (H, W, 3) uint8 RGB array; returns it C-contiguous."""
    if not isinstance(image, np.ndarray):
        raise InputError("image must be a numpy array (H, W, 3) uint8 RGB", type(image).__name__,
                         "load it with ovseg.io or np.asarray(PIL.Image.open(path).convert('RGB'))")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError("image must have shape (H, W, 3) (HWC RGB)", f"shape {image.shape}",
                         "convert grayscale/RGBA to RGB, e.g. PIL's .convert('RGB')")
    if image.dtype != np.uint8:
        raise InputError("image must be uint8 (0-255)", f"dtype {image.dtype}",
                         "convert it, e.g. (img * 255).round().astype(np.uint8) for [0, 1] floats")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise InputError("image must be at least 1x1 px", f"{image.shape[1]}x{image.shape[0]} px",
                         "pass a non-empty image")
    return np.ascontiguousarray(image)


def _array_key(array: np.ndarray) -> str:
    """Content hash of an array (bytes, shape and dtype)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(repr((array.shape, array.dtype.str)).encode())
    digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def _validated(config: SAM2Config) -> SAM2Config:
    """A validated copy of ``config`` (ranges as in PipelineConfig)."""
    return PipelineConfig(sam2=dataclasses.replace(config)).sam2


def _replace(config: SAM2Config, changes: dict[str, Any]) -> SAM2Config:
    unknown = [k for k in changes if k not in _AMG_FIELDS and k not in _OWN_FIELDS]
    if unknown:
        raise ConfigError(f"unknown sam2 setting '{unknown[0]}'", repr(changes[unknown[0]]),
                          "valid settings are: " + ", ".join(_AMG_FIELDS + ("max_image_side",)))
    return PipelineConfig(sam2=dataclasses.replace(config, **changes)).sam2


# ---- helpers --------------------------------------------------------------------------------

def mask_coverage(maskset: MaskSet) -> float:
    """Fraction of image pixels covered by at least one mask, in [0, 1] (0.0 for no masks)."""
    masks = maskset.masks  # (N, H, W) bool
    if masks.shape[1] * masks.shape[2] == 0:
        return 0.0
    return float(masks.any(axis=0).mean())
