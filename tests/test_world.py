import numpy as np
import pytest

from ovseg.errors import InputError
from ovseg.world import (
    BASE_CLASSES,
    CLASS_NAMES,
    EVAL_SEED_OFFSET,
    NOVEL_CLASSES,
    SceneConfig,
    load_dataset_index,
    referring_prompts,
    render_scene,
    write_dataset,
)


def test_vocabulary():
    assert len(CLASS_NAMES) == 48 and len(NOVEL_CLASSES) == 8 and len(BASE_CLASSES) == 40
    assert "red star" in NOVEL_CLASSES and "red circle" in BASE_CLASSES


def test_deterministic_and_consistent_ground_truth():
    a, b = render_scene(7), render_scene(7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label_map, b.label_map)
    assert a.image.dtype == np.uint8 and a.image.shape == (128, 128, 3)
    k = len(a.objects)
    assert a.instance_masks.shape == (k, 128, 128)
    assert not (a.instance_masks.sum(0) > 1).any()  # visible masks do not overlap
    for i, o in enumerate(a.objects):
        m = a.instance_masks[i]
        assert o.area == int(m.sum()) and (a.label_map[m] == CLASS_NAMES.index(o.class_name) + 1).all()
        x, y, w, h = o.bbox
        assert m[y:y + h, x:x + w].sum() == o.area
    assert (a.label_map[a.instance_masks.sum(0) == 0] == 0).all()
    assert not np.array_equal(render_scene(8).image, a.image)


def test_base_split_never_contains_novel_compositions():
    cfg = SceneConfig(split="base")
    for seed in range(60):
        assert not any(o.novel for o in render_scene(seed, cfg).objects)
    novel = SceneConfig(split="novel")
    assert all(o.novel for o in render_scene(1, novel).objects)


def test_knobs_size_occlusion_styles():
    small = render_scene(3, SceneConfig(object_size_px=6, n_objects=(1, 1)))
    assert 0 < small.objects[0].area < 60
    occ = render_scene(4, SceneConfig(force_occlusion=0.6, n_objects=(2, 2), object_size=(0.4, 0.4)))
    assert occ.objects[0].occluded == pytest.approx(0.6, abs=0.15)
    sketch = render_scene(5, SceneConfig(styles=("outline",), n_objects=(1, 1), backgrounds=("smooth",)))
    o = sketch.objects[0]
    assert o.style == "outline" and o.area > 0  # ground truth is the filled region
    for seed in range(20):
        sc = render_scene(seed, SceneConfig(max_occlusion=0.3))
        assert all(o.occluded <= 0.3 + 1e-6 for o in sc.objects)
    with pytest.raises(InputError, match="split must be"):
        SceneConfig(split="train")


def test_prompts_include_ambiguous_kinds():
    sc = render_scene(11, SceneConfig(n_objects=(3, 3)))
    kinds = {p["kind"] for p in referring_prompts(sc)}
    assert kinds == {"class", "colour", "shape", "vague", "spatial"}
    left = next(p for p in referring_prompts(sc) if p["kind"] == "spatial")["targets"][0]
    assert sc.objects[left].centre[0] == min(o.centre[0] for o in sc.objects)


def test_write_dataset_round_trip(tmp_path):
    from PIL import Image

    root = write_dataset(tmp_path / "ds", [EVAL_SEED_OFFSET + i for i in range(3)], SceneConfig())
    idx = load_dataset_index(root)
    assert len(idx["images"]) == 3 and isinstance(idx["config"], SceneConfig)
    stem = idx["images"][0]["stem"]
    label = np.asarray(Image.open(root / "labels" / f"{stem}.png"))
    assert np.array_equal(label, render_scene(EVAL_SEED_OFFSET).label_map)
    assert (root / "classes.txt").read_text().splitlines()[0] == "background"


def test_shipped_eval_set_matches_the_generator():
    from PIL import Image

    from ovseg.paths import DATA_DIR

    root = DATA_DIR / "mini_world" / "dev"
    idx = load_dataset_index(root)
    assert len(idx["images"]) == 200
    rec = idx["images"][17]
    scene = render_scene(rec["seed"], idx["config"])
    assert np.array_equal(np.asarray(Image.open(root / "labels" / f"{rec['stem']}.png")), scene.label_map)
    assert sum(any(o["class_name"] in NOVEL_CLASSES for o in r["objects"]) for r in idx["images"]) >= 60


def test_edit_pairs_are_exact_ground_truth():
    import cv2

    cfg = SceneConfig(n_objects=(3, 3), max_occlusion=0.2)
    src = render_scene(21, cfg)
    removed = render_scene(21, cfg, edit=(1, None))
    replaced = render_scene(21, cfg, edit=(1, "green star"))
    obj = src.objects[1]

    def halo(m):  # the object plus its anti-aliased edge
        return cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)

    region = halo(src.instance_masks[1] | replaced.instance_masks[1])
    assert np.array_equal(src.image[~region], replaced.image[~region])  # everything else drawn identically
    assert np.array_equal(src.image[~halo(src.instance_masks[1])], removed.image[~halo(src.instance_masks[1])])
    assert [o.class_name for o in removed.objects] == [o.class_name for i, o in enumerate(src.objects) if i != 1]
    assert replaced.objects[1].class_name == "green star" and replaced.objects[1].centre == obj.centre
    assert (removed.label_map[src.instance_masks[1]] != CLASS_NAMES.index(obj.class_name) + 1).all()
    with pytest.raises(InputError, match="edit class must be one of"):
        render_scene(21, cfg, edit=(0, "pink circle"))


def test_edit_rotation_redraws_only_the_replacing_object():
    import cv2

    cfg = SceneConfig(n_objects=(3, 3), max_occlusion=0.2)
    src = render_scene(21, cfg)
    same = render_scene(21, cfg, edit=(1, "green star"))
    upright = render_scene(21, cfg, edit=(1, "green star"), edit_rotation=0.0)
    assert src.objects[1].rotation != 0.0 and upright.objects[1].rotation == 0.0
    assert upright.objects[1].centre == same.objects[1].centre and upright.objects[1].diameter == same.objects[1].diameter
    assert not np.array_equal(upright.instance_masks[1], same.instance_masks[1])  # another outline
    region = cv2.dilate((src.instance_masks[1] | same.instance_masks[1] | upright.instance_masks[1]).astype(np.uint8),
                        np.ones((5, 5), np.uint8)).astype(bool)
    assert np.array_equal(upright.image[~region], same.image[~region])  # the same draws everywhere else
    # the visible outline is the star at rotation 0 (less what later objects hide), not the source object's rotation
    from ovseg.world import _coverage

    obj = upright.objects[1]
    star0 = _coverage("star", *obj.centre, obj.diameter / 2, 0.0, cfg.size) >= 0.5
    assert (upright.instance_masks[1] <= star0).all() and upright.instance_masks[1].sum() >= 0.8 * star0.sum()
    with pytest.raises(InputError, match="edit_rotation needs an edit"):
        render_scene(21, cfg, edit=(1, None), edit_rotation=0.0)
