import os

import numpy as np
import pytest
from PIL import Image

from ovseg.errors import InputError
from ovseg.io import load_image, save_image_atomic, write_atomic, write_json_atomic


def _save(tmp_path, name, img, **kw):
    p = tmp_path / name
    img.save(p, **kw)
    return p


def test_rgb_png_round_trip(tmp_path, scene):
    p = save_image_atomic(tmp_path / "a.png", scene)
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == scene.shape
    np.testing.assert_array_equal(out, scene)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_modes_are_converted_to_rgb(tmp_path, scene, mode):
    img = Image.fromarray(scene).convert(mode)
    out = load_image(_save(tmp_path, f"x_{mode}.png", img))
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8


def test_rgba_transparent_becomes_white(tmp_path):
    img = Image.new("RGBA", (40, 40), (255, 0, 0, 0))
    out = load_image(_save(tmp_path, "t.png", img))
    assert (out == 255).all()


def test_cmyk_converted_with_warning(tmp_path, scene):
    p = _save(tmp_path, "c.jpg", Image.fromarray(scene).convert("CMYK"))
    with pytest.warns(UserWarning, match="CMYK"):
        out = load_image(p)
    assert out.shape == (96, 128, 3)


def test_16bit_grey_and_48bit_colour_follow_one_rule(tmp_path):
    import cv2

    grey = Image.fromarray(np.full((40, 40), 0xAB00 + 77, np.uint16))
    with pytest.warns(UserWarning, match="16-bit greyscale image .* converted to 8 bits per channel"):
        out = load_image(_save(tmp_path, "d.png", grey))
    assert out.shape == (40, 40, 3) and (out == 0xAB).all()  # the high byte
    rgb16 = np.zeros((40, 48, 3), np.uint16)
    rgb16[..., 0] = 0x1200 + 5  # R
    rgb16[..., 2] = 0xEE00  # B
    cv2.imwrite(str(tmp_path / "e.png"), rgb16[..., ::-1])  # a 48-bit PNG (cv2 writes BGR)
    with pytest.warns(UserWarning, match="48-bit colour image .* converted to 8 bits per channel"):
        out = load_image(tmp_path / "e.png")
    assert (out[..., 0] == 0x12).all() and (out[..., 1] == 0).all() and (out[..., 2] == 0xEE).all()
    with pytest.raises(InputError, match="8 or 16 bits per channel"):
        load_image(_save(tmp_path, "f.tif", Image.fromarray(np.full((40, 40), 0.5, np.float32))))


def test_animated_gif_uses_the_first_frame_and_says_so(tmp_path):
    frames = [Image.new("RGB", (40, 40), (200 * (i == 0), 60 * i, 200 * (i > 0))) for i in range(3)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="an animated image of 3 frames; the first frame is used"):
        out = load_image(tmp_path / "a.gif")
    assert out[..., 0].mean() > 150 and out[..., 2].mean() < 50


@pytest.mark.parametrize("make,match", [
    (lambda p: None, "image file must exist"),
    (lambda p: p.write_bytes(b""), "must not be empty"),
    (lambda p: p.write_text("hello, not an image"), "must be an image PIL can read"),
])
def test_bad_files(tmp_path, make, match):
    p = tmp_path / "img.png"
    make(p)
    with pytest.raises(InputError, match=match):
        load_image(p)


def test_truncated_png(tmp_path, scene):
    p = save_image_atomic(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8))
    data = p.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="complete and readable"):
        load_image(cut)


def test_too_small_and_bomb(tmp_path):
    with pytest.raises(InputError, match="at least 32 px"):
        load_image(np.zeros((20, 400, 3), np.uint8))
    # A PNG header claiming 20000 x 20000 px: refused from the header, before decoding.
    p = _save(tmp_path, "big.png", Image.new("1", (20000, 20000)))
    with pytest.raises(InputError, match="decompression-bomb guard"):
        load_image(p)


def test_arrays():
    with pytest.raises(InputError, match=r"not float in \[0, 1\]"):
        load_image(np.random.rand(40, 40, 3))
    with pytest.raises(InputError, match="HxWx3"):
        load_image(np.zeros((40, 40, 5), np.uint8))
    assert load_image(np.zeros((40, 40), np.uint8)).shape == (40, 40, 3)
    with pytest.raises(InputError, match="file path, PIL image or HWC"):
        load_image(42)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "r.json"
    write_json_atomic(target, {"a": 1})

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomic(target, boom)
    assert target.read_text().strip().startswith("{")  # old content intact
    assert os.listdir(target.parent) == ["r.json"]  # no temp files left


def test_special_files_are_named_for_what_they_are(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"image path must be a regular file; got .*pipe.png \(a named pipe \(FIFO\)\)"):
        load_image(fifo)  # returns at once: a FIFO is never opened
    with pytest.raises(InputError, match=r"must be a regular file; got /dev/zero \(a character device\)"):
        load_image("/dev/zero")


def test_unreadable_file_says_permission_not_corruption(tmp_path, monkeypatch):
    p = tmp_path / "locked.png"
    Image.new("RGB", (64, 64)).save(p)
    real_access = os.access
    # chmod 000 does not stop root (CI runs as root): the permission check is what a normal user meets
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(p) else real_access(path, mode))
    with pytest.raises(InputError, match=r"image file must be readable; got .*locked.png \(permission denied\)"):
        load_image(p)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_viewers_show_it(tmp_path, orientation):
    from PIL import ImageOps

    # an upright picture with a marker in its top-left corner, stored as a camera would for this orientation
    upright = np.zeros((40, 64, 3), np.uint8)
    upright[:8, :12] = (255, 0, 0)
    stored_of = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
                 5: lambda a: np.transpose(a, (1, 0, 2)), 6: lambda a: np.rot90(a, 1),
                 7: lambda a: np.rot90(np.transpose(a, (1, 0, 2)), 2), 8: lambda a: np.rot90(a, -1)}
    stored = np.ascontiguousarray(stored_of[orientation](upright))
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    img.save(path, exif=exif, quality=95)
    assert np.array_equal(np.asarray(ImageOps.exif_transpose(Image.open(path))).shape, upright.shape)  # the test's own map
    info = {}
    arr = load_image(path, info)
    assert info["exif_orientation"] == orientation
    assert arr.shape == upright.shape
    assert arr[:8, :12, 0].mean() > 200 and arr[-8:, -12:, 0].mean() < 50  # the marker is top-left, as viewers show it


@pytest.mark.parametrize("errno_name", ["ENOSPC", "EFBIG"])
def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing(tmp_path, errno_name):
    import errno

    def writer(fh):
        fh.write(b"part of it")
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)))

    with pytest.raises(InputError, match=r"an output file must be written completely; got .*out.png: .*; fix: free disk"):
        write_atomic(tmp_path / "out.png", writer)
    assert list(tmp_path.iterdir()) == []  # no temp file, no partial output


def test_result_save_on_a_full_disk_leaves_no_empty_folder(tmp_path, monkeypatch):
    from ovseg import io as ovseg_io
    from ovseg.pipeline import SegmentationMask, SegmentationResult

    calls = []

    def failing(path, image):
        calls.append(path)
        if len(calls) == 2:
            raise InputError("an output file must be written completely", f"{path}: No space left on device", "free")
        return real(path, image)

    real = ovseg_io.save_image_atomic
    monkeypatch.setattr(ovseg_io, "save_image_atomic", failing)
    img = np.zeros((64, 64, 3), np.uint8)
    m = SegmentationMask(mask=np.ones((64, 64), bool), final_score=0.5, mean_similarity=0.5, background_similarity=0.1,
                         bbox=[0, 0, 64, 64], area=4096, predicted_iou=0.9, stability_score=0.9, index=0)
    res = SegmentationResult(img, "red circle", [m], 1, "sam2", "mini")
    with pytest.raises(InputError, match="written completely"):
        res.save(tmp_path / "new")
    assert not (tmp_path / "new").exists() and len(calls) == 2  # the overlay written first was removed too
