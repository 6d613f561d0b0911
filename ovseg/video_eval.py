"""Evaluation of text-prompted video segmentation (and the metrics of video object removal).

Metrics (pure numpy; OpenCV for the boundary dilation):

* **J** (region similarity): per frame the IoU of the predicted and the ground-truth mask; a frame where both are
  empty scores 1 (DAVIS).
* **F** (boundary accuracy, DAVIS-2017's ``f_measure``): the one-pixel boundary maps of prediction and ground truth
  (:func:`boundary_map`, DAVIS's ``seg2bmap``) are matched within ``ceil(bound_th * image diagonal)`` pixels (a disk
  dilation, ``bound_th = 0.008``: 2 px at 128 x 128, 8 px at 854 x 480); precision = the share of predicted boundary
  pixels within that distance of a true one, recall = the share of true boundary pixels within that distance of a
  predicted one, F = 2PR / (P + R). Both boundaries empty: P = R = 1; only the true one empty: P = 0, R = 1; only
  the predicted one empty: P = 1, R = 0.
* Per object, J and F are means over *all* frames of the clip (with the conventions above every frame is defined;
  frame 0 is not left out as in semi-supervised DAVIS, since here nothing is given on it); J&F = (J + F) / 2 per
  object, and the reported J&F is the mean over objects (= the mean of J and F over objects).

Matching (per clip and prompt): the predicted ids of :func:`ovseg.video.segment_video` are assigned one-to-one to the
prompt's ground-truth objects by maximising the summed per-object J&F (the Hungarian method, as DAVIS-2017's
unsupervised evaluation does; when there are fewer predicted ids than objects the predictions are padded with empty
masks, so an unmatched object scores as an empty prediction).

* **Late objects found**: of the ground-truth objects not visible in frame 0 that at some frame cover at least
  :data:`~ovseg.world_video.LARGE_FRACTION` (1%) of the frame (``first_large``), the fraction whose matched id
  appears *on the object* (at least one pixel of the id inside the object's mask) no later than ``first_large + K``,
  K = ``late_within`` frames (default: the keyframe interval, the longest a newly visible object can wait for a
  detection). Objects that never reach 1% are not counted.
* **Id switches**: per ground-truth object and frame where it is visible, the predicted id with the most pixels inside
  its mask (ties: the smaller id; frames where no id overlaps it are skipped); every change of that id from the last
  one seen counts one switch (so an object lost and found again under a new id counts one). Reported per clip and
  per 10 clips.

Targets (:func:`class_targets`): every distinct class present in a clip (visible in at least one frame) is one
prompt, its class name, whose ground truth is every object of that class; referring datasets
(:func:`expression_targets`) prompt each expression, whose ground truth is its one object.

Removal (:func:`removal_metrics`, for a later video-editing step): PSNR inside the per-frame edit mask against the
exact object-free clip (``render_clip(seed, cfg, without=k)``, :func:`removal_reference`), PSNR outside it (None and
``exact_outside = True`` when identical), and flicker: the mean absolute change between consecutive frames inside the
mask, measured only where the true background is static (``background_drift == 0``), next to the same measure on the
exact clip.

Runs (:func:`evaluate_video`) append one checksummed JSON line per finished clip to ``OUT/results.jsonl`` (flushed and
fsync'ed; a rerun skips the clips already there) and write the summary ``OUT/video.json`` atomically. Loaders:
:func:`mini_video_clips` (dev: rendered from the "video" dev seed range with the shipped test set's
:class:`~ovseg.world_video.ClipConfig`; test: ``data/mini_world/video_test``), :func:`davis_clips` (DAVIS-2017) and
:func:`referring_clips` (Ref-YouTube-VOS / Ref-DAVIS).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OvsegWarning

__all__ = ["BOUND_TH", "MINI_DEV_CLIPS", "region_similarity", "boundary_map", "boundary_pr", "boundary_f",
           "object_scores", "ObjectScore", "match_objects", "id_switches", "late_found_frame", "first_large_frame",
           "RemovalScores", "removal_metrics", "flicker", "removal_reference", "VideoTarget", "EvalClip", "ClipSource",
           "class_targets", "expression_targets", "default_targets", "evaluate_clip", "evaluate_video", "dev_clip_config",
           "video_test_root", "RETIRED_VIDEO_TEST_SEEDS", "mini_video_clips", "davis_clips", "referring_clips",
           "video_models_identity"]

#: DAVIS's boundary tolerance: a fraction of the image diagonal (ceil'ed to pixels).
BOUND_TH = 0.008
#: The first seeds of the "video" test range that are no longer a test set: the 9 clips shipped until 2026-12-06,
#: consulted for the first tracker (issue #21); the tracker's id-switch settings came after that, so the test set is
#: the next seeds (``data/make_samples.py``'s VIDEO_TEST_CLIPS of them).
RETIRED_VIDEO_TEST_SEEDS = 9

#: Clips of a mini-video dev run without ``max_clips`` (the first seeds of the "video" dev range).
MINI_DEV_CLIPS = 30
#: Format tag of a results.jsonl line (part of the protocol hash).
_FORMAT = "ovseg video eval v1"


# ---- per-frame metrics -----------------------------------------------------------------------------------------

def _mask2d(m: Any, what: str) -> np.ndarray:
    a = np.asarray(m)
    if a.ndim != 2:
        raise InputError(f"{what} must be an (H, W) mask", f"shape {a.shape}", "pass one frame's mask")
    return a.astype(bool, copy=False)


def region_similarity(pred: np.ndarray, gt: np.ndarray) -> float:
    """J of one frame: IoU of ``pred`` and ``gt``, (H, W) bool (any dtype; non-zero = inside). In [0, 1]; 1.0 when
    both are empty (DAVIS)."""
    p, g = _mask2d(pred, "pred"), _mask2d(gt, "gt")
    union = int(np.logical_or(p, g).sum())
    return 1.0 if union == 0 else int(np.logical_and(p, g).sum()) / union


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """DAVIS's ``seg2bmap`` at the mask's own size: (H, W) bool, True on the pixels of ``mask`` ((H, W), non-zero =
    inside) whose right, lower or lower-right neighbour differs (the last row and column compare with the in-image
    neighbour only, so a mask touching the right or bottom border has a boundary there too)."""
    seg = _mask2d(mask, "mask")
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def _disk(radius: int) -> np.ndarray:
    """skimage's ``disk(radius)``: (2r + 1, 2r + 1) uint8, 1 where x^2 + y^2 <= r^2."""
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.uint8)


def _bound_pixels(shape: tuple[int, ...], bound_th: float) -> int:
    """The tolerance in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)`` (DAVIS)."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * float(np.linalg.norm(shape[:2]))))


def _dilate(b: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    if radius <= 0:
        return b.copy()
    return cv2.dilate(b.astype(np.uint8), _disk(radius)).astype(bool)


def _pr_counts(n_fg: int, n_gt: int, fg_match: int, gt_match: int) -> tuple[float, float, float]:
    """(precision, recall, F) from boundary pixel counts, with DAVIS's empty-boundary conventions."""
    if n_fg == 0 and n_gt > 0:
        p, r = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        p, r = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        p, r = 1.0, 1.0
    else:
        p, r = fg_match / n_fg, gt_match / n_gt
    return p, r, (0.0 if p + r == 0 else 2 * p * r / (p + r))


def boundary_pr(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> tuple[float, float, float]:
    """Boundary (precision, recall, F) of one frame (DAVIS-2017 ``f_measure``): ``pred`` and ``gt`` (H, W) bool;
    ``bound_th`` < 1 is a fraction of the image diagonal, >= 1 pixels. Each in [0, 1]."""
    p, g = _mask2d(pred, "pred"), _mask2d(gt, "gt")
    if p.shape != g.shape:
        raise InputError("pred and gt must have the same (H, W)", f"{p.shape} vs {g.shape}", "resize one of them")
    r = _bound_pixels(p.shape, bound_th)
    fb, gb = boundary_map(p), boundary_map(g)
    return _pr_counts(int(fb.sum()), int(gb.sum()), int((fb & _dilate(gb, r)).sum()), int((gb & _dilate(fb, r)).sum()))


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """F of one frame: :func:`boundary_pr`'s F, in [0, 1]."""
    return boundary_pr(pred, gt, bound_th)[2]


# ---- per-object scores and matching --------------------------------------------------------------------------

@dataclass
class ObjectScore:
    """J and F of one ground-truth object over a clip of T frames."""

    j: float  # mean J over the T frames, in [0, 1]
    f: float  # mean F over the T frames, in [0, 1]
    j_frames: np.ndarray  # (T,) float64 J per frame
    f_frames: np.ndarray  # (T,) float64 F per frame

    @property
    def jf(self) -> float:
        """(J + F) / 2, in [0, 1]."""
        return (self.j + self.f) / 2


def _check_stack(a: Any, what: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 3:
        raise InputError(f"{what} must be a (T, H, W) array", f"shape {arr.shape}", "stack the frames' masks")
    return arr


def object_scores(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> ObjectScore:
    """J and F of one object: ``pred`` and ``gt`` (T, H, W) bool (non-zero = inside), every frame counted."""
    p, g = _check_stack(pred, "pred").astype(bool), _check_stack(gt, "gt").astype(bool)
    if p.shape != g.shape:
        raise InputError("pred and gt must have the same (T, H, W)", f"{p.shape} vs {g.shape}", "align the clips")
    jf = np.array([region_similarity(a, b) for a, b in zip(p, g)], np.float64)
    ff = np.array([boundary_f(a, b, bound_th) for a, b in zip(p, g)], np.float64)
    return ObjectScore(float(jf.mean()), float(ff.mean()), jf, ff)


def _hungarian(cost: np.ndarray) -> list[int]:
    """Minimum-cost assignment of the rows of ``cost`` (n, m), n <= m, to distinct columns: the column of each row
    (the O(n^2 m) Kuhn-Munkres with potentials)."""
    n, m = cost.shape
    inf = float("inf")
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    p, way = [0] * (m + 1), [0] * (m + 1)
    for i in range(1, n + 1):
        p[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = float(cost[i0 - 1, j - 1]) - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
    out = [-1] * n
    for j in range(1, m + 1):
        if p[j]:
            out[p[j] - 1] = j - 1
    return out


def match_objects(pred_ids: np.ndarray, gt_masks: np.ndarray, bound_th: float = BOUND_TH
                  ) -> tuple[list[int | None], list[ObjectScore]]:
    """Assign predicted ids to ground-truth objects, maximising the summed J&F (DAVIS-2017 unsupervised).

    Args:
        pred_ids: (T, H, W) integer id maps, 0 = background (``VideoSegmentationResult.id_maps``).
        gt_masks: (K, T, H, W) bool, the objects' visible pixels per frame.

    Returns:
        ``(matched, scores)``: per object the predicted id assigned to it (None: padded with an empty prediction,
        when there are fewer ids than objects), and its :class:`ObjectScore` against that id's masks.
    """
    ids_map = _check_stack(pred_ids, "pred_ids")
    gt = np.asarray(gt_masks).astype(bool)
    if gt.ndim != 4 or gt.shape[1:] != ids_map.shape:
        raise InputError("gt_masks must be (K, T, H, W) with the id maps' (T, H, W)", f"{gt.shape} vs {ids_map.shape}",
                         "stack one (T, H, W) mask per object")
    k, t_len = gt.shape[:2]
    ids = [int(i) for i in np.unique(ids_map) if i != 0]
    cols = ids + [None] * max(0, k - len(ids))  # DAVIS pads with empty predictions
    r = _bound_pixels(ids_map.shape[1:], bound_th)
    j = np.zeros((k, len(cols), t_len))
    f = np.zeros((k, len(cols), t_len))
    # 1. per frame: boundaries and dilations once per object and per id, then every pair's counts
    for t in range(t_len):
        gb = [boundary_map(gt[a, t]) for a in range(k)]
        gd = [_dilate(b, r) if b.any() else b for b in gb]
        g_any = [bool(gt[a, t].any()) for a in range(k)]
        for c, pid in enumerate(cols):
            pm = ids_map[t] == pid if pid is not None else np.zeros(ids_map.shape[1:], bool)
            p_any = bool(pm.any())
            pb = boundary_map(pm) if p_any else pm
            pd = _dilate(pb, r) if p_any else pb
            for a in range(k):
                if not p_any and not g_any[a]:
                    j[a, c, t], f[a, c, t] = 1.0, 1.0
                elif not p_any or not g_any[a]:
                    continue  # J = 0, F = 0 (one boundary empty, the other not)
                else:
                    inter = int((pm & gt[a, t]).sum())
                    j[a, c, t] = inter / int((pm | gt[a, t]).sum())
                    f[a, c, t] = _pr_counts(int(pb.sum()), int(gb[a].sum()), int((pb & gd[a]).sum()),
                                            int((gb[a] & pd).sum()))[2]
    # 2. the assignment maximising the summed per-object J&F
    score = (j.mean(axis=2) + f.mean(axis=2)) / 2 if t_len else np.zeros((k, len(cols)))
    assign = _hungarian(-score) if k else []
    matched = [cols[c] for c in assign]
    scores = [ObjectScore(float(j[a, c].mean()), float(f[a, c].mean()), j[a, c].copy(), f[a, c].copy())
              for a, c in enumerate(assign)]
    return matched, scores


def id_switches(pred_ids: np.ndarray, gt: np.ndarray) -> tuple[int, list[int | None]]:
    """Id switches of one ground-truth object.

    Args:
        pred_ids: (T, H, W) integer id maps, 0 = background.
        gt: (T, H, W) bool, the object's visible pixels.

    Returns:
        ``(switches, best)``: per frame the predicted id with the most pixels inside the object (ties: the smaller id;
        None where the object is invisible or no id overlaps it), and how often that id changes from the last id
        seen (frames with None are skipped).
    """
    ids_map, g = _check_stack(pred_ids, "pred_ids"), _check_stack(gt, "gt").astype(bool)
    best: list[int | None] = []
    for t in range(ids_map.shape[0]):
        inside = ids_map[t][g[t]]
        inside = inside[inside != 0]
        if inside.size == 0:
            best.append(None)
            continue
        vals, counts = np.unique(inside, return_counts=True)  # ascending ids: argmax takes the smaller on a tie
        best.append(int(vals[int(np.argmax(counts))]))
    switches, last = 0, None
    for b in best:
        if b is None:
            continue
        if last is not None and b != last:
            switches += 1
        last = b
    return switches, best


def first_large_frame(gt: np.ndarray, fraction: float | None = None) -> int | None:
    """First frame where ``gt`` ((T, H, W) bool) covers at least ``fraction`` of the frame (default
    :data:`~ovseg.world_video.LARGE_FRACTION`, 1%: :attr:`ClipObject.first_large`); None: never."""
    from .world_video import LARGE_FRACTION

    g = _check_stack(gt, "gt").astype(bool)
    frac = LARGE_FRACTION if fraction is None else fraction
    hits = np.flatnonzero(g.sum(axis=(1, 2)) >= frac * g.shape[1] * g.shape[2])
    return int(hits[0]) if hits.size else None


def late_found_frame(pred: np.ndarray | None, gt: np.ndarray) -> int | None:
    """First frame on which the matched id's mask ``pred`` ((T, H, W) bool; None: no id matched) has at least one
    pixel inside the object ``gt`` ((T, H, W) bool); None: never."""
    if pred is None:
        return None
    hits = np.flatnonzero((np.asarray(pred, bool) & np.asarray(gt, bool)).any(axis=(1, 2)))
    return int(hits[0]) if hits.size else None


# ---- removal metrics -----------------------------------------------------------------------------------------

@dataclass
class RemovalScores:
    """Quality of a video object removal against the exact object-free clip."""

    psnr_inside: float  # dB over every masked pixel of every frame (pooled MSE); inf: identical; nan: empty mask
    psnr_outside: float  # dB over every other pixel; inf when identical there
    exact_outside: bool  # every pixel outside the mask equals the exact clip's
    flicker: float | None  # mean |frame t - frame t-1| inside the mask (levels, [0, 255]); None: background drifts
    flicker_exact: float | None  # the same on the exact object-free clip and the same pixels
    n_inside: int  # masked pixels over all frames
    n_outside: int  # other pixels over all frames

    @property
    def flicker_excess(self) -> float | None:
        """flicker - flicker_exact (levels): what the edit adds; None without a flicker measure."""
        if self.flicker is None or self.flicker_exact is None:
            return None
        return self.flicker - self.flicker_exact

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: an infinite or undefined PSNR is None (``exact_outside`` says which)."""
        def db(v: float) -> float | None:
            return round(float(v), 4) if math.isfinite(v) else None

        def lv(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else round(float(v), 4)

        return {"psnr_inside_db": db(self.psnr_inside), "psnr_outside_db": db(self.psnr_outside),
                "exact_outside": self.exact_outside, "flicker": lv(self.flicker), "flicker_exact": lv(self.flicker_exact),
                "flicker_excess": lv(self.flicker_excess), "n_inside": self.n_inside, "n_outside": self.n_outside}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB, peak 255) of two equal-shape uint8 arrays; inf when equal, nan when empty."""
    if a.size == 0:
        return float("nan")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0 ** 2 / mse)


def flicker(frames: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute change between consecutive frames inside the mask: over t = 1 .. T-1, the pixels of
    ``mask[t] | mask[t-1]`` and the 3 channels, of ``|frames[t] - frames[t-1]|``. ``frames`` (T, H, W, 3) uint8,
    ``mask`` (T, H, W) bool. In levels, [0, 255]; nan when no pixel is masked."""
    fr = np.asarray(frames).astype(np.float64)
    m = _check_stack(mask, "mask").astype(bool)
    region = m[1:] | m[:-1]  # (T-1, H, W)
    n = int(region.sum())
    if n == 0:
        return float("nan")
    return float(np.abs(fr[1:] - fr[:-1])[region].sum() / (n * fr.shape[-1]))


def removal_metrics(edited: np.ndarray, exact: np.ndarray, mask: np.ndarray,
                    background_drift: float = 0.0) -> RemovalScores:
    """Score a removal.

    Args:
        edited: (T, H, W, 3) uint8, the clip with the object removed by the method under test.
        exact: (T, H, W, 3) uint8, the exact object-free clip (:func:`removal_reference`).
        mask: (T, H, W) bool, the per-frame region the method was allowed to change (its edit mask).
        background_drift: the clip's background speed (``Clip.background_drift``, px/frame); flicker is measured
            only for a static background (0), where the exact clip changes inside the mask only by sensor noise.
    """
    ed, ex = np.asarray(edited), np.asarray(exact)
    m = _check_stack(mask, "mask").astype(bool)
    if ed.shape != ex.shape or ed.ndim != 4 or ed.shape[:3] != m.shape:
        raise InputError("edited and exact must be (T, H, W, 3) and mask (T, H, W) of the same clip",
                         f"{ed.shape}, {ex.shape}, {m.shape}", "pass the edited clip, the exact clip and its masks")
    inside_e, inside_x = ed[m], ex[m]  # (N, 3)
    outside_e, outside_x = ed[~m], ex[~m]
    static = background_drift == 0
    return RemovalScores(_psnr(inside_e, inside_x), _psnr(outside_e, outside_x),
                         bool(np.array_equal(outside_e, outside_x)),
                         flicker(ed, m) if static else None, flicker(ex, m) if static else None,
                         int(m.sum()), int((~m).sum()))


def removal_reference(clip: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact ground truth of removing object ``k`` of a mini-world clip: ``(frames, mask)``, the object-free
    clip ``render_clip(clip.seed, clip.config, without=k)`` (T, H, W, 3) uint8 and the object's visible mask (T, H, W)
    bool. Pixels also differ on the anti-aliased rim of the object's outline just outside the mask: dilate the mask
    by 1-2 px before using it as the edit region."""
    from .world_video import render_clip

    return render_clip(clip.seed, clip.config, without=k).frames, clip.instance_masks[:, k].copy()


# ---- clips and targets ------------------------------------------------------------------------------------------

@dataclass
class VideoTarget:
    """One prompt of a clip and the ground-truth objects it refers to."""

    prompt: str  # the text given to segment_video
    gt_ids: tuple[int, ...]  # ids (values of EvalClip.gt) of the objects it refers to


@dataclass
class EvalClip:
    """A clip with ground truth. T frames of H x W pixels."""

    name: str  # unique within its dataset (the results store's key)
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    gt: np.ndarray  # (T, H, W) uint8 ground-truth ids, 0 = background, k = object k
    names: dict[int, str] = field(default_factory=dict)  # gt id -> class name (mini world, DAVIS semantics)
    expressions: list[tuple[str, int]] = field(default_factory=list)  # referring: (expression, gt id) pairs
    background_drift: float | None = None  # px/frame of the background (0: static); None: unknown

    def visible_ids(self) -> list[int]:
        """Ids visible in at least one frame, ascending."""
        return [int(i) for i in np.unique(self.gt) if i != 0]


@dataclass
class ClipSource:
    """A clip by name, loaded (rendered or read) only when it is evaluated."""

    name: str  # EvalClip.name of what load returns
    load: Callable[[], EvalClip]  # builds the clip


def class_targets(clip: EvalClip) -> list[VideoTarget]:
    """Every distinct class visible in the clip, in order of its first id: prompt = the class name, ground truth =
    every visible object of that class.

    Raises:
        InputError: a visible object without a class name (DAVIS without its semantics file).
    """
    groups: dict[str, list[int]] = {}
    for i in clip.visible_ids():
        name = clip.names.get(i)
        if not name:
            raise InputError("class prompts need a class name for every object", f"clip {clip.name!r}, object {i}",
                             "give the dataset's class names (DAVIS: davis_semantics.json in the root) or use a "
                             "referring dataset (expressions)")
        groups.setdefault(name, []).append(i)
    return [VideoTarget(name, tuple(ids)) for name, ids in groups.items()]


def expression_targets(clip: EvalClip) -> list[VideoTarget]:
    """Every expression of a referring clip whose object is visible: prompt = the expression, ground truth = its
    one object."""
    visible = set(clip.visible_ids())
    return [VideoTarget(e, (i,)) for e, i in clip.expressions if i in visible]


def default_targets(clip: EvalClip) -> list[VideoTarget]:
    """:func:`expression_targets` for a referring clip (one with expressions), else :func:`class_targets`."""
    return expression_targets(clip) if clip.expressions else class_targets(clip)


# ---- evaluating a clip -------------------------------------------------------------------------------------------

def evaluate_clip(result_for: Callable[[str], np.ndarray], clip: EvalClip, targets: Sequence[VideoTarget],
                  late_within: int, bound_th: float = BOUND_TH) -> dict[str, Any]:
    """Score one clip. ``result_for(prompt)`` returns the (T, H, W) predicted id maps for a prompt. Returns the
    clip's record: per target its objects (gt id, matched id, J, F, J&F, late, first_large, found frame, found,
    id switches) and the clip's total id switches."""
    recs, total = [], 0
    for tg in targets:
        ids_map = np.asarray(result_for(tg.prompt))
        if ids_map.shape != clip.gt.shape:
            raise InputError("predicted id maps must have the clip's (T, H, W)", f"{ids_map.shape} vs {clip.gt.shape}",
                             "segment the clip's own frames")
        gts = np.stack([clip.gt == i for i in tg.gt_ids])  # (K, T, H, W)
        matched, scores = match_objects(ids_map, gts, bound_th)
        objs = []
        for i, g, mid, sc in zip(tg.gt_ids, gts, matched, scores):
            late = not bool(g[0].any())
            large = first_large_frame(g)
            found_at = late_found_frame(ids_map == mid if mid is not None else None, g)
            sw, _ = id_switches(ids_map, g)
            total += sw
            objs.append({"gt_id": int(i), "matched_id": mid, "J": round(sc.j, 6), "F": round(sc.f, 6),
                         "JF": round(sc.jf, 6), "late": late, "first_large": large, "found_frame": found_at,
                         "found": bool(late and large is not None and found_at is not None
                                       and found_at <= large + late_within),
                         "id_switches": sw})
        recs.append({"prompt": tg.prompt, "pred_ids": [int(i) for i in np.unique(ids_map) if i != 0], "objects": objs})
    return {"clip": clip.name, "n_frames": int(clip.gt.shape[0]), "targets": recs, "id_switches": total}


# ---- the store -----------------------------------------------------------------------------------------------------

_LINK_RULE = "ovseg never reads or writes a results store through a symbolic link"
_LINK_FIX = "remove the link (or use another --out folder)"


def _checksum(rec: dict[str, Any]) -> str:
    body = json.dumps({k: v for k, v in rec.items() if k != "sum"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _read_store(path: Path, protocol: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """clip name -> record of every usable line, and the problems (file line number: why) of the others."""
    done: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    if path.is_symlink():
        raise InputError(_LINK_RULE, str(path), _LINK_FIX)
    if not path.exists():
        return done, problems
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith("\n"):
                break  # cut by a crash: that clip is recomputed
            try:
                rec = json.loads(line)
            except ValueError:
                problems.append(f"{path.name} line {number}: not valid JSON")
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("clip"), str) or rec.get("sum") != _checksum(rec):
                problems.append(f"{path.name} line {number}: no valid checksum (changed after it was written)")
            elif rec.get("protocol") != protocol:
                problems.append(f"{path.name} line {number}: written under another protocol ({rec.get('protocol')}, "
                                f"this run's is {protocol})")
            else:
                done[rec["clip"]] = rec
    return done, problems


def _protocol_hash(pipe: Any, dataset: str, split: str, keyframe_every: int, late_within: int, bound_th: float,
                   targets: str) -> str:
    from dataclasses import asdict

    from .video import VideoTrackConfig

    cfg = getattr(pipe, "config", None)
    doc = {"format": _FORMAT, "dataset": dataset, "split": split, "keyframe_every": keyframe_every,
           "late_within": late_within, "bound_th": bound_th, "targets": targets,
           "pipeline": cfg.to_dict() if hasattr(cfg, "to_dict") else None}
    if cfg is not None and hasattr(cfg, "sam2"):  # the tracking weights and the tracker's other settings
        doc["video_models"] = video_models_identity(cfg)
        doc["track"] = {k: v for k, v in asdict(VideoTrackConfig()).items() if k != "keyframe_every"}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _segment(pipe: Any, frames: np.ndarray, prompt: str, keyframe_every: int) -> np.ndarray:
    """(T, H, W) id maps of :func:`ovseg.video.segment_video` (an empty result: all 0)."""
    from . import video
    from .errors import NoMatchWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoMatchWarning)  # a prompt matching nothing scores as empty predictions
        return video.segment_video(pipe, frames, prompt, keyframe_every, keep_frames=False).id_maps


def evaluate_video(pipe: Any, clips: Iterable[EvalClip | ClipSource],
                   prompt_for: Callable[[EvalClip], list[VideoTarget]] = default_targets,
                   keyframe_every: int | None = None,
                   out_dir: str | os.PathLike | None = None, *, late_within: int | None = None,
                   bound_th: float = BOUND_TH, dataset: str = "clips", split: str = "dev",
                   test_log: str | None = None, progress: bool = False,
                   segment: Callable[[Any, np.ndarray, str, int], np.ndarray] | None = None) -> dict[str, Any]:
    """Evaluate text-prompted video segmentation on ``clips``.

    1. Per clip, ``prompt_for(clip)`` gives the targets (default: every visible class, or every expression of a
       referring clip); per target ``segment_video(pipe, frames, prompt, keyframe_every)`` predicts id maps.
    2. Predicted ids are matched to the target's objects (:func:`match_objects`); per object J, F, J&F, late-object
       found (within ``late_within`` frames of ``first_large``, default ``keyframe_every``) and id switches.
    3. With ``out_dir``, each finished clip appends one checksummed line to ``OUT/results.jsonl`` (a rerun skips
       the clips found there with this run's protocol hash) and the summary is written to ``OUT/video.json``.
    4. With ``test_log`` (e.g. ``"video/test"``), the summary is logged as task ``video`` (:func:`ovseg.testlog.record`).

    Args:
        segment: test hook, ``segment(pipe, frames, prompt, keyframe_every) -> (T, H, W) id maps``; default
            :func:`ovseg.video.segment_video`.

    Returns:
        The summary: ``jf``, ``j``, ``f`` (means over objects), ``late_found`` (rate over late objects),
        ``id_switches_per_clip`` and ``id_switches_per_10_clips``, each with its 95% bootstrap interval in ``ci95``
        (objects, cases, clips), the counts (``n_clips``, ``n_targets``, ``n_objects``, ``n_late_objects``), the
        settings and ``per_clip``.
    """
    from .stats import bootstrap_mean, bootstrap_rate
    from .video import DEFAULT_KEYFRAME_EVERY

    keyframe_every = DEFAULT_KEYFRAME_EVERY if keyframe_every is None else keyframe_every
    if isinstance(keyframe_every, bool) or not isinstance(keyframe_every, int) or keyframe_every < 1:
        raise InputError("keyframe_every must be a positive integer", repr(keyframe_every), "pass e.g. 8")
    within = keyframe_every if late_within is None else late_within
    if isinstance(within, bool) or not isinstance(within, int) or within < 0:
        raise InputError("late_within must be an integer >= 0 (frames)", repr(late_within), "pass e.g. 8")
    seg = segment or _segment
    protocol = _protocol_hash(pipe, dataset, split, keyframe_every, within, bound_th,
                              getattr(prompt_for, "__name__", "custom"))
    out = Path(out_dir) if out_dir is not None else None
    sources = [c if isinstance(c, ClipSource) else ClipSource(c.name, lambda c=c: c) for c in clips]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InputError("clip names must be unique (they key the results store)", repr(names[:5]), "rename the clips")
    done: dict[str, dict[str, Any]] = {}
    lock = None
    if out is not None:
        from .evaluate import _repair_tail
        from .io import hold_lock

        out.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(out / "results.lock", "one ovseg evaluate at a time may write a results store",
                         "wait for that run to finish, or evaluate into another --out folder", _LINK_RULE, _LINK_FIX,
                         folder_rule="--out must be a writable folder")
    try:
        if out is not None:
            store = out / "results.jsonl"
            _repair_tail(store)
            done, problems = _read_store(store, protocol)
            if problems:
                warnings.warn(f"{len(problems)} line(s) of {store} cannot be used and their clips are recomputed: "
                              + "; ".join(problems[:5]) + ("; ..." if len(problems) > 5 else ""), OvsegWarning,
                              stacklevel=2)
        from tqdm.auto import tqdm

        todo = [s for s in sources if s.name not in done]
        fh = None
        if out is not None:
            from .io import open_nofollow

            fh = open_nofollow(out / "results.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, "a", _LINK_RULE, _LINK_FIX)
        try:
            for src in tqdm(todo, desc=f"video {dataset}/{split}", unit="clip", disable=not progress,
                            initial=len(sources) - len(todo), total=len(sources)):
                start = time.perf_counter()
                clip = src.load()
                targets = prompt_for(clip)
                # every prompt revisits the same keyframes: keep their SAM 2 masks and CLIP features meanwhile
                n_key = -(-int(clip.frames.shape[0]) // keyframe_every)
                keep = pipe.remember_images(n_key) if hasattr(pipe, "remember_images") else contextlib.nullcontext()
                with keep:
                    rec = evaluate_clip(lambda p, clip=clip: seg(pipe, clip.frames, p, keyframe_every), clip, targets,
                                        within, bound_th)
                rec["s"] = round(time.perf_counter() - start, 3)
                rec["protocol"] = protocol
                rec["sum"] = _checksum(rec)
                done[src.name] = rec
                if fh is not None:
                    fh.write(json.dumps(rec, separators=(",", ":")) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        finally:
            if fh is not None:
                fh.close()
    finally:
        if lock is not None:
            lock.close()
    # summary over the requested clips, in their order
    recs = [done[n] for n in names]
    objs = [o for r in recs for t in r["targets"] for o in t["objects"]]
    lates = [o for o in objs if o["late"] and o["first_large"] is not None]
    switches = [float(r["id_switches"]) for r in recs]
    ci = {"jf": bootstrap_mean([o["JF"] for o in objs]), "j": bootstrap_mean([o["J"] for o in objs]),
          "f": bootstrap_mean([o["F"] for o in objs]), "late_found": bootstrap_rate([o["found"] for o in lates]),
          "id_switches_per_clip": bootstrap_mean(switches, unit="clips"),
          "id_switches_per_10_clips": bootstrap_mean([10 * s for s in switches], unit="clips")}
    cfg = getattr(pipe, "config", None)
    summary = {"dataset": dataset, "split": split, "profile": getattr(cfg, "profile", None), "n_clips": len(recs),
               "n_targets": sum(len(r["targets"]) for r in recs), "n_objects": len(objs), "n_late_objects": len(lates),
               "keyframe_every": keyframe_every, "late_within": within, "bound_th": bound_th, "protocol_hash": protocol,
               **{k: iv.to_dict()["value"] for k, iv in ci.items()},
               "ci95": {k: iv.to_dict() for k, iv in ci.items()},
               "per_clip": [{"clip": r["clip"], "id_switches": r["id_switches"],
                             "jf": round(float(np.mean([o["JF"] for t in r["targets"] for o in t["objects"]])), 4)
                             if any(t["objects"] for t in r["targets"]) else None} for r in recs]}
    if out is not None:
        from .io import write_json_atomic

        write_json_atomic(out / "video.json", summary)
    if test_log is not None:
        from .testlog import record

        models = video_models_identity(cfg) if cfg is not None else {}
        record("video", models, protocol, len(objs), summary["ci95"], split=test_log)
    return summary


def video_models_identity(config: Any) -> dict[str, str]:
    """:func:`ovseg.evaluate.models_identity` of the image models a video run uses (SAM 2, CLIP: the keyframe
    detections) plus the SAM 2 weights that track (:data:`ovseg.video.VIDEO_WEIGHTS`: ``mini-sam2-video`` for
    ``mini-sam2``), hashed like them in the mini profile; what a video line of the test-set log names."""
    from .evaluate import folder_identity, models_identity
    from .paths import REPO_ROOT
    from .pipeline import _model_name
    from .video import VIDEO_WEIGHTS
    from .weights import REGISTRY

    out = models_identity(config)
    name = _model_name(config.sam2.model, config.profile, "sam2")
    video_name = VIDEO_WEIGHTS.get(name)
    if video_name is not None:
        entry = REGISTRY[video_name]
        out[video_name] = (folder_identity(REPO_ROOT / entry.local_dir, entry.files) if config.profile == "mini"
                           else "unhashed")
    return out


# ---- mini-world clips ------------------------------------------------------------------------------------------------

def video_test_root() -> Path:
    """The shipped video test set, ``data/mini_world/video_test``."""
    from .paths import DATA_DIR

    return DATA_DIR / "mini_world" / "video_test"


def dev_clip_config() -> Any:
    """The :class:`~ovseg.world_video.ClipConfig` of the dev clips: the shipped test set's (read from its
    ``index.json``; ``data/make_samples.py``'s ``VIDEO_TEST_CONFIG``), so that dev and test differ only in seeds."""
    from .world_video import load_clip_index

    return load_clip_index(video_test_root())["config"]


def _from_clip(clip: Any) -> EvalClip:
    return EvalClip(clip.name, clip.frames, clip.instance_maps, {k + 1: o.class_name for k, o in enumerate(clip.objects)},
                    [], float(clip.background_drift))


def mini_video_clips(split: str, max_clips: int | None = None) -> list[ClipSource]:
    """The mini world's video clips of ``split``: ``dev``, the first ``max_clips`` (default :data:`MINI_DEV_CLIPS`)
    seeds of the "video" dev range rendered with :func:`dev_clip_config`; ``test``, the clips of
    :func:`video_test_root` (the first ``max_clips``)."""
    from .world import seed_range
    from .world_video import clip_name, load_clip, load_clip_index, render_clip

    if split not in ("dev", "test"):
        raise InputError("mini-video splits are dev and test", repr(split),
                         "use --split dev to develop, --split test to report")
    if max_clips is not None and (isinstance(max_clips, bool) or not isinstance(max_clips, int) or max_clips < 1):
        raise InputError("max_clips must be a positive integer or None", repr(max_clips), "pass e.g. 5")
    if split == "dev":
        cfg = dev_clip_config()
        seeds = seed_range("video", "dev").seeds[:MINI_DEV_CLIPS if max_clips is None else max_clips]
        return [ClipSource(clip_name(s), lambda s=s: _from_clip(render_clip(s, cfg))) for s in seeds]
    root = video_test_root()
    names = [c["name"] for c in load_clip_index(root)["clips"]]
    return [ClipSource(n, lambda n=n: _from_clip(load_clip(root, n))) for n in names[:max_clips]]


# ---- DAVIS-2017 and Ref-YouTube-VOS / Ref-DAVIS -----------------------------------------------------------------------

_DAVIS_LAYOUT = ("ROOT/ImageSets/2017/<split>.txt (one clip name a line), ROOT/JPEGImages/480p/<clip>/00000.jpg ..., "
                 "ROOT/Annotations/480p/<clip>/00000.png ... (palette PNGs, index k = object k), optional "
                 "ROOT/davis_semantics.json ({clip: {id: class name}})")
_REF_LAYOUT = ("ROOT/meta_expressions.json ({\"videos\": {video: {\"expressions\": {n: {\"exp\": text, \"obj_id\": id}}, "
               "\"frames\": [stem, ...]}}}), ROOT/JPEGImages/<video>/<stem>.jpg, ROOT/Annotations/<video>/<stem>.png "
               "(palette PNGs, index = obj_id)")


def _read_ids(path: Path, layout: str) -> np.ndarray:
    """(H, W) uint8 object ids of an annotation PNG (palette or greyscale); DAVIS's void 255 becomes 0."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise InputError("every frame needs its annotation PNG", f"{path} is missing", f"expected layout: {layout}")
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise InputError("an annotation PNG must be a palette (P) or greyscale (L) image",
                                 f"{path}: mode {img.mode}", f"expected layout: {layout}")
            arr = np.asarray(img, np.uint8).copy()
    except (OSError, UnidentifiedImageError) as err:
        raise InputError("annotation files must be readable PNGs", f"{path}: {err}", f"expected layout: {layout}") from None
    arr[arr == 255] = 0
    return arr


def _read_frames(folder: Path, stems: Sequence[str], layout: str) -> np.ndarray:
    from .io import load_image

    frames = []
    for s in stems:
        p = folder / f"{s}.jpg"
        if not p.is_file():
            raise InputError("every frame must be a JPEG of the clip's folder", f"{p} is missing", f"expected layout: {layout}")
        frames.append(load_image(p))
        if frames[-1].shape != frames[0].shape:
            raise InputError("all frames of a clip must have one size", str(p), f"expected layout: {layout}")
    return np.stack(frames)


def _load_annotated(name: str, frame_dir: Path, ann_dir: Path, stems: Sequence[str], layout: str, **kw: Any) -> EvalClip:
    frames = _read_frames(frame_dir, stems, layout)
    gt = np.stack([_read_ids(ann_dir / f"{s}.png", layout) for s in stems])
    if gt.shape != frames.shape[:3]:
        raise InputError("annotations must have their frames' size", f"{ann_dir}: {gt.shape[1:]} vs {frames.shape[1:3]}",
                         f"expected layout: {layout}")
    return EvalClip(name, frames, gt, **kw)


def davis_clips(root: str | os.PathLike, split: str = "val", max_clips: int | None = None,
                require_names: bool = False) -> list[ClipSource]:
    """DAVIS-2017 clips of ``ImageSets/2017/<split>.txt`` (the first ``max_clips``), each with its frames and
    ground-truth ids; class names from ``ROOT/davis_semantics.json`` when present (``require_names``: refused
    without it, since class prompts need them). Layout: :data:`_DAVIS_LAYOUT`. Everything but the pixels is checked
    here; frames and annotations are read when a clip is loaded.

    Raises:
        InputError: a missing root, list, clip folder or semantics file (naming it and the expected layout).
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        raise InputError("a DAVIS root must be a folder", str(base), f"expected layout: {_DAVIS_LAYOUT}")
    listing = base / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
        raise InputError("a DAVIS-2017 root must hold the clip list of its split", f"{listing} is missing",
                         f"expected layout: {_DAVIS_LAYOUT}")
    names = [ln.strip() for ln in listing.read_text(encoding="utf-8").splitlines() if ln.strip()][:max_clips]
    sem_path = base / "davis_semantics.json"
    semantics: dict[str, Any] = {}
    if sem_path.is_file():
        try:
            semantics = json.loads(sem_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise InputError("davis_semantics.json must be readable JSON", f"{sem_path}: {err}",
                             f"expected layout: {_DAVIS_LAYOUT}") from None
    elif require_names:
        raise InputError("DAVIS-2017 has no text per object: class prompts need davis_semantics.json",
                         f"{sem_path} is missing", f"put the DAVIS-2017 semantics file there (expected layout: "
                         f"{_DAVIS_LAYOUT}), or evaluate Ref-DAVIS expressions with --dataset ref-youtube-vos")
    out = []
    for name in names:
        frame_dir = base / "JPEGImages" / "480p" / name
        ann_dir = base / "Annotations" / "480p" / name
        for d in (frame_dir, ann_dir):
            if not d.is_dir():
                raise InputError(f"every clip of {listing.name} must have its frame and annotation folders",
                                 f"{d} is missing", f"expected layout: {_DAVIS_LAYOUT}")
        stems = sorted(p.stem for p in frame_dir.glob("*.jpg"))
        if not stems:
            raise InputError("a DAVIS clip folder must hold JPEG frames", f"{frame_dir}: no .jpg",
                             f"expected layout: {_DAVIS_LAYOUT}")
        names_of = {int(k): str(v) for k, v in (semantics.get(name) or {}).items()}
        out.append(ClipSource(name, lambda n=name, f=frame_dir, a=ann_dir, s=stems, m=names_of:
                              _load_annotated(n, f, a, s, _DAVIS_LAYOUT, names=m)))
    return out


def referring_clips(root: str | os.PathLike, max_clips: int | None = None) -> list[ClipSource]:
    """Ref-YouTube-VOS / Ref-DAVIS clips (the first ``max_clips`` videos of ``meta_expressions.json``, in its order),
    each with its frames (the ``frames`` list of the video, else every JPEG of its folder), ground-truth ids and
    ``expressions`` (expression, object id). Layout: :data:`_REF_LAYOUT`.

    Raises:
        InputError: a missing root, meta file or video folder, an expression without ``obj_id`` (a split whose masks
            are withheld), naming the file and the expected layout.
    """
    base = Path(root).expanduser()
    meta_path = base / "meta_expressions.json"
    if not meta_path.is_file():
        raise InputError("a Ref-YouTube-VOS / Ref-DAVIS root must hold meta_expressions.json", f"{meta_path} is missing",
                         f"expected layout: {_REF_LAYOUT}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise InputError("meta_expressions.json must be readable JSON", f"{meta_path}: {err}",
                         f"expected layout: {_REF_LAYOUT}") from None
    videos = meta.get("videos") if isinstance(meta, dict) else None
    if not isinstance(videos, dict):
        raise InputError("meta_expressions.json must map \"videos\" to {video: {...}}", str(meta_path),
                         f"expected layout: {_REF_LAYOUT}")
    out = []
    for name in list(videos)[:max_clips]:
        rec = videos[name] if isinstance(videos[name], dict) else {}
        exprs = []
        for key, e in (rec.get("expressions") or {}).items():
            if not isinstance(e, dict) or "exp" not in e or "obj_id" not in e:
                raise InputError("every expression needs \"exp\" and \"obj_id\" (masks to score against)",
                                 f"{meta_path}: video {name!r}, expression {key!r}",
                                 "evaluate a split with annotations (Ref-YouTube-VOS valid/test masks are withheld; "
                                 f"use train or Ref-DAVIS); expected layout: {_REF_LAYOUT}")
            exprs.append((str(e["exp"]).strip(), int(e["obj_id"])))
        frame_dir, ann_dir = base / "JPEGImages" / name, base / "Annotations" / name
        for d in (frame_dir, ann_dir):
            if not d.is_dir():
                raise InputError("every video of meta_expressions.json must have its frame and annotation folders",
                                 f"{d} is missing", f"expected layout: {_REF_LAYOUT}")
        stems = [str(s) for s in rec.get("frames") or []] or sorted(p.stem for p in frame_dir.glob("*.jpg"))
        if not stems:
            raise InputError("a video folder must hold JPEG frames", f"{frame_dir}: no .jpg", f"expected layout: {_REF_LAYOUT}")
        out.append(ClipSource(name, lambda n=name, f=frame_dir, a=ann_dir, s=stems, x=exprs:
                              _load_annotated(n, f, a, s, _REF_LAYOUT, expressions=x)))
    return out
