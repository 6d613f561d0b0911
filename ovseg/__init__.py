"""ovseg: open-vocabulary semantic segmentation and generative editing (SAM 2 + CLIP + Stable Diffusion).

Public entry points are importable from the package top; heavy libraries (torch, sam2, open_clip,
diffusers) are imported only when a stage first needs them, so ``import ovseg`` is cheap and has
no side effects.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "OpenVocabSegmentationPipeline": "pipeline",
    "SegmentationResult": "pipeline",
    "SegmentationMask": "pipeline",
    "SemanticResult": "pipeline",
    "BatchItem": "pipeline",
    "PipelineConfig": "config",
    "SAM2Config": "config",
    "CLIPConfig": "config",
    "AlignmentConfig": "config",
    "InpaintingConfig": "config",
    "get_fast_config": "config",
    "get_balanced_config": "config",
    "get_quality_config": "config",
    "load_config": "config",
    "MaskSet": "utils",
    "load_image": "io",
    "OvsegError": "errors",
    "InputError": "errors",
    "ConfigError": "errors",
    "WeightsError": "errors",
    "list_models": "weights",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'ovseg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
