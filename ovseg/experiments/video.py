"""Beyond the thesis (issue #21): text-prompted video segmentation on the mini world's clips.

* :func:`compare_tracking` -- text-prompted J&F, late objects found, id switches and speed of several
  :class:`ovseg.video.VideoTrackConfig` settings on the **dev** clips (selection happens here, never on test);
* :func:`tracking_rows` -- those summaries as table rows (value [95% interval], n);
* :func:`track_strip_figure` -- frames of a clip with the tracked ids drawn over them (a strip);
* :func:`removal_clips` / :func:`removal_comparison` / :func:`removal_rows` / :func:`removal_strip_figure` -- video
  object removal against the exact object-free clip (:mod:`ovseg.video_edit` strategies, exact or tracked masks).

The test split is evaluated once per model with ``ovseg evaluate --dataset mini-video --task video --split test``
(:func:`ovseg.video_eval.evaluate_video`), which logs the consultation.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["TrackSetting", "compare_tracking", "tracking_rows", "track_strip_figure", "find_late_object",
           "removal_clips", "removal_comparison", "removal_rows", "removal_strip_figure", "log_removal_test"]


@dataclass(frozen=True)
class TrackSetting:
    """One tracking setting compared on dev (the :func:`ovseg.video.segment_video` arguments it changes)."""

    keyframe_every: int = 4  # run the image pipeline on every K-th frame
    refresh: bool = True  # matched keyframe detections correct the track
    iou_threshold: float = 0.1  # a detection overlapping a track this much is that track
    contain_threshold: float = 0.5  # a detection this much inside a track is a part of it
    reidentify: bool = True  # a detection on a lost track's last mask gives it its id back
    new_object_ratio: float = 0.7  # a new object needs this fraction of the keyframe's best text score
    group_detections: bool = True  # a keyframe's detections of one object form its region (parts match it)
    recover_drift: bool = True  # with reidentify: unsupported tracks too, through their last detection
    refresh_fit: float = 0.5  # the correcting detection: text score + this x IoU with the track
    prune_weak: int = 0  # drop a track matched only weakly on this many keyframes in a row (0: never)

    @property
    def label(self) -> str:
        return (f"K={self.keyframe_every}, refresh {'on' if self.refresh else 'off'}, IoU {self.iou_threshold:g}, "
                f"parts {self.contain_threshold:g}" + (", re-id" if self.reidentify else "")
                + (f", new >= {self.new_object_ratio:g} x best" if self.new_object_ratio else "")
                + (", grouped" if self.group_detections else "") + (", drift" if self.recover_drift else "")
                + (f", fit {self.refresh_fit:g}" if self.refresh_fit else "")
                + (f", prune {self.prune_weak}" if self.prune_weak else ""))

    def kwargs(self) -> dict[str, Any]:
        """The :func:`ovseg.video.segment_video` keyword arguments of this setting (all but keyframe_every)."""
        return {k: v for k, v in asdict(self).items() if k != "keyframe_every"}


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
                r = video.segment_video(p, frames, prompt, k, **s.kwargs(), predictor=pred, keep_frames=False)
            spent["s"] += time.perf_counter() - t0
            spent["frames"] += int(frames.shape[0])
            return r.id_maps

        summary = evaluate_video(pipe, clips, keyframe_every=s.keyframe_every, dataset="mini-video", split="dev",
                                 segment=seg, progress=progress)
        summary.update(setting=asdict(s),
                       label=s.label,
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


# ---- removal across frames ---------------------------------------------------------------------------------------

#: How removal_comparison draws the scored inside (part of the logged protocol): the edit region, the object grown by
#: 2 px and every pixel where the exact object-free clip differs from the input.
REMOVAL_SCORING = "edit region | object grown 2 px | pixels the object changes"


def removal_clips(split: str, n_clips: int) -> list[tuple[Any, int]]:
    """Mini-world clips for removal: the first ``n_clips`` of ``split`` whose background is static (flicker is
    measured there), each with the object to remove, the one with the largest visible area over the clip.
    ``test``: the shipped clips (``data/mini_world/video_test``); ``dev``: :func:`ovseg.video_edit.dev_removal_clips`
    at the test clips' length.

    Returns:
        ``[(clip, k)]``: :class:`ovseg.world_video.Clip` s (with seed and config, for the exact object-free clip).
    """
    from ..video_edit import dev_removal_clips
    from ..video_eval import video_test_root
    from ..world_video import load_clip, load_clip_index

    if isinstance(n_clips, bool) or not isinstance(n_clips, int) or n_clips < 1:
        raise InputError("n_clips must be a positive integer", repr(n_clips), "pass e.g. 2")
    if split == "dev":
        from ..video_eval import dev_clip_config

        return dev_removal_clips(n_clips, int(dev_clip_config().n_frames))
    if split != "test":
        raise InputError("removal clips come from the dev or test split", repr(split), "pass split='dev' or 'test'")
    root = video_test_root()
    out = []
    for entry in load_clip_index(root)["clips"]:
        clip = load_clip(root, entry["name"])
        if clip.background_drift != 0:
            continue
        out.append((clip, int(np.argmax(clip.instance_masks.sum(axis=(0, 2, 3))))))
        if len(out) == n_clips:
            break
    return out


def removal_comparison(pipe: Any, clips: Sequence[tuple[Any, int]], strategies: Sequence[str], n_frames: int,
                       tracked: bool = True, seed: int = 0) -> dict[str, Any]:
    """Remove each clip's object over its first ``n_frames`` frames with each strategy and score the result against
    the exact object-free clip (:func:`ovseg.video_eval.removal_metrics` inside / outside the edit region, flicker).

    1. With the clip's exact per-frame masks of the object (:func:`ovseg.video_edit.edit_video` ``masks=``): the
       editing stage alone, one entry per strategy.
    2. With ``tracked``: the whole text-prompted path (the object's class name tracked by :func:`ovseg.video.
       segment_video`, the best-scoring track removed, ``objects="best"``) with the default strategy, entry
       ``"<strategy>, tracked"``.

    Returns:
        {entry: :class:`ovseg.video_edit.StrategyMeasurement`}, the exact-mask entries first.
    """
    from ..video_edit import DEFAULT_STRATEGY, STRATEGIES, NoObjectError, StrategyMeasurement, edit_video
    from ..video_eval import removal_metrics, removal_reference

    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 2:
        raise InputError("n_frames must be an integer >= 2", repr(n_frames), "pass e.g. 16")
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise InputError(f"strategies must be some of {', '.join(STRATEGIES)}", repr(list(strategies)),
                         "pass e.g. ['independent', 'reuse']")
    names = list(strategies) + ([f"{DEFAULT_STRATEGY['remove']}, tracked"] if tracked else [])
    out = {n: StrategyMeasurement(n, [], [], [], [], [], [], []) for n in names}
    for clip, k in clips:
        exact, obj = removal_reference(clip, k)  # (T, H, W, 3) uint8, (T, H, W) bool
        frames, exact, obj = clip.frames[:n_frames], exact[:n_frames], obj[:n_frames]
        prompt = clip.objects[k].class_name
        runs = [(s, {"masks": obj, "strategy": s}) for s in strategies]
        if tracked:
            runs.append((names[-1], {"objects": "best"}))
        for name, kw in runs:
            try:
                r = edit_video(pipe, frames, prompt, "remove", seed=seed, **kw)
            except NoObjectError:  # tracking found nothing: the clip is unchanged, scored as such
                r = None
            edited = r.frames if r is not None else frames
            region = (r.edit_masks > 0) if r is not None else np.zeros_like(obj)
            # scored inside: the edit region, the object grown by 2 px (its anti-aliased rim differs from the exact
            # clip too: removal_reference) and every other pixel the object changes (an occluder's anti-aliased rim
            # over the object's hidden part blends with it); a missed part of the object counts inside, against the edit
            changed = np.any(frames != exact, axis=-1)  # (T, H, W): where the exact clip differs from the input
            sc = removal_metrics(edited, exact, region | _grow(obj, 2) | changed, clip.background_drift)
            m = out[name]
            m.clips.append(clip.name)
            m.psnr_inside.append(sc.psnr_inside)
            m.exact_outside.append(sc.exact_outside)
            m.flicker.append(sc.flicker)
            m.flicker_exact.append(sc.flicker_exact)
            m.model_calls.append(r.counts.get("model_calls", 0) if r is not None else 0)
            m.seconds.append(r.timings.get("total", 0.0) if r is not None else 0.0)
    return out


def _grow(mask: np.ndarray, px: int) -> np.ndarray:
    """(T, H, W) bool masks grown by ``px`` pixels (ovseg.inpaint's elliptical dilation, per frame)."""
    from ..inpaint import _dilate

    return np.stack([_dilate(m, px) for m in mask])


def removal_rows(measured: dict[str, Any], baseline: str = "independent") -> list[dict[str, Any]]:
    """Table rows of :func:`removal_comparison`: PSNR inside (dB), outside exact (clips), flicker and the paired
    flicker reduction against ``baseline`` (when measured), each ``value [95% interval]`` over clips."""
    base = measured.get(baseline)
    rows = []
    for name, m in measured.items():
        s = m.summary(base if base is not None and name != baseline else None)
        red = s.get("flicker_reduction_vs_baseline")
        rows.append({"strategy": name, "clips": s["n_clips"], "PSNR inside (dB)": _fmt(s["psnr_inside_db"], 2),
                     "outside exact": f"{sum(m.exact_outside)}/{len(m.exact_outside)}",
                     "flicker": _fmt(s["flicker"], 2) if s["flicker"]["value"] is not None else "n/a",
                     "exact clip's flicker": (_fmt(s["flicker_exact"], 2) if s["flicker_exact"]["value"] is not None
                                              else "n/a"),
                     f"flicker reduction vs {baseline}": _fmt(red, 2) if red and red["value"] is not None else "-",
                     "model calls / clip": s["model_calls_per_clip"]})
    return rows


def log_removal_test(measured: dict[str, Any], config: Any, n_frames: int, split: str) -> bool:
    """Log a test-split removal comparison (task ``video_removal``; :func:`ovseg.testlog.record_experiment`, mini
    profile only): per entry PSNR inside and, for the non-baseline ones, the flicker reduction. Returns whether a
    line was written."""
    base = measured.get("independent")
    headline: dict[str, Any] = {}
    for name, m in measured.items():
        s = m.summary(base if base is not None and name != "independent" else None)
        headline[f"psnr_inside[{name}]"] = s["psnr_inside_db"]
        if "flicker_reduction_vs_baseline" in s:
            headline[f"flicker_reduction[{name}]"] = s["flicker_reduction_vs_baseline"]
    from ..testlog import record_experiment
    from ..video import VideoTrackConfig
    from ..video_eval import video_models_identity

    n = len(next(iter(measured.values())).clips) if measured else 0
    # the tracked entries' masks come from the video tracker's weights, which no image stage names, and its settings
    # (removal_comparison tracks with segment_video's defaults); REMOVAL_SCORING names how the inside is drawn
    return record_experiment("video_removal", config, n, headline,
                             {"n_frames": n_frames, "entries": list(measured), "scoring": REMOVAL_SCORING,
                              "tracker": asdict(VideoTrackConfig())}, f"video/{split}",
                             stages=("sam2", "clip", "inpainting"), extra_models=video_models_identity(config))


def removal_strip_figure(frames: np.ndarray, edited: np.ndarray, exact: np.ndarray, every: int = 3,
                         max_frames: int = 6, title: str | None = None) -> "Figure":
    """Rows: the input frames, the edited ones, the exact object-free frames, at ``0, every, ...`` (all (T, H, W, 3)
    uint8)."""
    import matplotlib.pyplot as plt

    idx = list(range(0, len(frames), every))[:max_frames]
    rows = [("input", frames), ("removed", edited), ("exact", exact)]
    fig, axes = plt.subplots(3, len(idx), figsize=(1.6 * len(idx), 5.2), squeeze=False)
    for r, (name, arr) in enumerate(rows):
        for c, t in enumerate(idx):
            ax = axes[r][c]
            ax.imshow(arr[t])
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {t}", fontsize=8)
            if c == 0:
                ax.set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
