"""Weights registry: named model entries per profile, where their files come from, how to check them.

Each :class:`WeightEntry` stores its *source* (Hugging Face repo id and file names, or a folder
inside this repository for the embedded mini models), the sha256 of its files where pinned, and
the *preprocessing* the weights expect (open_clip's pattern: a pretrained entry is weights plus
the way to feed them).

Resolution order (:func:`resolve`): an explicit local path -> the entry's local folder -> the
Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE`` honoured by ``huggingface_hub``) -> a download,
only when the caller allows it and ``HF_HUB_OFFLINE`` is not set. A miss raises one
:class:`~ovseg.errors.WeightsError` naming the model, where it was looked for, and the command
that fetches it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import WeightsError
from .paths import REPO_ROOT

__all__ = ["WeightEntry", "ResolvedWeights", "REGISTRY", "list_models", "get_entry", "default_model",
           "resolve", "verify", "download", "download_plan", "present_size", "sha256_file", "pinned_sha256", "pin",
           "model_record"]

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class WeightEntry:
    """One model the pipeline can load."""

    name: str  # registry key, used in configs (sam2.model, clip.model, inpainting.model)
    profile: str  # "full" or "mini"
    stage: str  # "sam2", "clip" or "inpainting"
    arch: str  # sam2 config name / open_clip architecture / diffusers pipeline class
    hf_repo: str | None = None  # Hugging Face repo id
    files: tuple[str, ...] = ()  # files (or, for diffusers, the model_index.json anchor) in the repo / folder
    local_dir: str | None = None  # folder relative to the repository root (embedded mini models)
    sha256: dict[str, str] = field(default_factory=dict)  # file -> sha256; empty = not pinned
    preprocess: dict[str, Any] = field(default_factory=dict)  # image_size, mean, std, quick_gelu, ...
    description: str = ""
    note: str = ""  # availability caveats (withdrawn upstream, mirrors, ...)
    download_size: int | None = None  # bytes fetched by `ovseg weights download` when known; None = unknown

    @property
    def fetch_command(self) -> str:
        if self.local_dir:
            return f"git checkout -- {self.local_dir}  (ships with the repository)"
        if self.stage == "inpainting":
            return f"ovseg weights download {self.profile} --only {self.name}  (or: hf download {self.hf_repo})"
        files = " ".join(self.files)
        return f"ovseg weights download {self.profile} --only {self.name}  (or: hf download {self.hf_repo} {files})"


_REGISTRY_LIST = [
    WeightEntry("sam2.1-hiera-large", "full", "sam2", "configs/sam2.1/sam2.1_hiera_l.yaml",
                hf_repo="facebook/sam2.1-hiera-large", files=("sam2.1_hiera_large.pt",),
                preprocess={"image_size": 1024, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
                description="SAM 2.1 Hiera-L (thesis mask generator, 224M params)"),
    WeightEntry("sam2.1-hiera-base-plus", "full", "sam2", "configs/sam2.1/sam2.1_hiera_b+.yaml",
                hf_repo="facebook/sam2.1-hiera-base-plus", files=("sam2.1_hiera_base_plus.pt",),
                preprocess={"image_size": 1024, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
                description="SAM 2.1 Hiera-B+ (smaller, faster)"),
    WeightEntry("sam2.1-hiera-tiny", "full", "sam2", "configs/sam2.1/sam2.1_hiera_t.yaml",
                hf_repo="facebook/sam2.1-hiera-tiny", files=("sam2.1_hiera_tiny.pt",),
                preprocess={"image_size": 1024, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
                description="SAM 2.1 Hiera-T (fastest)"),
    WeightEntry("ViT-L-14-336", "full", "clip", "ViT-L-14-336",
                hf_repo="timm/vit_large_patch14_clip_336.openai",
                files=("open_clip_model.safetensors",),
                preprocess={"image_size": 336, "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD,
                            "interpolation": "bicubic", "quick_gelu": True, "pretrained": "openai"},
                description="OpenAI CLIP ViT-L/14 @ 336 px (thesis feature extractor)"),
    WeightEntry("sd2-inpainting", "full", "inpainting", "StableDiffusionInpaintPipeline",
                hf_repo="stabilityai/stable-diffusion-2-inpainting", files=("model_index.json",),
                preprocess={"image_size": 512},
                description="Stable Diffusion 2 inpainting (thesis editor)",
                note="withdrawn upstream: works from a local folder or an existing HF cache; otherwise set "
                     "inpainting.model to sd15-inpainting or sdxl-inpainting"),
    WeightEntry("sd15-inpainting", "full", "inpainting", "StableDiffusionInpaintPipeline",
                hf_repo="stable-diffusion-v1-5/stable-diffusion-inpainting", files=("model_index.json",),
                preprocess={"image_size": 512},
                description="Stable Diffusion 1.5 inpainting (community mirror of runwayml's release)"),
    WeightEntry("sdxl-inpainting", "full", "inpainting", "StableDiffusionXLInpaintPipeline",
                hf_repo="diffusers/stable-diffusion-xl-1.0-inpainting-0.1", files=("model_index.json",),
                preprocess={"image_size": 1024},
                description="SDXL 1.0 inpainting (diffusers team)"),
    # Embedded mini profile: trained by this project on the mini world (see data/models/*/MODEL_CARD.md).
    WeightEntry("mini-sam2", "mini", "sam2", "data/models/mini-sam2/config.yaml", local_dir="data/models/mini-sam2",
                files=("model.safetensors", "config.yaml"), description="mini SAM 2 (small Hiera), trained on the mini world"),
    WeightEntry("mini-sam2-video", "mini", "sam2", "data/models/mini-sam2-video/config.yaml",
                local_dir="data/models/mini-sam2-video", files=("model.safetensors", "config.yaml"),
                description="mini SAM 2 with its video memory trained on mini-world clips (issue #21): the video "
                            "predictor of mini-sam2 (ovseg.video tracks with it; keyframe detections keep mini-sam2)"),
    WeightEntry("mini-clip", "mini", "clip", "data/models/mini-clip/config.json", local_dir="data/models/mini-clip",
                files=("model.safetensors", "config.json"), description="mini CLIP (open_clip), trained on the mini world"),
    WeightEntry("mini-clip-contrastive", "mini", "clip", "data/models/mini-clip-contrastive/config.json",
                local_dir="data/models/mini-clip-contrastive", files=("model.safetensors", "config.json"),
                description="mini CLIP trained as real CLIP is (image-caption contrastive loss only, plain ViT), read "
                            "through the MaskCLIP value path (issue #22); select with --set clip.model=mini-clip-contrastive"),
    WeightEntry("mini-inpainting", "mini", "inpainting", "StableDiffusionInpaintPipeline",
                local_dir="data/models/mini-inpainting",
                files=("model_index.json", "unet/diffusion_pytorch_model.safetensors",
                       "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                       "tokenizer/tokenizer_config.json"),
                description="mini SD inpainting (diffusers classes), trained on the mini world"),
]

REGISTRY: dict[str, WeightEntry] = {e.name: e for e in _REGISTRY_LIST}

#: Default entry per (profile, stage): the full profile is the thesis's checkpoints.
_DEFAULTS = {
    ("full", "sam2"): "sam2.1-hiera-large",
    ("full", "clip"): "ViT-L-14-336",
    ("full", "inpainting"): "sd2-inpainting",
    ("mini", "sam2"): "mini-sam2",
    ("mini", "clip"): "mini-clip",
    ("mini", "inpainting"): "mini-inpainting",
}


def list_models(profile: str | None = None, stage: str | None = None) -> list[str]:
    """Registry names, optionally restricted to a profile and/or stage."""
    return [e.name for e in _REGISTRY_LIST if (profile is None or e.profile == profile)
            and (stage is None or e.stage == stage)]


def default_model(profile: str, stage: str) -> str:
    return _DEFAULTS[(profile, stage)]


def get_entry(name: str) -> WeightEntry | None:
    return REGISTRY.get(name)


@dataclass
class ResolvedWeights:
    """Where a model's files were found: ``path`` is a file (single-file models) or a folder."""

    name: str
    path: Path
    origin: str  # "local path", "repository", "HF cache", "downloaded"
    entry: WeightEntry | None = None


def _offline_var() -> str | None:
    """The offline variable that is set now (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE), or None."""
    return next((k for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                 if os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"}), None)


def offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set now (huggingface_hub reads it only at import)."""
    return _offline_var() is not None


def _online_fix(command: str) -> str:
    """The fix for a download refused because an offline variable is set: the command with it unset."""
    var = _offline_var() or "HF_HUB_OFFLINE"
    return f"{var} is set, so nothing is downloaded: run `{var}=0 {command}` (or `unset {var}` first)"


def _from_hf_cache(repo: str, filename: str) -> Path | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return None
    hit = try_to_load_from_cache(repo, filename)
    return Path(hit) if isinstance(hit, str) else None


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


def resolve(spec: str, stage: str, allow_download: bool = False, check: bool = True) -> ResolvedWeights:
    """Find the files of model ``spec`` (registry name, local path, or HF repo id) for ``stage``.

    With ``check`` (the default), files whose sha256 the registry pins are verified before use.
    """
    # 1. An explicit local path (file or folder).
    path = Path(spec).expanduser()
    if path.exists() and (spec.startswith((".", "/", "~")) or os.sep in spec or path.suffix):
        return ResolvedWeights(spec, path.resolve(), "local path")
    entry = REGISTRY.get(spec)
    if entry is not None and entry.stage != stage:
        raise WeightsError(f"model '{spec}' is a {entry.stage} model, not a {stage} model", spec,
                           f"choose one of: {', '.join(list_models(stage=stage))}")
    looked: list[str] = []
    # 2. The entry's folder inside this repository (embedded models).
    if entry is not None and entry.local_dir:
        folder = REPO_ROOT / entry.local_dir
        missing = [f for f in entry.files if not (folder / f).exists()]
        if not missing:
            if check:
                _check_pinned(entry, folder)
            return ResolvedWeights(spec, folder, "repository", entry)
        trainer = "mini-clip --recipe contrastive" if spec == "mini-clip-contrastive" else spec
        fix = ("the mini inpainting model is not trained yet (issue #4); for remove use the classical method "
               "(a config with inpainting: {method: classical}), or --profile full with downloaded weights"
               if stage == "inpainting" else
               "the embedded mini models ship with the repository (git checkout -- data/models) or are trained "
               f"with `ovseg train {trainer}`; or use --profile full with downloaded weights")
        raise WeightsError(f"the {entry.profile} profile's {stage} model '{spec}' is not installed",
                           f"missing {', '.join(str(folder / f) for f in missing)}", fix)
    repo = entry.hf_repo if entry is not None else spec
    if repo is None or repo.count("/") != 1:
        known = ", ".join(list_models(stage=stage))
        raise WeightsError(f"{stage} model must be a registry name, a local path or an HF repo id 'org/name'",
                           repr(spec), f"use one of: {known}, or an existing path")
    files = entry.files if entry is not None else (("model_index.json",) if stage == "inpainting" else ())
    # 3. The Hugging Face cache.
    for f in files:
        hit = _from_hf_cache(repo, f)
        if hit is not None:
            if entry is not None and check:
                _check_pinned(entry, hit.parent)
            base = hit.parent if stage == "inpainting" else hit
            return ResolvedWeights(spec, base, "HF cache", entry)
    looked.append(f"the HF cache {_hf_cache_dir()} for {repo}/{'|'.join(files) or '*'}")
    # 4. Download, when allowed.
    if allow_download and not offline():
        return ResolvedWeights(spec, download_files(repo, files, stage), "downloaded", entry)
    note = f" ({entry.note})" if entry is not None and entry.note else ""
    if offline():
        fix = _online_fix(f"ovseg weights download {entry.profile} --only {entry.name}" if entry is not None
                          else f"hf download {repo}")
    else:
        fix = f"run `{entry.fetch_command if entry is not None else f'hf download {repo}'}`"
    raise WeightsError(f"weights for {stage} model '{spec}' are missing{note}", "nothing in " + "; ".join(looked), fix)


def download_files(repo: str, files: tuple[str, ...], stage: str) -> Path:
    """Fetch a model from the Hugging Face hub into the HF cache; returns the file or folder."""
    from huggingface_hub import hf_hub_download, snapshot_download

    try:
        if stage == "inpainting":
            return Path(snapshot_download(repo, allow_patterns=["*.json", "*.txt", "*.safetensors", "*.model"]))
        return Path(hf_hub_download(repo, files[0]))
    except Exception as err:  # network / auth / repo-gone errors all end the same way for the user
        raise WeightsError(f"could not download '{repo}'", f"{type(err).__name__}: {str(err).splitlines()[0][:200]}",
                           "check the network and the repo id; for withdrawn models pass a local folder "
                           "or a mirror (ovseg weights list)") from None


_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256, per process


def _package_pins_path() -> Path:
    """``ovseg/pins.json``: the embedded models' sha256, shipped inside the package (not beside the weights)."""
    return REPO_ROOT / "ovseg" / "pins.json"


def _package_pins() -> dict[str, dict[str, str]]:
    path = _package_pins_path()
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {k: dict(v) for k, v in data.items() if isinstance(v, dict)}


def pinned_sha256(entry: WeightEntry) -> dict[str, str]:
    """The entry's pinned hashes: its registry ``sha256``; for embedded models the package's ``ovseg/pins.json``
    (deleting or editing the ``SHA256SUMS`` beside the weights does not unpin them), and only for a model the
    package does not know yet the ``SHA256SUMS`` in its folder (``<sha256>  <file>`` lines)."""
    if entry.sha256 or not entry.local_dir:
        return dict(entry.sha256)
    package = _package_pins().get(entry.name)
    if package:
        return package
    sums = REPO_ROOT / entry.local_dir / "SHA256SUMS"
    if not sums.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in sums.read_text().splitlines() if line.strip())
    return {name.strip(): digest for digest, name in pairs}


def pin(name: str) -> Path:
    """Record the sha256 of an embedded model's files (run after exporting a trained model): ``SHA256SUMS`` in its
    folder and its entry in the package's ``ovseg/pins.json``. Returns the SHA256SUMS path."""
    from .io import write_json_atomic, write_text_atomic

    entry = REGISTRY[name]
    if not entry.local_dir:
        raise WeightsError("only embedded models are pinned with a SHA256SUMS file", name,
                           "pin downloaded models by editing their registry entry's sha256")
    folder = REPO_ROOT / entry.local_dir
    missing = [f for f in entry.files if not (folder / f).is_file()]
    if missing:
        raise WeightsError(f"all files of '{name}' must exist to pin them", f"missing {missing}", "export the model first")
    sums = {f: sha256_file(folder / f) for f in entry.files}
    pins = _package_pins()
    pins[name] = sums
    write_json_atomic(_package_pins_path(), dict(sorted(pins.items())))
    return write_text_atomic(folder / "SHA256SUMS", "\n".join(f"{d}  {f}" for f, d in sums.items()) + "\n")


def pin_if_embedded(folder: str | Path, name: str) -> Path | None:
    """Pin ``name`` when ``folder`` is its embedded folder (trainers call this after each export)."""
    entry = REGISTRY[name]
    if entry.local_dir and Path(folder).resolve() == (REPO_ROOT / entry.local_dir).resolve():
        return pin(name)
    return None


def _check_pinned(entry: WeightEntry, folder: Path) -> None:
    """Raise if a file with a pinned sha256 differs (hashes are memoised per file version)."""
    for f, want in pinned_sha256(entry).items():
        p = folder / f
        if not p.exists():
            continue
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        if key not in _VERIFIED:
            _VERIFIED[key] = sha256_file(p)
        if _VERIFIED[key] != want:
            raise WeightsError(f"checksum of {p} must match the registry", f"sha256 {_VERIFIED[key]}, expected {want}",
                               f"the file is corrupt or was replaced; restore it: {entry.fetch_command}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(name: str) -> list[tuple[str, str]]:
    """Check every file of an entry against its pinned sha256 (all of them: a mismatch does not stop the check).

    Returns (file, status) pairs with status ``ok``, ``MISMATCH (sha256 ..., expected ...)``, ``not pinned
    (sha256 ...)`` or ``missing``.
    """
    entry = REGISTRY[name]
    try:
        found = resolve(name, entry.stage, check=False)
    except WeightsError:
        return [(f, "missing") for f in entry.files]
    rows = []
    base = found.path if found.path.is_dir() else found.path.parent
    pins = pinned_sha256(entry)
    for f in entry.files:
        p = base / f
        if not p.exists():
            rows.append((f, "missing"))
            continue
        digest = sha256_file(p)
        want = pins.get(f)
        if want is None:
            rows.append((f, f"not pinned (sha256 {digest})"))
        elif digest != want:
            rows.append((f, f"MISMATCH (sha256 {digest}, expected {want})"))
        else:
            rows.append((f, "ok"))
    return rows


def present_size(name: str) -> int | None:
    """Bytes of an entry's files as found now (a diffusers folder: every file in it), or None when missing."""
    entry = REGISTRY[name]
    try:
        found = resolve(name, entry.stage, check=False)
    except WeightsError:
        return None
    path = found.path
    if path.is_file():
        return path.stat().st_size
    if entry.stage == "inpainting":  # a diffusers folder: all its component files (HF cache: symlinks to blobs)
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return sum((path / f).stat().st_size for f in entry.files if (path / f).is_file())


def download_plan(profile: str, only: str | None = None) -> list[tuple[WeightEntry, ResolvedWeights | None]]:
    """What :func:`download` would do: each entry with where it is found now, or None when it will be fetched.

    Raises:
        WeightsError: ``only`` is not a registry name.
    """
    names = [only] if only else [default_model(profile, s) for s in ("sam2", "clip", "inpainting")]
    plan = []
    for n in names:
        entry = REGISTRY.get(n)
        if entry is None:
            raise WeightsError("model must be a registry name", repr(n), "see `ovseg weights list`")
        try:
            found: ResolvedWeights | None = resolve(n, entry.stage, check=False)
        except WeightsError:
            found = None
        plan.append((entry, found))
    return plan


def download(profile: str, only: str | None = None) -> list[ResolvedWeights]:
    """Fetch every default model of ``profile`` (or just ``only``) into the HF cache.

    Raises:
        WeightsError: a model is missing and ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set (before
            anything is fetched; the fix names the command with the variable unset), or a download fails.
    """
    plan = download_plan(profile, only)
    to_fetch = [e.name for e, found in plan if found is None and e.hf_repo]
    if to_fetch and offline():
        command = f"ovseg weights download {profile}" + (f" --only {only}" if only else "")
        raise WeightsError("ovseg weights download needs the network", f"{_offline_var()}=1 (missing: "
                           f"{', '.join(to_fetch)})", _online_fix(command))
    return [resolve(e.name, e.stage, allow_download=True) for e, _ in plan]


def model_record(name: str, stage: str) -> dict[str, Any]:
    """Provenance of the model a stage ran: ``{"name", "stage", "sha256"}``.

    ``name`` is the registry entry (or the local path / repo id the config gave); ``sha256`` maps each of its
    files to the digest the registry pins for it (an embedded model's ``SHA256SUMS``, a local folder's own
    ``SHA256SUMS`` when it has one), or is None when nothing is pinned. Nothing is hashed here.
    """
    entry = REGISTRY.get(name)
    sums: dict[str, str] = pinned_sha256(entry) if entry is not None else {}
    if entry is None:  # a local folder (e.g. a training run's export) may carry its own SHA256SUMS
        local = Path(name).expanduser() / "SHA256SUMS"
        if local.is_file():
            pairs = (line.split(maxsplit=1) for line in local.read_text().splitlines() if line.strip())
            sums = {f.strip(): digest for digest, f in pairs}
    return {"name": name, "stage": stage, "sha256": sums or None}
