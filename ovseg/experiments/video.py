"""Beyond the thesis (issue #21): text-prompted video segmentation on the mini world's clips.

* :func:`compare_tracking` -- text-prompted J&F, late objects found, id switches and speed of several
  :class:`ovseg.video.VideoTrackConfig` settings on the **dev** clips (selection happens here, never on test);
* :func:`tracking_rows` -- those summaries as table rows (value [95% interval], n);
* :func:`track_strip_figure` -- frames of a clip with the tracked ids drawn over them (a strip).

The test split is evaluated once per model with ``ovseg evaluate --dataset mini-video --task video --split test``
(:func:`ovseg.video_eval.evaluate_video`), which logs the consultation.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["TrackSetting", "compare_tracking", "tracking_rows", "track_strip_figure", "find_late_object"]


@dataclass(frozen=True)
class TrackSetting:
    """One tracking setting compared on dev (the :func:`ovseg.video.segment_video` arguments it changes)."""

    keyframe_every: int = 8  # run the image pipeline on every K-th frame
    refresh: bool = True  # matched keyframe detections correct the track
    iou_threshold: float = 0.3  # a detection overlapping a track this much is that track

    @property
    def label(self) -> str:
        return f"K={self.keyframe_every}, refresh {'on' if self.refresh else 'off'}, IoU {self.iou_threshold:g}"


def compare_tracking(pipe: Any, settings: Sequence[TrackSetting], n_clips: int = 8, *, predictor: Any = None,
                     progress: bool = False) -> list[dict[str, Any]]:
    """Evaluate each setting on the first ``n_clips`` mini-world **dev** clips (every visible class of a clip is a
    prompt; :func:`ovseg.video_eval.evaluate_video`, no store, nothing logged).

    Args:
        pipe: the image pipeline (keyframe detections).
        settings: the settings to compare.
        n_clips: dev clips (each rendered from its seed, 32 frames at 128 px).
        predictor: the SAM 2 video predictor (default :func:`ovseg.video.video_predictor_for` ``(pipe)``).

    Returns:
        Per setting, the :func:`~ovseg.video_eval.evaluate_video` summary plus ``setting`` (its fields), ``label``
        and ``seconds_per_frame`` (whole text-prompted segmentation: detection + tracking, per frame and prompt).
    """
    from .. import video
    from ..errors import NoMatchWarning
    from ..video_eval import evaluate_video, mini_video_clips

    if isinstance(n_clips, bool) or not isinstance(n_clips, int) or n_clips < 1:
        raise InputError("n_clips must be a positive integer", repr(n_clips), "pass e.g. 8")
    if not settings:
        raise InputError("compare_tracking needs at least one setting", "[]", "pass e.g. [TrackSetting()]")
    clips = mini_video_clips("dev", n_clips)
    pred = predictor if predictor is not None else video.video_predictor_for(pipe)
    out = []
    for s in settings:
        spent: dict[str, float] = {"s": 0.0, "frames": 0}

        def seg(p: Any, frames: np.ndarray, prompt: str, k: int, s: TrackSetting = s,
                spent: dict[str, float] = spent) -> np.ndarray:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NoMatchWarning)
                r = video.segment_video(p, frames, prompt, k, refresh=s.refresh, iou_threshold=s.iou_threshold,
                                        predictor=pred, keep_frames=False)
            spent["s"] += time.perf_counter() - t0
            spent["frames"] += int(frames.shape[0])
            return r.id_maps

        summary = evaluate_video(pipe, clips, keyframe_every=s.keyframe_every, dataset="mini-video", split="dev",
                                 segment=seg, progress=progress)
        summary.update(setting={"keyframe_every": s.keyframe_every, "refresh": s.refresh,
                                "iou_threshold": s.iou_threshold}, label=s.label,
                       seconds_per_frame=spent["s"] / max(spent["frames"], 1))
        out.append(summary)
    return out


def _fmt(ci: dict[str, Any], digits: int = 3) -> str:
    lo, hi = ci["ci95"]
    return f"{ci['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def tracking_rows(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table rows of :func:`compare_tracking` (or :func:`~ovseg.video_eval.evaluate_video`) summaries: J&F, J, F
    (objects), late objects found (late objects), id switches per 10 clips (clips), each ``value [95% interval]``,
    with the n's and the seconds per frame when measured."""
    rows = []
    for s in summaries:
        c = s["ci95"]
        late = c["late_found"]
        rows.append({"setting": s.get("label", f"K={s['keyframe_every']}"), "J&F": _fmt(c["jf"]), "J": _fmt(c["j"]),
                     "F": _fmt(c["f"]), "objects": s["n_objects"],
                     "late found": _fmt(late, 2) if late["value"] is not None else "n/a",
                     "late objects": s["n_late_objects"],
                     "id switches / 10 clips": _fmt(c["id_switches_per_10_clips"], 1), "clips": s["n_clips"],
                     **({"s / frame": round(s["seconds_per_frame"], 3)} if "seconds_per_frame" in s else {})})
    return rows


def find_late_object(sources: Sequence[Any], margin: int = 4) -> tuple[Any, str, int, int] | None:
    """The first object of ``sources`` (:class:`~ovseg.video_eval.ClipSource` s, loaded in order) that is absent from
    frame 0 and covers 1% of the frame (:func:`~ovseg.video_eval.first_large_frame`) at least ``margin`` frames before
    the clip ends: ``(clip, its class name, its ground-truth id, that frame)``; None when no clip has one."""
    from ..video_eval import first_large_frame

    for src in sources:
        clip = src.load()
        for k in sorted(clip.names):
            g = clip.gt == k
            if g[0].any():
                continue
            large = first_large_frame(g)
            if large is not None and large <= g.shape[0] - 1 - margin:
                return clip, clip.names[k], int(k), int(large)
    return None


def track_strip_figure(frames: np.ndarray, id_maps: np.ndarray, every: int = 4, max_frames: int = 8,
                       title: str | None = None, gt: np.ndarray | None = None, first_frame: int = 0) -> "Figure":
    """A strip of frames ``0, every, 2 * every, ...`` (at most ``max_frames``) with the tracked ids drawn over them
    (DAVIS palette colours, the id written at each object's centre); with ``gt`` (T, H, W) integer ids, a second
    row shows the ground truth the same way. ``first_frame``: the clip frame of ``frames[0]`` (for the titles).

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        id_maps: (T, H, W) uint8 ids (0 = background).
    """
    import matplotlib.pyplot as plt

    from ..video import _palette_rgb, overlay_frames

    frames = np.asarray(frames)
    id_maps = np.asarray(id_maps)
    if frames.ndim != 4 or id_maps.shape != frames.shape[:3]:
        raise InputError("frames and id maps must be (T, H, W, 3) and (T, H, W) of one clip",
                         f"{frames.shape} and {id_maps.shape}", "pass a clip's frames and its result's id_maps")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise InputError("every must be a positive integer (frames between two shown)", repr(every), "pass e.g. 4")
    idx = list(range(0, frames.shape[0], every))[:max_frames]
    rows = [("tracked", id_maps)] + ([("ground truth", np.asarray(gt).astype(np.uint8))] if gt is not None else [])
    fig, axes = plt.subplots(len(rows), len(idx), figsize=(1.6 * len(idx), 1.75 * len(rows)), squeeze=False)
    palette = _palette_rgb()
    for r, (name, maps) in enumerate(rows):
        shown = list(overlay_frames(frames[idx], maps[idx]))
        for c, t in enumerate(idx):
            ax = axes[r][c]
            ax.imshow(shown[c])
            for k in np.unique(maps[t]):
                if k == 0:
                    continue
                ys, xs = np.nonzero(maps[t] == k)
                ax.text(xs.mean(), ys.mean(), str(int(k)), ha="center", va="center", fontsize=7, color="white",
                        bbox={"boxstyle": "round,pad=0.1", "fc": tuple(palette[k] / 255), "ec": "none"})
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {first_frame + t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
