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


def test_16bit_refused(tmp_path):
    img = Image.fromarray(np.full((40, 40), 4000, np.uint16))
    with pytest.raises(InputError, match="8-bit per channel"):
        load_image(_save(tmp_path, "d.png", img))


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
