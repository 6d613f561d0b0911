"""3.2.4 Generative editing: Stable Diffusion inpainting for remove / replace / style.

An edit takes an image, the boolean mask of one object (from 3.2.3) and an operation:

* ``remove``: repaint the object's region from ``InpaintingConfig.remove_prompt`` (plausible
  background); the object's own name goes into the negative prompt so it does not come back.
* ``replace``: repaint the region from the user's ``edit_prompt`` at ``strength``; the region is the
  object's silhouette, its bounding box with ``replace_region="box"``, or the square around its smallest
  enclosing circle with ``replace_region="enclosing"`` (room for another shape of the same extent).
* ``style``: repaint at the lower ``style_strength`` (partial-strength inpainting starts from the
  noised object instead of pure noise, so its shape and layout survive).

Mask preparation follows the thesis: dilate the mask by ``mask_dilation`` px (elliptical kernel,
covers halos and shadows the segmenter missed), then blur it with a Gaussian of sigma
``mask_blur`` px. The model repaints at its native resolution (``unet.config.sample_size *
vae_scale_factor``: 512 px for SD 1.x/2.x inpainting, 1024 px for SDXL); the result is resized
back and composited over the original with the blurred mask ``m``::

    out = orig * (1 - m) + generated * m        (rounded to uint8)

so every pixel where ``m == 0`` is byte-identical to the input. ``method="classical"`` replaces
diffusion with OpenCV's Telea inpainting (remove only; no weights needed).

Conventions: images are HWC uint8 RGB in [0, 255]; masks are HW bool (True = the object) or
HW float32 in [0, 1] (1.0 = repaint, "white = repaint" as in diffusers). ``torch``, ``diffusers``
and ``cv2`` are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import InpaintingConfig
from .errors import ConfigError, InputError, OvsegWarning, WeightsError
from .weights import offline as _offline

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

__all__ = [
    "OPERATIONS",
    "MAX_MASK_FRACTION",
    "LARGE_IMAGE_FACTOR",
    "prepare_mask",
    "bounding_box_mask",
    "classical_remove",
    "residual_correction",
    "load_inpaint_pipeline",
    "select_pipeline_class",
    "EditResult",
    "Inpainter",
]

#: Supported edit operations.
OPERATIONS = ("remove", "replace", "style")
#: A mask covering more than this fraction of the image leaves no context to inpaint from.
MAX_MASK_FRACTION = 0.99
#: Warn when the image side exceeds the model's native side by more than this factor.
LARGE_IMAGE_FACTOR = 4

_SD_CLASS = "StableDiffusionInpaintPipeline"
_SDXL_CLASS = "StableDiffusionXLInpaintPipeline"
# Components an SD / SDXL inpainting folder must provide (SDXL adds the second text encoder).
_REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_REQUIRED_XL = ("text_encoder_2", "tokenizer_2")
# Optional components: passed as None when the folder lacks them.
_OPTIONAL = ("safety_checker", "feature_extractor", "image_encoder")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_MIRRORS_NOTE = (
    "the thesis model stabilityai/stable-diffusion-2-inpainting was withdrawn upstream; mirrors such as "
    "stable-diffusion-v1-5/stable-diffusion-inpainting or diffusers/stable-diffusion-xl-1.0-inpainting-0.1 work"
)
_INPAINT_MODELS_HINT = (
    "use an inpainting checkpoint such as stable-diffusion-v1-5/stable-diffusion-inpainting "
    "or diffusers/stable-diffusion-xl-1.0-inpainting-0.1"
)


# ---- input checks shared by the entry points ---------------------------------------------------

def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = (f"{type(image).__name__} shape {image.shape} dtype {image.dtype}" if isinstance(image, np.ndarray)
               else type(image).__name__)
        raise InputError("image must be an HxWx3 uint8 RGB array", got,
                         "load it with ovseg.io.load_image(path_or_pil)")


def _check_mask(mask: Any, shape: tuple[int, int] | None = None) -> None:
    if not isinstance(mask, np.ndarray) or mask.ndim != 2 or mask.dtype != np.bool_:
        got = (f"shape {mask.shape} dtype {mask.dtype}" if isinstance(mask, np.ndarray) else type(mask).__name__)
        raise InputError("mask must be an HxW bool array (True = the object)", got,
                         "convert it, e.g. mask = np.asarray(mask) > 0")
    if shape is not None and mask.shape != tuple(shape):
        raise InputError("mask shape must equal the image's HxW", f"mask {mask.shape[1]}x{mask.shape[0]} px, "
                         f"image {shape[1]}x{shape[0]} px", "compute the mask on this image or resize it "
                         "(nearest neighbour) to the image size")


#: Largest accepted diffusion seed (torch generators take 64-bit seeds; the config's range).
MAX_SEED = 2**63 - 1


def check_seed(seed: Any) -> int | None:
    """A diffusion seed: None (the config's) or an integer in [0, :data:`MAX_SEED`]; numpy integers accepted."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError("seed must be an integer in [0, 2**63 - 1]", repr(seed), "pass a seed such as 0 (--seed 0)")
    return int(seed)


def _check_non_negative_int(name: str, value: Any, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} must be a non-negative integer", repr(value), fix)


# ---- mask preparation and the classical baseline -----------------------------------------------

def _dilate(mask: np.ndarray, dilation: int) -> np.ndarray:
    """(H, W) bool -> (H, W) bool grown by an elliptical kernel of radius ``dilation`` px."""
    import cv2

    if dilation <= 0:
        return mask.copy()
    size = 2 * int(dilation) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def bounding_box_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool, True on the bounding box of ``mask``'s True pixels (all False if none)."""
    _check_mask(mask)
    out = np.zeros(mask.shape, dtype=bool)
    ys, xs = np.nonzero(mask)
    if ys.size:
        out[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    return out


def enclosing_square_mask(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) bool, True on the axis-aligned square around the smallest circle enclosing
    ``mask``'s True pixels (clipped to the image; all False if none).

    Room for a new object of *any* shape and rotation with the same extent: a shape's smallest enclosing
    circle is the same whether it is a triangle, a star or a ring of that size, while its bounding box is not
    (a replacement drawn inside the old object's bounding box is clipped).
    """
    import cv2

    _check_mask(mask)
    out = np.zeros(mask.shape, dtype=bool)
    ys, xs = np.nonzero(mask)
    if ys.size:
        # pixel centres; the circle through them, grown by half a pixel to cover the pixels themselves
        (cx, cy), r = cv2.minEnclosingCircle(np.stack([xs, ys], axis=1).astype(np.float32))
        r += 0.5
        h, w = mask.shape
        eps = 1e-3  # cv2 pads the radius by a hair; without this a disc's square could gain a row
        y0, y1 = max(0, int(np.floor(cy - r + 0.5 + eps))), min(h, int(np.ceil(cy + r + 0.5 - eps)))
        x0, x1 = max(0, int(np.floor(cx - r + 0.5 + eps))), min(w, int(np.ceil(cx + r + 0.5 - eps)))
        out[y0:y1, x0:x1] = True
    return out


#: How errors name the region a replacement repaints (``InpaintingConfig.replace_region``).
REGION_WORDS = {"mask": "", "box": "bounding box", "enclosing": "enclosing square"}


def replace_region_mask(mask: np.ndarray, region: str) -> np.ndarray:
    """The region a replacement repaints: ``"mask"`` (the silhouette itself), ``"box"``
    (:func:`bounding_box_mask`) or ``"enclosing"`` (:func:`enclosing_square_mask`); (H, W) bool."""
    return {"mask": lambda m: m, "box": bounding_box_mask, "enclosing": enclosing_square_mask}[region](mask)


def prepare_mask(mask: np.ndarray, dilation: int, blur: float) -> np.ndarray:
    """Dilate, then feather, an object mask into the soft repaint mask.

    Args:
        mask: (H, W) bool, True on the object.
        dilation: radius in px of the elliptical dilation kernel (size ``2 * dilation + 1``); 0 = off.
        blur: sigma in px of the Gaussian applied after dilation (kernel size chosen by OpenCV from
            sigma: ``8 * sigma + 1`` for float images, i.e. +-4 sigma); 0 = hard edge.

    Returns:
        (H, W) float32 in [0, 1]: 1.0 = repaint, 0.0 = keep. Pixels further than ``dilation + 4 *
        blur`` px from the object are exactly 0.
    """
    import cv2

    _check_mask(mask)
    _check_non_negative_int("mask dilation", dilation, "set inpainting.mask_dilation to 0 or more px")
    if not isinstance(blur, (int, float, np.floating)) or isinstance(blur, bool) or not math.isfinite(blur) or blur < 0:
        raise InputError("mask blur must be a finite number >= 0 (Gaussian sigma, px)", repr(blur),
                         "set inpainting.mask_blur to 0 (hard edge) or more")
    # 1. Grow the mask over object halos and shadows.
    m = _dilate(mask, int(dilation)).astype(np.float32)
    # 2. Feather the edge so the repainted region blends into its surroundings.
    if blur > 0:
        m = cv2.GaussianBlur(m, (0, 0), sigmaX=float(blur), sigmaY=float(blur), borderType=cv2.BORDER_REPLICATE)
    return np.clip(m, 0.0, 1.0).astype(np.float32, copy=False)


def residual_correction(generated: np.ndarray, original: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Remove the generator's low-frequency error, measured where the input is known, from the whole output.

    Args:
        generated: (H, W, 3) float32 in [0, 1], the model's output at the size it generated.
        original: (H, W, 3) float32 in [0, 1], the input at the same size.
        mask: (H, W) float32 in [0, 1], the soft repaint mask (> 0 = repainted); pixels where it is 0 are known.
        sigma: Gaussian sigma in px of the interpolation; 0 returns ``generated`` unchanged.

    Returns:
        (H, W, 3) float32 in [0, 1]: ``generated + R``, where ``R`` is the residual ``original - generated`` on
        the known pixels, spread over the image by normalised Gaussian convolution (sum of blurred residual /
        blurred weight). Inside the mask this shifts the fill by the error the model makes around it (e.g. a VAE
        colour cast) and keeps its detail. With no known pixel at all the output is ``generated``.
    """
    import cv2

    if sigma <= 0:
        return generated
    known = (mask <= 0).astype(np.float32)  # (H, W) 1 = input pixel kept by the composite
    if not known.any():
        return generated
    residual = (original - generated) * known[:, :, None]  # (H, W, 3)
    num = cv2.GaussianBlur(residual, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    den = cv2.GaussianBlur(known, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)[:, :, None]
    # far from any known pixel the weight underflows: no correction there rather than a division by ~0
    spread = np.where(den > 1e-4, num / np.maximum(den, 1e-4), 0.0)
    return np.clip(generated + spread, 0.0, 1.0).astype(np.float32)


def classical_remove(image: np.ndarray, mask: np.ndarray, radius: int, dilation: int) -> np.ndarray:
    """Remove an object with OpenCV's Telea fast-marching inpainting (the classical baseline).

    Args:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) bool, True on the object.
        radius: Telea neighbourhood radius, px (>= 1).
        dilation: the mask is first dilated by this radius, px (elliptical kernel; 0 = off).

    Returns:
        (H, W, 3) uint8 RGB; pixels outside the dilated mask are exactly the input's.
    """
    import cv2

    _check_image(image)
    _check_mask(mask, image.shape[:2])
    _check_non_negative_int("mask dilation", dilation, "set inpainting.mask_dilation to 0 or more px")
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise InputError("classical inpainting radius must be an integer >= 1 (px)", repr(radius),
                         "set inpainting.classical_radius, e.g. 5")
    # 1. Grow the mask exactly as the diffusion path does (before its blur).
    region = _dilate(mask, int(dilation))
    if not region.any():
        return image.copy()
    # 2. Fill the region from its boundary inwards (per channel: the channel order does not matter).
    filled = cv2.inpaint(np.ascontiguousarray(image), region.astype(np.uint8) * 255, float(radius), cv2.INPAINT_TELEA)
    # 3. Guarantee that nothing outside the region changed.
    return np.where(region[:, :, None], filled, image).astype(np.uint8)


# ---- loading the diffusers pipeline ------------------------------------------------------------

def _download_fix(source: str) -> str:
    return (f"run `hf download {source}` (huggingface-cli download in older huggingface_hub) or "
            f"`ovseg weights download full`, or set inpainting.model to a local diffusers directory; {_MIRRORS_NOTE}")


def _read_json(path: Path, what: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise WeightsError(f"inpainting model '{source}' must have a readable {what}", f"{path}: {err}",
                           "re-download the model") from None
    if not isinstance(data, dict):
        raise WeightsError(f"inpainting model '{source}' must have a JSON object in {what}", str(path),
                           "re-download the model")
    return data


def _listed(model_index: dict[str, Any], name: str) -> bool:
    """Whether model_index.json lists component ``name`` with a library (``[null, null]`` = absent)."""
    spec = model_index.get(name)
    return isinstance(spec, (list, tuple)) and len(spec) == 2 and spec[0] is not None


def select_pipeline_class(model_index: dict[str, Any], unet_config: dict[str, Any] | None = None) -> str:
    """Name of the diffusers inpainting pipeline class for a model, from its own config.

    SDXL when ``model_index.json``'s ``_class_name`` is an SDXL pipeline, when it lists a
    ``text_encoder_2`` component, or when the UNet has ``addition_embed_type == "text_time"`` (SDXL's
    size/crop conditioning); Stable Diffusion 1.x/2.x otherwise. The repo name is never used.
    """
    class_name = str(model_index.get("_class_name", ""))
    is_xl = (class_name.startswith("StableDiffusionXL") or _listed(model_index, "text_encoder_2")
             or (unet_config or {}).get("addition_embed_type") == "text_time")
    return _SDXL_CLASS if is_xl else _SD_CLASS


def _check_in_channels(in_channels: Any, source: str) -> None:
    if in_channels != 9:
        raise WeightsError(f"inpainting model '{source}' is not an inpainting model: its UNet must have 9 input "
                           "channels (4 latent + 1 mask + 4 masked-image latent)",
                           f"a UNet with {in_channels} input channels",
                           _INPAINT_MODELS_HINT)


def _locate(source: str) -> tuple[Path, str]:
    """Return (folder holding model_index.json, kind) with kind "local", "cache" or "hub"; or raise WeightsError."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path, "local"
    if path.exists():
        raise WeightsError("inpainting model must be a diffusers directory (with model_index.json), not a file",
                           str(path), "point inpainting.model at the folder, or convert a single-file checkpoint "
                           "with diffusers' from_single_file(...).save_pretrained(DIR)")
    if not _REPO_ID.match(source) or source.startswith("."):
        raise WeightsError(f"inpainting model '{source}' must be an existing local directory or a Hugging Face "
                           "repo id (org/name)", f"no directory {path.resolve()}",
                           "check the path, or set inpainting.model to a repo id or registry entry "
                           f"(`ovseg weights list`); {_MIRRORS_NOTE}")
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    # The cache first: a model downloaded earlier loads without touching the network.
    cached = try_to_load_from_cache(source, "model_index.json")
    if isinstance(cached, str):
        return Path(cached).parent, "cache"
    offline = _offline()
    try:
        index = hf_hub_download(source, "model_index.json", local_files_only=offline)
    except Exception as err:  # LocalEntryNotFound, RepositoryNotFound, Gated, network errors: all "missing"
        where = f"not a directory, and not in the Hugging Face cache {constants.HF_HUB_CACHE}"
        reason = "HF_HUB_OFFLINE=1, so nothing is downloaded" if offline else type(err).__name__
        raise WeightsError(f"inpainting model '{source}' must be a local diffusers directory or a Hugging Face "
                           "model in the cache", f"{where} ({reason})", _download_fix(source)) from None
    return Path(index).parent, "hub"


@contextmanager
def quiet_library_bars() -> Iterator[None]:
    """Silence diffusers' and transformers' own progress bars and info / warning logs while models load
    ("Loading pipeline components...", "Loading weights"); their previous settings are restored after."""
    saved = []
    for module in ("diffusers.utils.logging", "transformers.utils.logging"):
        try:
            lib = __import__(module, fromlist=["logging"])
        except ImportError:  # pragma: no cover - both are dependencies of the inpainting stage
            continue
        saved.append((lib, lib.is_progress_bar_enabled(), lib.get_verbosity()))
        lib.disable_progress_bar()
        lib.set_verbosity_error()
    try:
        yield
    finally:
        for lib, bars, verbosity in saved:
            (lib.enable_progress_bar if bars else lib.disable_progress_bar)()
            lib.set_verbosity(verbosity)


def load_inpaint_pipeline(source: str | Path, device: str = "cpu", dtype: Any = None) -> Any:
    """Load a Stable Diffusion (1.x/2.x) or SDXL inpainting pipeline.

    Args:
        source: a local diffusers directory (``model_index.json`` + component folders) or a Hugging
            Face repo id (``org/name``). Local directories and ``HF_HUB_OFFLINE=1`` load with
            ``local_files_only=True``; otherwise missing files are downloaded into the HF cache.
            diffusers' and transformers' loading bars and logs are silenced meanwhile (:func:`quiet_library_bars`).
        device: torch device string, e.g. ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
        dtype: ``torch.dtype`` or its name (``"float16"``, ``"fp16"``, ``"bfloat16"``, ``"float32"``);
            default float16 on CUDA, float32 elsewhere.

    Returns:
        ``StableDiffusionInpaintPipeline`` or ``StableDiffusionXLInpaintPipeline`` on ``device``,
        chosen from the model's own config (see :func:`select_pipeline_class`), never from its name.
        The safety checker is disabled (``safety_checker=None, requires_safety_checker=False``) when
        the pipeline class has one: edits are research outputs on the user's own images, and the
        checker would silently black out whole edits. SDXL pipelines have no checker.

    Raises:
        WeightsError: the model is missing (not a directory, not in the HF cache and not
            downloadable), a component folder or ``model_index.json`` is missing, the model is not
            a Stable Diffusion / SDXL model, its UNet is not an inpainting UNet (``in_channels != 9``),
            or diffusers fails to load it.
        InputError: ``device`` or ``dtype`` is not understood.
    """
    import torch

    source = str(source)
    # 1. Resolve device and dtype (fp16 on CUDA, fp32 elsewhere).
    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError("device must be a torch device string", repr(device), 'use "cpu", "cuda" or "cuda:0"') from err
    if dtype is None:
        dtype = torch.float16 if torch_device.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        names = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}
        if dtype.lower() not in names:
            raise InputError("dtype must be float16, bfloat16 or float32", repr(dtype), 'pass e.g. dtype="float16"')
        dtype = names[dtype.lower()]
    elif not isinstance(dtype, torch.dtype):
        raise InputError("dtype must be a torch dtype or its name", repr(dtype), "pass e.g. torch.float16 or \"fp16\"")

    # 2. Find model_index.json: a local folder, or the HF cache / hub for a repo id.
    folder, kind = _locate(source)
    is_local = kind == "local"
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise WeightsError(f"inpainting model directory '{source}' is missing model_index.json (not a diffusers "
                           "pipeline folder)", f"no file {index_path}",
                           "save the model with pipeline.save_pretrained(DIR) or re-download the complete model")
    model_index = _read_json(index_path, "model_index.json", source)

    # 3. Check the components and choose the pipeline class from the config.
    if not _listed(model_index, "unet"):
        raise WeightsError(f"inpainting model '{source}' must be a Stable Diffusion or SDXL model with a 'unet' "
                           "component", f"{model_index.get('_class_name', 'unknown pipeline')} without a unet",
                           _INPAINT_MODELS_HINT)
    unet_config = None
    unet_config_path = folder / "unet" / "config.json"
    if unet_config_path.is_file():  # locally (or already cached): check before loading any weights
        unet_config = _read_json(unet_config_path, "unet/config.json", source)
        _check_in_channels(unet_config.get("in_channels"), source)
    class_name = select_pipeline_class(model_index, unet_config)
    kwargs: dict[str, Any] = {}
    if is_local:
        required = _REQUIRED + (_REQUIRED_XL if class_name == _SDXL_CLASS else ())
        for name in required:
            sub = folder / name
            if not _listed(model_index, name) or not sub.is_dir() or not any(sub.iterdir()):
                raise WeightsError(f"inpainting model directory '{source}' is missing the '{name}' component",
                                   f"no {'files in ' if sub.is_dir() else 'folder '}{sub}"
                                   + ("" if _listed(model_index, name) else " and no entry in model_index.json"),
                                   "re-download the complete model (`hf download <repo> --local-dir DIR`) or "
                                   "point inpainting.model at a complete diffusers folder")
        for name in _OPTIONAL:
            if _listed(model_index, name) and not (folder / name).is_dir():
                kwargs[name] = None

    import diffusers

    pipeline_class = getattr(diffusers, class_name)
    if "safety_checker" in inspect.signature(pipeline_class.__init__).parameters:
        kwargs.update(safety_checker=None, requires_safety_checker=False)

    # diffusers >= 0.36-ish takes ``dtype`` and deprecates ``torch_dtype``; older releases only know ``torch_dtype``.
    from diffusers.pipelines import pipeline_utils

    kwargs["dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"] = dtype
    # Low-memory loading needs the optional ``accelerate``; without it diffusers would print a warning per
    # component and fall back anyway, so ask for the plain path explicitly.
    import importlib.util

    kwargs["low_cpu_mem_usage"] = importlib.util.find_spec("accelerate") is not None

    # 4. Load: local files only for folders, offline mode and cached models (a partly cached model is then
    #    completed from the hub unless offline).
    target = str(folder) if is_local else source
    try:
        with quiet_library_bars():
            try:
                pipe = pipeline_class.from_pretrained(target, local_files_only=kind != "hub" or _offline(), **kwargs)
            except Exception:
                if kind != "cache" or _offline():
                    raise
                pipe = pipeline_class.from_pretrained(target, local_files_only=False, **kwargs)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise WeightsError(f"inpainting model '{source}' must load with diffusers {diffusers.__version__} as "
                           f"{class_name}", f"{type(err).__name__}: {first}",
                           _download_fix(source) if not is_local else "re-download or re-save the model") from None

    # 5. Verify it is an inpainting UNet, then move to the device.
    _check_in_channels(pipe.unet.config.in_channels, source)
    return pipe.to(torch_device)


# ---- editing -----------------------------------------------------------------------------------

@dataclass
class EditResult:
    """One edit.

    Attributes:
        image: the edited image, PIL RGB at the input resolution.
        mask: (H, W) float32 in [0, 1], the blended mask actually used (1.0 = repainted).
        operation: ``"remove"``, ``"replace"`` or ``"style"``.
        prompt: text prompt given to the model (None for the classical method).
        negative_prompt: negative prompt given to the model (None for the classical method).
        seed: seed of the diffusion generator (None for the classical method).
        steps: ``num_inference_steps`` requested (the scheduler runs ``int(steps * strength)``).
        guidance_scale: classifier-free guidance scale.
        strength: noise strength (1.0 = repaint from pure noise).
        method: ``"diffusion"`` or ``"classical"``.
    """

    image: "Image.Image"
    mask: np.ndarray
    operation: str
    prompt: str | None
    negative_prompt: str | None
    seed: int | None
    steps: int
    guidance_scale: float
    strength: float
    method: str


def _resize(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize an HW or HWC array (float32 or uint8, kept); area when shrinking both sides, bicubic otherwise."""
    import cv2

    if arr.shape[:2] == (height, width):
        return arr.copy()
    shrink = height <= arr.shape[0] and width <= arr.shape[1]
    return cv2.resize(arr, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


#: Images up to this many pixels are resized to and from the model's size whole, in float32 (12 bytes per pixel);
#: a larger one (a photo: 576 MB for 48 MP) is resized in uint8 on the way in and only around the edit on the way
#: out (:func:`_to_native`, :func:`_from_native`). The two differ by less than a grey level.
WHOLE_RESIZE_PIXELS = 4_000_000


def _to_native(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) float32 in [0, 1], the model's input (see :data:`WHOLE_RESIZE_PIXELS`)."""
    h, w = image.shape[:2]
    if h * w <= WHOLE_RESIZE_PIXELS:
        return np.clip(_resize(image.astype(np.float32) / 255.0, height, width), 0.0, 1.0)
    return _resize(image, height, width).astype(np.float32) / 255.0  # uint8 area / bicubic: saturated, no float copy


def _from_native(generated: np.ndarray, height: int, width: int, window: tuple[slice, slice]) -> np.ndarray:
    """The ``window`` of ``generated`` ((h, w, 3) float32 [0, 1] at the model's size) resized to (height, width).

    Returns (window rows, window cols, 3) float32 in [0, 255]: the whole output resized (:func:`_resize`) with
    the window cut out, or for an image over :data:`WHOLE_RESIZE_PIXELS` only the window interpolated (bicubic,
    pixel centres mapped as ``cv2.resize`` maps them), so memory follows the edited region, not the photo.
    """
    import cv2

    ys, xs = window
    gh, gw = generated.shape[:2]
    if height * width <= WHOLE_RESIZE_PIXELS or (height <= gh and width <= gw):
        out = _resize(generated.astype(np.float32), height, width)[ys, xs]
    else:
        sx, sy = gw / width, gh / height
        # dst (x, y) in window coordinates -> src ((x + x0 + 0.5) sx - 0.5, (y + y0 + 0.5) sy - 0.5)
        m = np.array([[sx, 0.0, (xs.start + 0.5) * sx - 0.5], [0.0, sy, (ys.start + 0.5) * sy - 0.5]], np.float64)
        out = cv2.warpAffine(generated.astype(np.float32), m, (xs.stop - xs.start, ys.stop - ys.start),
                             flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(np.nan_to_num(out), 0.0, 1.0) * 255.0


def _window(mask: np.ndarray) -> tuple[slice, slice]:
    """Row and column slices of the bounding box of ``mask > 0`` ((H, W) float32); the whole image if it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return slice(0, mask.shape[0]), slice(0, mask.shape[1])
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


class Inpainter:
    """Remove / replace / restyle one masked object (thesis 3.2.4).

    Args:
        pipe: a diffusers inpainting pipeline (:func:`load_inpaint_pipeline`); may be None when
            ``config.method == "classical"``.
        config: the inpainting settings (steps, guidance, mask dilation / blur, strengths, prompts).
        progress: show one ovseg progress bar over the denoising steps of an edit (tqdm, on stderr; off by
            default). diffusers' own per-step bar is always disabled.
    """

    def __init__(self, pipe: Any, config: InpaintingConfig | None = None, *, progress: bool = False):
        self.config = config if config is not None else InpaintingConfig()
        if self.config.method == "diffusion" and pipe is None:
            raise ConfigError("inpainting.method 'diffusion' needs a diffusers inpainting pipeline", "pipe=None",
                              "load one with ovseg.inpaint.load_inpaint_pipeline(config.model), or set "
                              "inpainting.method: classical")
        self.pipe = pipe
        self.progress = progress
        if pipe is not None and hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)  # ovseg shows its own bar (see _generate)

    @property
    def native_size(self) -> tuple[int, int]:
        """(height, width) in px the model generates at: ``unet.config.sample_size * vae_scale_factor``."""
        sample = self.pipe.unet.config.sample_size
        h, w = (sample, sample) if isinstance(sample, int) else tuple(sample)
        return int(h) * self.pipe.vae_scale_factor, int(w) * self.pipe.vae_scale_factor

    def _strength(self, operation: str) -> float:
        return self.config.style_strength if operation == "style" else self.config.strength

    def _region(self, mask: np.ndarray, operation: str) -> np.ndarray:
        """(H, W) bool region to repaint: the object's mask, or for replace the region of
        ``replace_region`` (:func:`replace_region_mask`: its bounding box, or the square around its enclosing circle)."""
        return replace_region_mask(mask, self.config.replace_region) if operation == "replace" else mask

    def check_inputs(self, image: np.ndarray, mask: np.ndarray, operation: str, edit_prompt: str | None,
                     seed: int | None = None, num_inference_steps: int | None = None) -> None:
        """Validate one edit request; raise :class:`~ovseg.errors.InputError` naming rule, value and fix."""
        # 1. Operation, and what the method supports.
        if operation not in OPERATIONS:
            raise InputError("operation must be one of " + ", ".join(OPERATIONS), repr(operation),
                             "use remove, replace or style (CLI: ovseg remove|replace|style)")
        if self.config.method == "classical" and operation != "remove":
            raise InputError(f"inpainting.method 'classical' supports only remove, not {operation}",
                             repr(operation), "set inpainting.method: diffusion for replace and style")
        # 2. Prompt: replace and style say what to paint.
        if operation in ("replace", "style") and (not isinstance(edit_prompt, str) or not edit_prompt.strip()):
            raise InputError(f"{operation} needs a non-empty edit prompt describing the new content",
                             repr(edit_prompt), f'pass e.g. --edit "a red sports car" with {operation}')
        # 3. Image and mask: types, shapes, coverage.
        _check_image(image)
        _check_mask(mask, image.shape[:2])
        covered = int(mask.sum())
        if covered == 0:
            raise InputError("mask is empty: the prompt matched nothing", "0 masked pixels",
                             "try another prompt, or lower alignment.similarity_threshold")
        box = operation == "replace" and self.config.replace_region != "mask"
        fraction = self._region(mask, operation).sum() / mask.size
        if fraction > MAX_MASK_FRACTION:
            region = " " + REGION_WORDS[self.config.replace_region] if box else ""
            raise InputError(f"mask{region} must leave some of the image to inpaint from "
                             f"(at most {MAX_MASK_FRACTION:.0%} covered)", f"{fraction:.1%} of the image",
                             ("set inpainting.replace_region: mask, or " if box else "") + "use a more specific "
                             "prompt; to regenerate the whole image use a text-to-image model instead")
        # 4. Seed and steps (strength scales the number of denoising steps actually run).
        check_seed(seed)
        if num_inference_steps is not None:
            if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, (int, np.integer)) \
                    or num_inference_steps < 1:
                raise InputError("num_inference_steps must be an integer >= 1", repr(num_inference_steps),
                                 "pass e.g. 50 (the thesis setting)")
            strength = self._strength(operation)
            if self.config.method == "diffusion" and int(num_inference_steps * strength) < 1:
                raise InputError("num_inference_steps x strength must give at least one denoising step",
                                 f"{num_inference_steps} x {strength}",
                                 f"use at least {math.ceil(1 / strength)} steps")

    def edit(self, image: np.ndarray, mask: np.ndarray, operation: str, edit_prompt: str | None = None,
             object_prompt: str | None = None, seed: int | None = None,
             num_inference_steps: int | None = None) -> EditResult:
        """Apply one edit to the masked object.

        Args:
            image: (H, W, 3) uint8 RGB.
            mask: (H, W) bool, True on the object to edit.
            operation: ``"remove"``, ``"replace"`` or ``"style"``.
            edit_prompt: what to paint; required for replace / style, ignored for remove.
            object_prompt: the object's name; for remove it is appended to the negative prompt (unless
                ``config.remove_negative_object`` is False).
            seed: generator seed; default ``config.seed``.
            num_inference_steps: default ``config.num_inference_steps``.

        Returns:
            :class:`EditResult` with a PIL RGB image of size W x H. Pixels where ``result.mask == 0``
            equal the input exactly. The model runs at its native square resolution (the image is
            stretched to it and back, so non-square images are generated with a distorted aspect);
            images more than :data:`LARGE_IMAGE_FACTOR` x the native side trigger a warning because
            the repainted region is upscaled and looks soft.

        Raises:
            InputError: see :meth:`check_inputs`.
        """
        from PIL import Image

        cfg = self.config
        steps = cfg.num_inference_steps if num_inference_steps is None else int(num_inference_steps)
        seed = cfg.seed if seed is None else int(seed)
        # 1. Validate.
        self.check_inputs(image, mask, operation, edit_prompt, seed=seed, num_inference_steps=steps)
        height, width = mask.shape

        # 2. Classical baseline: Telea inpainting inside the dilated mask, no blur.
        if cfg.method == "classical":
            out = classical_remove(image, mask, cfg.classical_radius, cfg.mask_dilation)
            return EditResult(image=Image.fromarray(out), mask=prepare_mask(mask, cfg.mask_dilation, 0.0),
                              operation=operation, prompt=None, negative_prompt=None, seed=None, steps=0,
                              guidance_scale=0.0, strength=1.0, method="classical")

        # 3. Prompts and strength for the operation.
        if operation == "remove":
            prompt = cfg.remove_prompt
            named = isinstance(object_prompt, str) and cfg.remove_negative_object
            extra = " ".join(object_prompt.split()) if named else ""
            negative = ", ".join(p for p in (cfg.negative_prompt.strip(), extra) if p)
        else:
            prompt = " ".join(edit_prompt.split())
            negative = cfg.negative_prompt.strip()
        strength = self._strength(operation)

        # 4. Soft mask at input resolution: dilate, then blur (1.0 = repaint); replace may take the bounding box.
        m = prepare_mask(self._region(mask, operation), cfg.mask_dilation, cfg.mask_blur)

        # 5. Resize image and mask to the model's native size (square for SD / SDXL).
        nh, nw = self.native_size
        if max(height / nh, width / nw) > LARGE_IMAGE_FACTOR:
            warnings.warn(f"image {width}x{height} px is more than {LARGE_IMAGE_FACTOR}x the inpainting model's "
                          f"native {nw}x{nh} px: the edit is generated at {nw}x{nh} and upscaled, so it will look "
                          "soft; crop around the object first for a sharper edit", OvsegWarning, stacklevel=2)
        image_n = _to_native(image, nh, nw)  # (nh, nw, 3) float32 in [0, 1]
        mask_n = np.clip(_resize(m, nh, nw), 0.0, 1.0)  # (nh, nw) in [0, 1]; diffusers binarises it at 0.5

        # 6. Generate with a seeded generator on the pipeline's device.
        generated = self._generate(image_n, mask_n, prompt, negative, steps, strength, seed)  # (nh, nw, 3) [0, 1]
        # 6b. Optional: subtract the output's low-frequency error around the mask from the fill (0 = off).
        generated = residual_correction(generated, image_n, mask_n, cfg.residual_correction_sigma)

        # 7. Back to the input resolution; composite so that m == 0 keeps the input exactly. Only the box around
        #    m > 0 is blended (outside it the output is the input), so memory follows the edit, not the photo.
        win = _window(m)
        gen = _from_native(generated, height, width, win)  # (wh, ww, 3) float32 in [0, 255]
        w = m[win][:, :, None]
        out = image.copy()
        out[win] = np.clip(np.rint(image[win].astype(np.float32) * (1.0 - w) + gen * w), 0, 255).astype(np.uint8)
        return EditResult(image=Image.fromarray(out), mask=m, operation=operation, prompt=prompt,
                          negative_prompt=negative or None, seed=seed, steps=steps,
                          guidance_scale=float(cfg.guidance_scale), strength=float(strength), method="diffusion")

    def _generate(self, image: np.ndarray, mask: np.ndarray, prompt: str, negative: str, steps: int,
                  strength: float, seed: int) -> np.ndarray:
        """Run the pipeline on native-size inputs: (h, w, 3) float32 [0, 1] image, (h, w) float32 mask.

        Returns the (h, w, 3) float32 [0, 1] generated image.
        """
        import torch

        device = torch.device(getattr(self.pipe, "_execution_device", None) or self.pipe.device)
        gen_device = "cpu" if device.type == "mps" else device  # MPS generators are not seedable reliably
        generator = torch.Generator(device=gen_device).manual_seed(seed)
        nh, nw = mask.shape
        kwargs: dict[str, Any] = {}
        bar = None
        if self.progress and "callback_on_step_end" in inspect.signature(self.pipe.__call__).parameters:
            from tqdm.auto import tqdm

            # diffusers runs min(int(steps * strength), steps) of the scheduler's steps
            bar = tqdm(total=min(int(steps * strength), steps), desc="ovseg inpainting", unit="step")

            def on_step(pipe: Any, i: int, t: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
                bar.update(1)
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step
        try:
            out = self.pipe(prompt=prompt, negative_prompt=negative or None, image=image, mask_image=mask,
                            height=nh, width=nw, num_inference_steps=steps, guidance_scale=self.config.guidance_scale,
                            strength=strength, generator=generator, output_type="np", **kwargs)
        finally:
            if bar is not None:
                bar.close()
        return np.asarray(out.images[0], dtype=np.float32)
