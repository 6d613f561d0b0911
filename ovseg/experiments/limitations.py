"""Chapter 5.3: the thesis's five limitations as controlled experiments on the mini world.

Each experiment renders scenes with :mod:`ovseg.world` while turning one :class:`~ovseg.world.SceneConfig`
knob, so the ground truth is exact and nothing else changes:

===================== ============================== ================================================
limitation            knob                           metric
===================== ============================== ================================================
(a) small objects     ``object_size_px``             referring IoU, semantic IoU, detection rate
(b) heavy occlusion   ``force_occlusion``            same, for the occluded object (visible mask)
(c) domain shift      ``styles`` (filled / outline   same
                      sketch / textured)
(d) inpainting        object texture x background    PSNR inside the edit vs the exact edited scene,
    artefacts         texture (remove edits)         success (region read as background), preservation
(e) ambiguous prompts prompt kind (class ... vague)  top-1 mask = the intended object
===================== ============================== ================================================

Definitions used throughout (all masks (H, W) bool):

* *referring IoU* of an object: IoU between the top-1 mask of ``pipe.segment(image, class_name)`` and
  the union of the visible masks of the objects of that class (0 when no mask is returned);
* *semantic IoU*: IoU between the pixels the Chapter 5 protocol (:func:`ovseg.evaluate.predict_labels`,
  method ``ovseg``) labels with the object's class and the ground-truth pixels of that class;
* *detected*: referring IoU >= :data:`HIT_IOU`.

Data functions return lists of row dicts (one per object / edit / prompt); :func:`summarize` averages
them per knob level and the figure functions plot a summary.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from matplotlib.figure import Figure

    from ..pipeline import OpenVocabSegmentationPipeline
    from ..world import Scene, SceneConfig

__all__ = ["HIT_IOU", "SEED_BASE", "mask_iou", "scene_seeds", "world_prompts", "semantic_labels", "object_rows",
           "small_objects", "occlusion", "domain_shift", "resolve_inpaint_method", "inpainting_artifacts",
           "intended_prompts", "ambiguous_prompts", "summarize", "plot_metrics", "metric_figure", "inpainting_figure",
           "examples_figure", "example_panels", "remove_cases", "half_widths", "log_test", "PROMPT_KINDS",
           "INPAINT_CONDITIONS", "STUDY_EXPERIMENTS", "STUDY_VERSION", "StudyConfig", "study_identity",
           "study_pipeline_config", "run_study", "reproduce_study", "study_rows", "shipped_study_path", "shipped_study"]

#: IoU at which a mask counts as finding the object.
HIT_IOU = 0.5
#: Scenes of this study use seeds from here on (the limitations dev range of ovseg.world.EVAL_SPLITS).
SEED_BASE = 3_000_000
#: Prompt kinds of experiment (e), most specific first.
PROMPT_KINDS = ("class", "colour", "shape", "spatial", "vague")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (H, W) bool masks; 0.0 when both are empty."""
    from ..utils import mask_iou as iou_matrix

    return float(iou_matrix(a[None], b[None])[0, 0])


def scene_seeds(experiment: str, level: int, n: int, split: str = "dev") -> list[int]:
    """``n`` deterministic world seeds for knob level ``level`` of an experiment (disjoint per experiment
    and level, and from training / the other evaluation ranges): ``EVAL_SEED_OFFSET + start + experiment x 100_000
    + level x 1_000 + k`` with ``start`` that of the ``limitations`` split ``split`` of ``ovseg.world.EVAL_SPLITS``
    (dev: :data:`SEED_BASE`, where the study was developed; test: the reported numbers). ``mask_sweep`` is the
    3.2.4 dilation / blur sweep (:func:`ovseg.experiments.inpainting.blur_dilation_sweep`)."""
    from ..errors import InputError
    from ..world import EVAL_SEED_OFFSET, seed_range

    exp = {"small": 0, "occlusion": 1, "domain": 2, "inpaint": 3, "ambiguous": 4, "mask_sweep": 5}[experiment]
    if not 0 <= n <= 1_000:
        raise InputError("a limitations condition has at most 1000 scenes (its seed block)", n, "use n <= 1000")
    start = EVAL_SEED_OFFSET + seed_range("limitations", split).start + exp * 100_000 + level * 1_000
    return list(range(start, start + n))


def world_prompts(background_names: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The Chapter 5 prompt list for world label maps: background (with its extra names) then the 48
    classes. Returns (prompts, owner) where ``owner[j]`` is the label value prompt ``j`` votes for
    (0 background, k + 1 = ``CLASS_NAMES[k]``)."""
    from ..evaluate import EvalProtocol
    from ..world import CLASS_NAMES

    extra = list(EvalProtocol().background_names if background_names is None else background_names)
    prompts = ["background", *[n for n in extra if n != "background"], *CLASS_NAMES]
    owner = [0] * (len(prompts) - len(CLASS_NAMES)) + list(range(1, len(CLASS_NAMES) + 1))
    return prompts, np.asarray(owner, np.int64)


def semantic_labels(pipe: "OpenVocabSegmentationPipeline", image: np.ndarray) -> np.ndarray:
    """(H, W) int64 world label values (0 background, k + 1 = class k) predicted by the thesis method
    under the Chapter 5 protocol (:func:`ovseg.evaluate.predict_labels`, method ``ovseg``)."""
    from ..evaluate import EvalProtocol, predict_labels

    prompts, owner = world_prompts()
    return predict_labels(pipe, image, prompts, owner, EvalProtocol(method="ovseg"), background_index=0)


def object_rows(pipe: "OpenVocabSegmentationPipeline", scene: "Scene", objects: Sequence[int] | None = None,
                **extra: Any) -> list[dict[str, Any]]:
    """Referring and semantic IoU of visible objects of a scene (all, or the indices in ``objects``).

    Returns one dict per object: ``seed``, ``object``, ``class``, ``diameter_px``, ``area_px``,
    ``occluded`` (hidden fraction in [0, 1]), ``style``, ``referring_iou`` and ``semantic_iou`` in [0, 1],
    ``detected`` (bool), plus ``extra``.
    """
    from ..world import CLASS_NAMES

    pred = semantic_labels(pipe, scene.image)
    rows = []
    for i, o in enumerate(scene.objects):
        if o.area == 0 or (objects is not None and i not in objects):
            continue
        target = np.any([m for m, p in zip(scene.instance_masks, scene.objects) if p.class_name == o.class_name], axis=0)
        res = pipe.segment(scene.image, o.class_name, top_k=1)
        ref = mask_iou(res.segmentation_masks[0].mask, target) if res.segmentation_masks else 0.0
        value = CLASS_NAMES.index(o.class_name) + 1
        sem = mask_iou(pred == value, scene.label_map == value)
        rows.append({"seed": scene.seed, "object": i, "class": o.class_name, "diameter_px": round(o.diameter, 2),
                     "area_px": o.area, "occluded": round(o.occluded, 4), "style": o.style,
                     "referring_iou": ref, "semantic_iou": sem, "detected": ref >= HIT_IOU, **extra})
    return rows


# ---- (a) small objects, (b) occlusion, (c) domain shift ------------------------------------------------------------

def small_objects(pipe: "OpenVocabSegmentationPipeline", sizes: Sequence[float] = (8, 12, 16, 24, 32, 48),
                  n_scenes: int = 2, split: str = "dev") -> list[dict[str, Any]]:
    """(a) Every object of ``n_scenes`` scenes per diameter (px, in 128 px scenes with 2-4 objects), scenes of the
    limitations split ``split`` (:func:`scene_seeds`). Rows: :func:`object_rows` with ``size_px`` (the knob)."""
    return [r for k, size in enumerate(sizes) for rs in _take(_small_level(pipe, k, size, split), n_scenes) for r in rs]


def _take(units: Iterator[list[dict[str, Any]]], n: int) -> list[list[dict[str, Any]]]:
    """The first ``n`` units (scenes or edits, each a list of rows) of a level's generator."""
    return list(itertools.islice(units, n))


def _small_level(pipe: "OpenVocabSegmentationPipeline", k: int, size: float,
                 split: str) -> Iterator[list[dict[str, Any]]]:
    """(a) level ``k`` (diameter ``size``): the rows of each of its scenes, in seed order."""
    from ..world import SceneConfig, render_scene

    cfg = SceneConfig(object_size_px=float(size), n_objects=(2, 4))
    for seed in scene_seeds("small", k, 1000, split):
        yield object_rows(pipe, render_scene(seed, cfg), size_px=size)


def occlusion(pipe: "OpenVocabSegmentationPipeline", fractions: Sequence[float] = (0.0, 0.2, 0.4, 0.6, 0.8),
              n_scenes: int = 2, tolerance: float = 0.1, split: str = "dev") -> list[dict[str, Any]]:
    """(b) Object 0 of two-object scenes, covered by object 1 by ``fraction`` of its area.

    ``force_occlusion`` slides the occluder until it hides about that fraction, but a smaller occluder
    cannot hide a large fraction, so scenes whose achieved fraction is off by more than ``tolerance``
    are skipped, as are scenes where both objects share a class. Rows: :func:`object_rows` of object 0
    (IoU against its *visible* mask) with ``target_occlusion`` (the knob; ``occluded`` is achieved). Scenes of the
    limitations split ``split``."""
    return [r for k, frac in enumerate(fractions)
            for rs in _take(_occlusion_level(pipe, k, frac, split, tolerance), n_scenes) for r in rs]


def _occlusion_level(pipe: "OpenVocabSegmentationPipeline", k: int, frac: float, split: str,
                     tolerance: float = 0.1) -> Iterator[list[dict[str, Any]]]:
    """(b) level ``k`` (hidden fraction ``frac``): the rows of each accepted scene, in seed order (the level's
    1000-seed block; about half of them are accepted at 0.8)."""
    from ..world import SceneConfig, render_scene

    cfg = SceneConfig(force_occlusion=float(frac), n_objects=(2, 2), object_size=(0.3, 0.45))
    for seed in scene_seeds("occlusion", k, 1000, split):
        scene = render_scene(seed, cfg)
        if len(scene.objects) < 2 or scene.objects[0].class_name == scene.objects[1].class_name \
                or scene.objects[0].area == 0 or abs(scene.objects[0].occluded - frac) > tolerance:
            continue
        yield object_rows(pipe, scene, objects=[0], target_occlusion=float(frac))


def domain_shift(pipe: "OpenVocabSegmentationPipeline", styles: Sequence[str] = ("filled", "outline", "textured"),
                 n_scenes: int = 2, split: str = "dev") -> list[dict[str, Any]]:
    """(c) Every object of ``n_scenes`` scenes (of the limitations split ``split``) per rendering style, objects otherwise plain
    (``textured_objects=0``). The seeds are the same for every style: filled and outline scenes have
    identical layouts and classes; texture patterns consume random draws, so textured scenes differ
    after their first object. Rows: :func:`object_rows` with ``style`` (the knob)."""
    return [r for style in styles for rs in _take(_domain_level(pipe, style, split), n_scenes) for r in rs]


def _domain_level(pipe: "OpenVocabSegmentationPipeline", style: str, split: str) -> Iterator[list[dict[str, Any]]]:
    """(c) one style: the rows of each scene, in seed order (the same seeds for every style)."""
    from ..world import SceneConfig, render_scene

    cfg = SceneConfig(styles=(style,), n_objects=(2, 3), textured_objects=0.0)
    for seed in scene_seeds("domain", 0, 1000, split):
        yield object_rows(pipe, render_scene(seed, cfg))


# ---- (d) inpainting artefacts -----------------------------------------------------------------------------------------

def resolve_inpaint_method(requested: str, config: Any) -> tuple[str, str | None]:
    """(method to use, note or None). ``"diffusion"`` falls back to ``"classical"`` only when the
    profile's inpainting model is missing (files absent; a corrupt model still fails when it loads)."""
    from .. import weights as W
    from ..errors import WeightsError

    if requested not in ("diffusion", "classical"):
        raise ValueError(f"inpaint method must be 'diffusion' or 'classical', got {requested!r}")
    if requested == "classical":
        return "classical", None
    name = W.default_model("mini", "inpainting") if config.profile == "mini" else config.inpainting.model
    try:
        W.resolve(name, "inpainting", check=False)
    except WeightsError as err:
        return "classical", (f"NOTE: the diffusion inpainting model '{name}' is missing, so experiment (d) uses the "
                             f"classical OpenCV (Telea) method instead. ({err})")
    return "diffusion", None


INPAINT_CONDITIONS: tuple[tuple[str, str], ...] = (("plain", "smooth"), ("textured", "smooth"), ("plain", "texture"),
                                                   ("textured", "texture"))


def _inpaint_config(surface: str, background: str) -> "SceneConfig":
    from ..world import SceneConfig

    return SceneConfig(n_objects=(1, 2), textured_objects=1.0 if surface == "textured" else 0.0,
                       backgrounds=(background,), object_size=(0.3, 0.45))


def remove_cases(surface: str, background: str, n: int, min_area: int = 300,
                 split: str = "dev") -> list[tuple["Scene", int, np.ndarray]]:
    """``n`` (scene, index of its largest object, ground-truth image without it) for a condition of (d).
    Scenes whose largest visible object is under ``min_area`` px are skipped; the seed list (of the limitations
    split ``split``) is the same for every condition."""
    return list(itertools.islice(_remove_cases(surface, background, min_area, split), n))


def _remove_cases(surface: str, background: str, min_area: int = 300,
                  split: str = "dev") -> Iterator[tuple["Scene", int, np.ndarray]]:
    from ..world import render_scene

    cfg = _inpaint_config(surface, background)
    for s in scene_seeds("inpaint", 0, 1000, split):
        scene = render_scene(s, cfg)
        areas = [o.area for o in scene.objects]
        if not areas or max(areas) < min_area:
            continue
        i = int(np.argmax(areas))
        yield scene, i, render_scene(s, cfg, edit=(i, None)).image


def inpainting_artifacts(pipe: "OpenVocabSegmentationPipeline", n_scenes: int = 2,
                         conditions: Sequence[tuple[str, str]] = INPAINT_CONDITIONS, seed: int = 0,
                         keep_images: bool = False, split: str = "dev") -> list[dict[str, Any]]:
    """(d) Remove the largest object of each scene with the pipeline's inpainter and compare with the
    exact ground truth (the same scene rendered without that object, ``render_scene(edit=(i, None))``).

    ``conditions``: (object surface ``"plain"`` | ``"textured"``, background ``"smooth"`` | ``"texture"``).
    Rows (one per edit): ``condition`` (label), ``object_surface``, ``background``, ``seed``, ``class``,
    ``method``, ``psnr_inside_db`` (PSNR between the edited and the ground-truth scene over the repainted
    pixels, edit mask > 0), ``mae_inside`` (mean absolute error there, grey levels), ``psnr_outside_db``
    (over mask == 0; ``inf`` = preserved exactly), ``ssim_outside``, ``found`` (what the segmentation
    stage reads in the region, :func:`ovseg.edit_eval.classify_region`) and ``success``
    (found == "background"). ``keep_images`` adds ``images``: (original, edited, ground truth) uint8.
    Scenes of the limitations split ``split`` (:func:`remove_cases`).
    """
    return [r for surface, bg in conditions
            for rs in _take(_inpaint_level(pipe, surface, bg, split, seed, keep_images), n_scenes) for r in rs]


def _inpaint_level(pipe: "OpenVocabSegmentationPipeline", surface: str, bg: str, split: str, seed: int = 0,
                   keep_images: bool = False) -> Iterator[list[dict[str, Any]]]:
    """(d) one condition: ``[row]`` of each remove edit, in seed order (:func:`inpainting_artifacts` rows)."""
    from ..edit_eval import classify_region, psnr_ssim_outside
    from ..world import CLASS_NAMES
    from .inpainting import psnr_inside

    for scene, i, truth in _remove_cases(surface, bg, split=split):
        obj = scene.objects[i]
        res = pipe.inpainter.edit(scene.image, scene.instance_masks[i], "remove", object_prompt=obj.class_name,
                                  seed=seed)
        out = np.array(res.image)
        m = np.asarray(res.mask)
        inside = m > 0
        psnr_out, ssim_out = psnr_ssim_outside(scene.image, out, m)
        found = classify_region(pipe, out, scene.instance_masks[i], CLASS_NAMES)
        row = {"condition": f"{surface} object\n{bg} bg", "object_surface": surface, "background": bg,
               "seed": scene.seed, "class": obj.class_name, "method": res.method,
               "psnr_inside_db": psnr_inside(out, truth, inside),
               "mae_inside": float(np.abs(out[inside].astype(np.float64) - truth[inside]).mean()),
               "psnr_outside_db": psnr_out, "ssim_outside": ssim_out, "found": found,
               "success": found == "background"}
        if keep_images:
            row["images"] = (scene.image, out, truth)
        yield [row]


# ---- (e) ambiguous prompts -----------------------------------------------------------------------------------------

def intended_prompts(scene: "Scene") -> tuple[int, list[dict[str, Any]]]:
    """The intended object of a scene (the leftmost visible one) and the prompts of
    :func:`ovseg.world.referring_prompts` that refer to it: its class name (``"class"``), its colour
    (``"red thing"``), its shape (``"star"``), ``"thing on the left"`` (``"spatial"``) and the vague
    ``"shape"`` / ``"thing"``. Each prompt dict gets ``chance`` = 1 / number of objects it fits."""
    from ..world import referring_prompts

    prompts = referring_prompts(scene)
    spatial = next(p for p in prompts if p["kind"] == "spatial")
    intended = spatial["targets"][0]
    out = [dict(p, chance=1.0 / len(p["targets"])) for p in prompts if intended in p["targets"]]
    return intended, out


def ambiguous_prompts(pipe: "OpenVocabSegmentationPipeline", n_scenes: int = 4,
                      split: str = "dev") -> list[dict[str, Any]]:
    """(e) For scenes of 3-4 objects (of the limitations split ``split``), the top-1 mask of every prompt that fits
    the intended object.

    Rows (one per prompt): ``seed``, ``prompt``, ``kind``, ``n_fitting`` (objects the prompt fits),
    ``chance``, ``iou_intended`` (top-1 mask vs the intended object's visible mask), ``hit_intended``
    (>= :data:`HIT_IOU`), ``hit_any`` (top-1 is *some* object the prompt fits).
    """
    return [r for rs in _take(_ambiguous_level(pipe, split), n_scenes) for r in rs]


def _ambiguous_level(pipe: "OpenVocabSegmentationPipeline", split: str) -> Iterator[list[dict[str, Any]]]:
    """(e) the prompt rows of each scene, in seed order (every prompt kind at once)."""
    from ..world import SceneConfig, render_scene

    cfg = SceneConfig(n_objects=(3, 4))
    for s in scene_seeds("ambiguous", 0, 1000, split):
        scene = render_scene(s, cfg)
        intended, prompts = intended_prompts(scene)
        rows = []
        for p in prompts:
            res = pipe.segment(scene.image, p["prompt"], top_k=1)
            top = res.segmentation_masks[0].mask if res.segmentation_masks else np.zeros(scene.label_map.shape, bool)
            iou = mask_iou(top, scene.instance_masks[intended])
            best_any = max(mask_iou(top, scene.instance_masks[t]) for t in p["targets"])
            rows.append({"seed": s, "prompt": p["prompt"], "kind": p["kind"], "n_fitting": len(p["targets"]),
                         "chance": p["chance"], "iou_intended": iou, "hit_intended": iou >= HIT_IOU,
                         "hit_any": best_any >= HIT_IOU})
        yield rows


# ---- the stored study: every headline interval within +/- 5 points ----------------------------------------------

#: Per experiment: (its knob column, the headline metrics the study sizes for, every metric its table shows, the
#: unit a row counts). The headline metrics are those whose 95% interval half-width notebook 5.3 reports.
STUDY_EXPERIMENTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str]] = {
    "small_objects": ("size_px", ("referring_iou", "detected"), ("referring_iou", "semantic_iou", "detected"),
                      "objects"),
    "occlusion": ("target_occlusion", ("referring_iou", "detected"),
                  ("occluded", "referring_iou", "semantic_iou", "detected"), "objects"),
    "domain_shift": ("style", ("referring_iou", "detected"), ("referring_iou", "semantic_iou", "detected"), "objects"),
    "inpainting": ("condition", ("success",), ("psnr_inside_db", "mae_inside", "success", "psnr_outside_db"), "edits"),
    "ambiguous_prompts": ("kind", ("hit_intended",), ("hit_intended", "hit_any", "chance", "iou_intended"), "prompts"),
}
#: Bumped when a row's definition changes (makes stored studies stale).
STUDY_VERSION = 1


@dataclass(frozen=True)
class StudyConfig:
    """How large the stored 5.3 study is: each level grows, scene by scene, until every headline interval is
    narrow enough (a fixed-width stopping rule: it looks at the interval widths only, never at the values)."""

    sizes: tuple[float, ...] = (8, 12, 16, 24, 32, 48)  # (a) object diameters, px
    occlusions: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)  # (b) hidden fractions
    styles: tuple[str, ...] = ("filled", "outline", "textured")  # (c) rendering styles
    conditions: tuple[tuple[str, str], ...] = INPAINT_CONDITIONS  # (d) (object surface, background)
    inpaint_method: str = "diffusion"  # (d) "diffusion" (the profile's model) or "classical"
    inpaint_steps: int = 50  # (d) diffusion steps (the thesis: 50)
    target_half_width: float = 0.05  # stop a level once each headline 95% interval is at most this wide on each side
    min_rows: int = 60  # rows of a level before the first check (0 failures in 60: 95% upper bound 5%, rule of three)
    check_every: int = 30  # rows added between two checks
    max_scenes: int = 1000  # scenes (edits) per level at most: the level's seed block

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (tuples as lists), as stored in a study file and hashed in its identity."""
        return {k: [list(c) for c in v] if k == "conditions" else (list(v) if isinstance(v, tuple) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StudyConfig":
        """The inverse of :meth:`to_dict` (a stored study's ``"study"``)."""
        return cls(**{k: tuple(tuple(c) for c in v) if k == "conditions" else (tuple(v) if isinstance(v, list) else v)
                      for k, v in data.items()})


def study_identity(config: Any, study: StudyConfig, split: str) -> dict[str, Any]:
    """``{"models": name -> checksum, "protocol": 12 hex digits}`` of a stored study: the models it ran on and a hash
    of the pipeline settings (with (d)'s method and steps), the study's sizes and rule, the split and
    :data:`STUDY_VERSION`. Equal identities give the same rows."""
    import hashlib
    import json

    from ..evaluate import models_identity

    cfg = study_pipeline_config(config, study)
    stages = ("sam2", "clip") if study.inpaint_method == "classical" else ("sam2", "clip", "inpainting")
    text = json.dumps({"pipeline": cfg.to_dict(), "study": study.to_dict(), "split": split, "version": STUDY_VERSION},
                      sort_keys=True)
    return {"models": models_identity(cfg, stages), "protocol": hashlib.sha256(text.encode()).hexdigest()[:12]}


def study_pipeline_config(config: Any, study: StudyConfig) -> Any:
    return config.replace(**{"inpainting.method": study.inpaint_method,
                             "inpainting.num_inference_steps": study.inpaint_steps})


def _study_levels(pipe: "OpenVocabSegmentationPipeline", study: StudyConfig,
                  split: str) -> list[tuple[str, Any, "Callable[[], Iterator[list[dict[str, Any]]]]"]]:
    """(experiment, level, generator factory) of every level of the study, in the notebook's order."""
    levels: list[tuple[str, Any, Callable[[], Iterator[list[dict[str, Any]]]]]] = []
    for k, size in enumerate(study.sizes):
        levels.append(("small_objects", size, lambda k=k, size=size: _small_level(pipe, k, size, split)))
    for k, frac in enumerate(study.occlusions):
        levels.append(("occlusion", float(frac), lambda k=k, frac=frac: _occlusion_level(pipe, k, frac, split)))
    for style in study.styles:
        levels.append(("domain_shift", style, lambda style=style: _domain_level(pipe, style, split)))
    for surface, bg in study.conditions:
        levels.append(("inpainting", f"{surface} object\n{bg} bg",
                       lambda surface=surface, bg=bg: _inpaint_level(pipe, surface, bg, split)))
    levels.append(("ambiguous_prompts", "all kinds", lambda: _ambiguous_level(pipe, split)))
    return levels


def _widest(rows: Sequence[dict[str, Any]], experiment: str) -> float:
    """The largest 95% half-width among the headline metrics of ``rows`` (every level / prompt kind in them)."""
    by, headline, _, _ = STUDY_EXPERIMENTS[experiment]
    widths = half_widths(summarize(rows, by, headline), by, headline).values()
    return max((w for w in widths if math.isfinite(w)), default=math.inf)


def _jsonable(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for JSON: infinities as the string ``"inf"`` (strict JSON has none), numpy scalars as Python ones."""
    out = []
    for r in rows:
        d = {}
        for k, v in r.items():
            v = v.item() if isinstance(v, np.generic) else v
            d[k] = ("inf" if v > 0 else "-inf") if isinstance(v, float) and math.isinf(v) else v
        out.append(d)
    return out


def _from_json(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: float(v) if v in ("inf", "-inf") else v for k, v in r.items()} for r in rows]


def run_study(pipe: "OpenVocabSegmentationPipeline", study: StudyConfig = StudyConfig(), split: str = "test",
              out: "str | Path | None" = None, log: Any = print) -> dict[str, Any]:
    """Run the five experiments, each level until its headline intervals are at most ``target_half_width`` wide
    on each side (or ``max_scenes``), and return (and, with ``out``, store) the study.

    Steps per level: 1. take scenes (edits) in seed order until the level has ``min_rows`` rows (for (e): its
    rarest prompt kind); 2. then, every ``check_every`` rows more, stop when every headline interval
    (:data:`STUDY_EXPERIMENTS`, seeded bootstrap as in :func:`summarize`) is narrow enough; 3. store the level
    (``out`` is rewritten atomically after each level, so an interrupted run resumes at the first level not stored,
    when the identity still matches). A test-split run is logged per experiment once all its levels are done
    (:func:`log_test`).

    Returns ``{"split", "models", "protocol", "study", "levels": {"<experiment>|<level>": {"scenes", "rows",
    "half_width", "reached"}}, "complete"}``; rows as :func:`small_objects` & co. return them (no images).
    """
    from pathlib import Path

    from ..io import write_json_atomic

    # 1. the pipeline the study runs (d)'s edits with, and what a stored partial run must match to be resumed
    ident = study_identity(pipe.config, study, split)
    if (pipe.config.inpainting.method, pipe.config.inpainting.num_inference_steps) != \
            (study.inpaint_method, study.inpaint_steps):
        from ..errors import ConfigError

        raise ConfigError("run_study edits (d) with the study's inpainting method and steps",
                          f"pipeline inpainting.method={pipe.config.inpainting.method!r}, "
                          f"num_inference_steps={pipe.config.inpainting.num_inference_steps}",
                          f"build the pipeline from study_pipeline_config(config, study) (method "
                          f"{study.inpaint_method!r}, {study.inpaint_steps} steps)")
    doc: dict[str, Any] = {"split": split, **ident, "study": study.to_dict(), "levels": {}, "complete": False}
    path = Path(out) if out is not None else None
    if path is not None and path.is_file():
        import json

        old = json.loads(path.read_text(encoding="utf-8"))
        if all(old.get(k) == doc[k] for k in ("split", "models", "protocol")):
            doc["levels"] = old.get("levels", {})
            log(f"[study] resuming {path}: {len(doc['levels'])} level(s) stored")
    # 2. each level, until narrow enough
    for experiment, level, factory in _study_levels(pipe, study, split):
        key = f"{experiment}|{level}"
        if key in doc["levels"]:
            continue
        rows: list[dict[str, Any]] = []
        scenes, next_check, width = 0, study.min_rows, math.inf
        t0 = time.perf_counter()
        by = STUDY_EXPERIMENTS[experiment][0]
        counts: dict[Any, int] = {}  # rows per value of the knob: (e) has one per prompt kind, its smallest counts
        for unit in factory():
            rows += unit
            scenes += 1
            for r in unit:
                counts[r[by]] = counts.get(r[by], 0) + 1
            if min(counts.values(), default=0) >= next_check:
                width = _widest(rows, experiment)
                if width <= study.target_half_width:
                    break
                next_check = min(counts.values()) + study.check_every
            if scenes >= study.max_scenes:
                break
        width = _widest(rows, experiment) if rows else math.inf
        doc["levels"][key] = {"scenes": scenes, "half_width": round(width, 4),
                              "reached": width <= study.target_half_width, "rows": _jsonable(rows)}
        log(f"[study] {key!r}: {scenes} scenes, {len(rows)} rows, widest half-width {width:.3f} "
            f"({time.perf_counter() - t0:.0f} s)")
        if path is not None:
            write_json_atomic(path, doc)
    # 3. complete: log each experiment's test result once
    doc["complete"] = True
    if path is not None:
        write_json_atomic(path, doc)
    for experiment in STUDY_EXPERIMENTS:
        by, headline, metrics, unit = STUDY_EXPERIMENTS[experiment]
        rows = study_rows(doc, experiment)
        if not rows:  # a study without this experiment's levels
            continue
        order = list(dict.fromkeys(r[by] for r in rows)) if experiment in ("domain_shift", "inpainting") else (
            PROMPT_KINDS if experiment == "ambiguous_prompts" else None)
        summary = summarize(rows, by, list(metrics), order=order, digits=2 if experiment == "inpainting" else 3)
        if experiment == "inpainting":
            summary = [{**r, "condition": r["condition"].replace("\n", ", ")} for r in summary]
        log_test(experiment, summary, by, list(headline), study_pipeline_config(pipe.config, study), split,
                 max(v["scenes"] for k, v in doc["levels"].items() if k.startswith(experiment + "|")),
                 {"study": study.to_dict(), "stored": True}, unit=unit)
    return doc


def reproduce_study(pipe: "OpenVocabSegmentationPipeline", doc: dict[str, Any], k: int = 1,
                    study: StudyConfig | None = None) -> list[tuple[str, bool]]:
    """Re-run the first ``k`` scenes (edits) of the first level of each experiment of a stored study and compare
    them with the stored rows: ``(experiment, agrees)`` per re-run row. Agreement: the same object / prompt with
    the same ``detected`` / ``hit_intended`` / ``success`` and IoUs within 1e-3 ((d): the same ``found``; 50
    sampling steps may move its PSNR by last-bit float differences between CPUs)."""
    study = study or StudyConfig.from_dict(doc["study"])
    out: list[tuple[str, bool]] = []
    seen: set[str] = set()
    for experiment, level, factory in _study_levels(pipe, study, doc["split"]):
        if experiment in seen or k <= 0:
            continue
        seen.add(experiment)
        stored = _from_json(doc["levels"][f"{experiment}|{level}"]["rows"])
        new = [r for rs in _take(factory(), k) for r in rs]
        for a, b in zip(stored, new):
            if experiment == "inpainting":
                same = a["seed"] == b["seed"] and a["found"] == b["found"]
            else:
                keys = [c for c in ("referring_iou", "semantic_iou", "iou_intended") if c in a]
                flags = [c for c in ("detected", "hit_intended", "hit_any") if c in a]
                same = (a.get("seed") == b.get("seed") and all(a[c] == b[c] for c in flags)
                        and all(abs(float(a[c]) - float(b[c])) <= 1e-3 for c in keys))
            out.append((experiment, bool(same)))
    return out


def study_rows(doc: dict[str, Any], experiment: str) -> list[dict[str, Any]]:
    """The rows of one experiment of a study (:func:`run_study`), levels in the study's order."""
    return [r for key, lv in doc["levels"].items() if key.split("|", 1)[0] == experiment
            for r in _from_json(lv["rows"])]


def shipped_study_path() -> "Path":
    """``data/mini_world/results/limitations_test.json``: the stored test-split study of notebook 5.3
    (``python scripts/limitations_study.py --split test``)."""
    from ..paths import DATA_DIR

    return DATA_DIR / "mini_world" / "results" / "limitations_test.json"


def shipped_study(config: Any, study: StudyConfig = StudyConfig(), split: str = "test",
                  path: "str | Path | None" = None) -> tuple[dict[str, Any] | None, str]:
    """(study, why): the stored study if it is complete and was made by ``config``'s models and settings with
    ``study`` on ``split``, else (None, the reason: missing, incomplete, other models, settings or sizes)."""
    import json
    from pathlib import Path

    p = Path(path) if path is not None else shipped_study_path()
    if not p.is_file():
        return None, f"{p} is missing"
    doc = json.loads(p.read_text(encoding="utf-8"))
    want = study_identity(config, study, split)
    if doc.get("split") != split:
        return None, f"{p.name} is of the {doc.get('split')} split, not {split}"
    for key in ("models", "protocol"):
        if doc.get(key) != want[key]:
            return None, (f"{p.name} was made with {key} {doc.get(key)}, this configuration has {want[key]}; refresh "
                          f"it: python scripts/limitations_study.py --split {split}")
    if not doc.get("complete"):
        return None, f"{p.name} is incomplete; finish it: python scripts/limitations_study.py --split {split}"
    return doc, f"{p.name}: {sum(len(v['rows']) for v in doc['levels'].values())} stored rows, models and settings as configured"


# ---- summaries and figures ------------------------------------------------------------------------------------------

def summarize(rows: Sequence[dict[str, Any]], by: str, metrics: Sequence[str], order: Sequence[Any] | None = None,
              digits: int = 3) -> list[dict[str, Any]]:
    """Mean of each metric per value of ``by``, with its 95% interval.

    Bools count as 0/1 (a rate); ``inf`` values are kept as ``inf`` only when every value is ``inf``, else the
    finite mean is reported (and ``n`` counts every row). Each level's row has ``by``, ``n`` and, per metric,
    ``<metric>`` (mean), ``<metric>_lo`` / ``<metric>_hi`` (seeded percentile-bootstrap 95% interval over the
    rows, i.e. objects, edits or prompts: :func:`ovseg.stats.bootstrap_mean`; equal to the mean for n = 1 or
    all-``inf``) and ``<metric>_ci95`` (``"[lo, hi]"`` text, ``digits`` decimals). Levels in ``order`` (default:
    sorted), missing levels skipped.
    """
    from ..stats import bootstrap_mean

    levels = list(order) if order is not None else sorted({r[by] for r in rows})
    out = []
    for lv in levels:
        sel = [r for r in rows if r[by] == lv]
        if not sel:
            continue
        row: dict[str, Any] = {by: lv, "n": len(sel)}
        for m in metrics:
            v = np.array([float(r[m]) for r in sel], np.float64)
            if len(v) and np.all(np.isinf(v)):
                lo = hi = mean = math.inf
            else:
                iv = bootstrap_mean(v[np.isfinite(v)].tolist())
                mean, lo, hi = iv.value, iv.lo, iv.hi
            row[m] = round(mean, digits) if math.isfinite(mean) else mean
            row[f"{m}_lo"] = round(lo, digits) if math.isfinite(lo) else lo
            row[f"{m}_hi"] = round(hi, digits) if math.isfinite(hi) else hi
            row[f"{m}_ci95"] = f"[{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) else None
        out.append(row)
    return out


def half_widths(summary: Sequence[dict[str, Any]], by: str, metrics: Sequence[str]) -> dict[str, float]:
    """``"<level> <metric>"`` -> half the width of its 95% interval (a :func:`summarize` summary's ``_lo`` /
    ``_hi``; NaN where undefined), e.g. to check the sample is large enough."""
    out = {}
    for r in summary:
        for m in metrics:
            lo, hi = r.get(f"{m}_lo"), r.get(f"{m}_hi")
            ok = lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi)
            out[f"{r[by]} {m}"] = (hi - lo) / 2 if ok else float("nan")
    return out


def log_test(experiment: str, summary: Sequence[dict[str, Any]], by: str, metrics: Sequence[str],
             config: Any, split: str, n: int, protocol: dict[str, Any], unit: str = "objects") -> bool:
    """Record a 5.3 experiment run on the limitations ``test`` split in the test-set log (:mod:`ovseg.testlog`,
    task ``limitations:<experiment>``): per level and metric, the mean with its 95% interval. Nothing is written
    for another split or a non-mini profile (only the mini world's test split is logged). Returns whether a line
    was appended (False: not the test split, or this exact result was logged before).

    Args:
        experiment: ``small_objects``, ``occlusion``, ``domain_shift``, ``inpainting`` or ``ambiguous_prompts``.
        summary: the :func:`summarize` rows; ``by`` its level column, ``metrics`` the metrics logged.
        config: the pipeline's :class:`ovseg.config.PipelineConfig` (model identities and settings).
        n: scenes (or edits) per level, as requested; protocol: the experiment's parameters (hashed).
        unit: what a row is (``objects``, ``edits``, ``prompts``): each number's n counts them.
    """
    from ..testlog import interval, record_experiment

    headline = {}
    for r in summary:
        for m in metrics:
            lo, hi = r.get(f"{m}_lo"), r.get(f"{m}_hi")
            if lo is None or not all(math.isfinite(v) for v in (r[m], lo, hi)):
                continue
            headline[f"{r[by]}|{m}"] = interval(r[m], lo, hi, r["n"], unit)
    stages = ("sam2", "clip", "inpainting") if experiment == "inpainting" else ("sam2", "clip")
    return record_experiment(f"limitations:{experiment}", config, n, headline, {"experiment": experiment, **protocol},
                             f"limitations/{split}", stages)


def _error_bars(summary: Sequence[dict[str, Any]], col: str, ys: np.ndarray) -> np.ndarray:
    """(2, L) float: how far each level's 95% interval reaches below and above its value (0 where undefined)."""
    lo = np.array([r.get(f"{col}_lo", y) for r, y in zip(summary, ys)], float)
    hi = np.array([r.get(f"{col}_hi", y) for r, y in zip(summary, ys)], float)
    err = np.stack([ys - lo, hi - ys])
    return np.where(np.isfinite(err), np.clip(err, 0, None), 0.0)


def plot_metrics(ax: Any, summary: Sequence[dict[str, Any]], knob: str, metrics: dict[str, str], xlabel: str,
                 title: str, ylabel: str = "IoU", ylim: tuple[float, float] | None = (0.0, 1.02),
                 categorical: bool = False, x: str | None = None, reference: tuple[float, str] | None = None,
                 baselines: dict[str, str] | None = None, legend: bool = True) -> None:
    """Draw summary metrics against the knob on ``ax``: lines with 95%-interval bars (``<metric>_lo`` / ``_hi``),
    or grouped bars when ``categorical``. ``metrics`` maps a summary column to its legend label; ``x``
    names a column holding the numeric x positions (default: the knob values); ``reference`` =
    (x, label) draws a vertical marker; ``baselines`` maps a column to a label drawn dotted (e.g. chance)."""
    xs_raw = [r[knob] for r in summary]
    if categorical:
        xs = np.arange(len(xs_raw), dtype=float)
    else:
        xs = np.asarray([r[x] for r in summary] if x else xs_raw, float)
    width = 0.8 / max(len(metrics), 1)
    for j, (col, label) in enumerate(metrics.items()):
        ys = np.array([r[col] for r in summary], float)
        err = _error_bars(summary, col, ys)  # (2, L): distance below and above each value
        if categorical:
            pos = xs + (j - (len(metrics) - 1) / 2) * width
            ax.bar(pos, ys, width=width, yerr=err, capsize=2, ecolor="0.3", label=label)
            for px, py in zip(pos, ys):  # the value at the bar's foot, clear of the error bar
                if np.isfinite(py):
                    ax.text(px, 0.01 * (ylim or (0, 1))[1], f"{py:.2f}", ha="center", va="bottom", fontsize=6,
                            rotation=90, bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
        else:
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=2, label=label)
    for col, label in (baselines or {}).items():
        ys = np.array([r[col] for r in summary], float)
        if categorical:
            ax.hlines(ys, xs - 0.42, xs + 0.42, colors="k", linestyles=":", lw=1.2, label=label)
        else:
            ax.plot(xs, ys, "k:", lw=1.2, label=label)
    if reference is not None:
        ax.axvline(reference[0], color="0.5", ls="--", lw=1)
        ax.text(reference[0], (ylim or (0, 1))[1] * 0.98, " " + reference[1], fontsize=7, color="0.35", va="top")
    if categorical:
        ax.set_xticks(xs, [str(v) for v in xs_raw], fontsize=7)
    elif x is None:
        ax.set_xticks(xs, [f"{v:g}" for v in xs_raw])
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)


def metric_figure(summary: Sequence[dict[str, Any]], knob: str, metrics: dict[str, str], xlabel: str, title: str,
                  size: tuple[float, float] = (6.4, 3.2), **kwargs: Any) -> "Figure":
    """A one-panel figure of :func:`plot_metrics` (same arguments)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    plot_metrics(fig.add_subplot(), summary, knob, metrics, xlabel, title, **kwargs)
    return fig


def inpainting_figure(summary: Sequence[dict[str, Any]], method: str) -> "Figure":
    """(d) Two panels per condition (``condition`` column of :func:`summarize` over
    :func:`inpainting_artifacts` rows): PSNR inside the edit vs the exact ground truth, and success rate."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.4, 3.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    top = max([r["psnr_inside_db"] for r in summary if math.isfinite(r["psnr_inside_db"])] + [30.0])
    plot_metrics(a, summary, "condition", {"psnr_inside_db": "PSNR inside (dB)"}, "", f"Remove fidelity ({method})",
                 ylabel="PSNR vs ground truth (dB)", ylim=(0, top * 1.15), categorical=True, legend=False)
    plot_metrics(b, summary, "condition", {"success": "region read as background"}, "",
                 "Remove success (region read as background)", ylabel="rate", categorical=True, legend=False)
    return fig


def examples_figure(panels: Sequence[tuple[str, "Callable[[], np.ndarray] | np.ndarray"]], ncols: int = 6,
                    size: float = 1.5) -> "Figure":
    """A grid of example images (each (H, W, 3) uint8, or a callable returning one) with titles."""
    from matplotlib.figure import Figure

    n = len(panels)
    rows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(size * min(n, ncols), size * rows + 0.1), layout="constrained")
    axes = fig.subplots(rows, min(n, ncols), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, img) in zip(axes.flat, panels):
        ax.imshow(img() if callable(img) else img)
        ax.set_title(title, fontsize=7)
    return fig


def example_panels(levels: dict[str, "tuple[SceneConfig, int]"]) -> list[tuple[str, np.ndarray]]:
    """(title, image) of ``render_scene(seed, cfg)`` for each ``title -> (cfg, seed)``."""
    from ..world import render_scene

    return [(title, render_scene(seed, cfg).image) for title, (cfg, seed) in levels.items()]
