"""Semantic-segmentation evaluation sets: PASCAL VOC 2012, COCO-Stuff-164k, ADE20K-150, the mini world, a folder.

``load_dataset(name, root, split)`` returns a :class:`SegDataset`; ``ds[i]`` is a :class:`Sample` with

* ``image``: (H, W, 3) uint8 RGB (read with :func:`ovseg.io.load_image`, so the same validation applies);
* ``label``: (H, W) int64, value ``i`` = ``ds.class_names[i]`` for ``i`` in ``[0, C)``, and
  ``ds.ignore_index`` (255 for every dataset) for unlabeled / boundary / "other" pixels.

Every dataset stores its labels as single-channel 8-bit PNGs (grayscale "L" or palette "P"; for palette PNGs the
raw palette *indices* are the labels, never the RGB colours). A per-dataset lookup table
(:attr:`SegDataset.raw_to_index`) maps each raw value to a class index, to the ignore index, or marks it invalid:

======== ================================== ============================================ ==========================
name     raw label values                   mapping                                      classes
======== ================================== ============================================ ==========================
voc      0..20, 255 = boundary              identity                                     21, 0 = background
coco-    0..181 (COCO id - 1), 255          the 171 used ids, in order, to 0..170 (as    171 (80 things, 91 stuff),
stuff                                       mmsegmentation's coco_stuff164k converter);  no background
                                            the 11 unused ids -> 255
ade20k   0..150, 0 = "other"                v -> v - 1, 0 -> 255                         150, no background
mini     0..48, 0 = background              identity                                     49, 0 = background
folder   0..C-1, 255 = ignore               identity                                     classes.txt
======== ================================== ============================================ ==========================

A raw value outside these ranges (e.g. 30 in a VOC label) raises :class:`~ovseg.errors.InputError` when that sample
is read. Missing folders, list files, images or labels raise when the dataset is loaded (every file is checked
with one ``stat`` each, so a broken tree fails before an evaluation starts, not hours into it).

This module imports numpy only; PIL is imported when a label is read, and torch never.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .paths import DATA_DIR

__all__ = ["Sample", "SegDataset", "list_datasets", "load_dataset", "IGNORE_INDEX", "VOC_CLASSES",
           "COCO_STUFF_CLASSES", "COCO_STUFF_UNUSED_IDS", "COCO_STUFF_NOVEL", "ADE20K_CLASSES"]

#: The ignore value of every label after mapping.
IGNORE_INDEX = 255
_INVALID = -1  # lookup-table marker: a raw value that no class or ignore rule accounts for

# ---- class lists (data) -------------------------------------------------------------------------------------------

#: PASCAL VOC 2012, in the devkit's class order (label value = index). The devkit spells three names as one word
#: ("diningtable", "pottedplant", "tvmonitor"); they are split into words here so they read well in a text prompt.
#: "aeroplane" and "motorbike" keep the VOC spelling.
VOC_CLASSES: list[str] = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa", "train", "tv monitor",
]

#: COCO-Stuff-164k, the 171 classes in mmsegmentation's order (``mmseg/datasets/coco_stuff.py``, ``CLASSES``): the 80
#: COCO thing classes then the 91 stuff classes, in category-id order (names as in the official COCO-Stuff
#: ``labels.md``, github.com/nightrome/cocostuff).
COCO_STUFF_CLASSES: list[str] = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
    # stuff (COCO ids 92..182)
    "banner", "blanket", "branch", "bridge", "building-other", "bush", "cabinet", "cage", "cardboard", "carpet",
    "ceiling-other", "ceiling-tile", "cloth", "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff",
    "dirt", "door-stuff", "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood", "flower",
    "fog", "food-other", "fruit", "furniture-other", "grass", "gravel", "ground-other", "hill", "house", "leaves",
    "light", "mat", "metal", "mirror-stuff", "moss", "mountain", "mud", "napkin", "net", "paper", "pavement",
    "pillow", "plant-other", "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow", "solid-other", "stairs",
    "stone", "straw", "structural-other", "table", "tent", "textile-other", "towel", "tree", "vegetable", "wall-brick",
    "wall-concrete", "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other", "waterdrops",
    "window-blind", "window-other", "wood",
]

#: Raw COCO-Stuff label values (COCO category id - 1) with no class: ids 12 street sign, 26 hat, 29 shoe,
#: 30 eye glasses, 45 plate, 66 mirror, 68 window, 69 desk, 71 door, 83 blender, 91 hair brush were defined for COCO
#: but never annotated (COCO-Stuff labels.md). Dropping them from 0..181 gives mmsegmentation's 171 train ids.
COCO_STUFF_UNUSED_IDS: tuple[int, ...] = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)

#: The 15 unseen COCO-Stuff classes of the zero-shot split of SPNet (Xian et al., "Semantic Projection Network for
#: Zero- and Few-Label Semantic Segmentation", CVPR 2019; ``_UNSEEN`` in its dataset config), reused by ZS3Net,
#: ZegFormer and later open-vocabulary work ("concrete wall" there = "wall-concrete" here).
COCO_STUFF_NOVEL: list[str] = [
    "frisbee", "skateboard", "cardboard", "carrot", "scissors", "suitcase", "giraffe", "cow", "road", "wall-concrete",
    "tree", "grass", "river", "clouds", "playingfield",
]

#: ADE20K SceneParsing-150 (ADEChallengeData2016 ``objectInfo150``; order and short names as in mmsegmentation's
#: ``mmseg/datasets/ade.py``, with the stray trailing space of "bed " removed). Raw label v in 1..150 = index v - 1.
ADE20K_CLASSES: list[str] = [
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet", "sidewalk",
    "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water", "painting", "sofa",
    "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand",
    "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight",
    "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator",
    "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle",
    "oven", "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake",
    "dishwasher", "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
    "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ---- data classes -------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    """One evaluation sample.

    Attributes:
        stem: file name without folder and suffix, e.g. ``"2007_000033"``.
        image: (H, W, 3) uint8 RGB.
        label: (H, W) int64; class index in ``[0, C)`` or the dataset's ``ignore_index`` (255) where unlabeled.
    """

    stem: str
    image: np.ndarray
    label: np.ndarray


@dataclass(eq=False)
class SegDataset:
    """A list of (image, label) files with its class vocabulary and label mapping.

    Attributes:
        name: the dataset kind (one of :func:`list_datasets`).
        root: the resolved folder the files were found under.
        split: the requested split (e.g. ``"val"``); recorded only for ``folder`` and a ``mini`` with explicit root.
        class_names: ``C`` names; index ``i`` <-> mapped label value ``i``.
        ignore_index: mapped value of unlabeled pixels (255 for every dataset).
        background_index: index of the "background" class (VOC 0, mini 0, folder: a class named "background" if any),
            ``None`` when the vocabulary has none (COCO-Stuff, ADE20K).
        stems: sample stems, sorted.
        splits: class-index subsets for open-vocabulary reporting, e.g. ``{"base": [...], "novel": [...]}``;
            ``{}`` when the dataset defines none. Background is in neither subset.
        image_files / label_files: one path per stem, in ``stems`` order.
        raw_to_index: (256,) int64 lookup table from a raw 8-bit label value to a class index, ``ignore_index``,
            or -1 for a value the dataset does not define (reading a label containing one raises InputError).
        label_rule: one-line description of the raw label convention, used in error messages.
    """

    name: str
    root: Path
    split: str
    class_names: list[str]
    ignore_index: int
    background_index: int | None
    stems: list[str]
    splits: dict[str, list[int]]
    image_files: list[Path] = field(repr=False)
    label_files: list[Path] = field(repr=False)
    raw_to_index: np.ndarray = field(repr=False)
    label_rule: str = field(default="", repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __repr__(self) -> str:
        splits = ", ".join(f"{k}: {len(v)}" for k, v in self.splits.items()) or "none"
        return (f"SegDataset(name={self.name!r}, root='{self.root}', split={self.split!r}, {len(self)} samples, "
                f"{self.num_classes} classes, background_index={self.background_index}, splits: {splits})")

    def __len__(self) -> int:
        return len(self.stems)

    def _index(self, i: int) -> int:
        n = len(self.stems)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"dataset index must be an int, got {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"dataset index {i} out of range for {n} samples")
        return j

    def image_path(self, i: int) -> Path:
        return self.image_files[self._index(i)]

    def label_path(self, i: int) -> Path:
        return self.label_files[self._index(i)]

    def __getitem__(self, i: int) -> Sample:
        """Read sample ``i`` (negative indices count from the end; IndexError past the end).

        Raises:
            InputError: unreadable image or label, a label that is not single-channel 8-bit, whose size differs
                from its image, or that holds a value outside the dataset's label convention.
        """
        from .io import load_image

        j = self._index(i)
        image = load_image(self.image_files[j])
        raw = _read_label_png(self.label_files[j], image.shape[:2], self.image_files[j])
        label = self.raw_to_index[raw]
        bad = label < 0
        if bad.any():
            values = np.unique(raw[bad])
            shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
            raise InputError(f"{self.name} label values must follow: {self.label_rule}",
                             f"value(s) {shown} in {self.label_files[j]}",
                             "fix the label file, or check that --dataset names the right dataset")
        return Sample(stem=self.stems[j], image=image, label=label)

    def __iter__(self) -> Iterator[Sample]:
        for j in range(len(self)):
            yield self[j]


# ---- helpers ------------------------------------------------------------------------------------------------------

def _read_label_png(path: Path, hw: tuple[int, int], image_path: Path) -> np.ndarray:
    """(H, W) uint8 raw label values of a grayscale or palette PNG (palette indices, not colours)."""
    from PIL import Image, UnidentifiedImageError

    from .io import MAX_IMAGE_PIXELS

    if not path.is_file():
        raise InputError("label file must exist", str(path), "restore the file or remove its stem from the dataset")
    try:
        with Image.open(path) as img:
            if img.mode not in ("L", "P"):
                raise InputError("label PNG must be single-channel 8-bit (grayscale 'L' or palette 'P') class indices",
                                 f"mode {img.mode} in {path}",
                                 "save class indices as an 8-bit grayscale PNG, not as RGB colours")
            w, h = img.size
            if (h, w) != tuple(hw):
                raise InputError("label must have the same size as its image",
                                 f"label {w}x{h} px ({path}) vs image {hw[1]}x{hw[0]} px ({image_path})",
                                 "resize the label with nearest-neighbour interpolation or fix the pairing")
            if h * w > MAX_IMAGE_PIXELS:  # unreachable after load_image's guard, kept for direct callers
                raise InputError(f"label must have at most {MAX_IMAGE_PIXELS:,} pixels", f"{w}x{h} px ({path})",
                                 "downscale image and label")
            img.load()
            return np.asarray(img, dtype=np.uint8).copy()  # mode P -> palette indices
    except UnidentifiedImageError:
        raise InputError("label file must be a PNG that PIL can read", str(path), "re-export the label") from None
    except (OSError, SyntaxError) as err:
        raise InputError("label file must be complete and readable", f"{path}: {err}",
                         "the file looks truncated or corrupt; re-export or re-download it") from None


def _require_dir(path: Path, expected: str, fix: str) -> Path:
    if not path.is_dir():
        raise InputError(f"expected the folder {expected}", f"{path} is missing" if not path.exists() else
                         f"{path} is not a folder", fix)
    return path


def _require_root(root: Path, name: str) -> Path:
    if not root.exists():
        raise InputError(f"{name} dataset root must exist", str(root), "pass the dataset folder with --root")
    if not root.is_dir():
        raise InputError(f"{name} dataset root must be a folder", str(root), "pass the dataset folder with --root")
    return root


def _check_files(kind: str, paths: list[Path], expected: str) -> None:
    """One InputError listing the first missing file and how many are missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"every {kind} file must exist ({expected})", f"missing {missing[0]}{more}",
                         "complete the download / extraction, or remove those stems from the list")


def _identity_lut(n: int) -> np.ndarray:
    lut = np.full(256, _INVALID, np.int64)
    lut[:n] = np.arange(n)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def _default_root(name: str, root: str | Path | None, candidates: list[str]) -> Path:
    if root is not None:
        return Path(root).expanduser()
    for c in candidates:
        if (DATA_DIR / c).is_dir():
            return DATA_DIR / c
    tried = f"no --root, and none of {', '.join(str(DATA_DIR / c) for c in candidates)} exists" if candidates \
        else "no --root"
    raise InputError(f"dataset {name!r} needs a root folder", tried, f"pass --root /path/to/{name}")


def _list_images(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """stem -> image path for the files of ``folder`` with one of ``suffixes`` (case-insensitive)."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            if p.stem in found:
                raise InputError("each image stem must appear once", f"{found[p.stem]} and {p}",
                                 "keep one of the two files")
            found[p.stem] = p
    return found


def _read_classes_txt(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError("expected a classes.txt file with one class name per line", f"{path} is missing",
                         "write the class names, one per line, in label-value order (line 1 = value 0)")
    lines = path.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    names = [ln.strip() for ln in lines]
    if not names:
        raise InputError("classes.txt must list at least one class name, one per line", f"{path} is empty",
                         "write the class names in label-value order (line 1 = value 0)")
    if "" in names:
        raise InputError("classes.txt must not contain blank lines (line k names label value k - 1)",
                         f"blank line {names.index('') + 1} in {path}", "remove the blank line or name the class")
    if len(names) > IGNORE_INDEX:
        raise InputError(f"classes.txt may list at most {IGNORE_INDEX} classes (8-bit labels, 255 = ignore)",
                         f"{len(names)} lines in {path}", "merge classes or split the vocabulary")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError("class names in classes.txt must be unique", f"{', '.join(dup)} repeated in {path}",
                         "rename or merge the duplicates")
    return names


def _splits_from_names(class_names: list[str], novel: list[str], background_index: int | None) -> dict[str, list[int]]:
    novel_set = set(novel)
    return {"base": [i for i, n in enumerate(class_names) if n not in novel_set and i != background_index],
            "novel": [i for i, n in enumerate(class_names) if n in novel_set]}


# ---- loaders ------------------------------------------------------------------------------------------------------

def _load_voc(root: Path, split: str) -> SegDataset:
    _require_root(root, "voc")
    # Accept <root>/VOCdevkit/VOC2012, <root> = VOCdevkit, or <root> = VOC2012.
    if (root / "VOCdevkit" / "VOC2012").is_dir():
        base, prefix = root / "VOCdevkit" / "VOC2012", "VOCdevkit/VOC2012/"
    elif (root / "VOC2012").is_dir():
        base, prefix = root / "VOC2012", "VOC2012/"
    else:
        base, prefix = root, ""
    list_file = base / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        # nothing recognisable at the root: name the canonical layout
        shown = prefix or ("" if (root / "JPEGImages").is_dir() else "VOCdevkit/VOC2012/")
        seg_dir = base / "ImageSets" / "Segmentation"
        have = sorted(p.stem for p in seg_dir.glob("*.txt")) if seg_dir.is_dir() else []
        hint = f"available splits: {', '.join(have)}" if have else \
            "pass --root as the folder holding VOCdevkit/VOC2012, VOCdevkit or VOC2012"
        raise InputError(f"expected {shown}ImageSets/Segmentation/{split}.txt under the voc root",
                         f"{list_file} is missing", hint)
    _require_dir(base / "JPEGImages", f"{prefix}JPEGImages", "extract VOCtrainval_11-May-2012.tar fully")
    _require_dir(base / "SegmentationClass", f"{prefix}SegmentationClass", "extract VOCtrainval_11-May-2012.tar fully")
    stems = sorted({ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()})
    if not stems:
        raise InputError("the VOC split list must name at least one image", f"{list_file} is empty", "use another split")
    images = [base / "JPEGImages" / f"{s}.jpg" for s in stems]
    labels = [base / "SegmentationClass" / f"{s}.png" for s in stems]
    _check_files("image", images, f"{prefix}JPEGImages/<stem>.jpg for each stem of {list_file.name}")
    _check_files("label", labels, f"{prefix}SegmentationClass/<stem>.png for each stem of {list_file.name}")
    return SegDataset("voc", base, split, list(VOC_CLASSES), IGNORE_INDEX, 0, stems, {}, images, labels,
                      _identity_lut(len(VOC_CLASSES)), "palette indices 0..20 are classes, 255 is the ignored boundary")


def _coco_stuff_lut() -> np.ndarray:
    lut = np.full(256, _INVALID, np.int64)
    used = [v for v in range(182) if v not in COCO_STUFF_UNUSED_IDS]
    lut[used] = np.arange(len(used))
    lut[list(COCO_STUFF_UNUSED_IDS)] = IGNORE_INDEX  # never annotated; mmseg's converter would leave them unmapped
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def _jpg_png_pairs(img_dir: Path, ann_dir: Path, img_rel: str, label_rule: str) -> tuple[list[str], list[Path], list[Path]]:
    """Sorted stems of ``img_dir/<stem>.jpg`` with their ``ann_dir/<stem>.png`` labels (all must exist)."""
    found = _list_images(img_dir, (".jpg",))
    if not found:
        raise InputError(f"{img_rel} must hold <stem>.jpg images", f"no .jpg file in {img_dir}", "check the root")
    stems = sorted(found)
    labels = [ann_dir / f"{s}.png" for s in stems]
    _check_files("label", labels, label_rule)
    return stems, [found[s] for s in stems], labels


def _load_coco_stuff(root: Path, split: str) -> SegDataset:
    _require_root(root, "coco-stuff")
    sub = split if split.endswith("2017") else f"{split}2017"
    img_dir = _require_dir(root / "images" / sub, f"images/{sub} under the coco-stuff root",
                           "pass --root as the folder that holds images/ and annotations/ (or stuffthingmaps_trainval2017/)")
    ann_candidates = [root / "annotations" / sub, root / "stuffthingmaps_trainval2017" / sub]
    ann_dir = next((d for d in ann_candidates if d.is_dir()), None)
    if ann_dir is None:
        raise InputError(f"expected annotations/{sub} or stuffthingmaps_trainval2017/{sub} under the coco-stuff root",
                         f"neither exists in {root}", "extract stuffthingmaps_trainval2017.zip into the root")
    stems, images, labels = _jpg_png_pairs(img_dir, ann_dir, f"images/{sub}",
                                           f"{ann_dir.parent.name}/{sub}/<stem>.png for each images/{sub}/<stem>.jpg")
    classes = list(COCO_STUFF_CLASSES)
    return SegDataset("coco-stuff", root, split, classes, IGNORE_INDEX, None, stems,
                      _splits_from_names(classes, COCO_STUFF_NOVEL, None), images, labels, _coco_stuff_lut(),
                      "values are COCO category ids - 1 in 0..181, 255 is unlabeled")


def _load_ade20k(root: Path, split: str) -> SegDataset:
    _require_root(root, "ade20k")
    base = root / "ADEChallengeData2016" if (root / "ADEChallengeData2016").is_dir() else root
    names = {"val": "validation", "validation": "validation", "train": "training", "training": "training"}
    if split not in names:
        raise InputError("ade20k split must be 'val' (validation) or 'train' (training)", repr(split), "use --split val")
    sub = names[split]
    prefix = "ADEChallengeData2016/" if base != root else ""
    img_dir = _require_dir(base / "images" / sub, f"{prefix}images/{sub} under the ade20k root",
                           "pass --root as ADEChallengeData2016 or its parent folder")
    ann_dir = _require_dir(base / "annotations" / sub, f"{prefix}annotations/{sub} under the ade20k root",
                           "extract ADEChallengeData2016.zip fully")
    stems, images, labels = _jpg_png_pairs(img_dir, ann_dir, f"images/{sub}",
                                           f"{prefix}annotations/{sub}/<stem>.png for each image")
    lut = np.full(256, _INVALID, np.int64)
    lut[1:151] = np.arange(150)
    lut[0] = IGNORE_INDEX  # "other": not one of the 150 classes
    lut[IGNORE_INDEX] = IGNORE_INDEX  # as mmsegmentation's reduce_zero_label
    return SegDataset("ade20k", base, split, list(ADE20K_CLASSES), IGNORE_INDEX, None, stems, {}, images, labels, lut,
                      "values 1..150 are classes, 0 is 'other' (ignored)")


def _load_folder(root: Path, split: str, name: str = "folder") -> SegDataset:
    _require_root(root, name)
    class_names = _read_classes_txt(root / "classes.txt")
    img_dir = _require_dir(root / "images", "images/ under the dataset root",
                           "put images in <root>/images/<stem>.png|jpg and labels in <root>/labels/<stem>.png")
    lab_dir = _require_dir(root / "labels", "labels/ under the dataset root",
                           "put labels in <root>/labels/<stem>.png (uint8 class index, 255 = ignore)")
    found = _list_images(img_dir, _IMAGE_SUFFIXES)
    labelled = {p.stem: p for p in sorted(lab_dir.iterdir()) if p.is_file() and p.suffix.lower() == ".png"
                and not p.name.startswith(".")}
    if not found:
        raise InputError("images/ must hold <stem>.png|.jpg|.jpeg images", f"none in {img_dir}", "add images")
    no_label = sorted(set(found) - set(labelled))
    if no_label:
        s = no_label[0]
        more = f" (and {len(no_label) - 1} more)" if len(no_label) > 1 else ""
        raise InputError("every image must have a label", f"{found[s]} has no {lab_dir / (s + '.png')}{more}",
                         "add the label, or move unlabeled images out of images/")
    no_image = sorted(set(labelled) - set(found))
    if no_image:
        s = no_image[0]
        more = f" (and {len(no_image) - 1} more)" if len(no_image) > 1 else ""
        raise InputError("every label must have an image", f"{labelled[s]} has no {img_dir / s}.png|.jpg|.jpeg{more}",
                         "add the image, or move the stray label out of labels/")
    stems = sorted(found)
    lower = [n.lower() for n in class_names]
    background = lower.index("background") if "background" in lower else None
    splits: dict[str, list[int]] = {}
    index_json = root / "index.json"  # a mini-world style folder records its held-out classes
    if index_json.is_file():
        try:
            novel = json.loads(index_json.read_text()).get("novel_classes")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            novel = None
        if isinstance(novel, list) and novel and all(isinstance(n, str) for n in novel):
            splits = _splits_from_names(class_names, novel, background)
    return SegDataset(name, root, split, class_names, IGNORE_INDEX, background, stems, splits,
                      [found[s] for s in stems], [labelled[s] for s in stems], _identity_lut(len(class_names)),
                      f"values 0..{len(class_names) - 1} index classes.txt, 255 is ignored")


def _load_mini(root: Path | None, split: str) -> SegDataset:
    from .world import BASE_CLASSES, CLASS_NAMES, NOVEL_CLASSES

    if root is None:
        from .world import SPLITS

        if split not in SPLITS:
            former = " (the former evaluation set 'val' / 'eval' is now 'dev')" if split in ("val", "eval") else ""
            raise InputError("the mini world's shipped splits are dev (for selecting settings) and test (for "
                             "reporting; every evaluation on it is logged)", f"split {split!r}{former}",
                             "use --split dev or --split test (see data/mini_world/README.md)")
        root = DATA_DIR / "mini_world" / split
        if not root.is_dir():
            raise InputError("the mini world's shipped split must be in data/mini_world", f"{root} is missing",
                             "regenerate it with `python data/make_samples.py`")
    ds = _load_folder(root, split, name="mini")
    expected = ["background", *CLASS_NAMES]
    if ds.class_names != expected:
        raise InputError("a mini-world dataset's classes.txt must list background then the 48 world classes",
                         f"{len(ds.class_names)} names in {root / 'classes.txt'}",
                         "point --root at a folder written by ovseg.world.write_dataset, or use --dataset folder")
    ds.background_index = 0
    ds.splits = {"base": [expected.index(c) for c in BASE_CLASSES],
                 "novel": sorted(expected.index(c) for c in NOVEL_CLASSES)}
    ds.label_rule = "values 0..48: 0 background, k + 1 = world class k; 255 is ignored"
    return ds


# ---- public API ---------------------------------------------------------------------------------------------------

_DATASETS = ("voc", "coco-stuff", "ade20k", "mini", "folder")
# mmsegmentation's conventional folder names under data/, tried when no root is given.
_DEFAULT_ROOTS = {"voc": ["VOCdevkit", "voc"], "coco-stuff": ["coco_stuff164k", "coco-stuff"],
                  "ade20k": ["ade/ADEChallengeData2016", "ADEChallengeData2016", "ade20k"], "folder": []}


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(_DATASETS)


def load_dataset(name: str, root: str | Path | None = None, split: str | None = None) -> SegDataset:
    """Index a segmentation dataset on disk (no pixels are read until ``ds[i]``).

    Args:
        name: one of :func:`list_datasets` (case-insensitive; ``coco_stuff`` / ``cocostuff`` / ``ade`` accepted).
        root: the dataset folder; ``None`` -> ``data/mini_world/<split>`` for ``mini``, else a conventional folder
            under ``data/`` (``VOCdevkit``, ``coco_stuff164k``, ``ade/ADEChallengeData2016``) if it exists.
        split: ``voc``: the list file ``ImageSets/Segmentation/<split>.txt``; ``coco-stuff``: ``<split>2017``;
            ``ade20k``: ``val`` -> validation, ``train`` -> training; ``mini``: ``dev`` or ``test``
            (:data:`ovseg.world.EVAL_SPLITS`); default ``val``, for ``mini`` ``dev`` (exploring never reads the
            test split; the CLI's documented ``ovseg evaluate --dataset mini`` reports on ``test``);
            ``folder``: recorded only.

    Raises:
        InputError: unknown name, missing root, sub-folder, list file, image or label file, bad classes.txt.
    """
    key = str(name).strip().lower().replace("_", "-")
    key = {"cocostuff": "coco-stuff", "coco-stuff164k": "coco-stuff", "ade": "ade20k", "pascal-voc": "voc",
           "voc2012": "voc"}.get(key, key)
    if key not in _DATASETS:
        raise InputError(f"dataset must be one of {', '.join(_DATASETS)}", repr(name), "pick one of those names")
    if split is None:
        split = "dev" if key == "mini" else "val"
    if not isinstance(split, str) or not split.strip() or "/" in split or "\\" in split:
        raise InputError("split must be a plain name such as 'val'", repr(split), "use --split val")
    if key == "mini":
        return _load_mini(None if root is None else Path(root).expanduser(), split)
    path = _default_root(key, root, _DEFAULT_ROOTS[key])
    if key == "voc":
        return _load_voc(path, split)
    if key == "coco-stuff":
        return _load_coco_stuff(path, split)
    if key == "ade20k":
        return _load_ade20k(path, split)
    return _load_folder(path, split)
