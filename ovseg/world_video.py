"""Mini-world video clips: seeded clips of moving shapes with exact per-frame ground truth.

A clip is a pure function of its integer seed and :class:`ClipConfig`: ``render_clip(seed, cfg)`` returns its frames,
the visible pixels of every object in every frame, per-frame semantic label maps and each object's trajectory. Objects
are those of the mini world (:mod:`ovseg.world`: the same 48 classes, colours, styles, textures and backgrounds); some
are present at frame 0, others *enter* mid-clip from outside an edge. Each object translates, rotates and grows or
shrinks at constant rates and may leave the frame; objects keep a fixed depth order (later ones are drawn on top), so
they occlude each other as they move. The background is static or drifts slowly (a crop sliding over a larger canvas).

``render_clip(seed, cfg, without=k)`` renders the same clip with object ``k`` absent: every random draw is made as
without it, so every pixel outside object ``k``'s own coverage is identical to the full clip in every frame (the exact
ground truth of video object removal, as ``render_scene(edit=(i, None))`` is for images).

Label conventions (those of :mod:`ovseg.world`): label maps are uint8 with 0 = background and ``c + 1`` =
``CLASS_NAMES[c]``; instance maps are uint8 with 0 = background and ``k + 1`` = object ``k``.

On-disk layout of :func:`write_clips` (DAVIS-like), one folder per clip, ``clip_<seed:010d>``::

    <root>/index.json                     config, class names, and per clip its seed, frames and objects
    <root>/<clip>/frames/00000.png        (H, W, 3) RGB frame
    <root>/<clip>/masks/00000.png         palette PNG (mode "P", DAVIS palette): index 0 = background, k + 1 = object k
    <root>/<clip>/labels/00000.png        (H, W) uint8 greyscale class labels, 0 = background, c + 1 = CLASS_NAMES[c]
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .world import (
    BACKGROUNDS,
    CLASS_NAMES,
    NOVEL_CLASSES,
    STYLES,
    SceneConfig,
    _background,
    _caption,
    _coverage,
    _object_colour,
    _outline,
    _pattern,
    _pick_classes,
)

__all__ = ["EDGES", "LARGE_FRACTION", "ClipConfig", "ClipObject", "Clip", "render_clip", "clip_name", "davis_palette",
           "write_clips", "load_clip_index", "load_clip"]

#: Frame edges an entering object can come in from.
EDGES = ("left", "right", "top", "bottom")
#: ``first_large``: the first frame where an object's visible pixels cover at least this fraction of the frame.
LARGE_FRACTION = 0.01
#: Format tag of a clip folder's index.json.
_FORMAT = "ovseg mini-world video clips v1"
#: Frame file names: five-digit frame numbers.
_FRAME_FILE = re.compile(r"\d{5}\.png")
_SUBFOLDERS = ("frames", "masks", "labels")


# ---- configuration ------------------------------------------------------------------------------------

def _is_number(v: object, integer: bool = False) -> bool:
    if isinstance(v, bool):
        return False
    if integer:
        return isinstance(v, (int, np.integer))
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))


def _check_pair(name: str, value: object, lo: float, hi: float, example: str, integer: bool = False) -> None:
    """``value`` must be a (low, high) pair with ``lo <= low <= high <= hi`` (integers if ``integer``)."""
    ok = (isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_number(v, integer) for v in value)
          and lo <= value[0] <= value[1] <= hi)
    kind = "integer " if integer else ""
    if not ok:
        raise InputError(f"ClipConfig.{name} must be a (low, high) {kind}pair with {lo} <= low <= high <= {hi}",
                         repr(value), f"use e.g. {name}={example}")


def _check_number(name: str, value: object, lo: float, hi: float, example: str) -> None:
    if not (_is_number(value) and lo <= value <= hi):
        raise InputError(f"ClipConfig.{name} must be a number in [{lo}, {hi}]", repr(value), f"use e.g. {name}={example}")


@dataclass
class ClipConfig:
    """How clips are drawn. Ranges are (low, high), sampled uniformly per clip or per object."""

    # Frame size (height, width), pixels.
    size: tuple[int, int] = (128, 128)
    # Frames per clip.
    n_frames: int = 48
    # Number of objects present at frame 0 (placed inside the frame as in a scene).
    n_objects: tuple[int, int] = (1, 3)
    # Number of objects that enter the frame mid-clip from outside one of its edges.
    n_entering: tuple[int, int] = (0, 2)
    # (earliest entry frame, fewest frames left after it), frames: an entering object's entry frame (its
    # circumscribed circle 1 px outside its edge, moving in) is drawn from [entry_window[0], n_frames - entry_window[1]].
    entry_window: tuple[int, int] = (4, 12)
    # Object size at frame 0 (at its entry frame for an entering object): diameter of the shape's circumscribed
    # circle as a fraction of the frame's short side.
    object_size: tuple[float, float] = (0.18, 0.4)
    # Translation speed of an object present at frame 0, px/frame, in a uniformly random direction.
    speed: tuple[float, float] = (0.0, 1.5)
    # Translation speed of an entering object, px/frame, within 45 degrees of its edge's inward normal.
    entry_speed: tuple[float, float] = (1.0, 2.0)
    # Rotation speed, degrees/frame (positive: clockwise on screen).
    rotation_speed: tuple[float, float] = (-3.0, 3.0)
    # Relative change of the diameter per frame, 1/frame: diameter(t) = diameter * (1 + g) ** t (0: constant size).
    scale_speed: tuple[float, float] = (-0.008, 0.008)
    # Largest fraction of a frame-0 object that later frame-0 objects may hide in frame 0 (rejection sampling as in
    # a scene); motion may hide more later on.
    max_occlusion: float = 0.4
    # Probability that a clip's background drifts (else it is static), in [0, 1].
    background_motion: float = 0.5
    # Drift speed of a drifting background, px/frame, in a uniformly random direction.
    background_drift: tuple[float, float] = (0.1, 0.5)
    # Background kinds to sample from (ovseg.world.BACKGROUNDS).
    backgrounds: tuple[str, ...] = BACKGROUNDS
    # Which classes may appear: "base" (training: no novel composition), "novel" (only novel), "all".
    split: str = "all"
    # Probability that a clip contains at least one novel object when split="all".
    novel_fraction: float = 0.5
    # Rendering styles to sample from: "filled", "outline" (sketch), "textured" (artistic).
    styles: tuple[str, ...] = ("filled",)
    # Probability that an object's surface carries a texture pattern (it moves, turns and scales with the object).
    textured_objects: float = 0.15
    # Std of the per-channel colour jitter around the canonical sRGB, in levels.
    colour_jitter: float = 12.0
    # Strength of the linear shading across each object (0 = flat colour).
    shading: float = 0.2
    # Sensor noise std added to every frame (drawn afresh per frame), in levels.
    pixel_noise: float = 1.0

    def __post_init__(self) -> None:
        size_ok = (isinstance(self.size, (tuple, list)) and len(self.size) == 2
                   and all(_is_number(v, integer=True) for v in self.size))
        if not size_ok or not 32 <= min(self.size) <= max(self.size) <= 4096:
            raise InputError("ClipConfig.size must be (height, width) in pixels, integers from 32 to 4096", repr(self.size),
                             "use e.g. size=(128, 128)")
        if not (_is_number(self.n_frames, integer=True) and 2 <= self.n_frames <= 10_000):
            raise InputError("ClipConfig.n_frames must be an integer from 2 to 10000", repr(self.n_frames),
                             "use e.g. n_frames=48")
        _check_pair("n_objects", self.n_objects, 1, 8, "(1, 3)", integer=True)
        _check_pair("n_entering", self.n_entering, 0, 4, "(0, 2)", integer=True)
        ew = self.entry_window
        if not (isinstance(ew, (tuple, list)) and len(ew) == 2 and all(_is_number(v, integer=True) for v in ew)
                and ew[0] >= 1 and ew[1] >= 1):
            raise InputError("ClipConfig.entry_window must be (earliest entry frame, fewest frames left after it), "
                             "integers >= 1", repr(ew), "use e.g. entry_window=(4, 12)")
        if self.n_entering[1] > 0 and ew[0] > self.n_frames - ew[1]:
            raise InputError("ClipConfig.entry_window must leave an entry frame: entry_window[0] <= n_frames - "
                             "entry_window[1]", f"entry_window={tuple(ew)!r} with n_frames={self.n_frames}",
                             "use more frames, a smaller window, or n_entering=(0, 0)")
        _check_pair("object_size", self.object_size, 0.01, 1.0, "(0.18, 0.4)")
        _check_pair("speed", self.speed, 0.0, 32.0, "(0.0, 1.5)")
        _check_pair("entry_speed", self.entry_speed, 0.1, 32.0, "(1.0, 2.0)")
        _check_pair("rotation_speed", self.rotation_speed, -180.0, 180.0, "(-3.0, 3.0)")
        _check_pair("scale_speed", self.scale_speed, -0.05, 0.05, "(-0.008, 0.008)")
        _check_number("max_occlusion", self.max_occlusion, 0.0, 1.0, "0.4")
        _check_number("background_motion", self.background_motion, 0.0, 1.0, "0.5")
        _check_pair("background_drift", self.background_drift, 0.0, 4.0, "(0.1, 0.5)")
        bad = not isinstance(self.backgrounds, (tuple, list)) or any(b not in BACKGROUNDS for b in self.backgrounds)
        if bad or not self.backgrounds:
            raise InputError(f"ClipConfig.backgrounds must be a non-empty subset of {BACKGROUNDS}", repr(self.backgrounds),
                             "fix the list, e.g. backgrounds=('smooth',)")
        if self.split not in ("base", "novel", "all"):
            raise InputError("ClipConfig.split must be 'base', 'novel' or 'all'", repr(self.split), "pick one")
        _check_number("novel_fraction", self.novel_fraction, 0.0, 1.0, "0.5")
        bad = not isinstance(self.styles, (tuple, list)) or any(s not in STYLES for s in self.styles)
        if bad or not self.styles:
            raise InputError(f"ClipConfig.styles must be a non-empty subset of {STYLES}", repr(self.styles),
                             "fix the list, e.g. styles=('filled',)")
        _check_number("textured_objects", self.textured_objects, 0.0, 1.0, "0.15")
        _check_number("colour_jitter", self.colour_jitter, 0.0, 128.0, "12.0")
        _check_number("shading", self.shading, 0.0, 0.9, "0.2")
        _check_number("pixel_noise", self.pixel_noise, 0.0, 64.0, "1.0")

    def scene_config(self) -> SceneConfig:
        """The :class:`~ovseg.world.SceneConfig` of the same classes, colours, styles and backgrounds (what the world's
        helpers read)."""
        return SceneConfig(size=tuple(self.size), split=self.split, novel_fraction=self.novel_fraction,
                           styles=tuple(self.styles), textured_objects=self.textured_objects,
                           backgrounds=tuple(self.backgrounds), colour_jitter=self.colour_jitter, shading=self.shading,
                           pixel_noise=self.pixel_noise)


# ---- records --------------------------------------------------------------------------------------------

@dataclass
class ClipObject:
    """One object of a clip and its trajectory. T = the clip's frame count; pixel coordinates are (x, y) with the
    frame spanning [0, W] x [0, H] (pixel (row i, column j) covers [j, j + 1) x [i, i + 1))."""

    class_name: str  # "<colour> <shape>", one of CLASS_NAMES
    colour: str  # colour word
    shape: str  # shape word
    style: str  # "filled", "outline" or "textured"
    textured: bool  # its surface carries a pattern
    depth: int  # drawing rank in the full clip (0: drawn first, at the bottom) = its index in the full clip's objects
    late: bool  # not visible in frame 0
    entry_edge: str | None  # edge an entering object comes in from (EDGES); None: present at frame 0
    entry_frame: int | None  # frame at which an entering object is 1 px outside its edge, moving in; None: at frame 0
    first_visible: int | None  # first frame with >= 1 visible pixel; None: never visible
    first_large: int | None  # first frame whose visible pixels cover >= LARGE_FRACTION of the frame; None: never
    centres: np.ndarray  # (T, 2) float64 (x, y) centre per frame, pixels (may lie outside the frame)
    diameters: np.ndarray  # (T,) float64 diameter of the circumscribed circle per frame, pixels
    rotations: np.ndarray  # (T,) float64 rotation per frame, degrees in [0, 360)
    areas: np.ndarray  # (T,) int64 visible pixels per frame (= its instance mask's sum)
    hidden: np.ndarray  # (T,) int64 pixels of its in-frame footprint hidden by objects drawn above it, per frame

    @property
    def novel(self) -> bool:
        return self.class_name in NOVEL_CLASSES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (arrays as lists; floats exact)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClipObject:
        """Inverse of :meth:`to_dict` (extra keys are ignored)."""
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(d))
        if missing:
            raise InputError("a clip object record of index.json must have every ClipObject field", f"missing {missing}",
                             "regenerate the folder with ovseg.world_video.write_clips")
        kw = {k: d[k] for k in names}
        kw["centres"] = np.asarray(d["centres"], np.float64).reshape(-1, 2)
        for k in ("diameters", "rotations"):
            kw[k] = np.asarray(d[k], np.float64)
        for k in ("areas", "hidden"):
            kw[k] = np.asarray(d[k], np.int64)
        return cls(**kw)


@dataclass
class Clip:
    """A rendered clip. T frames of H x W pixels, K objects.

    Attributes:
        frames: (T, H, W, 3) uint8 RGB, values in [0, 255].
        instance_masks: (T, K, H, W) bool, the visible pixels of each object per frame (after occlusion by objects
            drawn above it and the frame border); disjoint within a frame.
        label_maps: (T, H, W) uint8, 0 = background, c + 1 = CLASS_NAMES[c].
        objects: K :class:`ClipObject` records, in drawing order (later ones on top).
        caption: one sentence describing the clip.
        background_drift: speed of the background's drift, px/frame; 0.0 for a static background.
        background_velocity: (vx, vy) of the background content on screen, px/frame; (0.0, 0.0) when static.
        seed: the seed that reproduces it with the same config.
        config: the :class:`ClipConfig` it was rendered with.
        without: the index (in the full clip) of the object rendered absent, None for the full clip.
    """

    frames: np.ndarray
    instance_masks: np.ndarray
    label_maps: np.ndarray
    objects: list[ClipObject]
    caption: str
    background_drift: float
    background_velocity: tuple[float, float]
    seed: int
    config: ClipConfig
    without: int | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def name(self) -> str:
        """Folder name of the clip: ``clip_<seed:010d>``."""
        return clip_name(self.seed)

    @property
    def instance_maps(self) -> np.ndarray:
        """(T, H, W) uint8: 0 = background, k + 1 = object k (the values of the mask PNGs)."""
        out = np.zeros(self.label_maps.shape, np.uint8)  # (T, H, W)
        for k in range(self.instance_masks.shape[1]):
            out[self.instance_masks[:, k]] = k + 1
        return out

    @property
    def class_names(self) -> list[str]:
        return [o.class_name for o in self.objects]

    def occlusions(self, min_fraction: float = 0.05) -> list[tuple[int, int, int]]:
        """Occlusion events: ``(object index, first frame, last frame)`` of each run of consecutive frames in which
        objects above it hide at least ``min_fraction`` (and at least one pixel) of the object's in-frame footprint."""
        events = []
        for k, o in enumerate(self.objects):
            footprint = o.areas + o.hidden  # (T,)
            hit = (o.hidden > 0) & (o.hidden >= min_fraction * footprint)  # (T,) bool
            t = 0
            while t < len(hit):
                if hit[t]:
                    start = t
                    while t + 1 < len(hit) and hit[t + 1]:
                        t += 1
                    events.append((k, start, t))
                t += 1
        return events


def clip_name(seed: int) -> str:
    """Folder name of the clip of ``seed``."""
    return f"clip_{int(seed):010d}"


# ---- rendering ------------------------------------------------------------------------------------------

@dataclass
class _Track:
    """An object's draws: everything needed to paint it in any frame (made whether or not it is painted)."""

    class_name: str  # "<colour> <shape>"
    shape: str  # shape word
    style: str  # rendering style
    textured: bool  # carries a texture
    centres: np.ndarray  # (T, 2) float64 (x, y) per frame
    diameters: np.ndarray  # (T,) float64 per frame
    rotations: np.ndarray  # (T,) float64 degrees per frame
    rgb: np.ndarray  # (3,) float jittered colour, levels
    shade_angle: float  # direction of the shading gradient in the image, radians
    texture: np.ndarray | None  # (S, S) float32 in [-1, 1] pattern in the object's own frame; None: untextured
    texture_amp: float  # relative strength of the texture
    ref_diameter: float  # diameter at which the texture was drawn (frame 0, or the entry frame), pixels
    ref_rotation: float  # rotation at which the texture was drawn, degrees
    entry_edge: str | None  # EDGES entry, None: present at frame 0
    entry_frame: int | None  # entry frame, None: present at frame 0


def _bilinear(a: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample the (h, w) array ``a`` at float positions (``u`` = column, ``v`` = row, same shape), clamped to its
    border. Returns float64 of ``u``'s shape."""
    h, w = a.shape
    u = np.clip(u, 0, w - 1)
    v = np.clip(v, 0, h - 1)
    x0 = np.minimum(np.floor(u).astype(np.intp), w - 2)
    y0 = np.minimum(np.floor(v).astype(np.intp), h - 2)
    fx, fy = u - x0, v - y0
    return (a[y0, x0] * (1 - fx) * (1 - fy) + a[y0, x0 + 1] * fx * (1 - fy)
            + a[y0 + 1, x0] * (1 - fx) * fy + a[y0 + 1, x0 + 1] * fx * fy)


def _crop(canvas: np.ndarray, ox: float, oy: float, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float64 window of the (H', W', 3) ``canvas`` whose top-left corner is at (ox, oy), bilinear for a
    fractional offset (an integer offset is an exact slice)."""
    x0, y0 = math.floor(ox), math.floor(oy)
    fx, fy = ox - x0, oy - y0
    if fx == 0 and fy == 0:
        return canvas[y0:y0 + h, x0:x0 + w].astype(np.float64)
    c = canvas[y0:y0 + h + 1, x0:x0 + w + 1].astype(np.float64)  # (h + 1, w + 1, 3)
    return (c[:-1, :-1] * ((1 - fx) * (1 - fy)) + c[:-1, 1:] * (fx * (1 - fy))
            + c[1:, :-1] * ((1 - fx) * fy) + c[1:, 1:] * (fx * fy))


def _make_track(rng: np.random.Generator, cfg: ClipConfig, scfg: SceneConfig, name: str, centre: tuple[float, float],
                velocity: tuple[float, float], t_ref: int, diameter: float, rotation: float, edge: str | None) -> _Track:
    """Draw an object's rotation / scale speeds and its paint; its trajectory passes ``centre`` at frame ``t_ref``
    with ``diameter`` (constant before ``t_ref``) and has ``rotation`` at frame 0."""
    colour, shape = name.split(" ")
    n = cfg.n_frames
    # 1. motion
    omega = float(rng.uniform(*cfg.rotation_speed))  # degrees/frame
    growth = float(rng.uniform(*cfg.scale_speed))  # 1/frame
    t = np.arange(n, dtype=np.float64)  # (T,)
    centres = np.asarray(centre, np.float64)[None] + np.asarray(velocity, np.float64)[None] * (t - t_ref)[:, None]
    diameters = diameter * (1 + growth) ** np.maximum(t - t_ref, 0)  # (T,)
    rotations = (rotation + omega * t) % 360.0  # (T,)
    # 2. paint: style, colour, shading, texture (the world's helpers and order of draws)
    style = cfg.styles[int(rng.integers(len(cfg.styles)))]
    textured = style == "textured" or bool(rng.random() < cfg.textured_objects)
    rgb = _object_colour(rng, colour, scfg)
    shade_angle = float(rng.uniform(0, 2 * np.pi))
    texture, amp = None, 0.0
    if textured:
        amp = float(rng.uniform(0.12, 0.25))
        side = int(math.ceil(diameter)) + 4
        texture = _pattern(rng, (side, side)).astype(np.float32)  # (S, S)
    ref_rotation = float(rotations[min(t_ref, n - 1)])
    return _Track(name, shape, style, textured, centres, diameters, rotations, rgb, shade_angle, texture, amp,
                  float(diameter), ref_rotation, edge, None if edge is None else int(t_ref))


def _paint(tr: _Track, t: int, xx: np.ndarray, yy: np.ndarray, shading: float) -> np.ndarray:
    """(H, W, 3) float64 colour of object ``tr`` in frame ``t`` (everywhere; the coverage decides where it shows)."""
    cx, cy = tr.centres[t]
    r = tr.diameters[t] / 2
    a = tr.shade_angle
    shade = 1 + shading * ((xx - cx) * math.cos(a) + (yy - cy) * math.sin(a)) / max(r, 1)  # (H, W)
    paint = tr.rgb[None, None] * np.clip(shade, 0.6, 1.4)[..., None]  # (H, W, 3)
    if tr.texture is not None:
        # object coordinates of each pixel: undo the translation, the rotation since the reference frame and the scale
        ang = math.radians(tr.rotations[t] - tr.ref_rotation)
        s = tr.ref_diameter / tr.diameters[t]
        half = tr.texture.shape[0] / 2
        dx, dy = xx - cx, yy - cy  # (H, W)
        u = (dx * math.cos(ang) + dy * math.sin(ang)) * s + half
        v = (-dx * math.sin(ang) + dy * math.cos(ang)) * s + half
        paint = paint * (1 + tr.texture_amp * _bilinear(tr.texture, u, v))[..., None]
    return paint


def render_clip(seed: int, cfg: ClipConfig | None = None, without: int | None = None) -> Clip:
    """Render the clip of ``seed`` (deterministic: the same seed and config give byte-identical arrays).

    ``without=k`` renders the same clip with object ``k`` (its index in the full clip's ``objects``) absent: every
    random draw is made exactly as without it, so every pixel of every frame outside object ``k``'s coverage there
    (``_coverage(...) > 0`` at its recorded centre, diameter and rotation) is identical to the full clip; the objects it
    hid show where it was. The returned ``objects`` omit it (the others keep their ``depth``).

    Returns:
        A :class:`Clip`: frames (T, H, W, 3) uint8 RGB; instance_masks (T, K, H, W) bool; label_maps (T, H, W) uint8.

    Raises:
        InputError: a negative or non-integer seed, a config that is not a ClipConfig, ``without`` out of range.
    """
    cfg = ClipConfig() if cfg is None else cfg
    if not isinstance(cfg, ClipConfig):
        raise InputError("render_clip's cfg must be a ClipConfig", type(cfg).__name__, "pass ovseg.world_video.ClipConfig(...)")
    if not (_is_number(seed, integer=True) and seed >= 0):
        raise InputError("a clip seed must be a non-negative integer", repr(seed), "pass e.g. a seed of a 'video' range "
                         "of ovseg.world.EVAL_SPLITS")
    if without is not None and not _is_number(without, integer=True):
        raise InputError("render_clip's without must be an object index (int) or None", repr(without), "pass e.g. 0")
    scfg = cfg.scene_config()
    rng = np.random.default_rng(int(seed))
    h, w = cfg.size
    n = cfg.n_frames
    short = min(h, w)
    # 1. background: kind, drift, and a canvas large enough for the longest drift, cropped per frame
    kind = cfg.backgrounds[int(rng.integers(len(cfg.backgrounds)))]
    moving = bool(rng.random() < cfg.background_motion)
    drift_speed = float(rng.uniform(*cfg.background_drift))
    drift_angle = float(rng.uniform(0, 2 * np.pi))
    drift = drift_speed if moving else 0.0  # px/frame
    velocity = (drift * math.cos(drift_angle), drift * math.sin(drift_angle)) if moving else (0.0, 0.0)
    pad = int(math.ceil(cfg.background_drift[1] * (n - 1) / 2)) + 1  # canvas margin on every side, pixels
    canvas = _background(rng, kind, (h + 2 * pad, w + 2 * pad))  # (H + 2 pad, W + 2 pad, 3) float32
    # 2. objects: classes of the frame-0 and entering objects
    n_first = int(rng.integers(cfg.n_objects[0], cfg.n_objects[1] + 1))
    n_enter = int(rng.integers(cfg.n_entering[0], cfg.n_entering[1] + 1))
    names = _pick_classes(rng, n_first + n_enter, scfg)
    # 3. frame-0 objects: placed as in a scene, bounding how much later ones hide in frame 0
    order: list[_Track] = []  # drawing order, bottom first
    solids: list[np.ndarray] = []  # (H, W) bool frame-0 footprint of each placed object
    hidden: list[np.ndarray] = []  # (H, W) bool pixels of object i covered by later ones in frame 0
    for name in names[:n_first]:
        shape = name.split(" ")[1]
        d = float(rng.uniform(*cfg.object_size) * short)
        r = d / 2
        rot = float(rng.uniform(0, 360))
        best = None
        for _attempt in range(30):
            margin = r * 0.6
            cx, cy = float(rng.uniform(margin, w - margin)), float(rng.uniform(margin, h - margin))
            new = _coverage(shape, cx, cy, r, rot, (h, w)) >= 0.5  # (H, W)
            if all(((hidden[i] | new) & solid).sum() <= cfg.max_occlusion * solid.sum() for i, solid in enumerate(solids)):
                best = (cx, cy, new)
                break
        if best is None:
            continue  # could not place it without hiding others too much: fewer objects
        cx, cy, new = best
        for i in range(len(hidden)):
            hidden[i] |= new
        solids.append(new)
        hidden.append(np.zeros((h, w), bool))
        speed, heading = float(rng.uniform(*cfg.speed)), float(rng.uniform(0, 2 * np.pi))
        order.append(_make_track(rng, cfg, scfg, name, (cx, cy), (speed * math.cos(heading), speed * math.sin(heading)),
                                 0, d, rot, None))
    # 4. entering objects: 1 px outside an edge at their entry frame, moving inwards; inserted at a random depth
    inward = {"left": 0.0, "right": math.pi, "top": math.pi / 2, "bottom": -math.pi / 2}  # y points down
    for name in names[n_first:]:
        edge = EDGES[int(rng.integers(len(EDGES)))]
        entry = int(rng.integers(cfg.entry_window[0], n - cfg.entry_window[1] + 1))
        d = float(rng.uniform(*cfg.object_size) * short)
        r = d / 2
        rot = float(rng.uniform(0, 360))
        along = float(rng.uniform(0.2, 0.8))  # position along the edge, fraction of its length
        speed = float(rng.uniform(*cfg.entry_speed))
        heading = inward[edge] + float(rng.uniform(-np.pi / 4, np.pi / 4))
        centre = {"left": (-(r + 1), along * h), "right": (w + r + 1, along * h),
                  "top": (along * w, -(r + 1)), "bottom": (along * w, h + r + 1)}[edge]
        track = _make_track(rng, cfg, scfg, name, centre, (speed * math.cos(heading), speed * math.sin(heading)),
                            entry, d, rot, edge)
        order.insert(int(rng.integers(len(order) + 1)), track)
    if without is not None and not 0 <= without < len(order):
        raise InputError("render_clip's without must index an object of the full clip", repr(without),
                         f"pass 0 .. {len(order) - 1} (the clip of seed {seed} has {len(order)} objects)")
    # 5. frames: background crop, objects bottom to top, visible masks, sensor noise
    kept = [i for i in range(len(order)) if i != without]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)  # (H, W) each
    frames = np.zeros((n, h, w, 3), np.uint8)
    masks = np.zeros((n, len(kept), h, w), bool)
    hidden_px = np.zeros((n, len(kept)), np.int64)
    for t in range(n):
        shift = t - (n - 1) / 2
        img = _crop(canvas, pad - velocity[0] * shift, pad - velocity[1] * shift, h, w)  # (H, W, 3) float64
        solid = []  # (H, W) bool footprint of each kept object in frame t
        for i in kept:
            tr = order[i]
            d = float(tr.diameters[t])
            cov = _coverage(tr.shape, float(tr.centres[t, 0]), float(tr.centres[t, 1]), d / 2, float(tr.rotations[t]),
                            (h, w))  # (H, W) float32 in [0, 1]
            solid.append(cov >= 0.5)
            if not cov.any():
                continue  # outside the frame: nothing to paint
            alpha = _outline(cov, max(1.0, 0.08 * d)) if tr.style == "outline" else cov
            paint = np.clip(_paint(tr, t, xx, yy, cfg.shading), 0, 255)
            img = img * (1 - alpha[..., None]) + paint * alpha[..., None]
        above = np.zeros((h, w), bool)  # union of the footprints drawn above, top down
        for j in range(len(kept) - 1, -1, -1):
            masks[t, j] = solid[j] & ~above
            hidden_px[t, j] = int((solid[j] & above).sum())
            above |= solid[j]
        if cfg.pixel_noise > 0:
            img = img + rng.normal(0, cfg.pixel_noise, img.shape)
        frames[t] = np.clip(img, 0, 255).round().astype(np.uint8)
    # 6. ground truth: label maps and object records
    labels = np.zeros((n, h, w), np.uint8)
    objects = []
    for j, i in enumerate(kept):
        tr = order[i]
        labels[masks[:, j]] = CLASS_NAMES.index(tr.class_name) + 1
        areas = masks[:, j].sum(axis=(1, 2)).astype(np.int64)  # (T,)
        objects.append(_object_record(tr, i, areas, hidden_px[:, j].copy(), h * w))
    return Clip(frames, masks, labels, objects, _clip_caption(objects), drift, velocity, int(seed), cfg, without)


def _first(flags: np.ndarray) -> int | None:
    hits = np.flatnonzero(flags)
    return int(hits[0]) if hits.size else None


def _object_record(tr: _Track, depth: int, areas: np.ndarray, hidden: np.ndarray, frame_px: int) -> ClipObject:
    colour, shape = tr.class_name.split(" ")
    return ClipObject(tr.class_name, colour, shape, tr.style, bool(tr.textured), depth, bool(areas[0] == 0),
                      tr.entry_edge, tr.entry_frame, _first(areas > 0), _first(areas >= LARGE_FRACTION * frame_px),
                      tr.centres, tr.diameters, tr.rotations, areas, hidden)


def _clip_caption(objects: list[ClipObject]) -> str:
    """The world's caption of the objects visible in frame 0, then one clause per object that appears later."""
    first = _caption([o for o in objects if not o.late])  # type: ignore[arg-type]  # reads class_name only
    later = sorted((o for o in objects if o.late and o.first_visible is not None), key=lambda o: o.first_visible)
    if not later:
        return first
    clauses = [f"a {o.class_name} enters from the {o.entry_edge}" if o.entry_edge else f"a {o.class_name} appears"
               for o in later]
    return first[:-1] + "; then " + ", then ".join(clauses) + "."


# ---- clips on disk --------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def davis_palette() -> tuple[int, ...]:
    """The colour map of DAVIS masks (PASCAL VOC's): 256 RGB triples flattened to 768 ints in [0, 255]; index 0 is
    black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), 4 (0, 0, 128), ..."""
    out: list[int] = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out += [r, g, b]
    return tuple(out)


def _palette_image(ids: np.ndarray) -> Any:
    """A mode "P" PIL image of the (H, W) uint8 ids with the DAVIS palette."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(ids, np.uint8))
    img.putpalette(davis_palette())  # mode L -> P: the pixel values are the palette indices
    return img


def _real_folder(path: Path) -> Path:
    """``path``, refused when it is a symbolic link (clip files are never written through a link)."""
    if path.is_symlink():
        raise InputError("a video-clip folder must not be a symbolic link (files are never written through one)",
                         str(path), "remove the link or pass a real folder")
    if path.exists() and not path.is_dir():
        raise InputError("a video-clip folder path must be a folder", f"{path} (a file)", "pass another root")
    return path


def write_clips(root: str | Path, seeds: list[int], cfg: ClipConfig | None = None) -> Path:
    """Render clips and write them in the DAVIS-like layout of this module's docstring.

    Per clip ``<root>/clip_<seed:010d>/``: ``frames/NNNNN.png`` (H, W, 3) RGB; ``masks/NNNNN.png`` palette PNG of the
    instance ids (0 = background, k + 1 = object k; DAVIS palette); ``labels/NNNNN.png`` (H, W) uint8 greyscale class
    labels (0 = background, c + 1 = CLASS_NAMES[c]). ``<root>/index.json`` holds the config, the class names and per
    clip its name, seed, frame count, size, caption, background drift and objects (:meth:`ClipObject.to_dict`). Files
    are written atomically (never through a symbolic link), the index last; numbered PNGs beyond a rewritten clip's
    frame count (left by an earlier, longer run) are removed.

    Returns:
        ``root`` as a Path.
    """
    from .io import save_image_atomic, write_json_atomic

    cfg = ClipConfig() if cfg is None else cfg
    root = _real_folder(Path(root))
    seeds = list(seeds)
    bad = [s for s in seeds if not (_is_number(s, integer=True) and s >= 0)]
    if bad:
        raise InputError("write_clips's seeds must be non-negative integers", repr(bad[:5]),
                         "pass e.g. list(ovseg.world.seed_range('video', 'dev').seeds[:10])")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise InputError("write_clips needs distinct seeds (one folder per seed)", repr(seeds), "drop the repeated seeds")
    records = []
    for seed in seeds:
        clip = render_clip(seed, cfg)
        folder = _real_folder(root / clip.name)
        ids = clip.instance_maps  # (T, H, W) uint8
        for sub in _SUBFOLDERS:
            _real_folder(folder / sub)
        for t in range(clip.n_frames):
            save_image_atomic(folder / "frames" / f"{t:05d}.png", clip.frames[t])
            save_image_atomic(folder / "masks" / f"{t:05d}.png", _palette_image(ids[t]))
            save_image_atomic(folder / "labels" / f"{t:05d}.png", clip.label_maps[t])
        for sub in _SUBFOLDERS:  # frames of an earlier, longer clip in this folder
            for p in (folder / sub).iterdir():
                if _FRAME_FILE.fullmatch(p.name) and int(p.name[:5]) >= clip.n_frames and (p.is_file() or p.is_symlink()):
                    p.unlink()
        records.append({"name": clip.name, "seed": seed, "n_frames": clip.n_frames, "size": list(cfg.size),
                        "caption": clip.caption, "background_drift": clip.background_drift,
                        "background_velocity": list(clip.background_velocity),
                        "objects": [o.to_dict() | {"mask_id": k + 1} for k, o in enumerate(clip.objects)]})
    write_json_atomic(root / "index.json", {"format": _FORMAT, "config": asdict(cfg), "classes": ["background", *CLASS_NAMES],
                                            "novel_classes": sorted(NOVEL_CLASSES), "mask_palette": "DAVIS",
                                            "clips": records})
    return root


def load_clip_index(root: str | Path) -> dict[str, Any]:
    """The ``index.json`` of a folder written by :func:`write_clips`, with its ``config`` rebuilt as a ClipConfig.

    Raises:
        InputError: no index.json, unreadable JSON, not a clip index, or a config that ClipConfig refuses.
    """
    path = Path(root) / "index.json"
    if not path.is_file():
        raise InputError("a mini-world video folder must contain index.json", str(path),
                         "generate it with ovseg.world_video.write_clips (or `python data/make_samples.py`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError("a video folder's index.json must be readable JSON", f"{path}: {err}",
                         "regenerate the folder with ovseg.world_video.write_clips") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("clips"), list):
        raise InputError(f"index.json must be a mini-world video index (format {_FORMAT!r})", str(path),
                         "point at a folder written by ovseg.world_video.write_clips")
    known = {f.name for f in fields(ClipConfig)}
    c = data.get("config")
    if not isinstance(c, dict) or set(c) - known:
        extra = sorted(set(c) - known) if isinstance(c, dict) else c
        raise InputError("index.json's config must hold ClipConfig fields only", f"{path}: {extra!r}",
                         "regenerate the folder with this version of ovseg.world_video.write_clips")
    data["config"] = ClipConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
    return data


def _read_png(path: Path, mode: str, shape: tuple[int, ...]) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode != mode:
                raise InputError(f"a clip's {path.parent.name} PNG must have mode {mode!r}", f"{path}: mode {img.mode}",
                                 "regenerate the clip with ovseg.world_video.write_clips")
            arr = np.asarray(img, np.uint8).copy()
            palette = img.getpalette() if mode == "P" else None
    except (OSError, UnidentifiedImageError) as err:
        raise InputError("a clip's frame files must be readable PNGs", f"{path}: {err}",
                         "regenerate the clip with ovseg.world_video.write_clips") from None
    if arr.shape != shape:
        raise InputError("a clip's PNGs must have the size recorded in index.json", f"{path}: {arr.shape}, expected {shape}",
                         "regenerate the clip with ovseg.world_video.write_clips")
    if palette is not None and tuple(palette[:12]) != davis_palette()[:12]:
        raise InputError("a clip's mask PNG must carry the DAVIS palette", str(path),
                         "regenerate the clip with ovseg.world_video.write_clips")
    return arr


def load_clip(root: str | Path, name: str) -> Clip:
    """Read the clip ``name`` (e.g. ``clip_1014000000``) of a folder written by :func:`write_clips`.

    Returns:
        A :class:`Clip` equal to the rendered one: frames (T, H, W, 3) uint8 RGB; instance_masks (T, K, H, W) bool from
        the palette ids (id k + 1 = object k); label_maps (T, H, W) uint8; objects, caption, drift, seed and config
        from index.json.

    Raises:
        InputError: a missing index or clip folder, a clip not in the index, missing or extra frame files, PNGs of the
            wrong mode or size, or masks that disagree with the index (ids beyond the objects, other areas).
    """
    root = Path(root)
    index = load_clip_index(root)
    rec = next((c for c in index["clips"] if isinstance(c, dict) and c.get("name") == name), None)
    if rec is None:
        names = [c.get("name") for c in index["clips"] if isinstance(c, dict)]
        shown = ", ".join(map(str, names[:5])) + (", ..." if len(names) > 5 else "")
        raise InputError("the clip must be listed in the folder's index.json", f"{name!r} in {root}",
                         f"use one of its {len(names)} clips: {shown}")
    # 1. the clip's folder holds exactly frames 00000 .. T-1 in each subfolder
    folder = root / name
    n = int(rec["n_frames"])
    h, w = (int(v) for v in rec["size"])
    expected = [f"{t:05d}.png" for t in range(n)]
    for sub in _SUBFOLDERS:
        if not (folder / sub).is_dir():
            raise InputError("a clip folder must hold frames/, masks/ and labels/", f"{folder / sub} is missing",
                             "regenerate the clip with ovseg.world_video.write_clips")
        found = sorted(p.name for p in (folder / sub).iterdir() if _FRAME_FILE.fullmatch(p.name))
        if found != expected:
            raise InputError(f"a clip's {sub}/ must hold one PNG per frame, 00000.png .. {n - 1:05d}.png (index.json: "
                             f"{n} frames)", f"{folder / sub}: {len(found)} numbered PNGs",
                             "regenerate the clip with ovseg.world_video.write_clips")
    # 2. pixels
    frames = np.stack([_read_png(folder / "frames" / f, "RGB", (h, w, 3)) for f in expected])  # (T, H, W, 3)
    ids = np.stack([_read_png(folder / "masks" / f, "P", (h, w)) for f in expected])  # (T, H, W)
    labels = np.stack([_read_png(folder / "labels" / f, "L", (h, w)) for f in expected])  # (T, H, W)
    # 3. objects, checked against the masks
    objects = [ClipObject.from_dict(o) for o in rec["objects"]]
    k = len(objects)
    if int(ids.max()) > k:
        raise InputError("a clip's mask ids must name its objects (0 = background, 1 .. K)",
                         f"{folder / 'masks'}: id {int(ids.max())} with {k} objects in index.json",
                         "regenerate the clip with ovseg.world_video.write_clips")
    masks = ids[:, None] == np.arange(1, k + 1, dtype=np.uint8)[None, :, None, None]  # (T, K, H, W)
    for j, o in enumerate(objects):
        if o.areas.shape != (n,) or not np.array_equal(masks[:, j].sum(axis=(1, 2)), o.areas):
            raise InputError("a clip's masks must match the object areas recorded in index.json",
                             f"{folder / 'masks'}: object {j} ({o.class_name})",
                             "regenerate the clip with ovseg.world_video.write_clips")
    velocity = tuple(float(v) for v in rec["background_velocity"])
    return Clip(frames, masks, labels, objects, rec["caption"], float(rec["background_drift"]),
                (velocity[0], velocity[1]), int(rec["seed"]), index["config"])
