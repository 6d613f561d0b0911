"""Image loading with validation, and atomic output writing.

``load_image`` turns a path, PIL image or array into an HWC uint8 RGB numpy array, or raises an
:class:`~ovseg.errors.InputError` that names the rule, the value and the fix. Every file ovseg
writes goes through ``write_*_atomic``: written to a temporary file in the same folder, flushed,
fsync'ed and renamed, so an interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import InputError, OvsegWarning

__all__ = [
    "MIN_IMAGE_SIDE",
    "MAX_IMAGE_PIXELS",
    "load_image",
    "write_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "save_image_atomic",
    "load_image_bytes",
    "OUTPUT_NAMES",
    "check_output_dir",
    "listed_outputs",
    "remove_stale_outputs",
    "save_result_folder",
]

#: Smallest accepted image side, pixels (the method misses objects below 32x32 anyway).
MIN_IMAGE_SIDE = 32
#: Decompression-bomb guard: images with more pixels than this are refused before decoding.
MAX_IMAGE_PIXELS = 100_000_000


def _check_array(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError("image array must be HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA)", f"shape {arr.shape} from {what}",
                         "pass an HWC uint8 RGB array")
    if arr.dtype != np.uint8:
        if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number):
            raise InputError("image array must be uint8 in [0, 255]", f"dtype {arr.dtype}", "convert with arr.astype(np.uint8)")
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(np.nanmax(arr)) <= 1.0 and float(np.nanmin(arr)) >= 0.0:
            raise InputError("image array must be uint8 in [0, 255], not float in [0, 1]", f"dtype {arr.dtype}",
                             "convert with (arr * 255).round().astype(np.uint8)")
        raise InputError("image array must be uint8 in [0, 255]", f"dtype {arr.dtype}", "convert with arr.astype(np.uint8)")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def _check_size(h: int, w: int, what: str) -> None:
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"image must be at least {MIN_IMAGE_SIDE} px on each side", f"{w}x{h} px ({what})",
                         "use a larger image or upscale it first")
    if h * w > MAX_IMAGE_PIXELS:
        raise InputError(f"image must have at most {MAX_IMAGE_PIXELS:,} pixels (decompression-bomb guard)",
                         f"{w}x{h} px ({what})", "downscale the image before passing it to ovseg")


_SIXTEEN_BIT_GREY = ("I;16", "I;16B", "I;16L", "I;16N")


def _sixteen_bit_warning(what: str, kind: str) -> None:
    warnings.warn(f"{what}: {kind} image (16 bits per channel) converted to 8 bits per channel (the high byte); "
                  "the models see 8-bit colour", OvsegWarning, stacklevel=4)


def _from_pil(img: Any, what: str) -> np.ndarray:
    from PIL import Image

    mode = img.mode
    if mode in _SIXTEEN_BIT_GREY:  # one rule for 16-bit images: grey here, 48 / 64-bit colour in _decode
        _sixteen_bit_warning(what, "16-bit greyscale")
        grey = (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("I", "F"):
        raise InputError("image must have 8 or 16 bits per channel (integer)", f"mode {mode} ({what}: 32-bit "
                         f"{'integer' if mode == 'I' else 'float'})",
                         "convert it to 8-bit RGB first, e.g. with PIL: img.convert('RGB') after rescaling")
    if mode == "CMYK":
        warnings.warn(f"{what}: CMYK image converted to RGB (colours may shift)", OvsegWarning, stacklevel=3)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Composite over white so transparent regions do not become black objects.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(canvas, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8).copy()


def load_image(image: Any, info: dict[str, Any] | None = None) -> np.ndarray:
    """Load and validate an image.

    Args:
        image: a path (``str`` / ``Path``), a PIL image, or a numpy array (HxW or HxWxC, uint8).
        info: if given, receives ``exif_orientation`` (the EXIF orientation tag, 1-8, or None).

    Returns:
        ``np.ndarray`` of shape (H, W, 3), dtype uint8, RGB, values in [0, 255], upright as image viewers
        show it (an EXIF orientation is applied). Grayscale and palette images are converted; RGBA is
        composited over white; CMYK and 16-bit-per-channel images (grey, 48 / 64-bit colour) are converted with a
        warning; 32-bit integer and float images are refused; of an animated or multi-page file the first frame is
        used (with a warning).

    Raises:
        InputError: missing / empty / truncated / non-image file, unsupported mode, image smaller
            than 32 px or larger than :data:`MAX_IMAGE_PIXELS`.
    """
    from PIL import Image

    if isinstance(image, np.ndarray):
        arr = _check_array(image, "array")
        _check_size(arr.shape[0], arr.shape[1], "array")
        return arr
    if isinstance(image, Image.Image):
        _check_size(image.height, image.width, "PIL image")
        return _from_pil(_upright(image, info), "PIL image")
    if not isinstance(image, (str, os.PathLike)):
        raise InputError("image must be a file path, PIL image or HWC uint8 numpy array", type(image).__name__,
                         "pass a path such as data/samples/scene.png")
    path = Path(image)
    if not path.exists():
        raise InputError("image file must exist", str(path), "check the path (relative paths start at the current directory)")
    if path.is_dir():
        raise InputError("image path must be a file, not a folder", str(path), "pass one image file")
    if not path.is_file():  # checked before opening: reading a FIFO would block, /dev/zero never ends
        import stat

        mode = path.stat().st_mode
        kind = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                else "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise InputError("image path must be a regular file", f"{path} ({kind})", "save the image to a file and pass that")
    if path.stat().st_size == 0:
        raise InputError("image file must not be empty", f"{path} (0 bytes)", "re-export or re-download the image")
    if not os.access(path, os.R_OK):
        raise InputError("image file must be readable", f"{path} (permission denied)",
                         f"check its permissions (e.g. chmod u+r {path})")
    return _decode(path, str(path), info)


def load_image_bytes(data: bytes, name: str = "upload", info: dict[str, Any] | None = None) -> np.ndarray:
    """:func:`load_image` for an encoded image in memory (an upload): same rules, same errors; ``name`` is the
    file name shown in them. Returns (H, W, 3) uint8 RGB."""
    import io as _io

    if not data:
        raise InputError("image file must not be empty", f"{name} (0 bytes)", "upload an image file")
    return _decode(_io.BytesIO(data), name, info)


def _upright(img: Any, info: dict[str, Any] | None) -> Any:
    """The image as viewers show it: its EXIF orientation (tag 274, values 2-8) applied with
    ``ImageOps.exif_transpose``; ``info["exif_orientation"]`` records the tag (None when absent)."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(0x0112)
    except Exception:  # a broken EXIF block: the pixels are still the pixels
        orientation = None
    if info is not None:
        info["exif_orientation"] = int(orientation) if isinstance(orientation, int) else None
    if isinstance(orientation, int) and 2 <= orientation <= 8:
        return ImageOps.exif_transpose(img)
    return img


def _decode(source: Any, what: str, info: dict[str, Any] | None = None) -> np.ndarray:
    """Open, size-check (header first), decode and convert an image file or file-like object."""
    from PIL import Image, UnidentifiedImageError

    old_limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _check_size(img.height, img.width, what)  # header only: before decoding pixels
                frames = getattr(img, "n_frames", 1)
                if frames > 1:
                    warnings.warn(f"{what}: {'an animated' if getattr(img, 'is_animated', False) else 'a multi-page'} "
                                  f"image of {frames} frames; the first frame is used", OvsegWarning, stacklevel=3)
                # PIL decodes 48 / 64-bit colour PNG / TIFF to 8 bits on its own: say so, as for 16-bit grey
                raw = " ".join(str(getattr(t, "args", t[3] if len(t) > 3 else "")) for t in (img.tile or []))
                if img.mode in ("RGB", "RGBA") and ";16" in raw:
                    _sixteen_bit_warning(what, "48-bit colour" if img.mode == "RGB" else "64-bit colour")
                img.load()
                return _from_pil(_upright(img, info), what)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InputError(f"image must have at most {MAX_IMAGE_PIXELS:,} pixels (decompression-bomb guard)",
                         f"{what}: {err}", "downscale the image before passing it to ovseg") from None
    except UnidentifiedImageError:
        raise InputError("file must be an image PIL can read (PNG, JPEG, WebP, BMP, TIFF, ...)", what,
                         "pass an image file; convert other formats first") from None
    except PermissionError:
        raise InputError("image file must be readable", f"{what} (permission denied)",
                         "check its permissions") from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError("image file must be complete and readable", f"{what}: {err}",
                         "the file looks truncated or corrupt; re-export or re-download it") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


# ---- atomic writes ----------------------------------------------------------------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, writer: Callable[[IO[bytes]], None]) -> Path:
    """Write a file atomically: ``writer(fh)`` fills a temp file that is then renamed to ``path``.

    Parent folders are created. If ``writer`` raises, ``path`` is untouched and the temp file removed. A full
    disk, a file-size limit (``ulimit -f``) or a read-only folder raises :class:`InputError` naming the path.
    """
    import errno

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise InputError("an output folder must be writable", f"{path.parent}: {err.strerror}",
                         "pass a folder you can write to") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO):
            raise InputError("an output file must be written completely", f"{path}: {exc.strerror}",
                             "free disk space (or raise the file-size limit, ulimit -f) and run again; nothing "
                             "half-written was left") from None
        raise
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda fh: fh.write(data))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


#: PNGs of more pixels than this (a photo) are written with zlib level 1 instead of PIL's default 6: about a third
#: of the time (9 s -> 3 s for the six PNGs of a 48 MP ``segment``) for files about a fifth larger.
FAST_PNG_PIXELS = 4_000_000


def save_image_atomic(path: str | os.PathLike, image: Any) -> Path:
    """Save a PIL image or HWC uint8 / HW bool array; format from the suffix (PNG recommended)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        arr = image.view(np.uint8) * np.uint8(255) if image.dtype == np.bool_ else image
        image = Image.fromarray(arr)
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    opts = {"compress_level": 1} if fmt == "PNG" and image.width * image.height > FAST_PNG_PIXELS else {}
    return write_atomic(path, lambda fh: image.save(fh, format=fmt, **opts))


# ---- output folders ---------------------------------------------------------------------------

#: Names of the files ovseg writes into an output folder (``SegmentationResult.save``, ``SemanticResult.save``). Only
#: files with these names, listed by the folder's previous ``result.json``, are ever removed by a rerun.
OUTPUT_NAMES = re.compile(r"overlay\.png|mask\.png|edit_mask\.png|edited\.png|mask_\d{2,}\.png|labels\.png|"
                          r"semantic\.png|result\.json")


def open_nofollow(path: str | os.PathLike, flags: int, mode: str, link_rule: str, link_fix: str) -> IO[str]:
    """``os.open`` with ``O_NOFOLLOW`` (a file it creates gets 0644), as a text file object. A symbolic link at
    ``path`` is an :class:`InputError` with ``link_rule`` / ``link_fix``; other OSErrors propagate."""
    import errno

    try:
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise InputError(link_rule, str(path), link_fix) from None
        raise
    return os.fdopen(fd, mode, encoding="utf-8")


def hold_lock(path: str | os.PathLike, busy_rule: str, busy_fix: str, link_rule: str, link_fix: str,
              folder_rule: str = "the output folder must be writable") -> IO[str]:
    """Take an exclusive, non-blocking flock on ``path`` (created, never through a link) and write this process's
    pid into it; return the open file (the lock lasts while it stays open). A lock held by another process is an
    :class:`InputError` ``busy_rule`` naming that process's pid; an unwritable folder is ``folder_rule``."""
    import fcntl

    path = Path(path)
    try:
        fh = open_nofollow(path, os.O_RDWR | os.O_CREAT, "r+", link_rule, link_fix)
    except OSError as err:
        raise InputError(folder_rule, f"{path}: {err.strerror}", "pass a folder you can write to") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise InputError(busy_rule, f"{path.parent} is in use by process {holder}", busy_fix) from None
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Return ``path`` as a Path if it is a folder or does not exist yet.

    Raises:
        InputError: ``path`` exists and is not a folder (a file, or a symlink to one or to nothing).
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_dir():
        kind = "a broken symlink" if not path.exists() else "a file"
        raise InputError(f"{what} must be a folder (ovseg writes several files into it)", f"{path} ({kind})",
                         "pass a folder path that does not exist yet or is a folder, e.g. --out ovseg-out/run1")
    return path


def listed_outputs(manifest: str | os.PathLike) -> set[str]:
    """Names in the ``files`` list of an earlier ``result.json`` that ovseg itself writes (:data:`OUTPUT_NAMES`);
    empty when the manifest is missing, unreadable or not ovseg's."""
    try:
        files = json.loads(Path(manifest).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(files, list):
        return set()
    return {f for f in files if isinstance(f, str) and OUTPUT_NAMES.fullmatch(f)}


def remove_stale_outputs(folder: str | os.PathLike, previous: Iterable[str], written: Iterable[str]) -> list[Path]:
    """Delete the files of an earlier run (``previous``, see :func:`listed_outputs`) that this run did not write.

    Only plain names matching :data:`OUTPUT_NAMES` are considered, and only regular files or symlinks (a
    symlink is removed, never its target); anything else in the folder is left alone. Returns what was removed.
    """
    folder = Path(folder)
    removed = []
    for name in sorted(set(previous) - set(written)):
        if not OUTPUT_NAMES.fullmatch(name):
            continue
        p = folder / name
        if p.is_symlink() or p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def save_result_folder(out_dir: str | os.PathLike, images: Iterable[tuple[str, Any]],
                       document: Callable[[], dict[str, Any]]) -> list[Path]:
    """Write one result's folder: each ``(file name, image)`` of ``images`` (consumed in order, so an image may be
    computed as it is written; :func:`save_image_atomic`), then ``result.json`` = ``document()`` plus ``files`` (the
    names written, itself last, so its presence marks a complete folder). Files an earlier run listed in its
    ``result.json`` and this run did not write are removed (:func:`remove_stale_outputs`); nothing else in the folder
    is touched. If anything fails and this call created the folder, what it wrote and the folder are removed again.

    Returns:
        The paths written, ``result.json`` last.

    Raises:
        InputError: ``out_dir`` exists and is not a folder.
    """
    out = check_output_dir(out_dir)
    created = not out.exists()
    previous = listed_outputs(out / "result.json")
    written: list[Path] = []
    try:
        for name, image in images:
            written.append(save_image_atomic(out / name, image))
        names = [p.name for p in written] + ["result.json"]
        remove_stale_outputs(out, previous, names)
        written.append(write_json_atomic(out / "result.json", document() | {"files": names}))
    except BaseException:
        if created:  # a folder this call made holds no incomplete output: remove what was written, then it
            for p in written:
                p.unlink(missing_ok=True)
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    return written
