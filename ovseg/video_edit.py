"""Video editing: ``remove`` / ``replace`` / ``style`` on every frame of a clip (issue #21, part 4).

>>> from ovseg import OpenVocabSegmentationPipeline
>>> from ovseg.video_edit import edit_video
>>> pipe = OpenVocabSegmentationPipeline()
>>> result = edit_video(pipe, "clip.mp4", "red circle", "remove")      # track, then inpaint every frame
>>> result.frames.shape, result.counts                                  # (T, H, W, 3) uint8, what each frame did
>>> result.save("out/clip")                                             # edited.mp4, masks/, result.json

What happens:

1. **Masks.** :func:`ovseg.video.segment_video` tracks ``text_prompt`` (the image pipeline on keyframes, SAM 2's video
   predictor in between), or the caller passes the per-frame masks (``masks=``: a
   :class:`~ovseg.video.VideoSegmentationResult`, (T, H, W) integer id maps or (T, H, W) bool masks). ``objects``
   chooses which tracked ids are edited (default all of them).
2. **Edits.** Every frame whose mask is non-empty goes through the pipeline's inpainting stage, the same
   :class:`~ovseg.inpaint.Inpainter` the image ``remove`` / ``replace`` / ``style`` use (same prompts, same mask
   preparation: dilation, then blur, :func:`~ovseg.inpaint.prepare_mask`), and is composited over the input with that
   soft mask ``m``: ``out = rint(in * (1 - m) + fill * m)``. Every pixel where ``m == 0`` is the input's, exactly;
   frames without a mask are the input frames. ``remove`` edits the union of the chosen objects in one edit;
   ``replace`` and ``style`` edit one object at a time (each its own region), in id order.
3. **Against flicker** (``strategy``, :data:`STRATEGIES`):

   * ``independent``: a fresh diffusion seed per frame (``seed + t``): frames are edited as unrelated images (the
     baseline every other strategy is measured against);
   * ``fixed-noise``: the same seed, hence the same initial latent noise, on every frame;
   * ``reuse`` (``remove`` only): where the background is static, fill the object's pixels from frames that show
     them: the nearest frames (before *and* after, up to ``window`` away) in which a pixel lies outside the object
     give its real background, accepted only when the two frames agree on the unmasked surroundings (a ``ring`` of
     pixels around the object; mean absolute difference at most ``static_threshold`` levels). Pixels no frame reveals
     reuse the previous frame's model fill (a fill plate, forgotten when consecutive frames disagree on the ring);
     only pixels with neither run the model (fixed seed), on the frame with everything found so far pasted in. On a
     static background the model then runs on a few frames only, and behind a moving object most of the fill is the
     true background (see :class:`_Reuse`).

   The default (:data:`DEFAULT_STRATEGY`) was chosen by measurement on the mini-world video *dev* split
   (:func:`measure_strategies`, ``python scripts/video_edit_dev.py``): see the table there and in the report of
   issue #21. ``replace`` and ``style`` paint something that moves with the object, so a static plate does not apply
   to them: their default is ``fixed-noise``.

Memory. The input frames are held (tracking needs the whole clip: :func:`ovseg.video.read_video` decodes it). The
edited frames are produced one at a time (:func:`iter_edits`); :func:`edit_video` keeps them (``keep_frames``), while
``edit_video(..., out_dir=DIR)`` (what the CLI runs) streams them into ``DIR/edited.mp4`` as they are made and keeps
none, so editing adds O(H x W) memory, not O(T x H x W). The per-frame masks are kept as (T, H, W) uint8.

Importing this module is cheap: torch, diffusers, PyAV and OpenCV are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, NoMatchWarning
from .video import DEFAULT_KEYFRAME_EVERY

__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "VideoEditConfig", "VideoEditResult", "NoObjectError", "edit_video",
           "iter_edits", "select_regions", "measure_strategies", "StrategyMeasurement", "dev_removal_clips"]

#: Flicker strategies (see the module docstring).
STRATEGIES = ("independent", "fixed-noise", "reuse")
#: Default strategy per operation: ``reuse`` for remove, chosen on the video dev split (``python
#: scripts/video_edit_dev.py``: 4 static clips x 12 frames, mini profile, 50 steps; flicker 3.02 [1.61, 4.54] levels vs
#: 3.63 fixed-noise and 8.99 independent, 3.85x [2.34, 5.97] below independent, inside PSNR 22.3 [19.7, 25.0] dB vs
#: 21.9 / 22.1, half the model calls); ``fixed-noise`` for replace / style, whose fill moves with the object (a static
#: plate does not apply).
DEFAULT_STRATEGY = {"remove": "reuse", "replace": "fixed-noise", "style": "fixed-noise"}
#: Largest diffusion seed (as :data:`ovseg.inpaint.MAX_SEED`); ``independent`` wraps ``seed + t`` around it.
_MAX_SEED = 2**63 - 1


class NoObjectError(InputError):
    """The prompt matched no object in any keyframe (or the masks given are empty in every frame): nothing to edit.
    The CLI exits 1 (not 2) on it and writes nothing, as ``segment`` does for a video."""


# ---- settings -----------------------------------------------------------------------------------------------

@dataclass
class VideoEditConfig:
    """Settings of :func:`edit_video` (recorded in ``result.json``)."""

    # "remove", "replace" or "style" (ovseg.inpaint.OPERATIONS).
    operation: str = "remove"
    # Flicker strategy (STRATEGIES); None = DEFAULT_STRATEGY[operation].
    strategy: str | None = None
    # Diffusion seed of frame 0 (and of every frame but with "independent"); None = the config's inpainting.seed.
    seed: int | None = None
    # Denoising steps per edit; None = the config's inpainting.num_inference_steps.
    num_inference_steps: int | None = None
    # Which tracked objects are edited: "all" (every id), "best" (the id whose detection scored highest), or a list of
    # ids (values of the id maps).
    objects: str | list[int] = "all"
    # reuse: width in px of the ring of pixels just outside the object (grown by 2 px) on which two frames are
    # compared to decide that the background did not change between them.
    ring: int = 4
    # reuse: two frames show the same background when their mean absolute difference on that ring is at most this
    # many grey levels (the mini world's sensor noise, std 1, gives about 1.1 between two frames).
    static_threshold: float = 3.0
    # reuse: how many frames before and after a frame are searched for real background behind its object.
    window: int = 24
    # Tracking (ovseg.video.segment_video) when no masks are given: keyframe interval and detections per keyframe.
    keyframe_every: int = DEFAULT_KEYFRAME_EVERY
    top_k: int = 5
    # Longest clip accepted, frames (ovseg.video.DEFAULT_MAX_FRAMES; every input frame is held in memory).
    max_frames: int = 2000

    def validate(self) -> "VideoEditConfig":
        """Check every field; raise :class:`~ovseg.errors.InputError` (rule, value, fix). Returns ``self``."""
        from .inpaint import OPERATIONS, check_seed

        if self.operation not in OPERATIONS:
            raise InputError("operation must be one of " + ", ".join(OPERATIONS), repr(self.operation),
                             "pass operation='remove' (or replace / style with an edit prompt)")
        if self.strategy is not None and self.strategy not in STRATEGIES:
            raise InputError("strategy must be one of " + ", ".join(STRATEGIES) + " (or None for the default)",
                             repr(self.strategy), f"pass e.g. strategy={DEFAULT_STRATEGY['remove']!r}")
        if self.strategy == "reuse" and self.operation != "remove":
            raise InputError("strategy 'reuse' (a static background plate) applies to remove only: replace and style "
                             "paint something that moves with the object", f"strategy='reuse' with {self.operation}",
                             "use strategy='fixed-noise' (the default for replace / style)")
        check_seed(self.seed)
        steps = self.num_inference_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise InputError("num_inference_steps must be an integer >= 1 or None", repr(steps), "pass e.g. 50")
        obj = self.objects
        if isinstance(obj, str):
            if obj not in ("all", "best"):
                raise InputError("objects must be 'all', 'best' or a list of object ids", repr(obj),
                                 "pass objects='all' or e.g. objects=[1]")
        elif not (isinstance(obj, (list, tuple)) and obj and all(
                not isinstance(k, bool) and isinstance(k, (int, np.integer)) and 1 <= k <= 255 for k in obj)):
            raise InputError("objects must be 'all', 'best' or a non-empty list of object ids in 1..255", repr(obj),
                             "pass objects='all' or e.g. objects=[1, 2]")
        for name, lo in (("ring", 1), ("window", 0), ("keyframe_every", 1), ("top_k", 1), ("max_frames", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise InputError(f"{name} must be an integer >= {lo}", repr(v),
                                 f"pass e.g. {name}={getattr(VideoEditConfig, name)}")
        v = self.static_threshold
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (
                math.isfinite(float(v)) and v >= 0):
            raise InputError("static_threshold must be a finite number >= 0 (grey levels)", repr(v),
                             "pass e.g. static_threshold=3.0")
        return self

    @property
    def resolved_strategy(self) -> str:
        """The strategy that runs: ``strategy``, or the operation's default."""
        return self.strategy if self.strategy is not None else DEFAULT_STRATEGY[self.operation]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["objects"] = list(self.objects) if not isinstance(self.objects, str) else self.objects
        d["strategy"] = self.resolved_strategy
        return d


# ---- the result -------------------------------------------------------------------------------------------------

@dataclass
class VideoEditResult:
    """Output of :func:`edit_video`. T frames of H x W pixels."""

    text_prompt: str  # the object prompt (what was tracked; for remove also the object's name)
    operation: str  # "remove", "replace" or "style"
    edit_prompt: str | None  # what replace / style painted; None for remove
    frames: np.ndarray | None  # (T, H, W, 3) uint8 RGB edited frames; None when streamed to a folder (out_dir)
    # (T, H, W) uint8: the soft repaint mask of each frame, round(255 m) (0 = kept: such pixels equal the input exactly;
    # 255 = fully repainted); the maximum over the frame's edits
    edit_masks: np.ndarray
    id_maps: np.ndarray  # (T, H, W) uint8: the objects edited (0 = background, k = object id k)
    ids: list[int]  # the object ids edited
    # per frame: {"frame", "ids" (edited on it), "action" ("inpainted" | "reused" | "unchanged"), "seed" (of its
    # model call, None when none ran), "masked_px" (pixels with m > 0)}
    per_frame: list[dict[str, Any]]
    settings: dict[str, Any]  # VideoEditConfig.to_dict()
    counts: dict[str, int] = field(default_factory=dict)  # frames inpainted / reused / unchanged, model calls
    timings: dict[str, float] = field(default_factory=dict)  # seconds: track, edit, total
    fps: float | None = None  # of the source video (None: unknown)
    source: str | None = None  # the file / folder read, when frames came from a path
    tracking: dict[str, Any] | None = None  # the tracking result's record (VideoSegmentationResult.to_dict) or None
    profile: str | None = None  # "mini" / "full" of the pipeline
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stage that ran: name, sha256
    config: dict[str, Any] | None = None  # the pipeline's effective configuration
    files: list[str] = field(default_factory=list)  # written by save / out_dir, relative to the folder

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no arrays): what ``result.json`` holds."""
        t, h, w = self.edit_masks.shape
        return {"text_prompt": self.text_prompt, "operation": self.operation, "edit_prompt": self.edit_prompt,
                "n_frames": t, "size": [w, h], "fps": self.fps, "source": self.source, "ids": self.ids,
                "strategy": self.settings.get("strategy"), "settings": self.settings, "counts": self.counts,
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()}, "frames": self.per_frame,
                "tracking": self.tracking, "profile": self.profile, "models": self.models, "config": self.config,
                "mask_encoding": "masks/NNNNN.png: palette PNG (DAVIS palette), value k = edited object id k, "
                                 "0 = background", "files": self.files}

    def save(self, out_dir: str | os.PathLike, fps: float | None = None) -> list[Path]:
        """Write ``edited.mp4`` (:func:`ovseg.video.write_video`, at ``fps`` or the source's rate or 24),
        ``masks/00000.png ...`` (the edited objects' ids, :func:`ovseg.video.write_id_masks`) and ``result.json``
        (:meth:`to_dict`, written last: its presence marks a complete folder). Every file is written atomically; if
        this call created the folder and fails, what it wrote is removed again.

        Returns:
            The paths written, ``result.json`` last.

        Raises:
            InputError: a result without frames (streamed: it was saved while editing), ``out_dir`` a file or link.
        """
        if self.frames is None:
            raise InputError("saving a video edit needs its frames", "frames=None (streamed to a folder already)",
                             "run edit_video with keep_frames=True, or use the folder it streamed to")
        return _write_folder(out_dir, self, iter(self.frames), fps)


def _write_folder(out_dir: str | os.PathLike, result: VideoEditResult, frames: Iterator[np.ndarray],
                  fps: float | None, before_json: Any = None) -> list[Path]:
    """edited.mp4 (from ``frames``, consumed one by one), masks/, then ``before_json()`` (if given) and result.json;
    what this call wrote is removed again on failure when it created the folder."""
    from .io import check_output_dir, write_json_atomic
    from .video import DEFAULT_FPS, _check_fps, _real_folder, remove_partial_folder, write_id_masks, write_video

    rate = _check_fps(fps) if fps is not None else (result.fps or DEFAULT_FPS)
    out = _real_folder(check_output_dir(out_dir), "an output folder")
    created = not out.exists()
    written: list[Path] = []
    try:
        written.append(write_video(out / "edited.mp4", frames, rate))
        written += write_id_masks(out, result.id_maps)
        if before_json is not None:
            before_json()
        result.files = [p.relative_to(out).as_posix() for p in written] + ["result.json"]
        written.append(write_json_atomic(out / "result.json", result.to_dict()))
    except BaseException:
        if created:
            remove_partial_folder(out, written)
        raise
    return written


# ---- masks ----------------------------------------------------------------------------------------------------

def select_regions(masks: Any, n_frames: int, shape: tuple[int, int], objects: str | Sequence[int] = "all",
                   scores: dict[int, float] | None = None,
                   memory_mb: float | None = None) -> tuple[np.ndarray, list[int]]:
    """The id maps of the objects to edit.

    Args:
        masks: a :class:`~ovseg.video.VideoSegmentationResult`, (T, H, W) integer id maps (0 = background) or
            (T, H, W) bool masks (one object, id 1).
        n_frames, shape: the clip's T and (H, W).
        objects: "all", "best" (the id of highest ``scores``; the lowest id without scores) or a list of ids.
        scores: {id: detection score} for "best".
        memory_mb: a new id map above this many MiB is a temporary file's map (:func:`ovseg.video.clip_array`).

    Returns:
        ``(id_maps, ids)``: (T, H, W) uint8 with only the chosen ids kept (others 0), and the chosen ids present.

    Raises:
        InputError: wrong shape or dtype, ids not in the masks.
    """
    from .video import VideoSegmentationResult

    if isinstance(masks, VideoSegmentationResult):
        scores = {o.id: o.score for o in masks.objects} if scores is None else scores
        masks = masks.id_maps
    if not isinstance(masks, np.ndarray) or masks.ndim != 3:
        raise InputError("masks must be a (T, H, W) bool or integer array, or a VideoSegmentationResult",
                         f"{type(masks).__name__} {getattr(masks, 'shape', '')}",
                         "pass segment_video's result, its id_maps, or one (H, W) mask per frame")
    if masks.shape != (n_frames, *shape):
        raise InputError("there must be one mask per frame, at the frames' size",
                         f"masks {masks.shape}, frames ({n_frames}, {shape[0]}, {shape[1]})",
                         "pass the masks computed on these frames")
    from .video import clip_array

    if masks.dtype == np.bool_:
        ids_map = clip_array(masks.shape, np.uint8, memory_mb)  # frame by frame: a long clip's copy stays out of RAM
        for t in range(masks.shape[0]):
            ids_map[t] = masks[t]
    elif np.issubdtype(masks.dtype, np.integer):
        if masks.size and (int(masks.min()) < 0 or int(masks.max()) > 255):
            raise InputError("object ids must be in [0, 255]", f"ids from {int(masks.min())} to {int(masks.max())}",
                             "renumber the objects")
        ids_map = masks.astype(np.uint8, copy=False)
    else:
        raise InputError("masks must hold bools or integer ids", f"dtype {masks.dtype}",
                         "convert them, e.g. masks > 0 or masks.astype(np.uint8)")
    counts = np.zeros(256, np.int64)
    for frame in ids_map:  # per frame: np.unique would sort a copy of the whole clip
        counts += np.bincount(frame.ravel(), minlength=256)
    present = [int(k) for k in np.flatnonzero(counts) if k != 0]
    if isinstance(objects, str):
        if objects == "all" or not present:
            chosen = present
        else:  # best
            chosen = [max(present, key=lambda k: ((scores or {}).get(k, 0.0), -k))]
    else:
        chosen = sorted({int(k) for k in objects})
        missing = [k for k in chosen if k not in present]
        if missing:
            raise InputError("objects must name ids present in the masks", f"{missing} (present: {present})",
                             "pick ids from the masks (result.json's objects), or objects='all'")
    if chosen != present:
        keep = np.isin(np.arange(256), chosen)  # id -> kept
        out = clip_array(ids_map.shape, np.uint8, memory_mb)
        for t in range(ids_map.shape[0]):
            out[t] = np.where(keep[ids_map[t]], ids_map[t], 0)
        ids_map = out
    return ids_map, chosen


# ---- the per-frame loop -------------------------------------------------------------------------------------------

def _ring(region: np.ndarray, width: int) -> np.ndarray:
    """(H, W) bool: pixels within ``width`` px of ``region`` but outside it."""
    import cv2

    size = 2 * int(width) + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(region.astype(np.uint8), kernel).astype(bool) & ~region


class _Reuse:
    """The ``reuse`` strategy's per-frame fill (remove only; see the module docstring).

    For frame t the object's *core* (its mask grown by 2 px, so its anti-aliased rim is inside) is what must be
    filled. Its pixels are taken, nearest frame first (t-1, t+1, t-2, ... up to ``window`` frames away), from frames
    where they lie outside that frame's core (real background seen there), provided the background did not change
    between the two frames: the frames agree on the ring of pixels just outside frame t's core that both see (mean
    absolute difference at most ``static_threshold`` levels). Pixels no frame reveals come from the fill plate (the
    last model fill there, while the background stayed static from frame to frame) and, where it has none, from one
    model call (the fixed seed) on the frame with every pixel found so far pasted in; that fill goes into the plate.
    """

    def __init__(self, frames: np.ndarray, regions: np.ndarray, cfg: VideoEditConfig, window: int):
        self.frames = frames  # (T, H, W, 3) uint8
        self.regions = regions  # (T, H, W) bool: the object to remove, per frame
        self.cfg = cfg
        self.window = int(window)
        h, w = regions.shape[1:]
        self.plate = np.zeros((h, w, 3), np.float32)  # model fills, values in [0, 255]
        self.plate_known = np.zeros((h, w), bool)
        self._cores: dict[int, np.ndarray] = {}

    def core(self, t: int) -> np.ndarray:
        """(H, W) bool: frame t's object grown by 2 px (cached for the frames within the window)."""
        from .inpaint import _dilate

        if t not in self._cores:
            if len(self._cores) > 4 * self.window + 8:
                for k in [k for k in self._cores if abs(k - t) > self.window + 1]:
                    del self._cores[k]
            self._cores[t] = _dilate(self.regions[t], 2)
        return self._cores[t]

    def static(self, s: int, t: int, ring: np.ndarray) -> bool:
        """Frames s and t agree on the ring pixels that neither's core covers."""
        both = ring & ~self.core(s)
        if int(both.sum()) < 8:
            return False
        diff = np.abs(self.frames[s][both].astype(np.float32) - self.frames[t][both].astype(np.float32))
        return float(diff.mean()) <= float(self.cfg.static_threshold)

    def fill(self, t: int, inpainter: Any, object_prompt: str | None, seed: int) -> tuple[np.ndarray, bool]:
        """The fill image of frame t: (H, W, 3) float32 in [0, 255], the frame outside its core; and whether the
        model ran."""
        frame = self.frames[t]
        core = self.core(t)
        fill = frame.astype(np.float32)
        remaining = core.copy()
        ring = _ring(core, self.cfg.ring)
        n = self.frames.shape[0]
        # 1. real background from the nearest frames that reveal it
        for d in range(1, self.window + 1):
            for s in (t - d, t + d):
                if not 0 <= s < n:
                    continue
                avail = remaining & ~self.core(s)
                if avail.any() and self.static(s, t, ring):
                    fill[avail] = self.frames[s][avail]
                    remaining &= ~avail
            if not remaining.any():
                break
        # 2. the plate's earlier fills (kept only while consecutive frames agree: see step 4)
        usable = remaining & self.plate_known
        fill[usable] = self.plate[usable]
        remaining &= ~usable
        if not remaining.any():
            return fill, False
        # 3. the model on what is left, with everything found so far pasted in as context
        context = np.where(core[..., None], np.clip(np.rint(fill), 0, 255), frame).astype(np.uint8)
        res = inpainter.edit(context, remaining, "remove", object_prompt=object_prompt, seed=seed,
                             num_inference_steps=self.cfg.num_inference_steps)
        from .inpaint import _dilate

        out = np.asarray(res.image, dtype=np.float32)
        fill[remaining] = out[remaining]
        # the plate keeps the fill a little beyond these pixels (the inpainter's dilation), so that the object's
        # small changes of outline from frame to frame find plate pixels instead of calling the model again
        grown = _dilate(remaining, max(1, int(inpainter.config.mask_dilation)))
        self.plate[grown] = out[grown]
        self.plate_known |= grown
        return fill, True

    def advance(self, t: int) -> None:
        """Before frame t (> 0): forget the plate if the background changed since frame t-1 (ring of frame t)."""
        if t > 0 and self.plate_known.any():
            core = self.core(t)
            ring = _ring(core if core.any() else self.core(t - 1), self.cfg.ring)
            if not self.static(t - 1, t, ring):
                self.plate_known[:] = False


def iter_edits(inpainter: Any, frames: np.ndarray, id_maps: np.ndarray, ids: Sequence[int], cfg: VideoEditConfig,
               object_prompt: str | None, edit_prompt: str | None, seed: int,
               records: list[dict[str, Any]] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Edit the frames one at a time (the loop of :func:`edit_video`; validated inputs).

    Args:
        inpainter: an :class:`~ovseg.inpaint.Inpainter` (its config's dilation / blur / prompts apply).
        frames: (T, H, W, 3) uint8 RGB input.
        id_maps: (T, H, W) uint8, the objects to edit (0 = background).
        ids: the object ids to edit (present in ``id_maps``).
        cfg: validated settings (``cfg.resolved_strategy`` runs).
        object_prompt: the object's name (remove: the inpainter may name it in the negative prompt).
        edit_prompt: replace / style: what to paint.
        seed: seed of frame 0.
        records: a list that receives one dict per frame (action, seed, masked pixels), appended as frames are made.

    Yields:
        ``(edited, mask)`` per frame: (H, W, 3) uint8 RGB and (H, W) uint8 round(255 m), 0 where the input is kept
        exactly.
    """
    from .inpaint import prepare_mask

    strategy = cfg.resolved_strategy
    icfg = inpainter.config
    n, h, w = id_maps.shape
    reuse = _Reuse(frames, np.isin(id_maps, list(ids)), cfg, cfg.window) if strategy == "reuse" else None
    for t in range(n):
        frame = frames[t]
        present = [k for k in ids if (id_maps[t] == k).any()]
        if reuse is not None:
            reuse.advance(t)
        if not present:
            if records is not None:
                records.append({"frame": t, "ids": [], "action": "unchanged", "seed": None, "masked_px": 0})
            yield frame.copy(), np.zeros((h, w), np.uint8)
            continue
        frame_seed = (seed + t) % (_MAX_SEED + 1) if strategy == "independent" else seed
        groups = [np.isin(id_maps[t], present)] if cfg.operation == "remove" else [id_maps[t] == k for k in present]
        soft = np.zeros((h, w), np.float32)
        out = frame
        action = "inpainted"
        if reuse is not None:
            m = prepare_mask(groups[0], icfg.mask_dilation, icfg.mask_blur if icfg.method == "diffusion" else 0.0)
            fill, ran = reuse.fill(t, inpainter, object_prompt, frame_seed)
            action = "inpainted" if ran else "reused"
            blended = frame.astype(np.float32) * (1.0 - m[..., None]) + fill * m[..., None]
            out, soft = np.clip(np.rint(blended), 0, 255).astype(np.uint8), m
        else:
            for g in groups:  # remove: one union edit; replace / style: one edit per object, in id order
                res = inpainter.edit(out, g, cfg.operation, edit_prompt=edit_prompt, object_prompt=object_prompt,
                                     seed=frame_seed, num_inference_steps=cfg.num_inference_steps)
                out, soft = np.asarray(res.image, dtype=np.uint8), np.maximum(soft, res.mask)
        mask_u8 = np.rint(np.clip(soft, 0.0, 1.0) * 255).astype(np.uint8)
        # the contract: a pixel whose stored mask is 0 (m < 1/510) is the input's; the composite rounds such pixels
        # back to the input already, this makes it hold whatever the inpainter did
        keep = mask_u8 == 0
        if keep.any():
            out = np.where(keep[..., None], frame, out).astype(np.uint8)
        if records is not None:
            records.append({"frame": t, "ids": present, "action": action,
                            "seed": frame_seed if action == "inpainted" and icfg.method == "diffusion" else None,
                            "masked_px": int((~keep).sum())})
        yield out, mask_u8

# ---- the entry point ------------------------------------------------------------------------------------------------

def _no_object(prompt: str, where: str) -> NoObjectError:
    return NoObjectError("the prompt must match an object in at least one keyframe to edit a video",
                         f"{prompt!r} {where}", "try another wording, a smaller keyframe_every (--keyframe-every), or "
                         "a lower alignment.similarity_threshold (--set alignment.similarity_threshold=0.1); nothing "
                         "was written")


def edit_video(pipe: Any, frames: Any, text_prompt: str, operation: str = "remove", edit_prompt: str | None = None, *,
               strategy: str | None = None, seed: int | None = None, num_inference_steps: int | None = None,
               objects: str | Sequence[int] = "all", masks: Any = None, keyframe_every: int | None = None, top_k: int = 5,
               ring: int = 4, static_threshold: float = 3.0, window: int = 24, max_frames: int | None = None,
               predictor: Any = None,
               progress: bool = False, keep_frames: bool = True, out_dir: str | os.PathLike | None = None,
               fps: float | None = None, memory_mb: float | None = None) -> VideoEditResult:
    """Remove, replace or restyle the object ``text_prompt`` names in every frame of a clip.

    Args:
        pipe: an :class:`~ovseg.pipeline.OpenVocabSegmentationPipeline` (its ``inpainter`` edits; its ``segment`` and
            SAM 2 video predictor track when ``masks`` is None).
        frames: (T, H, W, 3) uint8 RGB, a list of (H, W, 3) uint8 frames, or a video file / frame folder path
            (:func:`ovseg.video.read_video`).
        text_prompt: the object to edit, e.g. ``"red circle"`` (tracked when ``masks`` is None; for remove also its
            name for the inpainter's negative prompt, as for images).
        operation: ``"remove"``, ``"replace"`` or ``"style"``.
        edit_prompt: what replace / style paint (required for them, ignored by remove).
        strategy, seed, num_inference_steps, objects, ring, static_threshold, window, keyframe_every, top_k,
            max_frames:
            :class:`VideoEditConfig` (``max_frames`` None: :data:`ovseg.video.DEFAULT_MAX_FRAMES`).
        masks: the objects' per-frame masks instead of tracking: a :class:`~ovseg.video.VideoSegmentationResult`,
            (T, H, W) integer id maps or (T, H, W) bool.
        predictor: sam2 video predictor for tracking (default :func:`ovseg.video.video_predictor_for`).
        progress: tqdm bars over the frames (tracking, then editing; stderr).
        keep_frames: keep the edited frames in the result (``result.frames``).
        out_dir: stream the edited frames into ``out_dir/edited.mp4`` as they are made, then write ``masks/`` and
            ``result.json`` (:meth:`VideoEditResult.save`'s folder); with it the result keeps no frames.
        fps: frame rate of ``edited.mp4`` (default the source's, else 24).
        memory_mb: clip-sized arrays (a clip read from a path, id maps, edit masks, kept frames) above this many MiB
            are kept in temporary files (:func:`ovseg.video.clip_array`; default :data:`ovseg.video.FRAME_MEMORY_MB`).

    Returns:
        :class:`VideoEditResult`: every pixel whose ``edit_masks`` value is 0 equals the input exactly.

    Raises:
        InputError: a bad setting, prompt, clip (unreadable, no frames, more than ``max_frames``: the error has a
            ``max_frames`` attribute), masks of the wrong shape. :class:`NoObjectError` (an InputError): nothing to
            edit (the prompt matched no object in any keyframe, or the masks are empty); nothing is written.
    """
    from .features import check_prompts
    from .inpaint import check_seed
    from .video import DEFAULT_MAX_FRAMES, _check_max_frames, _check_video_array, _too_long, read_video

    start = time.perf_counter()
    # 1. every setting before any model or file is touched
    if not isinstance(text_prompt, str):
        raise InputError("edit_video takes one text prompt (a str)", type(text_prompt).__name__,
                         "run edit_video once per object prompt")
    prompt = check_prompts(text_prompt)[0]
    max_frames = _check_max_frames(DEFAULT_MAX_FRAMES if max_frames is None else max_frames)
    cfg = VideoEditConfig(operation, strategy, check_seed(seed), num_inference_steps,
                          list(objects) if not isinstance(objects, str) else objects, ring, static_threshold, window,
                          DEFAULT_KEYFRAME_EVERY if keyframe_every is None else keyframe_every, top_k,
                          max_frames).validate()
    if operation != "remove":
        if edit_prompt is None or not str(edit_prompt).strip():
            raise InputError(f"{operation} needs an edit prompt describing the new content", repr(edit_prompt),
                             'pass edit_prompt="..." (CLI: --edit "...")')
        edit_prompt = check_prompts(edit_prompt)[0]
    else:
        edit_prompt = None
    if out_dir is not None:
        from .io import check_output_dir
        from .video import _real_folder

        _real_folder(check_output_dir(out_dir), "an output folder")
    # 2. the clip
    source, src_fps = None, None
    if isinstance(frames, (str, os.PathLike)):
        frames, info = read_video(frames, max_frames=max_frames, memory_mb=memory_mb)
        source, src_fps = info.source, info.fps
    frames = _check_video_array(frames)
    n, h, w = frames.shape[:3]
    if n > max_frames:
        raise _too_long("frames", n, max_frames)
    # 3. the masks: given, or tracked
    t0 = time.perf_counter()
    tracking = None
    if masks is None:
        from .video import segment_video

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoMatchWarning)  # said by NoObjectError below
            track = segment_video(pipe, frames, prompt, cfg.keyframe_every, top_k=cfg.top_k, max_frames=max_frames,
                                  predictor=predictor, progress=progress, keep_frames=False, memory_mb=memory_mb)
        if track.empty:
            raise _no_object(prompt, f"matched no object in any of the {len(track.keyframes)} keyframe(s) of {n} "
                                      f"frames ({track.counts.get('detections', 0)} detection(s))")
        tracking, masks = track, track
    t_track = time.perf_counter() - t0
    id_maps, ids = select_regions(masks, n, (h, w), cfg.objects, memory_mb=memory_mb)
    if not ids or not id_maps.any():
        raise _no_object(prompt, f"has an empty mask in all {n} frames")
    # 4. the inpainter (loads the model), then the frames
    inpainter = pipe.inpainter
    frame_seed = inpainter.config.seed if cfg.seed is None else cfg.seed
    records: list[dict[str, Any]] = []
    from .video import _bar, clip_array

    bar = _bar(n, progress, f"ovseg {cfg.operation}")
    edit_masks = clip_array((n, h, w), np.uint8, memory_mb)  # (T, H, W); a temporary file's map when large
    kept = clip_array(frames.shape, np.uint8, memory_mb) if keep_frames and out_dir is None else None
    t_edit = [0.0]

    def produce() -> Iterator[np.ndarray]:
        t1 = time.perf_counter()
        for t, (edited, m) in enumerate(iter_edits(inpainter, frames, id_maps, ids, cfg, prompt, edit_prompt,
                                                  frame_seed, records)):
            edit_masks[t] = m
            if kept is not None:
                kept[t] = edited
            bar.update(1)
            if progress:
                bar.set_postfix_str(records[-1]["action"])
            yield edited
        t_edit[0] = time.perf_counter() - t1

    settings = cfg.to_dict() | {"seed": frame_seed,
                                "num_inference_steps": cfg.num_inference_steps or inpainter.config.num_inference_steps,
                                "mask_dilation": inpainter.config.mask_dilation,
                                "mask_blur": inpainter.config.mask_blur, "method": inpainter.config.method}
    result = VideoEditResult(prompt, cfg.operation, edit_prompt, None, edit_masks, id_maps, ids, records, settings,
                             fps=src_fps if fps is None else fps, source=source,
                             tracking=_tracking_record(tracking), profile=getattr(pipe.config, "profile", None),
                             models=_models(pipe, tracking), config=_effective_config(pipe))
    def finish() -> None:
        _finish(result, t_track, t_edit[0], time.perf_counter() - start)

    try:
        if out_dir is not None:
            _write_folder(out_dir, result, produce(), fps, finish)  # finish() runs before result.json is written
        else:
            for _ in produce():
                pass
            finish()
    finally:
        bar.close()
    result.frames = kept
    return result


def _finish(result: VideoEditResult, t_track: float, t_edit: float, total: float) -> None:
    actions = [r["action"] for r in result.per_frame]
    result.counts = {"frames": len(actions), "inpainted": actions.count("inpainted"), "reused": actions.count("reused"),
                     "unchanged": actions.count("unchanged"),
                     "model_calls": sum(len(r["ids"]) if result.operation != "remove" else 1
                                        for r in result.per_frame if r["action"] == "inpainted")}
    result.timings = {"track": t_track, "edit": t_edit, "total": total}


def _tracking_record(track: Any) -> dict[str, Any] | None:
    if track is None:
        return None
    d = track.to_dict()
    d.pop("frames", None)  # per-frame scores: long, and in the segment command's own output
    for k in ("profile", "models", "config", "fps", "source"):
        d.pop(k, None)
    return d


def _models(pipe: Any, track: Any) -> dict[str, dict[str, Any]]:
    models = dict(getattr(track, "models", None) or {})
    info = getattr(pipe, "_model_info", None)
    if callable(info):
        with contextlib.suppress(Exception):
            models["inpainting"] = info("inpainting")
    return models


def _effective_config(pipe: Any) -> dict[str, Any] | None:
    config = getattr(pipe, "config", None)
    if config is None:
        return None
    from .pipeline import effective_config

    try:
        return effective_config(config)
    except Exception:  # a stand-in pipeline's config: not recorded
        return None


# ---- measuring the strategies (video dev split only) ----------------------------------------------------------------

@dataclass
class StrategyMeasurement:
    """One strategy's removal scores over dev clips (each list: one value per clip, in clip order)."""

    strategy: str
    clips: list[str]  # clip names
    psnr_inside: list[float]  # dB inside the edit region vs the exact object-free clip
    exact_outside: list[bool]  # every pixel outside the edit region equals the exact clip
    flicker: list[float | None]  # levels; None on a drifting background
    flicker_exact: list[float | None]  # the same measure on the exact object-free clip
    model_calls: list[int]  # inpainting calls per clip
    seconds: list[float]  # editing time per clip

    def summary(self, baseline: "StrategyMeasurement | None" = None) -> dict[str, Any]:
        """Means with 95% bootstrap intervals over clips (:func:`ovseg.stats.bootstrap_mean`); with ``baseline``
        also the paired per-clip flicker ratio baseline / this strategy."""
        from .stats import bootstrap_mean, bootstrap_rate

        out = {"strategy": self.strategy, "n_clips": len(self.clips),
               "psnr_inside_db": bootstrap_mean(self.psnr_inside, "clips").to_dict(3),
               "exact_outside": bootstrap_rate(self.exact_outside).to_dict(3),
               "flicker": bootstrap_mean([f for f in self.flicker if f is not None], "clips").to_dict(3),
               "flicker_exact": bootstrap_mean([f for f in self.flicker_exact if f is not None], "clips").to_dict(3),
               "model_calls_per_clip": float(np.mean(self.model_calls)) if self.model_calls else None,
               "seconds_per_clip": float(np.mean(self.seconds)) if self.seconds else None}
        if baseline is not None:
            ratios = [b / s for b, s in zip(baseline.flicker, self.flicker) if b is not None and s]
            out["flicker_reduction_vs_baseline"] = bootstrap_mean(ratios, "clips").to_dict(3)
        return out


def dev_removal_clips(n_clips: int, n_frames: int = 16, static_only: bool = True) -> list[tuple[Any, int]]:
    """Mini-world video **dev** clips for removal measurements: the first ``n_clips`` seeds of the "video" dev range
    (:data:`ovseg.world.EVAL_SPLITS`; the test range is never touched) whose background is static (when
    ``static_only``: flicker is defined there), rendered with the dev clip config (:func:`ovseg.video_eval.
    dev_clip_config`) cut to ``n_frames`` frames; per clip the object removed: the one with the largest visible area
    summed over the frames.

    Returns:
        ``[(clip, k)]``: :class:`~ovseg.world_video.Clip` and the index of the object to remove.
    """
    from .video_eval import dev_clip_config
    from .world import seed_range
    from .world_video import render_clip

    if isinstance(n_clips, bool) or not isinstance(n_clips, int) or n_clips < 1:
        raise InputError("n_clips must be a positive integer", repr(n_clips), "pass e.g. 4")
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 4:
        raise InputError("n_frames must be an integer >= 4", repr(n_frames), "pass e.g. 16")
    base = dev_clip_config()
    cfg = replace(base, n_frames=n_frames, entry_window=(max(1, n_frames // 4), max(1, n_frames // 3)))
    out: list[tuple[Any, int]] = []
    for s in seed_range("video", "dev").seeds:
        clip = render_clip(s, cfg)
        if static_only and clip.background_drift != 0:
            continue
        areas = clip.instance_masks.sum(axis=(0, 2, 3))  # (K,)
        if not areas.any():
            continue
        out.append((clip, int(np.argmax(areas))))
        if len(out) == n_clips:
            break
    return out


def measure_strategies(pipe: Any, clips: Sequence[tuple[Any, int]], strategies: Sequence[str] = STRATEGIES,
                       seed: int = 0, num_inference_steps: int | None = None,
                       progress: bool = False) -> dict[str, StrategyMeasurement]:
    """Remove the object of each clip with each strategy, using the clip's exact per-frame masks of that object
    (tracking left out: this isolates the editing stage), and score it against the exact object-free clip
    (:func:`ovseg.video_eval.removal_reference`, :func:`ovseg.video_eval.removal_metrics`) inside and outside the
    edit region (the frames' soft masks > 0).

    Args:
        pipe: the pipeline whose inpainter edits.
        clips: ``[(clip, k)]`` (:func:`dev_removal_clips`).
        strategies: names of :data:`STRATEGIES`.
        seed: diffusion seed of frame 0.

    Returns:
        {strategy: :class:`StrategyMeasurement`}.
    """
    from .video_eval import removal_metrics, removal_reference

    out = {s: StrategyMeasurement(s, [], [], [], [], [], [], []) for s in strategies}
    for clip, k in clips:
        exact, obj_mask = removal_reference(clip, k)  # (T, H, W, 3) uint8, (T, H, W) bool
        name = clip.objects[k].class_name
        for s in strategies:
            r = edit_video(pipe, clip.frames, name, "remove", masks=obj_mask, strategy=s, seed=seed,
                           num_inference_steps=num_inference_steps, progress=progress)
            sc = removal_metrics(r.frames, exact, r.edit_masks > 0, clip.background_drift)
            m = out[s]
            m.clips.append(clip.name)
            m.psnr_inside.append(sc.psnr_inside)
            m.exact_outside.append(sc.exact_outside)
            m.flicker.append(sc.flicker)
            m.flicker_exact.append(sc.flicker_exact)
            m.model_calls.append(r.counts["model_calls"])
            m.seconds.append(r.timings["edit"])
    return out
