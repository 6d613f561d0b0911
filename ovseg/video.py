"""Video I/O and text-prompted video segmentation with SAM 2's video predictor.

I/O (PyAV for video files, PIL for frame folders)::

    frames, info = read_video("clip.mp4")              # (T, H, W, 3) uint8 RGB, info.fps
    frames, info = read_video("DAVIS", video="bear")   # DAVIS JPEGImages/480p/bear, or <root>/<clip>/frames
    write_video("out.mp4", frames, fps=24)             # H.264 MP4, written atomically
    write_id_masks("out", id_maps)                     # out/masks/00000.png ... (DAVIS palette PNGs)

Tracking: :func:`segment_video` runs the image pipeline (``pipe.segment``: SAM 2 masks + mask-text alignment) on
frame 0 and every ``keyframe_every``-th frame; a detection that overlaps no tracked object (IoU below
``iou_threshold``) gets a new id and is given to sam2's ``SAM2VideoPredictor`` as a mask on that frame; the predictor
propagates every object frame by frame with its memory bank (``init_state`` / ``add_new_mask`` /
``propagate_in_video`` / ``remove_object``: sam2's code, not re-implemented here). An object whose mask stays empty
for ``lost_timeout`` frames is dropped (its id is never reused). :func:`propagate_masks` is the semi-supervised
setting (DAVIS): masks given on frame 0, propagated over the clip.

Memory. What is held for a clip of T frames of H x W pixels and N tracked objects at model size S:

* the decoded frames, (T, H, W, 3) uint8 (read_video decodes the whole clip; it is not streamed);
* the model-input frames are *not* materialised: sam2's ``init_state`` would hold (T, 3, S, S) float32
  (12 MB per frame at S = 1024); ovseg hands it a lazy sequence that resizes and normalises a frame when sam2 asks
  for it (:class:`_ModelFrames`, see :func:`init_video_state`);
* sam2's per-frame outputs (low-res mask logits, (S/4)^2 float32, and memory features, bfloat16) for every tracked
  frame of every object: they grow with T x N (about 0.8 MB per object-frame at S = 1024, 20 KB for the mini
  model). ``offload_state_to_cpu=True`` keeps them in CPU memory (sam2's flag); sam2 1.1.0 never frees them during
  propagation, so only dropping an object (``lost_timeout``) releases its outputs;
* the output id maps, (T, H, W) uint8; ``save`` streams the overlay video frame by frame.

Importing this module is cheap: PyAV, torch and sam2 are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError, NoMatchWarning, OvsegWarning

if TYPE_CHECKING:  # pragma: no cover - typing only
    from sam2.sam2_video_predictor import SAM2VideoPredictor

__all__ = ["DEFAULT_MAX_FRAMES", "IMAGE_SUFFIXES", "VideoInfo", "read_video", "write_video", "write_id_masks",
           "read_id_masks", "overlay_frames", "build_sam2_video_predictor_from", "video_predictor_for",
           "init_video_state", "propagate_masks", "VideoTrackConfig", "VideoObject", "VideoSegmentationResult",
           "segment_video", "clip_array", "FRAME_MEMORY_MB"]

#: Longest clip read or segmented by default, frames (about 80 s at 25 fps); ``max_frames=`` lifts it.
DEFAULT_MAX_FRAMES = 2000
#: File suffixes (lower case) read as frames from a frame folder.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: Container format of each video suffix write_video accepts.
_VIDEO_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: Encoders tried in order by write_video: H.264, then MPEG-4 part 2 (PyAV's wheels ship libx264).
_ENCODERS = ("libx264", "mpeg4")
#: Frame-rate written when none is known (a frame folder has none; DAVIS clips are 24 fps).
DEFAULT_FPS = 24.0
#: Numbered mask files: five-digit frame numbers.
_MASK_FILE = re.compile(r"\d{5}\.png")
#: Most object ids a result can hold (palette PNG indices 1..255).
_MAX_IDS = 255


#: Clip-sized arrays (decoded frames, id maps, edit masks) of more than this many MiB are kept in an unlinked
#: temporary file in ``$TMPDIR``, memory-mapped, rather than in RAM: a long clip then costs disk, and its pages are
#: in RAM only while the OS caches them. ``memory_mb=`` (read_video, segment_video, edit_video) sets it per call.
FRAME_MEMORY_MB = 1024.0


def _check_memory_mb(memory_mb: Any) -> float:
    if memory_mb is None:
        return FRAME_MEMORY_MB
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, (int, float, np.integer, np.floating)) \
            or not float(memory_mb) >= 0:
        raise InputError("memory_mb must be a number of MiB >= 0", repr(memory_mb),
                         f"pass e.g. memory_mb={FRAME_MEMORY_MB:g} (0: always a temporary file)")
    return float(memory_mb)


def _temporary_file() -> Any:
    try:
        return tempfile.TemporaryFile(prefix="ovseg-clip-")  # unlinked at once: gone when the last map closes
    except OSError as err:
        raise InputError("a long clip is kept in a temporary file, and the temporary folder must be writable",
                         f"{tempfile.gettempdir()}: {err.strerror}",
                         "set TMPDIR to a writable folder with room for the clip, or raise memory_mb") from None


def _no_room(err: OSError, what: str) -> InputError:
    return InputError("a long clip is kept in a temporary file, and the temporary folder must have room for it",
                      f"{what} in {tempfile.gettempdir()}: {err.strerror}",
                      "free space there, set TMPDIR to a folder with room, or cut the clip (max_frames)")


def clip_array(shape: Sequence[int], dtype: Any = np.uint8, memory_mb: float | None = None) -> np.ndarray:
    """A zero-filled array of ``shape`` for one value per frame (id maps, masks, frames): in RAM when it takes at
    most ``memory_mb`` MiB (default :data:`FRAME_MEMORY_MB`), else a writable memory map of an unlinked temporary
    file (an ``np.memmap``: indexing and slicing as usual)."""
    limit = _check_memory_mb(memory_mb)
    shape = tuple(int(d) for d in shape)
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes <= limit * 2 ** 20:
        return np.zeros(shape, dtype)
    fh = _temporary_file()
    try:
        fh.truncate(nbytes)  # a sparse file of zeros
        return np.memmap(fh, dtype=dtype, mode="r+", shape=shape)
    except OSError as err:
        raise _no_room(err, f"{nbytes / 2 ** 20:.0f} MiB") from None
    finally:
        fh.close()  # the map keeps the data


class _FrameCollector:
    """Frames appended one at a time (each (H, W, 3) uint8, one size): in a list while they take at most ``limit``
    bytes, then all of them in an unlinked temporary file; :meth:`finish` gives (T, H, W, 3) uint8, a read-only
    ``np.memmap`` in the second case, so memory stays bounded however long the clip."""

    def __init__(self, memory_mb: float | None):
        self.limit = _check_memory_mb(memory_mb) * 2 ** 20
        self.frames: list[np.ndarray] = []
        self.fh: Any = None
        self.n = 0
        self.shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return self.n

    def append(self, arr: np.ndarray) -> None:
        self.shape = self.shape or arr.shape
        try:
            if self.fh is None and (self.n + 1) * arr.nbytes > self.limit:
                self.fh = _temporary_file()
                for f in self.frames:
                    self.fh.write(np.ascontiguousarray(f).tobytes())
                self.frames = []
            if self.fh is not None:
                self.fh.write(np.ascontiguousarray(arr).tobytes())
            else:
                self.frames.append(arr)
        except OSError as err:
            raise _no_room(err, f"frame {self.n}") from None
        self.n += 1

    def finish(self) -> np.ndarray:
        if self.fh is None:
            return np.stack(self.frames)
        try:
            self.fh.flush()
            return np.memmap(self.fh, dtype=np.uint8, mode="r", shape=(self.n, *self.shape))
        finally:
            self.fh.close()
            self.fh = None


# ---- reading ------------------------------------------------------------------------------------------

@dataclass
class VideoInfo:
    """Where frames came from."""

    source: str  # the file or frame folder read
    kind: str  # "file" (decoded with PyAV) or "folder" (image files)
    fps: float | None  # frames per second of a video file (its average rate); None for a frame folder
    frame_names: list[str] = field(default_factory=list)  # a folder's image file names, in frame order; [] for a file


def _check_max_frames(max_frames: Any) -> int:
    if isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1:
        raise InputError("max_frames must be a positive integer", repr(max_frames),
                         f"pass e.g. max_frames={DEFAULT_MAX_FRAMES}")
    return int(max_frames)


def _too_long(what: str, n: int | str, max_frames: int) -> InputError:
    err = InputError(f"a clip may have at most max_frames={max_frames} frames (every frame is decoded and tracked)",
                     f"{what}: {n} frames",
                     f"pass max_frames=N (read_video / segment_video) to lift the limit, or cut the clip "
                     f"(e.g. ffmpeg -i IN -frames:v {max_frames} OUT.mp4)")
    err.max_frames = max_frames  # type: ignore[attr-defined]  # marks the clip-length error (the CLI names its flag)
    return err


def _natural_key(name: str) -> list[Any]:
    """Sort key: digit runs compare as numbers (``2.jpg`` before ``10.jpg``)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frames_folder(root: Path, video: str) -> Path:
    """The frame folder of clip ``video`` under a dataset root (the first layout that exists)."""
    if not isinstance(video, str) or not video.strip() or Path(video).name != video or video in (".", ".."):
        raise InputError("video must be a clip name (one folder name, no path)", repr(video), "pass e.g. video='bear'")
    candidates = [root / video / "frames",  # ovseg mini-world clips (ovseg.world_video.write_clips)
                  root / "JPEGImages" / "480p" / video,  # DAVIS 2016 / 2017
                  root / "JPEGImages" / "Full-Resolution" / video,
                  root / "JPEGImages" / video,  # YouTube-VOS, DAVIS-style layouts without a resolution level
                  root / video]
    for c in candidates:
        if c.is_dir():
            return c
    raise InputError(f"clip {video!r} must be a frame folder under the dataset root", str(root),
                     "check the name; looked in " + ", ".join(str(c) for c in candidates))


def read_video(source: str | os.PathLike, max_frames: int = DEFAULT_MAX_FRAMES,
               video: str | None = None, memory_mb: float | None = None) -> tuple[np.ndarray, VideoInfo]:
    """Decode a video file or read a folder of frames.

    Args:
        source: a video file (MP4, MOV, MKV, WebM, AVI, ...: anything FFmpeg decodes; decoded with PyAV), or a folder of
            image files (PNG, JPEG, ...: :data:`IMAGE_SUFFIXES`), taken in natural order of their names (``2.jpg``
            before ``10.jpg``; DAVIS's ``00000.jpg ...``). Other files in the folder are ignored.
        max_frames: refuse clips with more frames than this (every frame is held in memory).
        video: a clip name: ``source`` is then a dataset root and the frames are read from the first existing
            folder of ``<source>/<video>/frames`` (ovseg mini-world clips), ``<source>/JPEGImages/480p/<video>``
            (DAVIS), ``<source>/JPEGImages/Full-Resolution/<video>``, ``<source>/JPEGImages/<video>``,
            ``<source>/<video>``.
        memory_mb: frames taking more MiB than this are decoded into a temporary file and returned memory-mapped
            (read-only); default :data:`FRAME_MEMORY_MB`.

    Returns:
        ``(frames, info)``: frames (T, H, W, 3) uint8 RGB, values in [0, 255], T >= 1 (an ``np.memmap`` above
        ``memory_mb``); :class:`VideoInfo` (fps of a file, None for a folder). Frames of a folder are loaded as
        :func:`ovseg.io.load_image` loads images (EXIF orientation applied, RGBA over white, ...); frames of a file
        as decoded (a rotation tag is not applied).

    Raises:
        InputError: a missing source, a file FFmpeg cannot read (corrupt, truncated, not a video), no video stream,
            zero frames, frames of different sizes (the first offending file or frame and both sizes), more than
            ``max_frames`` frames, a folder without image files, an unknown clip name.
    """
    max_frames = _check_max_frames(max_frames)
    memory_mb = _check_memory_mb(memory_mb)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError("a video source must be a file or folder path", type(source).__name__,
                         "pass e.g. 'clip.mp4' or 'DAVIS/JPEGImages/480p/bear'")
    path = Path(source).expanduser()
    if video is not None:
        if not path.is_dir():
            raise InputError("with video=..., the source must be a dataset root folder", str(path),
                             "pass the folder that holds the clips (e.g. DAVIS, or data/mini_world/video_test)")
        path = _frames_folder(path, video)
    if not path.exists():
        raise InputError("a video file or frame folder must exist", str(path),
                         "check the path (relative paths start at the current directory)")
    if path.is_dir():
        return _read_folder(path, max_frames, memory_mb)
    if not path.is_file():
        raise InputError("a video path must be a regular file or a folder", str(path), "pass a video file or a frame folder")
    if path.stat().st_size == 0:
        raise InputError("a video file must not be empty", f"{path} (0 bytes)", "re-export or re-download it")
    return _read_file(path, max_frames, memory_mb)


def _read_folder(folder: Path, max_frames: int, memory_mb: float) -> tuple[np.ndarray, VideoInfo]:
    from .io import load_image

    # 1. the image files, in natural order
    files = sorted((p for p in folder.iterdir()
                    if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()),
                   key=lambda p: _natural_key(p.name))
    if not files:
        subfolders = sorted(p.name for p in folder.iterdir() if p.is_dir())[:5]
        hint = (f"; it holds folders ({', '.join(subfolders)}): pass the folder of one clip's frames, or the dataset "
                "root with video='<clip>'") if subfolders else ""
        raise InputError("a frame folder must contain image files (" + ", ".join(IMAGE_SUFFIXES) + ")",
                         f"{folder}: none{hint}", "pass a folder of frames such as DAVIS/JPEGImages/480p/bear")
    if len(files) > max_frames:  # before decoding anything
        raise _too_long(str(folder), len(files), max_frames)
    # 2. decode, every frame the size of the first
    frames = _FrameCollector(memory_mb)
    for p in files:
        arr = load_image(p)  # (H, W, 3) uint8 RGB; InputError for a corrupt or unreadable file
        if frames.shape is not None and arr.shape != frames.shape:
            h0, w0 = frames.shape[:2]
            raise InputError("all frames of a video must have the same size",
                             f"{p.name} is {arr.shape[1]}x{arr.shape[0]} px, but {files[0].name} is {w0}x{h0} px "
                             f"(in {folder})", "resize the frames to one size, or remove the odd one")
        frames.append(arr)
    return frames.finish(), VideoInfo(str(folder), "folder", None, [p.name for p in files])


def _ffmpeg_reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:300]


def _read_file(path: Path, max_frames: int, memory_mb: float) -> tuple[np.ndarray, VideoInfo]:
    import av  # PyAV: FFmpeg bindings (heavy, optional for the image pipeline)

    fix = "check the file; re-encode it, e.g. ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4"
    # 1. open and find the video stream
    try:
        container = av.open(str(path), mode="r")
    except av.error.EOFError:  # headers, then nothing: e.g. a stream that never received a frame
        raise InputError("a video must have at least one frame", f"{path}: the file ends before any frame",
                         fix) from None
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as err:
        raise InputError("a video file must be readable by FFmpeg (PyAV)", f"{path}: {_ffmpeg_reason(err)}",
                         fix) from None
    with container:
        if not container.streams.video:
            raise InputError("a video file must hold a video stream", f"{path}: {len(container.streams)} stream(s), none video",
                             "pass a video file (an audio-only or subtitle file has no frames)")
        stream = container.streams.video[0]
        declared = int(stream.frames or 0)  # 0: the container does not say
        if declared > max_frames:  # before decoding anything
            raise _too_long(str(path), declared, max_frames)
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else None
        # 2. decode to RGB
        frames = _FrameCollector(memory_mb)
        try:
            for frame in container.decode(stream):
                if len(frames) >= max_frames:
                    raise _too_long(str(path), f"more than {max_frames}", max_frames)
                arr = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                if frames.shape is not None and arr.shape != frames.shape:
                    h0, w0 = frames.shape[:2]
                    raise InputError("all frames of a video must have the same size",
                                     f"frame {len(frames)} of {path} is {arr.shape[1]}x{arr.shape[0]} px, but frame 0 "
                                     f"is {w0}x{h0} px", "re-encode it at one size, e.g. ffmpeg -i IN -vf scale=W:H OUT.mp4")
                frames.append(arr)
        except (av.FFmpegError, OSError, ValueError) as err:
            if isinstance(err, InputError):
                raise
            raise InputError("a video file must decode completely", f"{path} (after {len(frames)} frames): "
                             f"{_ffmpeg_reason(err)}", fix) from None
    if not len(frames):
        raise InputError("a video must have at least one frame", f"{path}: 0 frames decoded", fix)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        fps = None
    return frames.finish(), VideoInfo(str(path), "file", fps)


# ---- writing ------------------------------------------------------------------------------------------

def _check_frame(arr: Any, what: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        shown = f"{type(arr).__name__} {getattr(arr, 'shape', '')} {getattr(arr, 'dtype', '')}".strip()
        raise InputError("video frames must be (H, W, 3) uint8 RGB arrays", f"{what}: {shown}",
                         "pass a (T, H, W, 3) uint8 array or an iterable of (H, W, 3) uint8 arrays")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError("video frames must be at least 1x1 px", f"{what}: {arr.shape[1]}x{arr.shape[0]} px",
                         "pass non-empty frames")
    return arr


def _check_fps(fps: Any) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float, np.integer, np.floating)) or not (
            math.isfinite(float(fps)) and 0 < float(fps) <= 1000):
        raise InputError("fps must be a number in (0, 1000]", repr(fps), "pass e.g. fps=24")
    return float(fps)


def _encoder() -> str:
    """The first encoder of :data:`_ENCODERS` this FFmpeg build has."""
    import av

    for name in _ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except (av.FFmpegError, ValueError):  # UnknownCodecError in PyAV >= 12
            continue
    raise InputError("write_video needs an H.264 or MPEG-4 encoder in PyAV's FFmpeg", "none of " + ", ".join(_ENCODERS),
                     "install PyAV's wheels (pip install 'av>=12'), which ship libx264")


def write_video(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float = DEFAULT_FPS,
                crf: int = 18) -> Path:
    """Encode frames as an H.264 video (MPEG-4 part 2 where FFmpeg lacks libx264), atomically.

    Args:
        path: ``.mp4`` (also ``.mov``, ``.mkv``). Written to a temporary file in the same folder, then renamed over
            ``path`` (a symbolic link at ``path`` is replaced, never written through); parent folders are created.
        frames: (T, H, W, 3) uint8 RGB, or an iterable of (H, W, 3) uint8 RGB frames of one size (consumed once,
            frame by frame: a long overlay need not be held in memory).
        fps: frames per second, in (0, 1000].
        crf: H.264 constant rate factor (0 = lossless luma, 18 = visually lossless, 23 = x264's default).

    H.264 with 4:2:0 chroma needs even sides: a frame of odd height or width is padded by one row / column
    (a copy of the last one) at the bottom / right; colour is subsampled 2x2, so decoded frames differ slightly
    from the input (lossy; a palette PNG folder, :func:`write_id_masks`, is exact).

    Returns:
        ``path`` as a Path.

    Raises:
        InputError: an unknown suffix, bad frames (shape, dtype, a size change, none at all), a bad fps or crf,
            an unwritable folder.
    """
    import av

    path = Path(path)
    fmt = _VIDEO_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError("a video output must end in " + ", ".join(_VIDEO_FORMATS), str(path), "use e.g. overlay.mp4")
    fps = _check_fps(fps)
    if isinstance(crf, bool) or not isinstance(crf, (int, np.integer)) or not 0 <= crf <= 51:
        raise InputError("crf must be an integer from 0 to 51", repr(crf), "pass e.g. crf=18")
    if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[0] == 0):
        raise InputError("video frames must be a (T, H, W, 3) uint8 array with T >= 1", f"shape {frames.shape}",
                         "pass at least one (H, W, 3) frame")
    codec = _encoder()
    from fractions import Fraction

    from .io import write_atomic

    def writer(fh: Any) -> None:
        count = 0
        with av.open(fh, mode="w", format=fmt) as out:
            stream = None
            shape = None
            for i, frame in enumerate(frames):
                frame = _check_frame(frame, f"frame {i}")
                if stream is None:  # 1. the stream, sized by the first frame (even sides)
                    shape = frame.shape
                    stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height = frame.shape[1] + frame.shape[1] % 2, frame.shape[0] + frame.shape[0] % 2
                    stream.pix_fmt = "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": str(int(crf))}
                    else:  # mpeg4: fixed quantiser, 2 = best
                        stream.options = {"qscale": "2"}
                elif frame.shape != shape:
                    raise InputError("all frames of a video must have the same size",
                                     f"frame {i} is {frame.shape[1]}x{frame.shape[0]} px, frame 0 {shape[1]}x{shape[0]} px",
                                     "resize the frames to one size")
                # 2. pad odd sides by edge replication, encode
                pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
                padded = np.pad(frame, pad, mode="edge") if any(p[1] for p in pad) else frame
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(padded), format="rgb24")
                for packet in stream.encode(vf):
                    out.mux(packet)
                count += 1
            if stream is None:
                raise InputError("a video needs at least one frame", "0 frames", "pass at least one (H, W, 3) frame")
            for packet in stream.encode():  # 3. flush the encoder
                out.mux(packet)

    return write_atomic(path, writer)


def _real_folder(path: Path, what: str) -> Path:
    """``path`` as a folder to write into: refused when it is a symbolic link or a file."""
    if path.is_symlink():
        raise InputError(f"{what} must not be a symbolic link (files are never written through one)", str(path),
                         "remove the link or pass a real folder")
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} must be a folder", f"{path} (a file)", "pass another output folder")
    return path


def _check_id_maps(id_maps: Any) -> np.ndarray:
    """(T, H, W) integer ids in [0, 255] -> uint8."""
    if not isinstance(id_maps, np.ndarray) or id_maps.ndim != 3 or id_maps.shape[0] < 1:
        raise InputError("id maps must be a (T, H, W) integer array with T >= 1",
                         f"{type(id_maps).__name__} {getattr(id_maps, 'shape', '')}", "pass one (H, W) id map per frame")
    if not (np.issubdtype(id_maps.dtype, np.integer) or id_maps.dtype == np.bool_):
        raise InputError("id maps must hold integers (0 = background, k = object k)", f"dtype {id_maps.dtype}",
                         "convert them, e.g. id_maps.astype(np.uint8)")
    if id_maps.size and (int(id_maps.min()) < 0 or int(id_maps.max()) > _MAX_IDS):
        raise InputError(f"object ids must be in [0, {_MAX_IDS}] (palette PNG indices)",
                         f"ids from {int(id_maps.min())} to {int(id_maps.max())}", "renumber the objects")
    return id_maps.astype(np.uint8, copy=False)


def _palette_png(ids: np.ndarray) -> Any:
    """A mode "P" PIL image of the (H, W) uint8 ids with the DAVIS palette (index 0 = background, black)."""
    from PIL import Image

    from .world_video import davis_palette

    img = Image.fromarray(np.ascontiguousarray(ids, np.uint8))
    img.putpalette(davis_palette())  # mode L -> P: the pixel values are the palette indices
    return img


def write_id_masks(out_dir: str | os.PathLike, id_maps: np.ndarray) -> list[Path]:
    """Write ``out_dir/masks/00000.png ...``: one DAVIS-style palette PNG per frame (index 0 = background, k = object
    id k; colours :func:`ovseg.world_video.davis_palette`).

    Args:
        out_dir: the output folder (created; ``masks/`` inside it must not be a symbolic link).
        id_maps: (T, H, W) integer ids in [0, 255].

    Every file is written atomically. Numbered PNGs of ``masks/`` beyond frame T - 1 (left by an earlier, longer run)
    are removed; nothing else is touched.

    Returns:
        The T paths written, in frame order.
    """
    from .io import save_image_atomic

    ids = _check_id_maps(id_maps)
    folder = _real_folder(_real_folder(Path(out_dir), "an output folder") / "masks", "the masks folder")
    written = [save_image_atomic(folder / f"{t:05d}.png", _palette_png(ids[t])) for t in range(ids.shape[0])]
    for p in folder.iterdir():  # frames of an earlier, longer clip
        if _MASK_FILE.fullmatch(p.name) and int(p.name[:5]) >= ids.shape[0] and (p.is_file() or p.is_symlink()):
            p.unlink()
    return written


def read_id_masks(folder: str | os.PathLike) -> np.ndarray:
    """Read the numbered id-mask PNGs of ``folder`` (a ``masks/`` folder, or an output folder that holds one):
    palette ("P") or greyscale ("L") PNGs ``00000.png ...``.

    Returns:
        (T, H, W) uint8 ids (0 = background).

    Raises:
        InputError: no numbered PNGs, a gap in the numbering, an unreadable file, another mode, or sizes that differ.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    if (folder / "masks").is_dir():
        folder = folder / "masks"
    names = sorted(p.name for p in folder.iterdir() if _MASK_FILE.fullmatch(p.name)) if folder.is_dir() else []
    if not names:
        raise InputError("an id-mask folder must hold numbered PNGs 00000.png, 00001.png, ...", str(folder),
                         "pass the masks/ folder written by write_id_masks")
    if names != [f"{t:05d}.png" for t in range(len(names))]:
        raise InputError("id-mask PNGs must be numbered from 00000.png without gaps", f"{folder}: {names[:3]}...",
                         "rewrite the folder with write_id_masks")
    maps = []
    for name in names:
        try:
            with Image.open(folder / name) as img:
                if img.mode not in ("P", "L"):
                    raise InputError("an id-mask PNG must be a palette (P) or greyscale (L) image",
                                     f"{folder / name}: mode {img.mode}", "write it with write_id_masks")
                arr = np.asarray(img, dtype=np.uint8).copy()
        except (OSError, UnidentifiedImageError) as err:
            raise InputError("id-mask files must be readable PNGs", f"{folder / name}: {err}",
                             "rewrite the folder with write_id_masks") from None
        if maps and arr.shape != maps[0].shape:
            raise InputError("all id masks of a clip must have the same size",
                             f"{name} is {arr.shape[1]}x{arr.shape[0]} px, but 00000.png is "
                             f"{maps[0].shape[1]}x{maps[0].shape[0]} px", "rewrite the folder with write_id_masks")
        maps.append(arr)
    return np.stack(maps)


def _palette_rgb() -> np.ndarray:
    """(256, 3) uint8 DAVIS palette colours."""
    from .world_video import davis_palette

    return np.asarray(davis_palette(), dtype=np.uint8).reshape(-1, 3)[:256]


def _check_matching(frames: np.ndarray, id_maps: np.ndarray) -> None:
    """Frames (T, H, W, 3) and id maps (T', H', W') must agree in T and in H x W."""
    if frames.shape[1:3] != id_maps.shape[1:3]:
        raise InputError("id masks must have the frames' size",
                         f"masks {id_maps.shape[2]}x{id_maps.shape[1]} px, frames {frames.shape[2]}x{frames.shape[1]} px",
                         "pass the masks computed on these frames (or resize them with nearest neighbour)")
    if frames.shape[0] != id_maps.shape[0]:
        raise InputError("there must be one id mask per frame", f"{id_maps.shape[0]} masks for {frames.shape[0]} frames",
                         "pass the masks computed on these frames")


def overlay_frames(frames: np.ndarray, id_maps: np.ndarray, alpha: float = 0.5) -> Iterator[np.ndarray]:
    """Frames with each object's palette colour blended in (``alpha``) and its outline drawn at full colour.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        id_maps: (T, H, W) integer ids in [0, 255], 0 = background.

    Yields:
        T frames, (H, W, 3) uint8 RGB, one at a time (for :func:`write_video`).

    Raises:
        InputError: frames and masks of different sizes or counts (checked before the first frame is yielded).
    """
    ids = _check_id_maps(id_maps)
    frames = np.asarray(frames)
    _check_frame(frames[0] if frames.ndim == 4 and len(frames) else frames, "frames")
    _check_matching(frames, ids)
    colours = _palette_rgb().astype(np.float32)  # (256, 3)

    def gen() -> Iterator[np.ndarray]:
        for t in range(frames.shape[0]):
            m = ids[t]  # (H, W)
            out = frames[t].astype(np.float32)
            fg = m > 0
            out[fg] = (1 - alpha) * out[fg] + alpha * colours[m[fg]]
            edge = np.zeros_like(fg)  # pixels whose right / lower neighbour has another id
            edge[:, :-1] |= m[:, :-1] != m[:, 1:]
            edge[:-1, :] |= m[:-1, :] != m[1:, :]
            edge &= fg
            out[edge] = colours[m[edge]]
            yield np.rint(out).astype(np.uint8)

    return gen()


# ---- the SAM 2 video predictor --------------------------------------------------------------------------

#: sam2's video defaults (``build_sam2_video_predictor(apply_postprocessing=True)``) that ovseg keeps: the memory
#: encoder sees the exact binary mask a user gave. ``fill_hole_area`` is ovseg's own (see the builder).
_VIDEO_OVERRIDES = ("++model.binarize_mask_from_pts_for_mem_enc=true",)


def build_sam2_video_predictor_from(source: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                                    device: str = "cpu", overrides: Sequence[str] = (),
                                    fill_hole_area: int = 0) -> "SAM2VideoPredictor":
    """Build sam2's ``SAM2VideoPredictor`` (eval mode, on ``device``) from a SAM 2 model description.

    Args:
        source: a model folder holding ``config.yaml`` and ``model.safetensors`` (the mini SAM 2,
            ``data/models/mini-sam2``; ``checkpoint`` defaults to its ``model.safetensors``), or anything
            :func:`ovseg.masks.build_sam2_model` takes: a key of :data:`ovseg.masks.SAM2_CONFIGS`
            (``"sam2.1_hiera_l"``), a sam2 package config name (``"configs/sam2.1/sam2.1_hiera_l.yaml"``) or a local
            YAML. The class built is chosen here, not by the YAML: the config's ``SAM2Base`` target is replaced by
            ``SAM2VideoPredictor`` (a subclass with the same weights), and a local YAML may still only name
            ``sam2.modeling.*`` classes.
        checkpoint: ``.pt`` / ``.safetensors`` weights; None (and no model folder) keeps the random initialisation
            (tests and timing only).
        device: torch device string.
        overrides: hydra overrides, as for :func:`ovseg.masks.build_sam2_model`.
        fill_hole_area: sam2's hole filling of predicted masks (pixels of the low-res mask). sam2's own video default
            is 8, but it needs sam2's compiled CUDA extension and otherwise warns on every frame and skips; 0 (off)
            gives the same masks on every install.

    Raises:
        ConfigError, WeightsError: as :func:`ovseg.masks.build_sam2_model`.
    """
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    from .masks import build_sam2_model

    if isinstance(fill_hole_area, bool) or not isinstance(fill_hole_area, (int, np.integer)) or fill_hole_area < 0:
        raise InputError("fill_hole_area must be a non-negative integer", repr(fill_hole_area), "pass 0 (off) or e.g. 8")
    path = Path(source).expanduser() if isinstance(source, (str, os.PathLike)) else None
    config = str(source)
    if path is not None and path.is_dir():  # an embedded model folder: config + weights side by side
        config = str(path / "config.yaml")
        if checkpoint is None:
            checkpoint = path / "model.safetensors"
    extra = [*_VIDEO_OVERRIDES, f"++model.fill_hole_area={int(fill_hole_area)}"]
    return build_sam2_model(config, checkpoint, device, [*overrides, *extra], model_class=SAM2VideoPredictor)


def video_predictor_for(pipe: Any) -> "SAM2VideoPredictor":
    """The video predictor of the SAM 2 model ``pipe``'s config names (the model its ``generate_masks`` loads:
    the same registry entry and weights, or that entry's :data:`VIDEO_WEIGHTS` companion: ``mini-sam2`` tracks with
    ``mini-sam2-video``), on ``pipe.device``. Cached per pipeline object (while its config's ``sam2.model`` and
    profile stay the same).

    A mask generator passed to the pipeline as a component is not inspected: pass ``predictor=`` to
    :func:`segment_video` to track with other weights.
    """
    from .pipeline import _model_name, resolve_sam2

    config = pipe.config
    name = _model_name(config.sam2.model, config.profile, "sam2")
    name = VIDEO_WEIGHTS.get(name, name)
    key = (name, config.profile, str(pipe.device))
    hit = _PREDICTORS.get(pipe)
    if hit is not None and hit[0] == key:
        return hit[1]
    found = resolve_sam2(name)  # as ovseg.pipeline.load_mask_generator resolves it
    if found.path.is_dir():
        predictor = build_sam2_video_predictor_from(found.path / "config.yaml", found.path / found.entry.files[0],
                                                    pipe.device)
    else:
        predictor = build_sam2_video_predictor_from(found.entry.arch, found.path, pipe.device)
    _PREDICTORS[pipe] = (key, predictor)
    return predictor


#: Keyframe interval of text-prompted tracking (:class:`VideoTrackConfig`, the CLI's ``--keyframe-every``, editing and
#: evaluation), chosen on the video dev clips (``scripts/video_track_dev.py``).
DEFAULT_KEYFRAME_EVERY = 4

#: Registry entry whose weights track for a SAM 2 entry whose own video path is untrained: the mini SAM 2 was
#: trained on images only; ``mini-sam2-video`` continues it on clips (:mod:`ovseg.train.mini_sam2_video`). Keyframe
#: detections keep the pipeline's own entry.
VIDEO_WEIGHTS = {"mini-sam2": "mini-sam2-video"}

#: pipeline -> ((model name, profile, device), predictor); entries go with their pipeline.
_PREDICTORS: "weakref.WeakKeyDictionary[Any, tuple[tuple[str, str, str], Any]]" = weakref.WeakKeyDictionary()


class _ModelFrames:
    """The frames as sam2's ``inference_state["images"]`` expects them, computed on demand.

    ``len()`` is T; item ``i`` is frame i resized to S x S (PIL's default bicubic filter, as sam2's JPEG loader
    ``_load_img_as_tensor`` does) and normalised with ``(x / 255 - mean) / std``: a (3, S, S) float32 tensor, on the
    compute device or, with ``offload_video_to_cpu``, on the CPU (sam2 moves it at use). Only the most recently used
    frame is kept; sam2 itself caches the backbone features of the last frame it encoded. This is the contract of
    sam2's own lazy ``AsyncVideoFrameLoader`` (indexing and ``len``), minus its thread and its all-frames cache.
    """

    def __init__(self, frames: np.ndarray, image_size: int, offload_video_to_cpu: bool, img_mean: Sequence[float],
                 img_std: Sequence[float], compute_device: Any):
        import torch

        self.frames = frames  # (T, H, W, 3) uint8
        self.image_size = int(image_size)
        self.device = torch.device("cpu") if offload_video_to_cpu else compute_device
        self.mean = torch.tensor(img_mean, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        self.std = torch.tensor(img_std, dtype=torch.float32)[:, None, None]  # (3, 1, 1)
        self._last: tuple[int, Any] | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def __getitem__(self, index: int) -> Any:
        import torch
        from PIL import Image

        index = int(index)
        if self._last is not None and self._last[0] == index:
            return self._last[1]
        s = self.image_size
        resized = np.array(Image.fromarray(self.frames[index]).resize((s, s)))  # (S, S, 3) uint8, writable
        img = torch.from_numpy(resized).permute(2, 0, 1).float() / 255.0  # (3, S, S) in [0, 1]
        img = ((img - self.mean) / self.std).to(self.device)  # (3, S, S) normalised
        self._last = (index, img)
        return img


class _InMemoryVideo:
    """The ``video_path`` ovseg passes to sam2's ``init_state``: frames already in memory."""

    def __init__(self, frames: np.ndarray):
        self.frames = frames  # (T, H, W, 3) uint8


# Why a patch, and why this one. sam2 1.1.0's SAM2VideoPredictor.init_state(video_path, ...) gets its frames from
# sam2.sam2_video_predictor.load_video_frames, which takes only an MP4 path (decoded with decord, not installed
# here) or a folder of JPEGs; there is no documented hook for frames in memory. Writing JPEGs would be lossy and
# cost disk I/O; building the inference_state dict by hand would copy init_state's 40 lines of private layout. So,
# while ovseg's own calls run, the module's load_video_frames name is replaced by a function that serves an
# _InMemoryVideo itself (a lazy _ModelFrames, the kind of sequence sam2's own async loader puts in the state) and
# hands every other argument to sam2's original: a concurrent caller with a path sees no change. sam2's
# propagate_in_video also opens a tqdm bar per call; ovseg calls it once per frame, so within the same window that
# bar (and only a bar with sam2's "propagate in video" label) is silenced; ovseg draws one bar over all frames.
# Both names are restored when the last ovseg caller leaves (a reference count under a lock).
_HOOK_LOCK = threading.Lock()
_HOOK_STATE: dict[str, Any] = {"depth": 0, "saved": None}


@contextlib.contextmanager
def _sam2_hooks() -> Iterator[None]:
    import sam2.sam2_video_predictor as svp

    with _HOOK_LOCK:
        if _HOOK_STATE["depth"] == 0:
            original_load, original_tqdm = svp.load_video_frames, svp.tqdm
            _HOOK_STATE["saved"] = (original_load, original_tqdm)

            def load_video_frames(video_path: Any, image_size: int, offload_video_to_cpu: bool, *args: Any,
                                  **kwargs: Any) -> Any:
                if not isinstance(video_path, _InMemoryVideo):
                    return original_load(video_path, image_size, offload_video_to_cpu, *args, **kwargs)
                import inspect

                defaults = {k: p.default for k, p in inspect.signature(original_load).parameters.items()}
                frames = video_path.frames  # (T, H, W, 3) uint8
                images = _ModelFrames(frames, image_size, offload_video_to_cpu,
                                      kwargs.get("img_mean", defaults["img_mean"]),
                                      kwargs.get("img_std", defaults["img_std"]),
                                      kwargs.get("compute_device", defaults["compute_device"]))
                return images, int(frames.shape[1]), int(frames.shape[2])  # images, video_height, video_width

            def quiet_tqdm(*args: Any, **kwargs: Any) -> Any:
                if kwargs.get("desc") == "propagate in video":
                    return args[0] if args else kwargs.get("iterable")
                return original_tqdm(*args, **kwargs)

            svp.load_video_frames, svp.tqdm = load_video_frames, quiet_tqdm
        _HOOK_STATE["depth"] += 1
    try:
        yield
    finally:
        with _HOOK_LOCK:
            _HOOK_STATE["depth"] -= 1
            if _HOOK_STATE["depth"] == 0:
                svp.load_video_frames, svp.tqdm = _HOOK_STATE["saved"]
                _HOOK_STATE["saved"] = None


def _check_video_array(frames: Any, what: str = "frames") -> np.ndarray:
    """(T, H, W, 3) uint8 (an array, or a sequence of (H, W, 3) uint8 frames of one size) -> C-contiguous array."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[3] != 3 or frames.dtype != np.uint8:
            raise InputError("video frames must be a (T, H, W, 3) uint8 RGB array with T >= 1",
                             f"{what}: shape {frames.shape}, dtype {frames.dtype}",
                             "read them with ovseg.video.read_video, or stack (H, W, 3) uint8 frames")
        return np.ascontiguousarray(frames)
    if isinstance(frames, (list, tuple)) and frames:
        first = _check_frame(frames[0], f"{what}[0]")
        for i, f in enumerate(frames):
            f = _check_frame(f, f"{what}[{i}]")
            if f.shape != first.shape:
                raise InputError("all frames of a video must have the same size",
                                 f"{what}[{i}] is {f.shape[1]}x{f.shape[0]} px, {what}[0] {first.shape[1]}x{first.shape[0]} px",
                                 "resize the frames to one size")
        return np.stack(frames)
    raise InputError("video frames must be a (T, H, W, 3) uint8 array, a list of (H, W, 3) frames, or a path",
                     type(frames).__name__, "read them with ovseg.video.read_video")


def init_video_state(predictor: "SAM2VideoPredictor", frames: np.ndarray, offload_video_to_cpu: bool = False,
                     offload_state_to_cpu: bool = False) -> dict[str, Any]:
    """sam2's ``inference_state`` for frames in memory: ``predictor.init_state`` itself, fed by :class:`_ModelFrames`
    instead of a JPEG folder (see the comment above :func:`_sam2_hooks`).

    Args:
        predictor: a ``SAM2VideoPredictor`` (:func:`build_sam2_video_predictor_from`).
        frames: (T, H, W, 3) uint8 RGB; kept by reference (not copied): do not modify it while tracking.
        offload_video_to_cpu, offload_state_to_cpu: sam2's flags (model-input frames / per-frame outputs in CPU
            memory rather than on the GPU). The model-input frames are computed per frame on demand either way.

    Returns:
        The state dict sam2's ``add_new_mask`` / ``add_new_points_or_box`` / ``propagate_in_video`` / ``reset_state``
        take. Its frame 0 is encoded on return (sam2's warm-up).
    """
    frames = _check_video_array(frames)
    with _sam2_hooks():
        return predictor.init_state(_InMemoryVideo(frames), offload_video_to_cpu=bool(offload_video_to_cpu),
                                    offload_state_to_cpu=bool(offload_state_to_cpu))


def _step(predictor: Any, state: dict[str, Any], t: int) -> tuple[list[int], Any]:
    """Track every object of ``state`` on frame ``t`` (sam2's propagate_in_video over that one frame); returns the
    object ids and their (N, 1, H, W) float mask logits at the video's size."""
    out = None
    for _, obj_ids, logits in predictor.propagate_in_video(state, start_frame_idx=t, max_frame_num_to_track=0):
        out = (list(obj_ids), logits)
    if out is None:  # pragma: no cover - sam2 always yields the frame asked for
        raise RuntimeError(f"sam2 yielded no output for frame {t}")
    return out


def _forget_frames(predictor: Any, state: dict[str, Any], t: int, max_cond_frames: int) -> int:
    """Drop the per-frame outputs of ``state`` that no frame after ``t`` reads when tracking forward; returns how many.

    sam2 keeps every frame's outputs (memory features, mask logits, object pointer) for the whole clip, which grows
    without bound on a long one. A forward step at frame f reads (``SAM2Base._prepare_memory_conditioned_features``)
    the non-conditioning outputs of frames f - 1 ... f - num_maskmem * stride (memory) and f - 1 ... f -
    (max_obj_ptrs_in_encoder - 1) (object pointers), and of the conditioning (prompted) frames, the
    ``max_cond_frames_in_attn`` closest ones (forward: the most recent), plus unselected ones inside those windows.
    So non-conditioning outputs older than the larger window are never read again, and neither are conditioning
    outputs older than the window and outside the ``max_cond_frames`` most recent (the predictor attends to those
    only: :func:`segment_video` sets its ``max_cond_frames_in_attn``). Dropping them changes no later output.
    """
    per_objects = state.get("output_dict_per_obj") if isinstance(state, dict) else None
    if per_objects is None or not hasattr(predictor, "num_maskmem"):
        return 0  # not sam2's layout (a stand-in predictor): nothing known to drop
    stride = max(1, int(getattr(predictor, "memory_temporal_stride_for_eval", 1)))
    window = max(int(predictor.num_maskmem) * stride, int(getattr(predictor, "max_obj_ptrs_in_encoder", 0))) + 1
    oldest = t + 1 - window  # the next frame, t + 1, reads frames >= t + 1 - window
    dropped = 0
    for per_obj in per_objects.values():
        non_cond = per_obj["non_cond_frame_outputs"]
        for f in [f for f in non_cond if f < oldest]:
            del non_cond[f]
            dropped += 1
        cond = per_obj["cond_frame_outputs"]
        recent = set(sorted(cond)[-max_cond_frames:])
        for f in [f for f in cond if f < oldest and f not in recent]:
            del cond[f]
            dropped += 1
    return dropped


def _to_numpy_logits(logits: Any) -> np.ndarray:
    """(N, 1, H, W) torch logits -> (N, H, W) float32 numpy."""
    return logits[:, 0].detach().float().cpu().numpy()


def _compose(logits: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """(H, W) uint8 id map: each pixel gets the id of the highest positive logit, 0 where none is positive
    (sam2's non-overlap rule: argmax over objects)."""
    if len(ids) == 0:
        return np.zeros(logits.shape[1:], np.uint8)
    best = logits.argmax(axis=0)  # (H, W)
    lut = np.asarray(ids, dtype=np.uint8)
    return np.where(logits.max(axis=0) > 0, lut[best], 0).astype(np.uint8)


def propagate_masks(predictor: "SAM2VideoPredictor", frames: np.ndarray, first_masks: np.ndarray,
                    offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                    progress: bool = False) -> np.ndarray:
    """Semi-supervised video object segmentation (the DAVIS protocol): objects given on frame 0, tracked over the clip
    by sam2's video predictor.

    Args:
        predictor: a ``SAM2VideoPredictor``.
        frames: (T, H, W, 3) uint8 RGB.
        first_masks: (H, W) integer id map of frame 0 (0 = background, k = object k, 1 <= k <= 255).
        progress: a tqdm bar over the frames.

    Returns:
        (T, H, W) uint8 id maps (frame 0 as sam2 outputs it for the given masks).

    Raises:
        InputError: bad frames, a mask of another size than the frames, or no object in ``first_masks``.
    """
    import torch

    frames = _check_video_array(frames)
    first = _check_id_maps(np.asarray(first_masks)[None])[0]  # (H, W) uint8
    _check_matching(frames[:1], first[None])
    ids = [int(k) for k in np.unique(first) if k > 0]
    if not ids:
        raise InputError("first_masks must hold at least one object (an id > 0)", "all background",
                         "pass the id map of frame 0")
    out = np.zeros(frames.shape[:3], np.uint8)  # (T, H, W)
    with _sam2_hooks(), torch.inference_mode():
        state = init_video_state(predictor, frames, offload_video_to_cpu, offload_state_to_cpu)
        for k in ids:
            predictor.add_new_mask(state, 0, k, torch.from_numpy(first == k))
        bar = _bar(frames.shape[0], progress, "ovseg propagate")
        for t in range(frames.shape[0]):
            obj_ids, logits = _step(predictor, state, t)
            out[t] = _compose(_to_numpy_logits(logits), obj_ids)
            bar.update(1)
        bar.close()
        predictor.reset_state(state)
    return out


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def close(self) -> None: ...


def _bar(total: int, progress: bool, desc: str) -> Any:
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame")


# ---- text-prompted tracking ---------------------------------------------------------------------------------

@dataclass
class VideoTrackConfig:
    """Settings of :func:`segment_video` (recorded in ``result.json``)."""

    # Run the image pipeline on frame 0 and every keyframe_every-th frame after it (1 = every frame).
    keyframe_every: int = DEFAULT_KEYFRAME_EVERY
    # A keyframe detection whose IoU with every tracked object's mask (and every detection accepted before it on
    # that frame) is below this starts a new object (unless contain_threshold makes it a part of one); otherwise it
    # is the object it overlaps most. In (0, 1]. Chosen on dev with keyframe_every and refresh (0.1 over 0.3).
    iou_threshold: float = 0.1
    # Frames an object's mask may stay empty (occluded, out of frame, lost) before its id is dropped; 0 drops it on
    # its first empty frame. A dropped id is never reused: the object, found again, gets a new id.
    lost_timeout: int = 15
    # Most objects tracked at once (each costs one SAM 2 decoder + memory pass per frame); further detections wait.
    max_objects: int = 10
    # Detections per keyframe: pipe.segment's top_k (masks passing alignment.similarity_threshold, best first).
    top_k: int = 5
    # Detections with fewer pixels than this are ignored.
    min_area: int = 16
    # sam2: keep the model-input frames in CPU memory (they are computed on demand either way).
    offload_video_to_cpu: bool = False
    # sam2: keep the per-frame outputs (mask logits, memory features) in CPU memory rather than on the GPU.
    offload_state_to_cpu: bool = False
    # A keyframe detection matched to a tracked object (IoU >= iou_threshold) is given to the predictor as that
    # object's mask on the keyframe (a correction prompt, sam2's add_new_mask), so tracking errors last at most
    # keyframe_every frames; False: a match only records the text score and the memory alone tracks.
    refresh: bool = True
    # A detection with at least this fraction of its own area inside a tracked object's mask (or a detection accepted
    # before it on that keyframe) is that object too (a part of it, e.g. SAM 2's subpart mask), whatever the IoU; in
    # (0, 1], 1.0: only when wholly inside.
    contain_threshold: float = 0.5
    # A detection matching no visible object but overlapping (IoU >= iou_threshold) the last mask of a tracked object
    # that is empty on this frame (occluded, lost by the tracker) is that object reappearing: it gets its id back and
    # is given to the predictor as its mask; False: it starts a new object. Alone (recover_drift off) it changed
    # neither the id switches nor J&F beyond noise on the first 12 dev clips; on with recover_drift (see there).
    reidentify: bool = True
    # Prompted (conditioning) frames of an object that each frame attends to: the most recent ones (sam2's
    # max_cond_frames_in_attn, which otherwise attends to all); older ones are dropped from the state, so that memory
    # and time per frame stay bounded on long clips however often refresh prompts. A 32-frame clip at
    # keyframe_every 4 has at most 8 per object, so the mini-world clips' results do not depend on it.
    max_cond_frames: int = 16
    # A keyframe detection that holds two or more tracked objects (each at least contain_threshold inside it) is one
    # object that was tracked in parts (SAM 2 split it, e.g. a ring's two halves): the oldest id keeps it, with the
    # detection as its mask, and the others are removed. Off: on the first 30 dev clips it gave 17 id switches
    # against 21 without it (5.7 [1.3, 11.7] vs 7.0 [1.0, 16.0] per 10 clips; per clip -5 to +5: noise; it added 5
    # in a clip that had none) and J&F 0.816 vs 0.819.
    merge_parts: bool = False
    # A detection starts a new object only if its text score (final_score) is at least this fraction of the best
    # detection's on that keyframe; weaker ones (typically another class the prompt resembles) are ignored. In [0, 1];
    # 0: every detection passing the pipeline's alignment.similarity_threshold may start one. 0.7 was chosen on the
    # first 30 dev clips with group_detections and recover_drift (id switches: 0.6 -> 4, 0.7 and 0.8 -> 1, J&F 0.820
    # for all three; the lowest ratio of the fewest switches): on those clips the detections of the prompt's class
    # kept 98% of their scores at >= 0.7 x the keyframe's best, those of other classes 31%.
    new_object_ratio: float = 0.7
    # A keyframe's detections matched to one object form its region on that keyframe: a further detection overlapping
    # any of them (iou_threshold, contain_threshold) is that object too, not a new one (SAM 2's overlapping parts of
    # one object, e.g. a ring's arcs); the object is prompted with its best-scoring match, or with a matched detection
    # at least twice as large that holds >= 90% of it (the whole of which the best match is a part). False: each
    # detection is compared with the tracks and the new objects only, the first match corrects the track. On: it
    # removed the 11 id switches of a ring tracked as two arcs on the first 30 dev clips (J&F 0.819 either way).
    group_detections: bool = True
    # With reidentify: a tracked object that no detection supports on a keyframe (its track empty, or drifted onto
    # something else) is "lost" too, and is compared through its last *detected* mask (its last keyframe detection)
    # rather than its last tracked one; False: only empty tracks, through their last tracked mask. With reidentify,
    # it removed 2 of the 21 id switches on the first 30 dev clips (a track that drifted onto a neighbour, and one
    # lost on frame 1, each found again under a new id).
    recover_drift: bool = True
    # With group_detections and refresh: the matched detection that corrects a track is the one of highest
    # final_score + refresh_fit x IoU(detection, track), so that a detection spanning the object and a neighbour does
    # not replace a close fit that scores a little lower; 0: the best text score alone. >= 0. Chosen on the first 60
    # dev clips (with the settings above): 0 -> 14 id switches, 0.1 -> 14, 0.25 -> 10, 0.5 -> 9, 1.0 -> 9; J&F 0.823
    # to 0.827 (noise); the fewest switches, then the higher J&F.
    refresh_fit: float = 0.5
    # A tracked object whose matched detection scores below new_object_ratio x the keyframe's best detection on this
    # many of its matched keyframes in a row (keyframes without a match of it do not count) is dropped (remove_object;
    # its id is not reused): another class the prompt resembles, tracked while the prompt's object was not in view.
    # 0: never (on the first 60 dev clips, with refresh_fit 0.5: 1 -> 10 id switches, 2 -> 9, off -> 9; J&F 0.825,
    # 0.827, 0.827).
    prune_weak: int = 0

    def validate(self) -> "VideoTrackConfig":
        def integer(name: str, lo: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise InputError(f"{name} must be an integer >= {lo}", repr(v),
                                 f"pass e.g. {name}={getattr(VideoTrackConfig, name)}")

        integer("keyframe_every", 1)
        integer("lost_timeout", 0)
        integer("max_objects", 1)
        integer("top_k", 1)
        integer("min_area", 0)
        integer("max_cond_frames", 1)
        integer("prune_weak", 0)
        def number(name: str, ok: Callable[[float], bool], rule: str, eg: float) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not ok(float(v)):
                raise InputError(f"{name} must be {rule}", repr(v), f"pass e.g. {name}={eg}")

        number("iou_threshold", lambda v: 0 < v <= 1, "a number in (0, 1]", 0.3)
        number("contain_threshold", lambda v: 0 < v <= 1, "a number in (0, 1]", 0.5)
        number("new_object_ratio", lambda v: 0 <= v <= 1, "a number in [0, 1]", 0.7)
        number("refresh_fit", lambda v: 0 <= v < 1e6, "a number >= 0", 0.25)  # (NaN and inf fail)
        for name in ("offload_video_to_cpu", "offload_state_to_cpu", "refresh", "reidentify", "merge_parts",
                     "group_detections", "recover_drift"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False", repr(getattr(self, name)), f"pass {name}=True")
        return self


@dataclass
class VideoObject:
    """One tracked object of a :class:`VideoSegmentationResult`."""

    id: int  # its value in the id maps, 1..255
    first_frame: int  # the keyframe whose detection added it
    last_frame: int  # last frame where its mask was non-empty
    dropped_frame: int | None  # frame at which it was dropped after lost_timeout empty frames; None: kept to the end
    score: float  # final_score (mask-text alignment) of the detection that added it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoSegmentationResult:
    """Output of :func:`segment_video`. T frames of H x W pixels."""

    text_prompt: str
    id_maps: np.ndarray  # (T, H, W) uint8: 0 = background, k = object id k (objects never overlap)
    objects: list[VideoObject]  # in id order
    # per frame {id: confidence}: mean sigmoid of SAM 2's mask logits over the object's mask (in (0.5, 1]), for
    # every object with a non-empty mask on that frame
    scores: list[dict[int, float]]
    # per frame {id: final_score}: the mask-text alignment score of the keyframe detection matched to (or adding)
    # each object; {} on frames that are not keyframes
    text_scores: list[dict[int, float]]
    keyframes: list[int]  # frames the image pipeline ran on
    settings: dict[str, Any]  # VideoTrackConfig as a dict
    frames: np.ndarray | None = None  # (T, H, W, 3) uint8 RGB input (for the overlay); None when not kept
    fps: float | None = None  # of the source video; None for frames without a rate
    source: str | None = None  # the file / folder read, when frames came from a path
    counts: dict[str, int] = field(default_factory=dict)  # detections, new objects, matched, ignored (small / full)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: detect, track, total
    # what ran the keyframes, as the image results record it (SegmentationResult.profile / models / config); None / {}
    # when the pipeline's results do not say. The video predictor is built from the same SAM 2 entry as "sam2".
    profile: str | None = None
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        """True when the prompt matched no object in any keyframe (then :meth:`save` writes nothing)."""
        return not self.objects

    @property
    def first_frames(self) -> dict[int, int]:
        """{id: first frame}."""
        return {o.id: o.first_frame for o in self.objects}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no arrays): what ``result.json`` holds, less its ``files`` list."""
        t, h, w = self.id_maps.shape
        return {"text_prompt": self.text_prompt, "n_frames": t, "size": [w, h], "fps": self.fps, "source": self.source,
                "objects": [o.to_dict() for o in self.objects], "keyframes": list(self.keyframes),
                "frames": [{"frame": i, "ids": sorted(self.scores[i]),
                            "scores": {str(k): round(v, 4) for k, v in sorted(self.scores[i].items())},
                            **({"text_scores": {str(k): round(v, 4) for k, v in sorted(self.text_scores[i].items())}}
                               if i in set(self.keyframes) else {})} for i in range(t)],
                "counts": self.counts, "settings": self.settings,
                "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
                "profile": self.profile, "models": self.models, "config": self.config,
                "mask_encoding": "masks/NNNNN.png: palette PNG (DAVIS palette), value k = object id k, 0 = background"}

    def save(self, out_dir: str | os.PathLike, fps: float | None = None) -> list[Path]:
        """Write ``masks/00000.png ...`` (:func:`write_id_masks`), ``overlay.mp4`` (the frames with coloured masks,
        :func:`overlay_frames`, at ``fps`` or the source's rate or 24) and ``result.json`` (:meth:`to_dict` plus
        ``files``, written last: its presence marks a complete folder). Every file is written atomically; if this call
        created the folder and fails, what it wrote is removed again.

        Returns:
            The paths written, ``result.json`` last.

        Raises:
            InputError: an empty result (the prompt matched nothing: nothing is written), a result without frames
                (``frames`` None: no overlay), ``out_dir`` a file or link.
        """
        from .io import check_output_dir, write_json_atomic

        if self.empty:
            raise InputError("a video result must hold at least one object to be saved",
                             f"{self.text_prompt!r} matched no object in {len(self.keyframes)} keyframes",
                             "try another wording, more keyframes (keyframe_every=...) or a lower "
                             "alignment.similarity_threshold; nothing was written")
        if self.frames is None:
            raise InputError("saving a video result needs its frames (for overlay.mp4)", "frames=None",
                             "set result.frames to the (T, H, W, 3) input frames")
        rate = _check_fps(fps) if fps is not None else (self.fps or DEFAULT_FPS)
        out = _real_folder(check_output_dir(out_dir), "an output folder")
        _check_matching(self.frames, self.id_maps)
        created = not out.exists()
        written: list[Path] = []
        try:
            written += write_id_masks(out, self.id_maps)
            written.append(write_video(out / "overlay.mp4", overlay_frames(self.frames, self.id_maps), rate))
            names = [p.relative_to(out).as_posix() for p in written] + ["result.json"]
            written.append(write_json_atomic(out / "result.json", self.to_dict() | {"files": names}))
        except BaseException:
            if created:
                remove_partial_folder(out, written)
            raise
        return written


def remove_partial_folder(out: Path, written: Sequence[Path]) -> None:
    """Undo a failed save into a folder the save created: delete the files it wrote, then ``out/masks`` and ``out``
    if empty (a folder that existed before is never touched by the callers)."""
    for p in written:
        p.unlink(missing_ok=True)
    for d in (out / "masks", out):
        with contextlib.suppress(OSError):
            d.rmdir()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (H, W) bool masks (0.0 when both are empty)."""
    union = int(np.logical_or(a, b).sum())
    return int(np.logical_and(a, b).sum()) / union if union else 0.0


def segment_video(pipe: Any, frames: Any, text_prompt: str, keyframe_every: int = DEFAULT_KEYFRAME_EVERY, *,
                  iou_threshold: float = 0.1,
                  lost_timeout: int = 15, max_objects: int = 10, top_k: int = 5, min_area: int = 16,
                  offload_video_to_cpu: bool = False, offload_state_to_cpu: bool = False,
                  refresh: bool = True, contain_threshold: float = 0.5, reidentify: bool = True,
                  max_cond_frames: int = 16, merge_parts: bool = False, new_object_ratio: float = 0.7,
                  group_detections: bool = True, recover_drift: bool = True, refresh_fit: float = 0.5,
                  prune_weak: int = 0,
                  max_frames: int = DEFAULT_MAX_FRAMES, memory_mb: float | None = None,
                  predictor: Any = None,
                  progress: bool = False, keep_frames: bool = True) -> VideoSegmentationResult:
    """Segment and track every object matching ``text_prompt`` through a video.

    1. On frame 0 and every ``keyframe_every``-th frame, ``pipe.segment(frame, text_prompt, top_k)`` (SAM 2 masks
       ranked by mask-text alignment) gives the detections.
    2. A detection (best first; at least ``min_area`` px) whose IoU with every tracked object's mask on that frame and
       with every detection accepted before it is below ``iou_threshold`` gets the next id (1, 2, ...; at most
       ``max_objects`` at once, 255 in all) and is given to sam2's video predictor as a mask on that frame
       (``add_new_mask``); a detection overlapping a tracked object records its text score for that object and, with
       ``refresh``, is given to the predictor as that object's mask on this frame (a correction). A detection lying
       mostly inside a known object (``contain_threshold`` of its area) is a part of it: no new id, no refresh. With
       ``group_detections``, every detection matched to an object joins its region on the keyframe (further parts
       match it too) and the object is prompted with its best match or the whole that holds it. With
       ``reidentify``, a detection overlapping the last mask of an object that is empty on this frame (with
       ``recover_drift``: the last detection of any object no detection supports) is that object reappearing (its
       id, given to the predictor again). A detection scoring below ``new_object_ratio`` x the keyframe's best starts
       no object; with ``prune_weak``, a track matched only that weakly on that many keyframes in a row is dropped.
    3. Every frame, the predictor tracks all objects from its memory (``propagate_in_video`` over that frame). An
       object's mask is its positive logits; the id map gives each pixel to the object of the highest logit.
    4. An object whose mask stays empty for more than ``lost_timeout`` frames is removed from the predictor
       (``remove_object``); its id is not reused.
    5. sam2's per-frame outputs that no later frame reads are dropped as tracking moves on (:func:`_forget_frames`),
       so the state's size does not grow with the clip's length.

    Args:
        pipe: an :class:`~ovseg.pipeline.OpenVocabSegmentationPipeline` (or any object whose ``segment(image, prompt,
            top_k=...)`` returns a result with ``segmentation_masks``, each with ``mask`` (H, W) bool at the frame's
            size and ``final_score``).
        frames: (T, H, W, 3) uint8 RGB, a list of (H, W, 3) uint8 frames, or a path for :func:`read_video`.
        text_prompt: what to segment, e.g. ``"red circle"``.
        keyframe_every, iou_threshold, lost_timeout, max_objects, top_k, min_area, offload_video_to_cpu,
            offload_state_to_cpu, refresh, contain_threshold, reidentify, max_cond_frames, merge_parts,
            new_object_ratio, group_detections, recover_drift, refresh_fit, prune_weak:
            :class:`VideoTrackConfig`.
        max_frames: the clip-length limit of :func:`read_video` (also applied to arrays).
        memory_mb: a clip read from a path, and the id maps, above this many MiB are kept in a temporary file
            (:func:`clip_array`; default :data:`FRAME_MEMORY_MB`).
        predictor: a ``SAM2VideoPredictor`` (or an object with its ``init_state`` / ``add_new_mask`` /
            ``propagate_in_video`` / ``remove_object`` / ``reset_state``); default :func:`video_predictor_for`
            ``(pipe)``, built only once a keyframe found an object.
        progress: a tqdm bar over the frames (stderr).
        keep_frames: keep the frames in the result (needed by ``save``'s overlay).

    Returns:
        :class:`VideoSegmentationResult`. When no keyframe matched anything it is empty (``result.empty``; its id maps
        all 0, ``save`` refuses to write) and a :class:`~ovseg.errors.NoMatchWarning` is issued.

    Raises:
        InputError: a bad prompt, setting or clip (see :func:`read_video`), frames under 32 px, detection masks whose
            size differs from the frames'.
    """
    import torch

    from .features import check_prompts
    from .io import MIN_IMAGE_SIDE

    start = time.perf_counter()
    # 1. validate everything before any model runs
    if not isinstance(text_prompt, str):
        raise InputError("segment_video takes one text prompt (a str)", type(text_prompt).__name__,
                         "run segment_video once per prompt")
    prompt = check_prompts(text_prompt)[0]
    cfg = VideoTrackConfig(keyframe_every, iou_threshold, lost_timeout, max_objects, top_k, min_area,
                           offload_video_to_cpu, offload_state_to_cpu, refresh, contain_threshold,
                           reidentify, max_cond_frames, merge_parts, new_object_ratio, group_detections,
                           recover_drift, refresh_fit, prune_weak).validate()
    max_frames = _check_max_frames(max_frames)
    memory_mb = _check_memory_mb(memory_mb)
    source, fps = None, None
    if isinstance(frames, (str, os.PathLike)):
        frames, info = read_video(frames, max_frames=max_frames, memory_mb=memory_mb)
        source, fps = info.source, info.fps
    frames = _check_video_array(frames)
    n, h, w = frames.shape[:3]
    if n > max_frames:
        raise _too_long("frames", n, max_frames)
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"video frames must be at least {MIN_IMAGE_SIDE} px on each side", f"{w}x{h} px",
                         "use a larger video or upscale it first")

    # 2. the per-frame loop
    id_maps = clip_array((n, h, w), np.uint8, memory_mb)  # (T, H, W); a temporary file's map when large
    scores: list[dict[int, float]] = [{} for _ in range(n)]
    text_scores: list[dict[int, float]] = [{} for _ in range(n)]
    keyframes: list[int] = []
    objects: dict[int, VideoObject] = {}
    active: list[int] = []  # ids in the predictor
    missing: dict[int, int] = {}  # id -> consecutive empty frames
    counts = {"detections": 0, "new_objects": 0, "matched": 0, "refreshed": 0, "reidentified": 0, "too_small": 0,
              "over_max_objects": 0, "outputs_dropped": 0, "merged": 0, "weak": 0, "pruned": 0}
    weak_run: dict[int, int] = {}  # id -> keyframes in a row its matched detection was weak (prune_weak)
    last_masks: dict[int, np.ndarray] = {}  # id -> (H, W) bool, its last non-empty mask
    last_detected: dict[int, np.ndarray] = {}  # id -> (H, W) bool, its last keyframe detection (recover_drift)
    grouped = cfg.group_detections
    state: dict[str, Any] | None = None
    provenance: Any = None
    next_id = 1
    t_detect = t_track = 0.0
    bar = _bar(n, progress, "ovseg video")
    warned_ids = False
    with _sam2_hooks(), torch.inference_mode():
        try:
            for t in range(n):
                # 2a. track the objects already known onto frame t
                masks: dict[int, np.ndarray] = {}  # id -> (H, W) float32 logits at frame t
                if state is not None and active:
                    t0 = time.perf_counter()
                    obj_ids, logits = _step(predictor, state, t)
                    masks = dict(zip(obj_ids, _to_numpy_logits(logits)))
                    t_track += time.perf_counter() - t0
                # 2b. keyframe: detect, match, add new objects
                if t % cfg.keyframe_every == 0:
                    keyframes.append(t)
                    t0 = time.perf_counter()
                    detected = pipe.segment(frames[t], prompt, top_k=cfg.top_k)
                    found = detected.segmentation_masks
                    provenance = detected  # the last keyframe's result names every model loaded so far
                    t_detect += time.perf_counter() - t0
                    accepted: list[np.ndarray] = [m > 0 for m in masks.values()]
                    owners: list[int | None] = list(masks)
                    tracked = dict(zip(owners, accepted))  # id -> (H, W) bool, its track on frame t before any prompt
                    top_score = max((float(d.final_score) for d in found), default=0.0)
                    chosen: dict[int, np.ndarray] = {}  # grouped: id -> the detection it is prompted with
                    to_prompt: set[int] = set()  # grouped: ids whose chosen detection is still to be given
                    values: dict[int, float] = {}  # grouped: id -> how well its chosen detection fits (see refresh_fit)
                    for det in found:
                        dm = np.asarray(det.mask, dtype=bool)
                        if dm.shape != (h, w):
                            raise InputError("detection masks must have the frames' size",
                                             f"a mask of shape {dm.shape} on frame {t} of {w}x{h} px",
                                             "return masks at the input image's size from pipe.segment")
                        counts["detections"] += 1
                        if int(dm.sum()) < cfg.min_area:
                            counts["too_small"] += 1
                            continue
                        area = int(dm.sum())
                        # parts: two or more tracked objects lying mostly inside this one detection are one object
                        parts = sorted({k for k, m in zip(owners, accepted) if k is not None and k in active
                                        and m.any() and np.logical_and(m, dm).sum() >= cfg.contain_threshold * m.sum()}
                                       ) if cfg.merge_parts else []
                        if len(parts) >= 2:
                            keep, merged = parts[0], parts[1:]  # the oldest id stays
                            t0 = time.perf_counter()
                            for k in merged:
                                predictor.remove_object(state, k, need_output=False)
                                active.remove(k)
                                objects[k].dropped_frame = t
                                for i in [i for i, o in enumerate(owners) if o == k][::-1]:
                                    del owners[i], accepted[i]
                            _, obj_ids, logits = predictor.add_new_mask(state, t, keep, torch.from_numpy(dm))
                            masks = dict(zip(obj_ids, _to_numpy_logits(logits)))
                            t_track += time.perf_counter() - t0
                            accepted[owners.index(keep)] = dm
                            text_scores[t][keep] = float(det.final_score)
                            counts["merged"] += len(merged)
                            continue
                        overlaps = [_iou(dm, m) for m in accepted]
                        inside = [int(np.logical_and(dm, m).sum()) / area for m in accepted]
                        best = int(np.argmax(overlaps)) if overlaps else -1
                        by_iou = best >= 0 and overlaps[best] >= cfg.iou_threshold
                        if best >= 0 and not by_iou:  # a part of a known object, or a new one
                            best = int(np.argmax(inside)) if max(inside) >= cfg.contain_threshold else -1
                        if best >= 0 and grouped:
                            owner = owners[best]
                            if owner is not None:
                                if owner not in text_scores[t]:
                                    text_scores[t][owner] = float(det.final_score)
                                    counts["matched"] += 1
                                    last_detected[owner] = dm
                                accepted.append(dm)  # the object's region on this keyframe grows by the detection
                                owners.append(owner)
                                base = chosen.get(owner)
                                if cfg.refresh and by_iou and owner in active and owner in tracked:
                                    # its best match corrects the track: text score + refresh_fit x IoU with the track
                                    value = float(det.final_score) + cfg.refresh_fit * _iou(dm, tracked[owner])
                                    if base is None or value > values[owner]:
                                        chosen[owner], values[owner] = dm, value
                                        to_prompt.add(owner)
                                        continue
                                # the whole of which the chosen detection is a part replaces it
                                if base is not None and area >= 2 * base.sum() and \
                                        np.logical_and(base, dm).sum() >= 0.9 * base.sum():
                                    chosen[owner] = dm
                                    to_prompt.add(owner)
                            continue
                        if best >= 0:
                            owner = owners[best]
                            if owner is not None and owner not in text_scores[t]:
                                text_scores[t][owner] = float(det.final_score)
                                counts["matched"] += 1
                                last_detected[owner] = dm
                                if cfg.refresh and by_iou and owner in active:  # the best match corrects the track
                                    t0 = time.perf_counter()
                                    _, obj_ids, logits = predictor.add_new_mask(state, t, owner, torch.from_numpy(dm))
                                    masks = dict(zip(obj_ids, _to_numpy_logits(logits)))
                                    t_track += time.perf_counter() - t0
                                    counts["refreshed"] += 1
                            continue
                        # a tracked object that is empty on this frame, whose last mask this detection overlaps: it reappears
                        if cfg.recover_drift:  # every unsupported object, through its last detection
                            lost = [k for k in active if k in last_detected and k not in text_scores[t]] \
                                if cfg.reidentify else []
                            back = [_iou(dm, last_detected[k]) for k in lost]
                        else:
                            lost = [k for k in active if k in last_masks and k not in text_scores[t]
                                    and not (k in masks and bool((masks[k] > 0).any()))] if cfg.reidentify else []
                            back = [_iou(dm, last_masks[k]) for k in lost]
                        if back and max(back) >= cfg.iou_threshold:
                            k = lost[int(np.argmax(back))]
                            t0 = time.perf_counter()
                            _, obj_ids, logits = predictor.add_new_mask(state, t, k, torch.from_numpy(dm))
                            masks = dict(zip(obj_ids, _to_numpy_logits(logits)))
                            t_track += time.perf_counter() - t0
                            text_scores[t][k] = float(det.final_score)
                            counts["reidentified"] += 1
                            accepted.append(dm)
                            owners.append(k)
                            last_detected[k] = dm
                            chosen[k], values[k] = dm, float("inf")  # final for this keyframe
                            to_prompt.discard(k)
                            continue
                        if float(det.final_score) < cfg.new_object_ratio * top_score:  # too weak to start an object
                            counts["weak"] += 1
                            accepted.append(dm)
                            owners.append(None)
                            continue
                        if len(active) >= cfg.max_objects or next_id > _MAX_IDS:
                            counts["over_max_objects"] += 1
                            if next_id > _MAX_IDS and not warned_ids:
                                warnings.warn(f"segment_video: all {_MAX_IDS} object ids are used; later objects are not "
                                              "tracked", OvsegWarning, stacklevel=2)
                                warned_ids = True
                            accepted.append(dm)
                            owners.append(None)
                            continue
                        # a new object: the predictor is built (and the state initialised) at the first one
                        t0 = time.perf_counter()
                        if state is None:
                            predictor = video_predictor_for(pipe) if predictor is None else predictor
                            state = init_video_state(predictor, frames, cfg.offload_video_to_cpu, cfg.offload_state_to_cpu)
                            # each frame attends to an object's max_cond_frames most recent prompted frames (restored below)
                            saved_cond_cap = getattr(predictor, "max_cond_frames_in_attn", None)
                            predictor.max_cond_frames_in_attn = cfg.max_cond_frames
                        k = next_id
                        next_id += 1
                        _, obj_ids, logits = predictor.add_new_mask(state, t, k, torch.from_numpy(dm))
                        masks = dict(zip(obj_ids, _to_numpy_logits(logits)))  # every object on frame t, the new one too
                        t_track += time.perf_counter() - t0
                        active.append(k)
                        missing[k] = 0
                        objects[k] = VideoObject(k, t, t, None, float(det.final_score))
                        text_scores[t][k] = float(det.final_score)
                        counts["new_objects"] += 1
                        accepted.append(dm)
                        owners.append(k)
                        last_detected[k] = dm
                        chosen[k], values[k] = dm, float("inf")
                    # objects matched only weakly on prune_weak keyframes in a row are dropped
                    if cfg.prune_weak:
                        for k in [k for k in active if k in text_scores[t]]:
                            weak = text_scores[t][k] < cfg.new_object_ratio * top_score
                            weak_run[k] = weak_run.get(k, 0) + 1 if weak else 0
                            if weak_run[k] >= cfg.prune_weak:
                                predictor.remove_object(state, k, need_output=False)
                                active.remove(k)
                                objects[k].dropped_frame = t
                                masks.pop(k, None)
                                chosen.pop(k, None)
                                to_prompt.discard(k)
                                counts["pruned"] += 1
                    # grouped: prompt each matched object with its chosen detection (a new one again if it grew)
                    for k in sorted(to_prompt):
                        t0 = time.perf_counter()
                        _, obj_ids, logits = predictor.add_new_mask(state, t, k, torch.from_numpy(chosen[k]))
                        masks = dict(zip(obj_ids, _to_numpy_logits(logits)))
                        t_track += time.perf_counter() - t0
                        last_detected[k] = chosen[k]
                        counts["refreshed"] += 1
                # 2c. the frame's id map, confidences, lost objects
                ids = [k for k in masks if k in objects]
                if ids:
                    stack = np.stack([masks[k] for k in ids])  # (N, H, W) logits
                    id_maps[t] = _compose(stack, ids)
                    for k, lg in zip(ids, stack):
                        pos = lg > 0
                        if pos.any():
                            scores[t][k] = float((1.0 / (1.0 + np.exp(-lg[pos].astype(np.float64)))).mean())
                            objects[k].last_frame = t
                            missing[k] = 0
                            last_masks[k] = pos
                        else:
                            missing[k] += 1
                for k in [k for k in active if missing[k] > cfg.lost_timeout]:
                    predictor.remove_object(state, k, need_output=False)
                    active.remove(k)
                    objects[k].dropped_frame = t
                if state is not None:
                    counts["outputs_dropped"] += _forget_frames(predictor, state, t, cfg.max_cond_frames)
                bar.update(1)
                if progress:
                    bar.set_postfix_str(f"{len(active)} tracked, {len(objects)} found")
        finally:
            bar.close()
            if state is not None:
                predictor.reset_state(state)  # frees sam2's per-frame outputs
                predictor.max_cond_frames_in_attn = saved_cond_cap
    total = time.perf_counter() - start
    result = VideoSegmentationResult(prompt, id_maps, [objects[k] for k in sorted(objects)], scores, text_scores,
                                     keyframes, asdict(cfg) | {"max_frames": max_frames},
                                     frames if keep_frames else None, fps, source, counts,
                                     {"detect": t_detect, "track": t_track, "total": total},
                                     getattr(provenance, "profile", None),
                                     dict(getattr(provenance, "models", None) or {}),
                                     getattr(provenance, "config", None))
    if result.empty:
        warnings.warn(f"segment_video: {prompt!r} matched no object in any of the {len(keyframes)} keyframes "
                      f"({counts['detections']} detections): the result is empty and save() writes nothing; try "
                      "another wording, keyframe_every smaller, or a lower alignment.similarity_threshold",
                      NoMatchWarning, stacklevel=2)
    return result
