"""The mini world: procedurally generated scenes of coloured shapes with exact ground truth.

Vocabulary: 6 shapes x 8 colours = 48 classes named ``"<colour> <shape>"`` plus background.
Eight compositions are *novel*: they never appear in a training scene (``split="base"``) and
exist only for evaluation, to measure compositional generalisation.

Every scene is a pure function of its integer seed and :class:`SceneConfig`:
``render_scene(seed, cfg)`` returns the image and its instance masks, semantic label map and
captions. The knobs of :class:`SceneConfig` also drive the Chapter 5.3 limitations study (object
size, occlusion, rendering style, textures, ambiguous prompts).

Label conventions (also the on-disk "folder" layout of :func:`write_dataset`):
``label_map`` is (H, W) uint8 with 0 = background and ``k + 1`` = ``CLASS_NAMES[k]``;
``classes.txt`` lists ``background`` then the 48 class names, so a label value indexes it directly.
Instance maps are (H, W) uint8 with 0 = background and ``i + 1`` = object ``i``.
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["COLOURS", "SHAPES", "CLASS_NAMES", "NOVEL_CLASSES", "BASE_CLASSES", "STYLES", "BACKGROUNDS",
           "SceneConfig", "SceneObject", "Scene", "render_scene", "referring_prompts", "write_dataset",
           "load_dataset_index", "EVAL_SEED_OFFSET", "REPLACE_ROTATIONS", "replacement_rotation", "SeedRange",
           "EVAL_SPLITS", "SPLITS", "seed_range"]

#: Canonical sRGB of each colour word.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 220, 40),
    "purple": (150, 60, 190), "orange": (245, 140, 30), "white": (245, 245, 245), "black": (25, 25, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
#: The 48 class names, colour-major: index k <-> label value k + 1.
CLASS_NAMES: list[str] = [f"{c} {s}" for c in COLOURS for s in SHAPES]
#: Held-out compositions: never rendered in a training (``split="base"``) scene.
NOVEL_CLASSES: frozenset[str] = frozenset({"red star", "green ring", "blue cross", "yellow triangle", "purple square",
                                           "orange circle", "white cross", "black star"})
BASE_CLASSES: list[str] = [c for c in CLASS_NAMES if c not in NOVEL_CLASSES]
STYLES = ("filled", "outline", "textured")
BACKGROUNDS = ("smooth", "noise", "texture")
#: Evaluation scenes use seeds from here on; training uses seeds below it (disjoint scenes).
EVAL_SEED_OFFSET = 1_000_000_000


@dataclass(frozen=True)
class SeedRange:
    """One evaluation set of the mini world: scene seeds ``EVAL_SEED_OFFSET + start + k`` for ``0 <= k < size``."""

    task: str  # "scenes" (semantic, referring, masks), "edits", "edit-settings", "limitations", "samples", "video" (clips)
    split: str  # "dev": may be used to select anything; "test": consulted only to report; "illustration"
    start: int  # first seed, as an offset from EVAL_SEED_OFFSET
    size: int  # seeds reserved: [start, start + size)
    use: str  # what it is for (data/mini_world/README.md shows this table)

    @property
    def seeds(self) -> range:
        return range(EVAL_SEED_OFFSET + self.start, EVAL_SEED_OFFSET + self.start + self.size)


#: The mini world's evaluation splits, written down once (issue #18). Ranges are disjoint (tested) and lie above
#: every training seed. Select (thresholds, settings, recipes, checkpoints) on ``dev`` only; ``test`` is consulted
#: to report, and each consultation is logged (``data/mini_world/TEST_LOG.jsonl``, :mod:`ovseg.testlog`). The
#: test ranges (from 10_000_000) had never been rendered when they were opened; everything below them had.
EVAL_SPLITS: tuple[SeedRange, ...] = (
    SeedRange("scenes", "dev", 0, 100_000,
              "data/mini_world/dev, 200 scenes (until issue #18 the only evaluation set, data/mini_world/eval): "
              "SAM 2 thresholds, inference settings, trainers' evaluation during training, notebook examples"),
    SeedRange("samples", "illustration", 500_000, 100_000,
              "data/samples/world_*.png and 3.2.1's example scene; pictures, never measured"),
    SeedRange("edits", "dev", 2_000_000, 1_000_000,
              "`ovseg evaluate --task edits --split dev`: the edits once called held-out (their results chose "
              "the inpainting recipes of issue #4)"),
    SeedRange("limitations", "dev", 3_000_000, 1_000_000,
              "5.3 experiments (+ experiment x 100_000 + level x 1_000; experiment 5 = 3.2.4's mask sweep)"),
    SeedRange("edit-settings", "dev", 4_000_000, 1_000_000,
              "benchmarks/mini_inpainting_settings.py and _ceiling.py (settings: base compositions only)"),
    SeedRange("scenes", "test", 10_000_000, 100_000,
              "data/mini_world/test: reported semantic, referring and mask numbers only"),
    SeedRange("edits", "test", 12_000_000, 1_000_000,
              "`ovseg evaluate --task edits --split test`: reported edit rates only"),
    SeedRange("limitations", "test", 13_000_000, 1_000_000,
              "reported 5.3 numbers and 3.2.4's mask sweep only (same layout as dev)"),
    SeedRange("video", "dev", 5_000_000, 1_000_000,
              "video clips (ovseg.world_video.render_clip): anything that selects (tracking / propagation settings, "
              "thresholds, recipes, notebook examples)"),
    SeedRange("video", "test", 14_000_000, 1_000_000,
              "data/mini_world/video_test: reported video numbers only"),
)
#: Splits of a measured task.
SPLITS = ("dev", "test")


def seed_range(task: str, split: str) -> SeedRange:
    """The :data:`EVAL_SPLITS` entry of ``task`` and ``split``.

    Raises:
        InputError: no such entry (the message lists the table).
    """
    for r in EVAL_SPLITS:
        if r.task == task and r.split == split:
            return r
    known = ", ".join(f"{r.task}/{r.split}" for r in EVAL_SPLITS)
    raise InputError("a mini-world evaluation split must be one of ovseg.world.EVAL_SPLITS", f"{task}/{split}",
                     f"use one of: {known}")


@dataclass
class SceneConfig:
    """How scenes are drawn. Ranges are (low, high), sampled uniformly per scene or object."""

    # Image size (height, width), pixels.
    size: tuple[int, int] = (128, 128)
    # Number of objects per scene.
    n_objects: tuple[int, int] = (1, 4)
    # Object size: diameter of the shape's circumscribed circle as a fraction of the short side.
    object_size: tuple[float, float] = (0.18, 0.45)
    # Fixed object diameter in pixels (overrides object_size; limitations study: small objects).
    object_size_px: float | None = None
    # Which classes may appear: "base" (training: no novel composition), "novel" (only novel), "all".
    split: str = "all"
    # Evaluation: probability that a scene contains at least one novel object when split="all".
    novel_fraction: float = 0.5
    # Largest fraction of an object that later objects may hide (rejection sampling).
    max_occlusion: float = 0.4
    # If set, object 0 is covered by object 1 by about this fraction (limitations study: occlusion).
    force_occlusion: float | None = None
    # Rendering styles to sample from: "filled", "outline" (sketch, domain shift), "textured" (artistic).
    styles: tuple[str, ...] = ("filled",)
    # Probability that an object's surface carries a texture pattern (inpainting artefacts study).
    textured_objects: float = 0.15
    # Background kinds to sample from.
    backgrounds: tuple[str, ...] = BACKGROUNDS
    # Std of the per-channel colour jitter around the canonical sRGB, in levels.
    colour_jitter: float = 12.0
    # Strength of the linear shading across each object (0 = flat colour).
    shading: float = 0.2
    # Sensor noise std added to the final image, in levels.
    pixel_noise: float = 3.0

    def __post_init__(self) -> None:
        if self.split not in ("base", "novel", "all"):
            raise InputError("SceneConfig.split must be 'base', 'novel' or 'all'", repr(self.split), "pick one")
        bad = [s for s in self.styles if s not in STYLES]
        if bad or not self.styles:
            raise InputError(f"SceneConfig.styles must be a non-empty subset of {STYLES}", self.styles, "fix the list")
        bad = [b for b in self.backgrounds if b not in BACKGROUNDS]
        if bad or not self.backgrounds:
            raise InputError(f"SceneConfig.backgrounds must be a non-empty subset of {BACKGROUNDS}", self.backgrounds,
                             "fix the list")
        if min(self.size) < 32:
            raise InputError("SceneConfig.size must be at least 32 px per side", self.size, "use e.g. (128, 128)")
        lo, hi = self.n_objects
        if not 1 <= lo <= hi <= 8:
            raise InputError("SceneConfig.n_objects must satisfy 1 <= low <= high <= 8", self.n_objects, "e.g. (1, 4)")


@dataclass
class SceneObject:
    """One drawn object. ``bbox`` is XYWH of its visible pixels; ``occluded`` is the hidden fraction."""

    class_name: str
    colour: str
    shape: str
    centre: tuple[float, float]  # (x, y) pixels
    diameter: float  # pixels
    rotation: float  # degrees
    style: str
    textured: bool
    bbox: list[int] = field(default_factory=list)
    area: int = 0
    occluded: float = 0.0

    @property
    def novel(self) -> bool:
        return self.class_name in NOVEL_CLASSES


@dataclass
class Scene:
    """A rendered scene.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        instance_masks: (K, H, W) bool visible pixels of each object (after occlusion).
        label_map: (H, W) uint8, 0 = background, k + 1 = CLASS_NAMES[k].
        objects: K :class:`SceneObject` records, in drawing order (later ones on top).
        caption: one sentence describing the scene.
        seed: the seed that reproduces it with the same config.
    """

    image: np.ndarray
    instance_masks: np.ndarray
    label_map: np.ndarray
    objects: list[SceneObject]
    caption: str
    seed: int

    @property
    def instance_map(self) -> np.ndarray:
        """(H, W) uint8: 0 background, i + 1 = object i."""
        out = np.zeros(self.label_map.shape, np.uint8)
        for i, m in enumerate(self.instance_masks):
            out[m] = i + 1
        return out

    @property
    def class_names(self) -> list[str]:
        return [o.class_name for o in self.objects]


# ---- geometry --------------------------------------------------------------------------------------

def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[np.ndarray]:
    """Outer outline(s) of a shape as (P, 2) xy arrays; a ring returns [outer, inner]."""
    def rotate(pts: np.ndarray) -> np.ndarray:
        a = math.radians(rot)
        rm = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        return pts @ rm.T + (cx, cy)

    if shape in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        outer = np.stack([np.cos(t), np.sin(t)], 1) * r + (cx, cy)
        return [outer, np.stack([np.cos(t), np.sin(t)], 1) * r * 0.55 + (cx, cy)] if shape == "ring" else [outer]
    if shape == "square":
        s = r / math.sqrt(2)
        return [rotate(np.array([[-s, -s], [s, -s], [s, s], [-s, s]]))]
    if shape == "triangle":
        t = np.radians([-90, 30, 150])
        # circumradius r, centroid at the centre
        return [rotate(np.stack([np.cos(t), np.sin(t)], 1) * r)]
    if shape == "star":
        t = np.radians(np.arange(10) * 36 - 90)
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return [rotate(np.stack([np.cos(t) * rad, np.sin(t) * rad], 1))]
    if shape == "cross":
        a, b = r * 0.3, r * 0.95  # half arm width, half arm length
        pts = np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b], [-a, b], [-a, a], [-b, a], [-b, -a],
                        [-a, -a]])
        return [rotate(pts)]
    raise InputError("shape must be one of " + ", ".join(SHAPES), repr(shape), "use a world shape name")


def _coverage(shape: str, cx: float, cy: float, r: float, rot: float, size: tuple[int, int], ss: int = 4) -> np.ndarray:
    """(H, W) float32 area coverage of a shape in [0, 1], by ``ss`` x ``ss`` supersampling."""
    from PIL import Image, ImageDraw

    h, w = size
    canvas = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(canvas)
    polys = _polygon(shape, cx, cy, r, rot)
    draw.polygon([tuple(p) for p in polys[0] * ss], fill=255)
    for hole in polys[1:]:
        draw.polygon([tuple(p) for p in hole * ss], fill=0)
    arr = np.asarray(canvas, np.float32).reshape(h, ss, w, ss).mean(axis=(1, 3)) / 255.0
    return arr


def _outline(cover: np.ndarray, width: float) -> np.ndarray:
    """Stroke of a coverage map: pixels within ``width`` px of its edge, inside it."""
    import cv2

    inside = (cover >= 0.5).astype(np.uint8)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    return np.clip(width + 0.5 - dist, 0, 1).astype(np.float32) * (cover > 0)


# ---- colour and texture -------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """(H, W) float32 smooth noise in [0, 1] (bicubic upsampling of a coarse random grid)."""
    import cv2

    h, w = size
    coarse = rng.random((cells + 1, cells + 1)).astype(np.float32)
    out = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(out, 0, 1)


def _pattern(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 in [-1, 1]: stripes, checks or dots at a random scale and angle."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, np.pi)
    period = rng.uniform(5, 14)
    u = (xx * math.cos(a) + yy * math.sin(a)) / period
    v = (-xx * math.sin(a) + yy * math.cos(a)) / period
    kind = rng.integers(3)
    if kind == 0:
        return np.sin(2 * np.pi * u)
    if kind == 1:
        return np.sign(np.sin(np.pi * u) * np.sin(np.pi * v))
    return np.where((u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2 < 0.08, 1.0, -1.0).astype(np.float32)


def _background(rng: np.random.Generator, kind: str, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) float32 in [0, 255]: muted random colours so objects' canonical colours stand out."""
    h, w = size

    def muted() -> np.ndarray:
        hue, sat, val = rng.random(), rng.uniform(0.05, 0.45), rng.uniform(0.3, 0.95)
        return np.array(colorsys.hsv_to_rgb(hue, sat, val), np.float32) * 255

    c0, c1 = muted(), muted()
    if kind == "smooth":
        a = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx * math.cos(a) + yy * math.sin(a))
        t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    elif kind == "noise":
        t = _smooth_noise(rng, size, int(rng.integers(2, 8)))
    else:  # texture
        t = (_pattern(rng, size) + 1) / 2 * rng.uniform(0.3, 1.0)
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


# ---- scenes ---------------------------------------------------------------------------------------------

def _pick_classes(rng: np.random.Generator, n: int, cfg: SceneConfig) -> list[str]:
    if cfg.split == "base":
        pool = BASE_CLASSES
    elif cfg.split == "novel":
        pool = sorted(NOVEL_CLASSES)
    else:
        pool = CLASS_NAMES
    names = [pool[i] for i in rng.integers(len(pool), size=n)]
    if cfg.split == "all" and rng.random() < cfg.novel_fraction and not any(c in NOVEL_CLASSES for c in names):
        names[int(rng.integers(n))] = sorted(NOVEL_CLASSES)[int(rng.integers(len(NOVEL_CLASSES)))]
    return names


def _object_colour(rng: np.random.Generator, colour: str, cfg: SceneConfig) -> np.ndarray:
    base = np.array(COLOURS[colour], np.float32)
    return np.clip(base + rng.normal(0, cfg.colour_jitter, 3), 0, 255)


#: Rotation of the new object of a replacement: "source" (the replaced object's: the exact edit) or "upright" (0).
REPLACE_ROTATIONS = ("source", "upright")


def replacement_rotation(operation: str, replace_rotation: str) -> float | None:
    """The ``edit_rotation`` of :func:`render_scene` for an edit of ``operation`` ("remove" / "replace" / "style"):
    0.0 for a replacement when ``replace_rotation`` is "upright", else None (the replaced object's rotation)."""
    if replace_rotation not in REPLACE_ROTATIONS:
        raise InputError(f"replace_rotation must be one of {REPLACE_ROTATIONS}", repr(replace_rotation),
                         f"pass one of {', '.join(REPLACE_ROTATIONS)}")
    return 0.0 if operation == "replace" and replace_rotation == "upright" else None


def render_scene(seed: int, cfg: SceneConfig | None = None, edit: tuple[int, str | None] | None = None,
                 edit_rotation: float | None = None) -> Scene:
    """Render the scene of ``seed`` (deterministic for a given config).

    ``edit=(i, new_class)`` renders the same scene with object ``i`` (its index in the unedited
    scene's ``objects``) replaced by ``new_class`` at the same place, size and rotation, or removed
    when ``new_class`` is None; every other pixel of the scene is drawn exactly as without the edit
    (same random draws), so the pair is an exact ground truth for remove / replace / restyle.
    ``edit_rotation`` (degrees; None = the original's) draws the replacing object at that rotation instead
    (same random draws: only its outline changes).
    """
    cfg = cfg or SceneConfig()
    if edit is not None and edit[1] is not None and edit[1] not in CLASS_NAMES:
        raise InputError("edit class must be one of the world's class names", repr(edit[1]), "e.g. 'blue star'")
    if edit_rotation is not None and (edit is None or edit[1] is None):
        raise InputError("edit_rotation needs an edit that replaces or restyles an object", f"edit={edit!r}",
                         "pass edit=(index, new_class) or leave edit_rotation None")
    rng = np.random.default_rng(seed)
    h, w = cfg.size
    short = min(h, w)
    # 1. background
    img = _background(rng, cfg.backgrounds[int(rng.integers(len(cfg.backgrounds)))], (h, w))  # (H, W, 3) float
    # 2. objects: classes, sizes, placements with bounded occlusion
    n = int(rng.integers(cfg.n_objects[0], cfg.n_objects[1] + 1))
    if cfg.force_occlusion is not None:
        n = max(n, 2)
    names = _pick_classes(rng, n, cfg)
    covers: list[np.ndarray] = []  # (H, W) float coverage of each drawn object
    solids: list[np.ndarray] = []  # (H, W) bool placement footprint of each placed object
    placed = 0  # objects placed so far (the index an edit refers to)
    placements: list[tuple[float, float, float]] = []  # (cx, cy, diameter) of each placed object
    hidden: list[np.ndarray] = []  # (H, W) bool pixels of object i covered by later objects
    objects: list[SceneObject] = []
    for k, name in enumerate(names):
        colour, shape = name.split(" ")
        d = cfg.object_size_px if cfg.object_size_px is not None else rng.uniform(*cfg.object_size) * short
        r = d / 2
        rot = float(rng.uniform(0, 360))
        best = None
        for _attempt in range(30):
            if cfg.force_occlusion is not None and k == 1:
                # slide the occluder along a random direction until it hides ~force_occlusion of object 0
                (x0, y0, d0), first = placements[0], solids[0]
                ang = rng.uniform(0, 2 * np.pi)
                target = cfg.force_occlusion
                cands = []
                for dist in np.linspace(0, r + d0 / 2, 24):
                    cx, cy = x0 + dist * math.cos(ang), y0 + dist * math.sin(ang)
                    cov = _coverage(shape, cx, cy, r, rot, (h, w))
                    frac = float(((cov >= 0.5) & first).sum() / max(first.sum(), 1))
                    cands.append((abs(frac - target), cx, cy, cov))
                _, cx, cy, cov = min(cands, key=lambda t: t[0])
                best = (cx, cy, cov)
                break
            margin = r * 0.6
            cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
            cov = _coverage(shape, cx, cy, r, rot, (h, w))
            new = cov >= 0.5
            # hidden fraction of every earlier object once this one is drawn on top
            ok = all(((hidden[i] | new) & solid).sum() <= cfg.max_occlusion * solid.sum()
                     for i, solid in enumerate(solids))
            if ok:
                best = (cx, cy, cov)
                break
        if best is None:
            continue  # could not place it without hiding others too much: fewer objects
        cx, cy, cov = best
        place = cov >= 0.5  # the placement footprint later objects were checked against
        placements.append((cx, cy, d))
        edited = edit is not None and edit[0] == placed
        removed = edited and edit[1] is None
        if edited and not removed:
            name = edit[1]
            colour, shape = name.split(" ")
            rot = rot if edit_rotation is None else float(edit_rotation)
            cov = _coverage(shape, cx, cy, r, rot, (h, w))
        placed += 1
        style = cfg.styles[int(rng.integers(len(cfg.styles)))]
        textured = style == "textured" or rng.random() < cfg.textured_objects
        # 3. paint: colour, shading, texture, style (a removed object makes the same random draws, unpainted)
        col = _object_colour(rng, colour, cfg)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, 2 * np.pi)
        shade = 1 + cfg.shading * ((xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)) / max(r, 1)
        paint = col[None, None] * np.clip(shade, 0.6, 1.4)[..., None]
        if textured:
            amp = rng.uniform(0.12, 0.25)
            paint = paint * (1 + amp * _pattern(rng, (h, w))[..., None])
        alpha = cov
        if style == "outline":
            alpha = _outline(cov, max(1.0, 0.08 * d))
        for i in range(len(hidden)):
            hidden[i] |= place
        solids.append(place)
        hidden.append(np.zeros((h, w), bool))
        if removed:
            continue
        img = img * (1 - alpha[..., None]) + np.clip(paint, 0, 255) * alpha[..., None]
        covers.append(cov)
        objects.append(SceneObject(name, colour, shape, (float(cx), float(cy)), float(d), rot, style, bool(textured)))
    # 4. ground truth: visible masks (later objects on top); the region of an outline sketch is its filled shape
    k = len(objects)
    masks = np.zeros((k, h, w), bool)
    for i in range(k):
        m = covers[i] >= 0.5
        for j in range(i + 1, k):
            m &= ~(covers[j] >= 0.5)
        masks[i] = m
    label = np.zeros((h, w), np.uint8)
    for i, o in enumerate(objects):
        full = int((covers[i] >= 0.5).sum())
        o.area = int(masks[i].sum())
        o.occluded = float(1 - o.area / full) if full else 1.0
        ys, xs = np.nonzero(masks[i])
        if o.area:
            o.bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        else:
            o.bbox = [0, 0, 0, 0]
        label[masks[i]] = CLASS_NAMES.index(o.class_name) + 1
    # 5. sensor noise, quantise
    if cfg.pixel_noise > 0:
        img = img + rng.normal(0, cfg.pixel_noise, img.shape)
    image = np.clip(img, 0, 255).round().astype(np.uint8)
    return Scene(image, masks, label, objects, _caption(objects), int(seed))


def _caption(objects: list[SceneObject]) -> str:
    names = [o.class_name for o in objects]
    if not names:
        return "an empty background."
    if len(names) == 1:
        return f"a {names[0]}."
    return "a " + ", a ".join(names[:-1]) + f" and a {names[-1]}."


def referring_prompts(scene: Scene) -> list[dict[str, Any]]:
    """Prompts about a scene with their targets, including the ambiguous kinds of Chapter 5.3.

    Returns dicts ``{"prompt", "kind", "targets"}`` where ``targets`` lists the object indices the
    prompt refers to; ``kind`` is ``"class"`` (exact class name), ``"colour"`` ("red thing"),
    ``"shape"`` ("a star"), ``"vague"`` ("shape", "thing": every object) or ``"spatial"``
    ("thing on the left": the leftmost object).
    """
    out: list[dict[str, Any]] = []
    objs = [o for o in scene.objects if o.area > 0]
    idx = {id(o): i for i, o in enumerate(scene.objects)}
    for o in objs:
        out.append({"prompt": o.class_name, "kind": "class",
                    "targets": [idx[id(p)] for p in objs if p.class_name == o.class_name]})
    for c in sorted({o.colour for o in objs}):
        out.append({"prompt": f"{c} thing", "kind": "colour", "targets": [idx[id(p)] for p in objs if p.colour == c]})
    for s in sorted({o.shape for o in objs}):
        out.append({"prompt": s, "kind": "shape", "targets": [idx[id(p)] for p in objs if p.shape == s]})
    if objs:
        every = [idx[id(p)] for p in objs]
        out.append({"prompt": "shape", "kind": "vague", "targets": every})
        out.append({"prompt": "thing", "kind": "vague", "targets": every})
        left = min(objs, key=lambda p: p.centre[0])
        out.append({"prompt": "thing on the left", "kind": "spatial", "targets": [idx[id(left)]]})
    return out


# ---- datasets on disk ---------------------------------------------------------------------------------

def write_dataset(root: str | Path, seeds: list[int], cfg: SceneConfig | None = None) -> Path:
    """Render scenes and write the "folder" layout with instances and an index.

    ``root/images/<stem>.png`` (RGB), ``root/labels/<stem>.png`` (uint8 class index, 0 = background),
    ``root/instances/<stem>.png`` (uint8 instance id), ``root/classes.txt`` and ``root/index.json``
    (config, and per image its seed and objects). Files are written atomically; the index last.
    """
    from .io import save_image_atomic, write_json_atomic, write_text_atomic

    cfg = cfg or SceneConfig()
    root = Path(root)
    records = []
    for seed in seeds:
        scene = render_scene(seed, cfg)
        stem = f"scene_{seed:010d}"
        save_image_atomic(root / "images" / f"{stem}.png", scene.image)
        save_image_atomic(root / "labels" / f"{stem}.png", scene.label_map)
        save_image_atomic(root / "instances" / f"{stem}.png", scene.instance_map)
        records.append({"stem": stem, "seed": seed, "caption": scene.caption,
                        "objects": [asdict(o) for o in scene.objects]})
    write_text_atomic(root / "classes.txt", "\n".join(["background", *CLASS_NAMES]) + "\n")
    cfg_dict = asdict(cfg)
    write_json_atomic(root / "index.json", {"config": cfg_dict, "novel_classes": sorted(NOVEL_CLASSES),
                                            "images": records})
    return root


def load_dataset_index(root: str | Path) -> dict[str, Any]:
    """The ``index.json`` of a dataset written by :func:`write_dataset`, with its config rebuilt."""
    path = Path(root) / "index.json"
    if not path.is_file():
        raise InputError("a mini-world dataset folder must contain index.json", str(path),
                         "generate it with `python data/make_samples.py` or ovseg.world.write_dataset")
    data = json.loads(path.read_text())
    c = data["config"]
    data["config"] = replace(SceneConfig(), **{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
    return data
