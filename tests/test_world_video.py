"""Mini-world video clips (ovseg.world_video): seeded clips of moving shapes with exact per-frame ground truth."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from ovseg.errors import InputError
from ovseg.world import CLASS_NAMES, SceneConfig, _coverage, seed_range
from ovseg.world_video import (
    EDGES,
    Clip,
    ClipConfig,
    clip_name,
    davis_palette,
    load_clip,
    load_clip_index,
    render_clip,
    write_clips,
)

#: Short clips with entering objects: every test renders a few of these.
SMALL = ClipConfig(n_frames=12, n_objects=(2, 3), n_entering=(1, 2), entry_window=(2, 4))


def _footprint(o, t: int, size=(128, 128)) -> np.ndarray:
    """(H, W) float32 coverage of object ``o`` in frame ``t`` from its recorded trajectory."""
    (cx, cy), d, rot = o.centres[t], o.diameters[t], o.rotations[t]
    return _coverage(o.shape, float(cx), float(cy), float(d) / 2, float(rot), size)


def _visible(clip: Clip, t: int) -> np.ndarray:
    """(K, H, W) bool visible pixels of frame ``t`` recomputed from the objects' trajectories and depth order."""
    solids = [_footprint(o, t) >= 0.5 for o in clip.objects]
    above = np.zeros((128, 128), bool)
    out = []
    for s in reversed(solids):  # top down
        out.append(s & ~above)
        above |= s
    return np.stack(out[::-1])


def _same_clip(a: Clip, b: Clip) -> None:
    assert np.array_equal(a.frames, b.frames) and a.frames.dtype == b.frames.dtype == np.uint8
    assert np.array_equal(a.instance_masks, b.instance_masks) and a.instance_masks.dtype == b.instance_masks.dtype == bool
    assert np.array_equal(a.label_maps, b.label_maps) and a.label_maps.dtype == b.label_maps.dtype == np.uint8
    # trajectories: equal up to float rounding (numpy releases differ in the last ulp of pow / trig, e.g. 2.4.6 vs
    # the release the test set was written with); the pixels above must be exact
    da, db = [o.to_dict() for o in a.objects], [o.to_dict() for o in b.objects]
    assert len(da) == len(db)
    for x, y in zip(da, db):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], (list, float)) and x[k] and not isinstance(np.asarray(x[k]).flat[0], str):
                assert np.allclose(np.asarray(x[k], float), np.asarray(y[k], float), rtol=1e-9, atol=1e-9,
                                   equal_nan=True), k
            else:
                assert x[k] == y[k], k
    assert (a.caption, a.background_drift, a.background_velocity, a.seed, a.config) == \
        (b.caption, b.background_drift, b.background_velocity, b.seed, b.config)


def test_render_is_deterministic_and_depends_on_the_seed():
    a, b = render_clip(3, SMALL), render_clip(3, SMALL)
    _same_clip(a, b)
    k = len(a.objects)
    assert a.frames.shape == (12, 128, 128, 3) and a.instance_masks.shape == (12, k, 128, 128)
    assert a.label_maps.shape == a.instance_maps.shape == (12, 128, 128)
    assert not np.array_equal(render_clip(4, SMALL).frames, a.frames)
    assert not np.array_equal(a.frames[0], a.frames[-1])  # it moves


def test_masks_labels_and_trajectories_agree():
    hidden_somewhere = 0
    for seed in range(4):
        clip = render_clip(seed, SMALL)
        m = clip.instance_masks  # (T, K, H, W)
        assert (m.sum(axis=1) <= 1).all()  # disjoint in every frame
        ids = clip.instance_maps
        for k, o in enumerate(clip.objects):
            assert o.depth == k and np.array_equal(ids == k + 1, m[:, k])
            assert (clip.label_maps[m[:, k]] == CLASS_NAMES.index(o.class_name) + 1).all()
            assert np.array_equal(o.areas, m[:, k].sum(axis=(1, 2)))
            for t in range(clip.n_frames):
                assert o.areas[t] + o.hidden[t] == (_footprint(o, t) >= 0.5).sum()
            hidden_somewhere += int(o.hidden.sum() > 0)
        for t in range(clip.n_frames):  # the recorded centres / diameters / rotations and depths reproduce the masks
            assert np.array_equal(m[t], _visible(clip, t))
        assert (clip.label_maps[~m.any(axis=1)] == 0).all()
        assert (ids[~m.any(axis=1)] == 0).all()
    assert hidden_somewhere  # some object was occluded: the test saw occlusion


def test_without_k_is_exact_removal_in_every_frame():
    clip = render_clip(5, SMALL)
    assert len(clip.objects) >= 3
    checked = 0  # objects that were visible enough to compare
    for k in range(len(clip.objects)):
        gone = render_clip(5, SMALL, without=k)
        assert gone.without == k and [o.depth for o in gone.objects] == [i for i in range(len(clip.objects)) if i != k]
        assert [o.class_name for o in gone.objects] == [o.class_name for i, o in enumerate(clip.objects) if i != k]
        o = clip.objects[k]
        changed = []
        for t in range(clip.n_frames):
            cov = _footprint(o, t)
            outside = cov == 0
            assert np.array_equal(clip.frames[t][outside], gone.frames[t][outside]), (k, t)
            solid = cov >= 0.5
            assert np.array_equal(clip.label_maps[t][~solid], gone.label_maps[t][~solid])
            # the others keep their visible pixels and gain those k hid
            assert (np.delete(clip.instance_masks[t], k, axis=0) <= gone.instance_masks[t]).all()
            assert np.array_equal(gone.instance_masks[t], _visible(gone, t))
            if o.areas[t] >= 30:
                diff = np.abs(clip.frames[t].astype(int) - gone.frames[t].astype(int))[clip.instance_masks[t, k]]
                changed.append(diff.mean())
        if changed:
            checked += 1
            assert min(changed) > 5  # where k was visible, the frames differ
    assert checked >= 2
    with pytest.raises(InputError, match="without must index an object"):
        render_clip(5, SMALL, without=len(clip.objects))


def test_late_objects_appear_first_at_their_edge():
    cfg = ClipConfig(n_frames=16, n_objects=(1, 1), n_entering=(2, 2), entry_window=(3, 8), object_size=(0.15, 0.2))
    seen = set()
    for seed in range(4):
        clip = render_clip(seed, cfg)
        late = [o for o in clip.objects if o.entry_edge is not None]
        assert len(late) == 2
        for o in late:
            assert o.late and o.first_visible is not None and o.first_visible > o.entry_frame >= 3
            fv = o.first_visible
            assert (o.areas[:fv] == 0).all() and o.areas[fv] > 0
            m = clip.instance_masks[fv, clip.objects.index(o)]
            ys, xs = np.nonzero(m)
            dist = {"left": xs, "right": 127 - xs, "top": ys, "bottom": 127 - ys}[o.entry_edge]
            assert dist.min() == 0 and dist.max() <= 5, (seed, o.entry_edge, dist.max())  # a sliver at that edge
            assert f"enters from the {o.entry_edge}" in clip.caption
            seen.add(o.entry_edge)
        assert not any(o.late for o in clip.objects if o.entry_edge is None)
    assert len(seen) >= 2


def test_an_object_whose_centre_leaves_the_frame_loses_its_pixels():
    cfg = ClipConfig(n_frames=24, n_objects=(1, 1), n_entering=(0, 0), speed=(3.0, 3.0), rotation_speed=(0.0, 0.0),
                     scale_speed=(0.0, 0.0), object_size=(0.25, 0.3))
    centre_out = fully_out = 0
    for seed in range(8):
        clip = render_clip(seed, cfg)
        (o,) = clip.objects
        r = float(o.diameters[0]) / 2
        side = 2 * math.ceil(r) + 4
        full = int((_coverage(o.shape, side / 2, side / 2, r, float(o.rotations[0]), (side, side)) >= 0.5).sum())
        assert o.areas[0] > 0.5 * full
        for t in range(clip.n_frames):
            x, y = o.centres[t]
            if min(x, y) < 0 or x > 128 or y > 128:
                centre_out += 1
                assert o.areas[t] <= 0.6 * full, (seed, t)
            if x + r < 0 or y + r < 0 or x - r > 128 or y - r > 128:
                fully_out += 1
                assert o.areas[t] == 0 and not clip.instance_masks[t, 0].any() and not clip.label_maps[t].any()
    assert centre_out and fully_out


def test_a_static_background_stays_and_a_drifting_one_moves_with_its_velocity():
    base = dict(n_frames=25, n_objects=(1, 1), n_entering=(0, 0), object_size=(0.18, 0.2), pixel_noise=0.0,
                backgrounds=("texture",))
    still = render_clip(2, ClipConfig(background_motion=0.0, **base))
    assert still.background_drift == 0.0 and still.background_velocity == (0.0, 0.0)
    (o,) = still.objects
    for t in range(1, still.n_frames):
        free = (_footprint(o, 0) == 0) & (_footprint(o, t) == 0)  # background in both frames
        assert np.array_equal(still.frames[0][free], still.frames[t][free])
    drifting = ClipConfig(background_motion=1.0, background_drift=(0.5, 0.5), **base)
    moving = render_clip(2, drifting)
    assert moving.background_drift == 0.5 and math.hypot(*moving.background_velocity) == pytest.approx(0.5)
    bg = render_clip(2, drifting, without=0).frames.astype(float)  # the background alone
    assert not np.array_equal(bg[0], bg[-1])
    # the last frame is the first shifted by velocity * (T - 1): closer than unshifted or shifted the other way
    sx, sy = (round(v * (moving.n_frames - 1)) for v in moving.background_velocity)
    assert max(abs(sx), abs(sy)) >= 6

    def err(dx: int, dy: int) -> float:
        a = bg[-1][max(dy, 0):128 + min(dy, 0), max(dx, 0):128 + min(dx, 0)]
        b = bg[0][max(-dy, 0):128 + min(-dy, 0), max(-dx, 0):128 + min(-dx, 0)]
        return float(np.abs(a - b).mean())

    assert err(sx, sy) < 0.5 * min(err(0, 0), err(-sx, -sy))
    noisy = render_clip(2, ClipConfig(background_motion=0.0, **base | {"pixel_noise": 1.0}))
    free = (_footprint(o, 0) == 0) & (_footprint(o, 1) == 0)
    d = np.abs(noisy.frames[0].astype(int) - noisy.frames[1].astype(int))[free]
    assert d.any() and d.max() <= 10  # sensor noise is drawn per frame, and it is small


def test_write_and_load_round_trip_exactly(tmp_path):
    seeds = [11, 12]
    root = write_clips(tmp_path / "v", seeds, SMALL)
    index = load_clip_index(root)
    assert index["config"] == SMALL and [c["seed"] for c in index["clips"]] == seeds
    for seed in seeds:
        clip = render_clip(seed, SMALL)
        loaded = load_clip(root, clip_name(seed))
        _same_clip(clip, loaded)
        rec = next(c for c in index["clips"] if c["seed"] == seed)
        assert [o["first_visible"] for o in rec["objects"]] == [o.first_visible for o in clip.objects]
        with Image.open(root / clip.name / "masks" / "00007.png") as png:
            assert png.mode == "P" and tuple(png.getpalette()[:12]) == (0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0)
            assert np.array_equal(np.asarray(png), clip.instance_maps[7])  # palette index k + 1 = object k
        with Image.open(root / clip.name / "frames" / "00007.png") as png:
            assert png.mode == "RGB"
    assert davis_palette()[3 * 4:3 * 5] == (0, 0, 128) and len(davis_palette()) == 768
    # a shorter rewrite leaves no stale frames behind
    short = ClipConfig(n_frames=8, n_objects=(2, 3), n_entering=(1, 2), entry_window=(2, 4))
    write_clips(root, seeds[:1], short)
    assert sorted(p.name for p in (root / clip_name(11) / "labels").iterdir())[-1] == "00007.png"
    _same_clip(load_clip(root, clip_name(11)), render_clip(11, short))


def test_load_and_write_refuse_what_does_not_match(tmp_path):
    root = write_clips(tmp_path / "v", [11], SMALL)
    name = clip_name(11)
    with pytest.raises(InputError, match="must be listed in the folder's index.json") as err:
        load_clip(root, "clip_0000000099")
    assert name in err.value.fix
    with pytest.raises(InputError, match="must contain index.json"):
        load_clip(tmp_path / "nowhere", name)
    ids_png = root / name / "masks" / "00003.png"
    ids = np.asarray(Image.open(ids_png)).copy()
    ids[0, 0] = 9
    img = Image.fromarray(ids)
    img.putpalette(davis_palette())
    img.save(ids_png)
    with pytest.raises(InputError, match="mask ids must name its objects"):
        load_clip(root, name)
    ids[0, 0] = 0
    img = Image.fromarray(ids)
    img.save(ids_png)  # greyscale instead of a palette PNG
    with pytest.raises(InputError, match="must have mode 'P'"):
        load_clip(root, name)
    (root / name / "frames" / "00011.png").unlink()
    with pytest.raises(InputError, match=r"one PNG per frame.*12 frames") as err:
        load_clip(root, name)
    assert "11 numbered PNGs" in str(err.value.value)
    # never written through a symbolic link
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / clip_name(12)).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InputError, match="must not be a symbolic link"):
        write_clips(tmp_path / "w", [12], SMALL)
    assert list(elsewhere.iterdir()) == []
    with pytest.raises(InputError, match="distinct seeds"):
        write_clips(tmp_path / "x", [1, 1], SMALL)
    with pytest.raises(InputError, match="seeds must be non-negative integers"):
        write_clips(tmp_path / "x", [1.5], SMALL)
    assert not (tmp_path / "x").exists()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "index.json").write_text(json.dumps({"format": "something else", "clips": []}))
    with pytest.raises(InputError, match="mini-world video index"):
        load_clip_index(tmp_path / "bad")


def test_shipped_video_test_set_is_a_fresh_render_of_its_seeds():
    from ovseg.paths import DATA_DIR

    root = DATA_DIR / "mini_world" / "video_test"
    index = load_clip_index(root)
    cfg = index["config"]
    seeds = [c["seed"] for c in index["clips"]]
    from ovseg.video_eval import RETIRED_VIDEO_TEST_SEEDS

    first = RETIRED_VIDEO_TEST_SEEDS  # the retired first test clips are not among them
    assert cfg.split == "all" and seeds == list(seed_range("video", "test").seeds[first:first + len(seeds)])
    assert len(seeds) >= 30  # enough to show <= 1 id switch per 10 clips (rule of three: 3 / 30 per clip)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted(c["name"] for c in index["clips"])
    assert sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) <= 34_000_000
    late = occlusions = 0
    for seed in seeds:
        clip = render_clip(seed, cfg)
        _same_clip(load_clip(root, clip_name(seed)), clip)
        late += sum(o.late for o in clip.objects)
        occlusions += len(clip.occlusions())
    assert late >= 3 and occlusions >= 3


@pytest.mark.parametrize("kwargs, field, shown", [
    ({"n_frames": 1}, "n_frames", "1"),
    ({"split": "train"}, "split", "'train'"),
    ({"speed": (2.0, 1.0)}, "speed", "(2.0, 1.0)"),
    ({"n_objects": (0, 2)}, "n_objects", "(0, 2)"),
    ({"n_frames": 16, "entry_window": (8, 12)}, "entry_window", "entry_window=(8, 12) with n_frames=16"),
    ({"styles": ("neon",)}, "styles", "('neon',)"),
    ({"pixel_noise": -1.0}, "pixel_noise", "-1.0"),
    ({"scale_speed": (float("nan"), 0.0)}, "scale_speed", "(nan, 0.0)"),
    ({"background_motion": 1.5}, "background_motion", "1.5"),
    ({"size": (16, 16)}, "size", "(16, 16)"),
])
def test_config_errors_name_rule_value_and_fix(kwargs, field, shown):
    with pytest.raises(InputError) as err:
        ClipConfig(**kwargs)
    e = err.value
    assert e.rule.startswith(f"ClipConfig.{field} must") and e.value == shown and e.fix
    assert str(e) == f"{e.rule}; got {shown}; fix: {e.fix}"


def test_render_clip_refuses_bad_arguments():
    with pytest.raises(InputError, match="non-negative integer"):
        render_clip(-1, SMALL)
    with pytest.raises(InputError, match="cfg must be a ClipConfig"):
        render_clip(0, SceneConfig())  # type: ignore[arg-type]
    assert ClipConfig(n_entering=(0, 0), n_frames=4).n_frames == 4  # no entering objects: no entry window needed
    assert set(EDGES) == {"left", "right", "top", "bottom"}
