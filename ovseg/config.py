"""Typed configuration for the four thesis stages (Chapter 3.2).

One dataclass per stage, gathered in :class:`PipelineConfig`. Defaults are exactly the thesis
code's (``../shared/seeds`` README): a 32x32 SAM 2 point grid with IoU > 0.88 and stability > 0.95,
CLIP ViT-L/14 @ 336 px with layers 6/12/18/24, background suppression alpha = 0.3, 50 diffusion
steps with guidance 7.5, mask blur 8 px and dilation 5 px.

``profile`` chooses the weights: ``"full"`` runs the thesis checkpoints named in the stage
configs; ``"mini"`` (the default) runs the small embedded models trained on the mini world and
pins the model-identity fields (see :data:`PROFILE_PINNED_FIELDS`) to the registry's mini
entries (``inpainting.model`` only while it keeps its default: set to a local diffusers directory, e.g. a
training run's export, it is loaded in the mini profile too; likewise ``clip.extract_layers`` and
``clip.layer_weights``: set away from the ViT-L/14 default, they choose the mini CLIP's blocks, the layer
ablation). Everything else (thresholds, alpha, steps, ...) applies to both profiles.

Configs round-trip through YAML (:meth:`PipelineConfig.to_yaml`, :meth:`PipelineConfig.from_yaml`);
unknown keys, wrong types and out-of-range values raise :class:`~ovseg.errors.ConfigError`
naming the key, the value and the valid range.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from .errors import ConfigError

__all__ = [
    "SAM2Config",
    "CLIPConfig",
    "AlignmentConfig",
    "InpaintingConfig",
    "PipelineConfig",
    "PRESETS",
    "PROFILES",
    "PROFILE_PINNED_FIELDS",
    "get_fast_config",
    "get_balanced_config",
    "get_quality_config",
    "get_config",
    "load_config",
    "apply_overrides",
    "load_user_yaml",
    "read_user_text",
]

PROFILES = ("mini", "full")
#: Smallest non-zero ``sam2.max_image_side``: a working image below it holds too little for any stage.
MIN_WORKING_SIDE = 64
#: Regions a replacement may repaint (``InpaintingConfig.replace_region``; ``ovseg.inpaint.replace_region_mask``).
REPLACE_REGIONS = ("mask", "box", "enclosing")
#: Named prompt-template sets (see ovseg.features.get_templates).
TEMPLATE_SETS = ("imagenet80", "imagenet7", "none")

# Fields that a profile fixes because they identify the model (weights + architecture-bound
# preprocessing). With ``profile="mini"`` they come from the weights registry's mini entries.
PROFILE_PINNED_FIELDS = (
    "sam2.model",
    "clip.model",
    "clip.pretrained",
    "clip.image_size",
    "clip.extract_layers",
    "clip.dense_path",
    "clip.templates",
    "clip.layer_weights",
    "inpainting.model",
)


def _range(lo: float | None = None, hi: float | None = None, **extra: Any) -> dict[str, Any]:
    return {"range": (lo, hi), **extra}


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


@dataclass
class SAM2Config:
    """3.2.2 automatic mask generation (arguments of sam2's ``SAM2AutomaticMaskGenerator``)."""

    # Weights registry entry (``ovseg weights list``), HF repo id or local checkpoint path.
    model: str = "sam2.1-hiera-large"
    # Point prompts per image side: points_per_side**2 prompts (32 -> 1024, the thesis grid).
    points_per_side: int = field(default=32, metadata=_range(1, 256))
    # Prompts decoded together; memory/speed trade-off only, results do not depend on it.
    points_per_batch: int = field(default=64, metadata=_range(1, 4096))
    # Keep masks whose predicted IoU exceeds this (thesis: 0.88).
    pred_iou_thresh: float = field(default=0.88, metadata=_range(0.0, 1.0))
    # Keep masks whose stability score (IoU between masks binarised at +-offset) exceeds this.
    stability_score_thresh: float = field(default=0.95, metadata=_range(0.0, 1.0))
    # Logit offset used by the stability score.
    stability_score_offset: float = field(default=1.0, metadata=_range(0.0, 100.0))
    # Logit threshold that binarises the mask predictions.
    mask_threshold: float = field(default=0.0, metadata=_range(-100.0, 100.0))
    # Box IoU above which duplicate masks within one crop are suppressed.
    box_nms_thresh: float = field(default=0.7, metadata=_range(0.0, 1.0))
    # Hierarchical multi-scale coverage: layer i adds (2**i)**2 overlapping crops (0 = whole image only).
    crop_n_layers: int = field(default=1, metadata=_range(0, 4))
    # Box IoU above which duplicates between crops are suppressed (smaller crops win).
    crop_nms_thresh: float = field(default=0.7, metadata=_range(0.0, 1.0))
    # Overlap between neighbouring crops, as a fraction of the image side.
    crop_overlap_ratio: float = field(default=512 / 1500, metadata=_range(0.0, 0.9))
    # Points per side in crop layer n are points_per_side / factor**n.
    crop_n_points_downscale_factor: int = field(default=2, metadata=_range(1, 16))
    # Remove disconnected regions and holes smaller than this many pixels (0 = off).
    min_mask_region_area: int = field(default=100, metadata=_range(0, None))
    # One refinement step feeding each mask back as a prompt (slower, slightly better masks).
    use_m2m: bool = False
    # Predict three candidate masks per point (whole / part / subpart) instead of one.
    multimask_output: bool = True
    # Working resolution, longest side in px (0 = the input's own size). A larger image is downscaled (area) to
    # it for SAM 2 and CLIP; candidate masks are generated and kept at it, and only the masks a result returns are
    # brought back to the input's size (nearest neighbour). Bounds memory for any accepted image (a mask is one
    # byte per pixel, SAM 2 decodes 3 x points_per_batch float masks at once): 1024 is SAM 2's own input size, so
    # its 256 px low-res masks are not resolved any finer by a larger working image.
    max_image_side: int = field(default=1024, metadata=_range(0, 65536))


@dataclass
class CLIPConfig:
    """3.2.1 dense CLIP features (``open_clip``)."""

    # open_clip architecture name, weights registry entry, or HF hub id (``hf-hub:org/name``).
    model: str = "ViT-L-14-336"
    # open_clip pretrained tag (``openai``) or a local checkpoint file.
    pretrained: str = "openai"
    # Square input resolution of one CLIP window, pixels.
    image_size: int = field(default=336, metadata=_range(32, 2048))
    # 1-indexed transformer blocks whose patch tokens are read (thesis: 6, 12, 18, 24 of ViT-L's 24). Mini
    # profile: while it keeps this default, the mini CLIP's own blocks (its config.json); set otherwise, these.
    extract_layers: list[int] = field(default_factory=lambda: [6, 12, 18, 24])
    # Fusion weights for extract_layers (same length); None = equal weights.
    layer_weights: list[float] | None = None
    # How patch tokens reach the joint embedding space: "maskclip" = value path of the block
    # (v -> out_proj, no q-k mixing, no FFN) then ln_post and proj, as in MaskCLIP; "tokens" =
    # the block's output tokens through ln_post and proj; "sclip" / "clearclip" = those training-free
    # baselines' attention in the block (Chapter 5 comparison).
    dense_path: str = field(default="maskclip", metadata=_choices("maskclip", "tokens", "sclip", "clearclip"))
    # Prompt templates for text ensembling: "imagenet80" (CLIP's 80 ImageNet templates),
    # "imagenet7" (the 7-template subset CLIP's authors selected), "none" (raw prompt), or an
    # explicit list of templates, each with one "{}" where the prompt goes.
    templates: str | list[str] = "imagenet80"
    # Images are resized so their short side is image_size, then covered by overlapping windows.
    sliding_window: bool = True
    # Step between windows as a fraction of image_size (2/3 -> 224 px at 336).
    window_stride: float = field(default=2 / 3, metadata=_range(0.1, 1.0))
    # Longest side, in image_size units, before the image is shrunk to fit (bounds window count).
    max_windows_per_side: int = field(default=4, metadata=_range(1, 16))


@dataclass
class AlignmentConfig:
    """3.2.3 mask-text alignment: S_i = (1/|M_i|) sum_p sim(f_p, e_t)."""

    # Background suppression alpha: final = S_i - alpha * (mean similarity outside the mask).
    background_weight: float = field(default=0.3, metadata=_range(0.0, 1.0))
    # Masks whose mean similarity S_i is below this cosine are not returned.
    similarity_threshold: float = field(default=0.2, metadata=_range(-1.0, 1.0))
    # Down-weight pixels near the mask boundary (where masks and features disagree most).
    spatial_weighting: bool = True
    # Width of the boundary ramp, pixels at scoring resolution: weight = clip(d / width, min, 1).
    boundary_width: float = field(default=4.0, metadata=_range(0.0, 256.0))
    # Smallest weight a boundary pixel gets.
    boundary_min_weight: float = field(default=0.25, metadata=_range(0.0, 1.0))
    # Masks and similarity maps are scored at this longest side (pixels); larger images are
    # scored at reduced resolution to bound memory (N masks x H x W floats).
    score_max_side: int = field(default=512, metadata=_range(32, 4096))


@dataclass
class InpaintingConfig:
    """3.2.4 generative editing (``diffusers`` inpainting) and the classical baseline."""

    # "diffusion" (diffusers inpainting pipeline) or "classical" (OpenCV Telea, remove only).
    method: str = field(default="diffusion", metadata=_choices("diffusion", "classical"))
    # Weights registry entry, HF repo id or local diffusers directory. The thesis used
    # stabilityai/stable-diffusion-2-inpainting, since withdrawn upstream: see ``ovseg weights list``.
    model: str = "sd2-inpainting"
    # Denoising steps.
    num_inference_steps: int = field(default=50, metadata=_range(1, 1000))
    # Classifier-free guidance scale.
    guidance_scale: float = field(default=7.5, metadata=_range(0.0, 50.0))
    # Gaussian blur of the mask edge (sigma, pixels), applied after dilation; 0 = hard edge.
    mask_blur: float = field(default=8.0, metadata=_range(0.0, 256.0))
    # Mask dilation radius, pixels; grows the edit region to cover object halos.
    mask_dilation: int = field(default=5, metadata=_range(0, 256))
    # Noise strength for remove / replace (1.0 = regenerate the region from pure noise).
    strength: float = field(default=1.0, metadata=_range(0.01, 1.0))
    # Region repainted by replace: "mask" (the object's silhouette, the thesis behaviour), "box" (its
    # bounding box: room for a new object of another shape; the box's background is regenerated too) or
    # "enclosing" (the square around its smallest enclosing circle: room for any shape of the same extent at any
    # rotation, which a bounding box is not). Dilation and blur apply to each. remove and style always use the
    # silhouette.
    replace_region: str = field(default="mask", metadata=_choices(*REPLACE_REGIONS))
    # Noise strength for style: lower keeps more of the object's structure.
    style_strength: float = field(default=0.75, metadata=_range(0.01, 1.0))
    # Prompt used for remove: describes plausible background.
    remove_prompt: str = "empty background, nothing there, seamless continuation of the surroundings"
    # Negative prompt for every edit; for remove the removed object's name is appended (see below).
    negative_prompt: str = "blurry, distorted, artifacts, watermark, text"
    # remove: append the removed object's name to the negative prompt (the thesis behaviour). Guidance then
    # extrapolates away from that object's look, which can overshoot to its complementary colour when the
    # model draws the named object confidently (the mini model does: see MINI_INPAINTING_SETTINGS).
    remove_negative_object: bool = True
    # Low-frequency residual correction of the generated image (sigma, px at the model's native resolution; 0 =
    # off, the thesis behaviour). Outside the mask the model's output should equal the input; what it gets wrong
    # there (mostly the VAE's colour casts) is spread into the mask by Gaussian-normalised interpolation and
    # subtracted, so the fill keeps its detail but meets its surroundings without a visible patch.
    residual_correction_sigma: float = field(default=0.0, metadata=_range(0.0, 1024.0))
    # Radius of the classical (Telea) inpainting neighbourhood, pixels.
    classical_radius: int = field(default=5, metadata=_range(1, 100))
    # Random seed of the diffusion generator.
    seed: int = field(default=0, metadata=_range(0, 2**63 - 1))


@dataclass
class PipelineConfig:
    """Whole-pipeline configuration; ``name`` records the preset it started from."""

    # "mini": embedded small models (default, offline, CPU); "full": the thesis checkpoints.
    profile: str = field(default="mini", metadata=_choices(*PROFILES))
    # Preset name this config was built from (informational).
    name: str = "balanced"
    sam2: SAM2Config = field(default_factory=SAM2Config)
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    alignment: AlignmentConfig = field(default_factory=AlignmentConfig)
    inpainting: InpaintingConfig = field(default_factory=InpaintingConfig)

    # ---- validation ---------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> "PipelineConfig":
        """Check every field; raise :class:`ConfigError` naming key, value and valid range."""
        for section in (self, self.sam2, self.clip, self.alignment, self.inpainting):
            prefix = "" if section is self else _SECTION_NAMES[type(section)] + "."
            _validate_section(section, prefix)
        layers = self.clip.extract_layers
        if not layers or len(set(layers)) != len(layers):
            raise ConfigError(
                "clip.extract_layers must be a non-empty list of distinct 1-indexed block numbers",
                layers,
                "e.g. [6, 12, 18, 24]",
            )
        side = self.sam2.max_image_side
        if 0 < side < MIN_WORKING_SIDE:
            raise ConfigError(f"sam2.max_image_side must be 0 (no limit) or at least {MIN_WORKING_SIDE} px", side,
                              "use e.g. 1024 (the default) or 0 to keep the input's size")
        if any(i < 1 for i in layers):
            raise ConfigError("clip.extract_layers are 1-indexed (>= 1)", layers, "e.g. [6, 12, 18, 24]")
        lw = self.clip.layer_weights
        if lw is not None and (len(lw) != len(layers) or any(w < 0 for w in lw) or sum(lw) <= 0):
            raise ConfigError(
                "clip.layer_weights must be one non-negative weight per extract_layers entry, not all zero",
                lw,
                f"give {len(layers)} weights or null for equal weights",
            )
        return self

    # ---- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: "PipelineConfig | None" = None) -> "PipelineConfig":
        """Build a config from a (possibly partial) nested dict, on top of ``base`` (default: balanced)."""
        if not isinstance(data, dict):
            raise ConfigError("a config must be a mapping of sections to settings", type(data).__name__,
                              "write YAML like 'sam2: {points_per_side: 32}'")
        if base is not None:
            cfg = copy.deepcopy(base)
        else:  # the balanced preset of the profile the data asks for (presets differ per profile)
            profile = data.get("profile", "mini")
            cfg = get_balanced_config(profile if profile in PROFILES else "mini")
        for key, value in data.items():
            if key in _SECTION_TYPES:
                if not isinstance(value, dict):
                    raise ConfigError(f"config section '{key}' must be a mapping", value,
                                      f"write '{key}: {{...}}'")
                section = getattr(cfg, key)
                for sub, subval in value.items():
                    _set_field(section, sub, subval, prefix=f"{key}.")
            else:
                _set_field(cfg, key, value, prefix="")
        return cfg.validate()

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Serialise to YAML; write atomically to ``path`` when given. Returns the text."""
        import yaml  # lazy: only needed for serialisation

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            from .io import write_text_atomic

            write_text_atomic(path, text)
        return text

    @classmethod
    def from_yaml(cls, source: str | Path) -> "PipelineConfig":
        """Load from a YAML file path or a YAML string (read with :func:`load_user_yaml`)."""
        text = source
        what = "config"
        if isinstance(source, Path) or (isinstance(source, str) and source.endswith((".yaml", ".yml"))):
            path = Path(source)
            if not path.is_file():
                raise ConfigError("config file must exist", str(path), "check the path or use a preset: fast, balanced, quality")
            text, what = read_user_text(path, "config file"), f"config {path}"
        return cls.from_dict(load_user_yaml(text, what) or {})

    def replace(self, **changes: Any) -> "PipelineConfig":
        """Copy with dotted-key changes, e.g. ``cfg.replace(**{"sam2.points_per_side": 16})``."""
        nested: dict[str, Any] = {}
        for dotted, value in changes.items():
            head, _, tail = dotted.partition(".")
            if tail:
                nested.setdefault(head, {})[tail] = value
            else:
                nested[head] = value
        return PipelineConfig.from_dict(nested, base=self)


_SECTION_TYPES = {"sam2": SAM2Config, "clip": CLIPConfig, "alignment": AlignmentConfig, "inpainting": InpaintingConfig}
_SECTION_NAMES = {v: k for k, v in _SECTION_TYPES.items()}


def _describe_range(meta: dict[str, Any]) -> str:
    if "choices" in meta:
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    lo, hi = meta["range"]
    if lo is not None and hi is not None:
        return f"[{lo}, {hi}]"
    return f">= {lo}" if lo is not None else f"<= {hi}"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Type-check one value against its annotation (only the shapes our configs use)."""
    text = str(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false", repr(value), f"set {key}: true or {key}: false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer", repr(value), f"set {key} to a whole number")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{key} must be a finite number", repr(value), f"set {key} to a number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string", repr(value), f"quote the value of {key}")
    if text == "str | list[str]":
        if isinstance(value, str) and value in TEMPLATE_SETS:
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v.count("{}") == 1 for v in value):
            return list(value)
        raise ConfigError(f"{key} must be one of {', '.join(TEMPLATE_SETS)} or a list of templates with one '{{}}' each",
                          repr(value), f'e.g. {key}: ["a photo of a {{}}.", "a {{}} in a scene."]')
    if text.startswith("list[int]"):
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        raise ConfigError(f"{key} must be a list of integers", repr(value), f"e.g. {key}: [6, 12, 18, 24]")
    if "list[float]" in text:
        if value is None and "None" in text:
            return None
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
        raise ConfigError(f"{key} must be a list of numbers or null", repr(value), f"e.g. {key}: [1, 1, 1, 1]")
    return value


def _set_field(obj: Any, name: str, value: Any, prefix: str) -> None:
    hints = get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    if name not in names:
        valid = ", ".join(n for n in names if n not in _SECTION_TYPES)
        raise ConfigError(f"unknown config key '{prefix}{name}'", repr(value), f"valid keys here are: {valid}")
    if isinstance(getattr(obj, name), tuple(_SECTION_TYPES.values())):
        raise ConfigError(f"config key '{prefix}{name}' is a section", repr(value), f"write '{name}: {{...}}'")
    setattr(obj, name, _coerce(prefix + name, value, hints[name]))


def _validate_section(section: Any, prefix: str) -> None:
    hints = get_type_hints(type(section))
    for f in fields(section):
        value = getattr(section, f.name)
        if f.name in _SECTION_TYPES:
            continue
        key = prefix + f.name
        value = _coerce(key, value, hints[f.name])
        setattr(section, f.name, value)
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f"{key} must be {_describe_range(meta)}", repr(value), f"set {key} to a valid choice")
        if "range" in meta:
            lo, hi = meta["range"]
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ConfigError(f"{key} must be in {_describe_range(meta)}", repr(value),
                                  f"set {key} inside that range")


# ---- presets -----------------------------------------------------------------------------

#: Mask-generator settings of the mini profile's presets, chosen on the mini world's dev scenes (the first 40 of
#: data/mini_world/dev, see data/models/mini-sam2/MODEL_CARD.md; never on the test split): a 128 px SAM 2
#: predicts 32 x 32 mask logits, so its IoU and stability scores run lower than full-size SAM 2's and the thesis
#: cut-offs (0.88 / 0.95) reject nearly every mask; 16 x 16 points cover 128 px scenes as densely as 32 x 32 cover
#: 1024 px photos.
MINI_SAM2_PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"points_per_side": 8, "crop_n_layers": 0, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7},
    "balanced": {"points_per_side": 16, "crop_n_layers": 1, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.7},
    "quality": {"points_per_side": 24, "crop_n_layers": 1, "pred_iou_thresh": 0.6, "stability_score_thresh": 0.8},
}
#: The mini profile's working size (``sam2.max_image_side``, every preset): 4x the mini world's 128 px scenes,
#: where the out-of-domain warning starts (``pipeline.MINI_MAX_IMAGE_SIDE``). The mini SAM 2 decodes 32 px low-res
#: masks from a 128 px input, so a larger working image only costs time (a 48 MP photo: 21 s of SAM 2 at 1024 px,
#: 3.4 s at 512). Every mini-world image is below it.
MINI_MAX_IMAGE_SIDE = 4 * 128  # 4 x world.SceneConfig.size


#: Inpainting inference settings of the mini profile (every preset), chosen on a development edit set by
#: ``python benchmarks/mini_inpainting_settings.py`` (not on the reported edits). The mini text encoder knows
#: only the world's words, so the full profile's negative prompt is a row of unknown tokens to it: the empty
#: negative prompt is the unconditional branch the model was trained with; the thesis's 5 px dilation / 8 px
#: blur were set for 512 px images, the mini model works at 128 px (a sigma-8 blur leaves ~30% of the
#: object's edge blended back in); both kept from the first model's grid. For the second model (step 17500):
#: remove does not name the object in the negative prompt (with it, guidance 7.5 pushes the fill to the
#: object's complementary colour: 0/16 removals succeed, 14/16 without), and replace repaints the bounding box
#: (a new shape needs room: base 0.62 vs 0.38 on 16 development replacements). On 90 development edits this
#: setting scored a mean success of 0.58 against 0.36 for the thesis setting (guidance 7.5 kept; 3.0 was no better).
#: For the third model (step 18500) the grid chose the same setting (mean 0.60 on 90 development edits, thesis
#: setting 0.375) and a residual correction of sigma 8 px (the VAE's colour casts otherwise show as a patch;
#: exact removals through this VAE: 0.83 background, 0.93 with it) scored 0.61: one more removal of 30.
#: For the fourth model (step 16500) the grid, now also over the "enclosing" region and the style strength
#: (0.5 / 0.75 / 0.9), kept every value: mean 0.683 on 90 development edits, thesis setting 0.392.
#: For the eighth model (the shipped one: upright replacements, 80 px crops) the grid chose guidance 3.0 and kept
#: the rest: on the 90 final development edits, mean 0.850 (remove 0.97, replace base 0.87 / novel 0.67, style
#: 0.90) against 0.783 at guidance 7.5 with the same settings (0.87 / 0.87 / 0.47 / 0.93) and 0.475 for the thesis
#: setting; the "enclosing" region scored 0.833 (one base replacement fewer).
MINI_INPAINTING_SETTINGS: dict[str, Any] = {"negative_prompt": "", "mask_dilation": 3, "mask_blur": 2.0,
                                            "guidance_scale": 3.0, "remove_negative_object": False,
                                            "replace_region": "box", "residual_correction_sigma": 8.0}


def _preset(name: str, profile: str, changes: dict[str, Any]) -> PipelineConfig:
    cfg = PipelineConfig(profile=profile, name=name)
    for dotted, value in changes.items():
        if profile == "mini" and dotted == "clip.extract_layers":
            continue  # ViT-L/14 block numbers; a mini CLIP reads the blocks its config.json names
        section, key = dotted.split(".")
        setattr(getattr(cfg, section), key, value)
    if profile == "mini":
        for key, value in MINI_SAM2_PRESETS[name].items():
            setattr(cfg.sam2, key, value)
        cfg.sam2.max_image_side = MINI_MAX_IMAGE_SIDE
        for key, value in MINI_INPAINTING_SETTINGS.items():
            setattr(cfg.inpainting, key, value)
    return cfg.validate()


def get_balanced_config(profile: str = "mini") -> PipelineConfig:
    """The thesis defaults (README: 10-20 s per image on an RTX 3090); mini: MINI_SAM2_PRESETS, MINI_INPAINTING_SETTINGS."""
    return _preset("balanced", profile, {})


def get_fast_config(profile: str = "mini") -> PipelineConfig:
    """Fewer prompts, no crop layers, two feature layers, 7 templates, 25 steps."""
    return _preset("fast", profile, {"sam2.points_per_side": 16, "sam2.crop_n_layers": 0, "clip.templates": "imagenet7",
                                     "clip.extract_layers": [12, 24], "inpainting.num_inference_steps": 25})


def get_quality_config(profile: str = "mini") -> PipelineConfig:
    """Denser grid, two crop layers, mask refinement, stricter filtering, 75 steps."""
    return _preset("quality", profile, {"sam2.points_per_side": 48, "sam2.crop_n_layers": 2, "sam2.use_m2m": True,
                                        "sam2.pred_iou_thresh": 0.90, "inpainting.num_inference_steps": 75})


PRESETS = {"fast": get_fast_config, "balanced": get_balanced_config, "quality": get_quality_config}


def get_config(name: str = "balanced", profile: str = "mini") -> PipelineConfig:
    """A preset by name."""
    if name not in PRESETS:
        raise ConfigError("config preset must be one of fast, balanced, quality", repr(name),
                          "pass --config fast|balanced|quality or a path to a .yaml file")
    if profile not in PROFILES:
        raise ConfigError("profile must be 'mini' or 'full'", repr(profile), "pass --profile mini or --profile full")
    return PRESETS[name](profile)


#: Largest YAML file ovseg reads from a user (configs, evaluation protocols): they are a few hundred bytes.
MAX_USER_YAML_BYTES = 1_000_000


def read_user_text(path: str | Path, what: str = "config file") -> str:
    """A user's YAML file as text: at most :data:`MAX_USER_YAML_BYTES`, UTF-8 (one-line errors otherwise)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_USER_YAML_BYTES:
            raise ConfigError(f"a {what} must be at most {MAX_USER_YAML_BYTES:,} bytes", f"{path} ({size:,} bytes)",
                              "pass the YAML config itself, not another file")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"a {what} must be readable", f"{path}: {err.strerror}", "check the path and its permissions") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"a {what} must be UTF-8 text (YAML)", f"{path}: byte 0x{raw[err.start]:02x} at offset {err.start}",
                          "pass a YAML file, e.g. one written by PipelineConfig.to_yaml()") from None


def load_user_yaml(text: str, what: str = "config") -> Any:
    """Parse YAML a user wrote (``yaml.safe_load``) without anchors / aliases: ``*name`` references let a few hundred
    bytes expand to gigabytes (an "alias bomb"), and ovseg's configs never need them. One-line errors."""
    import yaml

    class _NoAliases(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.events.AliasEvent):
                event = self.peek_event()
                line = event.start_mark.line + 1 if event.start_mark else "?"
                raise ConfigError(f"{what} may not use YAML aliases (*name references)",
                                  f"*{event.anchor} at line {line}", "write the values out instead of referencing an anchor")
            return super().compose_node(parent, index)

    if len(text) > MAX_USER_YAML_BYTES:
        raise ConfigError(f"{what} must be at most {MAX_USER_YAML_BYTES:,} characters", f"{len(text):,} characters",
                          "pass the YAML config itself")
    try:
        return yaml.load(text, Loader=_NoAliases)  # a SafeLoader subclass: plain data only
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{what} must be valid YAML{where}", getattr(err, "problem", None) or str(err).splitlines()[0],
                          "fix the YAML syntax (indentation, colons, quotes)") from None


def load_config(spec: "str | Path | PipelineConfig | dict[str, Any] | None" = None,
                profile: str | None = None) -> PipelineConfig:
    """Resolve a preset name, YAML path, config object or mapping (as ``to_dict()`` writes it); ``profile`` overrides
    the config's."""
    if spec is None or (isinstance(spec, str) and not spec.endswith((".yaml", ".yml"))):
        return get_config(spec or "balanced", profile or "mini")  # a preset, built for its profile
    if isinstance(spec, PipelineConfig):
        cfg = copy.deepcopy(spec).validate()  # fields may have been assigned since it was built
    elif isinstance(spec, dict):
        cfg = PipelineConfig.from_dict(spec)
    elif isinstance(spec, (str, Path)):
        cfg = PipelineConfig.from_yaml(Path(spec))
    else:
        raise ConfigError("config must be a preset name, a YAML path, a PipelineConfig or a dict", type(spec).__name__,
                          "pass e.g. config='balanced' or get_balanced_config()")
    if profile is not None:
        cfg = cfg.replace(profile=profile)  # an explicit config keeps its other settings
    return cfg


def apply_overrides(config: PipelineConfig, items: "list[str] | tuple[str, ...] | None") -> PipelineConfig:
    """Apply ``KEY=VALUE`` overrides (the CLI's repeatable ``--set``) to a copy of ``config``.

    ``KEY`` is a dotted config key (``alignment.similarity_threshold``, ``sam2.points_per_side``, ``profile``);
    ``VALUE`` is parsed with ``yaml.safe_load``, so ``0.1``, ``16``, ``true``, ``[12, 24]`` and ``null`` have their
    YAML types. Each value is validated exactly like the same key in a YAML config.

    Raises:
        ConfigError: an item without ``=``, an unknown key, a value that is not YAML or is out of range.
    """
    if not items:
        return config

    sections = ", ".join(_SECTION_TYPES)
    top = [f.name for f in fields(PipelineConfig) if f.name not in _SECTION_TYPES]
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError("--set takes KEY=VALUE with a dotted config key", repr(item),
                              "e.g. --set alignment.similarity_threshold=0.1 (see --help for common keys)")
        head, dot, tail = key.partition(".")
        if (dot and head not in _SECTION_TYPES) or (not dot and head not in top):
            raise ConfigError(f"unknown config key '{key}'", repr(item),
                              f"use SECTION.FIELD with SECTION one of {sections} (e.g. alignment.similarity_threshold), "
                              f"or one of: {', '.join(top)}")
        try:
            value = load_user_yaml(raw, f"the value of --set {key}")
        except ConfigError as err:
            if "aliases" in err.rule:
                raise
            raise ConfigError(f"the value of --set {key} must be valid YAML", repr(raw),
                              f"quote it, e.g. --set '{key}=\"...\"'  ({err.value})") from None
        config = config.replace(**{key: value})
    return config
