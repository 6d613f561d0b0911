"""Dataset loaders on tiny fake trees in each real on-disk layout, plus the shipped mini eval set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg.datasets import (
    ADE20K_CLASSES,
    COCO_STUFF_CLASSES,
    COCO_STUFF_NOVEL,
    VOC_CLASSES,
    list_datasets,
    load_dataset,
)
from ovseg.errors import InputError
from ovseg.paths import DATA_DIR
from ovseg.world import CLASS_NAMES, NOVEL_CLASSES

H, W = 40, 48


def _image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _label(path: Path, arr: np.ndarray) -> None:
    """An 8-bit grayscale ("L") label PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _as_palette(arr: np.ndarray) -> Image.Image:
    """A palette PNG whose indices are ``arr`` and whose colours are unrelated to the indices (like VOC's)."""
    img = Image.new("P", (arr.shape[1], arr.shape[0]))
    img.putpalette(sum(([(i * 37) % 256, (i * 91) % 256, (i * 53) % 256] for i in range(256)), []))
    img.putdata(arr.astype(np.uint8).ravel().tolist())
    return img


def _blocks(values: list[int]) -> np.ndarray:
    """(H, W) uint8 with vertical bands of the given values, left to right."""
    arr = np.zeros((H, W), np.uint8)
    for k, v in enumerate(np.array_split(np.arange(W), len(values))):
        arr[:, v] = values[k]
    return arr


# ---- VOC ----------------------------------------------------------------------------------------------------------

def _voc_tree(tmp: Path, stems=("2007_000033", "2007_000032", "2008_000001")) -> Path:
    base = tmp / "VOCdevkit" / "VOC2012"
    (base / "ImageSets" / "Segmentation").mkdir(parents=True)
    (base / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems) + "\n")
    for i, s in enumerate(stems):
        _image(base / "JPEGImages" / f"{s}.jpg", i)
        arr = _blocks([0, 15, 20 - i])
        arr[:2], arr[-2:], arr[:, :2], arr[:, -2:] = 255, 255, 255, 255
        (base / "SegmentationClass").mkdir(exist_ok=True)
        _as_palette(arr).save(base / "SegmentationClass" / f"{s}.png")
    return tmp


def test_list_datasets():
    assert list_datasets() == ["voc", "coco-stuff", "ade20k", "mini", "folder"]


def test_voc_layouts_mapping_and_order(tmp_path):
    root = _voc_tree(tmp_path)
    for r in (root, root / "VOCdevkit", root / "VOCdevkit" / "VOC2012"):
        ds = load_dataset("voc", r)
        assert ds.root == root / "VOCdevkit" / "VOC2012"
        assert len(ds.class_names) == 21 and ds.class_names[0] == "background" and ds.background_index == 0
        assert ds.ignore_index == 255 and ds.splits == {}
        assert ds.stems == ["2007_000032", "2007_000033", "2008_000001"] and len(ds) == 3
    s = ds[0]
    assert s.stem == "2007_000032" and s.image.shape == (H, W, 3) and s.image.dtype == np.uint8
    assert s.label.shape == (H, W) and s.label.dtype == np.int64
    # raw palette indices, not colours: band values 0, 15 (person), 20 - 1 (train), border 255
    assert s.label[0, 0] == 255 and s.label[10, 5] == 0 and s.label[10, 24] == VOC_CLASSES.index("person")
    assert s.label[10, 44] == 19 and ds.class_names[19] == "train"
    assert set(np.unique(s.label)) == {0, 15, 19, 255}
    assert ds.image_path(-1).name == "2008_000001.jpg" and ds.label_path(0).name == "2007_000032.png"
    assert [x.stem for x in ds] == ds.stems
    with pytest.raises(IndexError):
        ds[3]


def test_voc_errors(tmp_path):
    with pytest.raises(InputError, match="root must exist"):
        load_dataset("voc", tmp_path / "nope")
    with pytest.raises(InputError, match=r"expected VOCdevkit/VOC2012/ImageSets/Segmentation/val\.txt"):
        load_dataset("voc", tmp_path)
    root = _voc_tree(tmp_path / "a")
    with pytest.raises(InputError, match="available splits: val"):
        load_dataset("voc", root, split="test")
    base = root / "VOCdevkit" / "VOC2012"
    (base / "SegmentationClass" / "2007_000033.png").unlink()
    with pytest.raises(InputError, match=r"every label file must exist.*2007_000033\.png"):
        load_dataset("voc", root)
    root = _voc_tree(tmp_path / "b")
    base = root / "VOCdevkit" / "VOC2012"
    (base / "JPEGImages" / "2008_000001.jpg").unlink()
    with pytest.raises(InputError, match=r"every image file must exist.*2008_000001\.jpg"):
        load_dataset("voc", root)
    # value 30 is no VOC class, detected when the sample is read
    root = _voc_tree(tmp_path / "c")
    base = root / "VOCdevkit" / "VOC2012"
    _as_palette(_blocks([0, 30])).save(base / "SegmentationClass" / "2007_000032.png")
    ds = load_dataset("voc", root)
    with pytest.raises(InputError, match=r"value\(s\) 30 in .*2007_000032\.png"):
        ds[0]
    # RGB colour label, wrong size
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(base / "SegmentationClass" / "2007_000033.png")
    with pytest.raises(InputError, match="single-channel 8-bit.*mode RGB"):
        ds[1]
    Image.fromarray(np.zeros((H, W + 1), np.uint8)).save(base / "SegmentationClass" / "2008_000001.png")
    with pytest.raises(InputError, match="same size as its image"):
        ds[2]


# ---- COCO-Stuff ---------------------------------------------------------------------------------------------------

def _coco_tree(tmp: Path, ann: str = "annotations") -> Path:
    # raw values: 0 person, 11 unused (street sign), 12 stop sign, 91 banner (first stuff), 181 wood, 255 unlabeled
    for i, s in enumerate(["000000000285", "000000000139"]):
        _image(tmp / "images" / "val2017" / f"{s}.jpg", i)
        _label(tmp / ann / "val2017" / f"{s}.png", _blocks([0, 11, 12, 91, 181, 255]))
    return tmp


@pytest.mark.parametrize("ann", ["annotations", "stuffthingmaps_trainval2017"])
def test_coco_stuff_mapping_and_splits(tmp_path, ann):
    ds = load_dataset("coco-stuff", _coco_tree(tmp_path, ann))
    assert len(ds.class_names) == 171 and ds.background_index is None and ds.ignore_index == 255
    assert ds.stems == ["000000000139", "000000000285"]
    assert len(ds.splits["novel"]) == 15 and len(ds.splits["base"]) == 156
    assert sorted(ds.splits["base"] + ds.splits["novel"]) == list(range(171))
    assert {ds.class_names[i] for i in ds.splits["novel"]} == set(COCO_STUFF_NOVEL)
    bands = [int(v) for v in ds[0].label[20, [0, 9, 17, 25, 33, 45]]]
    assert bands == [0, 255, 11, 80, 170, 255]
    assert ds.class_names[0] == "person" and ds.class_names[11] == "stop sign"
    assert ds.class_names[80] == "banner" and ds.class_names[170] == "wood"
    # the 182 -> 171 table agrees with mmsegmentation's clsID_to_trID at its irregular points
    lut = ds.raw_to_index
    for raw, tr in {10: 10, 12: 11, 24: 23, 26: 24, 27: 25, 30: 26, 43: 39, 45: 40, 64: 59, 66: 60, 69: 61, 71: 62,
                    81: 72, 83: 73, 89: 79, 91: 80, 181: 170, 255: 255}.items():
        assert lut[raw] == tr, raw
    assert len(COCO_STUFF_CLASSES) == len(set(COCO_STUFF_CLASSES)) == 171


def test_coco_stuff_errors(tmp_path):
    with pytest.raises(InputError, match=r"expected the folder images/val2017"):
        load_dataset("coco-stuff", tmp_path)
    _image(tmp_path / "images" / "val2017" / "a.jpg")
    with pytest.raises(InputError, match=r"expected annotations/val2017 or stuffthingmaps_trainval2017/val2017"):
        load_dataset("coco-stuff", tmp_path)
    (tmp_path / "annotations" / "val2017").mkdir(parents=True)
    with pytest.raises(InputError, match=r"every label file must exist.*a\.png"):
        load_dataset("coco-stuff", tmp_path)
    _label(tmp_path / "annotations" / "val2017" / "a.png", _blocks([0, 200]))
    with pytest.raises(InputError, match=r"COCO category ids - 1 .*value\(s\) 200"):
        load_dataset("coco-stuff", tmp_path)[0]


# ---- ADE20K -------------------------------------------------------------------------------------------------------

def _ade_tree(tmp: Path) -> Path:
    base = tmp / "ADEChallengeData2016"
    for i, s in enumerate(["ADE_val_00000002", "ADE_val_00000001"]):
        _image(base / "images" / "validation" / f"{s}.jpg", i)
        _label(base / "annotations" / "validation" / f"{s}.png", _blocks([0, 1, 13, 150]))
    return tmp


def test_ade20k_mapping(tmp_path):
    root = _ade_tree(tmp_path)
    for r in (root, root / "ADEChallengeData2016"):
        ds = load_dataset("ade20k", r)
        assert len(ds.class_names) == 150 and ds.background_index is None and ds.splits == {}
        assert ds.stems == ["ADE_val_00000001", "ADE_val_00000002"]
    label = ds[0].label
    assert [int(v) for v in label[5, [0, 15, 30, 45]]] == [255, 0, 12, 149]
    assert ds.class_names[0] == "wall" and ds.class_names[12] == "person" and ds.class_names[149] == "flag"
    assert "bed" in ADE20K_CLASSES and len(set(ADE20K_CLASSES)) == 150
    with pytest.raises(InputError, match="split must be 'val'"):
        load_dataset("ade20k", root, split="test")
    with pytest.raises(InputError, match="expected the folder ADEChallengeData2016/images/training"):
        load_dataset("ade20k", root, split="train")
    _label(root / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000001.png", _blocks([151]))
    with pytest.raises(InputError, match=r"value\(s\) 151"):
        ds[0]


# ---- mini and folder ----------------------------------------------------------------------------------------------

def test_shipped_mini_eval_set():
    ds = load_dataset("mini")
    assert ds.root == DATA_DIR / "mini_world" / "dev"
    assert len(ds) == 200 and len(ds.class_names) == 49 and ds.background_index == 0
    assert ds.class_names[1:] == CLASS_NAMES
    assert len(ds.splits["novel"]) == 8 and len(ds.splits["base"]) == 40 and 0 not in ds.splits["base"]
    assert {ds.class_names[i] for i in ds.splits["novel"]} == set(NOVEL_CLASSES)
    labels_dir = DATA_DIR / "mini_world" / "dev" / "labels"
    assert ds.stems == sorted(p.stem for p in labels_dir.glob("*.png"))
    for i in range(len(ds)):
        s = ds[i]
        ref = np.asarray(Image.open(labels_dir / f"{s.stem}.png"))
        assert s.image.shape == (128, 128, 3) and np.array_equal(s.label, ref.astype(np.int64))


def _folder_tree(tmp: Path, classes: str = "background\ncat\ndog\n") -> Path:
    (tmp / "images").mkdir(parents=True)
    (tmp / "classes.txt").write_text(classes)
    _image(tmp / "images" / "b.jpg", 1)
    _image(tmp / "images" / "a.png", 0)
    _label(tmp / "labels" / "a.png", _blocks([0, 1, 2, 255]))
    _label(tmp / "labels" / "b.png", _blocks([2]))
    return tmp


def test_folder(tmp_path):
    ds = load_dataset("folder", _folder_tree(tmp_path))
    assert ds.class_names == ["background", "cat", "dog"] and ds.background_index == 0 and ds.splits == {}
    assert ds.stems == ["a", "b"] and ds.image_path(1).name == "b.jpg"
    assert [int(v) for v in ds[0].label[3, [0, 15, 30, 45]]] == [0, 1, 2, 255]
    ds = load_dataset("folder", _folder_tree(tmp_path / "x", "cat\ndog\n\n"))
    assert ds.class_names == ["cat", "dog"] and ds.background_index is None
    with pytest.raises(InputError, match=r"value\(s\) 2 in .*a\.png"):
        ds[0]
    with pytest.raises(InputError, match="dataset 'folder' needs a root folder"):
        load_dataset("folder")


def test_folder_errors(tmp_path):
    with pytest.raises(InputError, match="root must exist"):
        load_dataset("folder", tmp_path / "missing")
    root = _folder_tree(tmp_path / "empty", "\n\n")
    with pytest.raises(InputError, match=r"classes.txt must list at least one class.*empty"):
        load_dataset("folder", root)
    root = _folder_tree(tmp_path / "noclasses")
    (root / "classes.txt").unlink()
    with pytest.raises(InputError, match="expected a classes.txt"):
        load_dataset("folder", root)
    root = _folder_tree(tmp_path / "nolabel")
    _image(root / "images" / "c.png")
    with pytest.raises(InputError, match=r"every image must have a label.*c\.png has no .*labels/c\.png"):
        load_dataset("folder", root)
    root = _folder_tree(tmp_path / "noimage")
    _label(root / "labels" / "z.png", _blocks([0]))
    with pytest.raises(InputError, match=r"every label must have an image.*z\.png"):
        load_dataset("folder", root)
    root = _folder_tree(tmp_path / "nolabels")
    for p in (root / "labels").iterdir():
        p.unlink()
    (root / "labels").rmdir()
    with pytest.raises(InputError, match="expected the folder labels/"):
        load_dataset("folder", root)
    with pytest.raises(InputError, match="dataset must be one of"):
        load_dataset("cityscapes", root)
    with pytest.raises(InputError, match="mini world's shipped splits are dev .* and test"):
        load_dataset("mini", split="train")
    with pytest.raises(InputError, match="mini-world dataset's classes.txt"):
        load_dataset("mini", _folder_tree(tmp_path / "notmini"))


def test_module_does_not_import_torch():
    code = "import sys, ovseg.datasets; sys.exit('torch' in sys.modules or 'PIL' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
