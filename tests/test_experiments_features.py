"""ovseg.experiments.features: settings, per-pixel evaluation on constructed features, text separation, figures."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from ovseg.experiments import features as F


class _FakeClip:
    """One-hot text embeddings (class c -> e_c); layer 1 features = the true label, layer 2 = class 0 everywhere."""

    extract_layers = [1, 2]
    layer_weights = None
    templates = ["a {}.", "a photo of a {}."]

    def __init__(self, names, labels):
        self.names, self.labels = list(names), labels

    def encode_text(self, prompts, templates=None):
        import torch

        return torch.eye(len(self.names))[[self.names.index(p) for p in prompts]]

    def dense_features(self, image):
        import torch

        from ovseg.features import DenseFeatures

        label = np.where(self.labels[int(image[0, 0, 0])] == 255, 0, self.labels[int(image[0, 0, 0])])  # image = its index
        c = len(self.names)
        good = torch.nn.functional.one_hot(torch.as_tensor(label), c).permute(2, 0, 1).float()  # (C, H, W)
        bad = torch.zeros_like(good)
        bad[0] = 1
        h, w = label.shape
        return DenseFeatures(torch.stack([good, bad]), [1, 2], (h, w), (h, w))


class _DS:
    def __init__(self, samples, names):
        self.samples, self.class_names = samples, list(names)
        self.num_classes, self.ignore_index, self.splits = len(names), 255, {"base": [1], "novel": [2]}

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


def test_dense_eval_scores_constructed_features_exactly():
    names = ["background", "red circle", "blue square"]
    lab0 = np.zeros((4, 4), np.int64)
    lab0[:2, :2] = 1  # 4 px red circle
    lab1 = np.zeros((4, 4), np.int64)
    lab1[2:, 2:] = 2  # 4 px blue square
    lab1[0, 0] = 255  # one ignored pixel
    clip = _FakeClip(names, [lab0, lab1])
    ds = _DS([SimpleNamespace(image=np.full((4, 4, 3), i, np.uint8), label=lab) for i, lab in enumerate([lab0, lab1])], names)
    rows = F.dense_eval(clip, ds, 5, [("good", [1]), ("bad", [2])], [("t", ["{}"])])
    good, bad = rows
    assert good["layers"] == "good" and good["n_templates"] == 1
    assert good["pixel_acc"] == 1.0 and good["mIoU"] == 1.0 and good["mIoU_novel"] == 1.0
    # "bad" predicts background everywhere: 23 of 31 labelled pixels right; IoU background 23/31, others 0
    assert bad["pixel_acc"] == pytest.approx(23 / 31)
    assert bad["mIoU"] == pytest.approx((23 / 31) / 3)
    assert bad["mIoU_base"] == 0.0
    # intervals over the 2 images: "good" is perfect on each image, so every resample scores 1
    assert good["mIoU_ci95"] == "[1.000, 1.000]" and good["images"] == 2
    # "bad": the resamples (image 0 twice, image 1 twice, both) score differently; the interval holds the point
    lo, hi = (float(t) for t in bad["mIoU_ci95"].strip("[]").split(","))
    assert lo <= bad["mIoU"] <= hi and lo < hi and bad["mIoU_lo"] == pytest.approx(lo, abs=5e-4)


def test_pixel_predictions_and_nearest_other_cosine():
    sim = np.zeros((3, 2, 2), np.float32)
    sim[1, 0, 0] = 1
    sim[2, 1, 1] = 1
    assert F.pixel_predictions(sim).tolist() == [[1, 0], [0, 2]]
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [np.sqrt(0.5), np.sqrt(0.5)]])
    # nearest other: row 0 -> row 2 (0.707), row 1 -> row 2 (0.707), row 2 -> 0.707
    assert F.nearest_other_cosine(emb) == pytest.approx(np.sqrt(0.5))


def test_layer_and_template_settings():
    clip = SimpleNamespace(extract_layers=[5, 6], templates=["a {}.", "a photo of a {}.", "there is a {} in the scene."])
    assert F.layer_settings(clip) == [("layer 5", [5]), ("layer 6", [6]), ("fused 5+6", [5, 6])]
    t = dict(F.template_settings(clip))
    assert t['bare "{}"'] == ["{}"] and t['single "a {}."'] == ["a {}."]
    assert t["ensemble (3)"] == clip.templates and len(t["imagenet80 (80)"]) == 80
    full = SimpleNamespace(extract_layers=[6, 12, 18, 24], templates=F.template_settings(clip)[-1][1])
    labels = [name for name, _ in F.template_settings(full)]
    assert labels == ['bare "{}"', 'single "a photo of a {}."', "ensemble (80)"]  # imagenet80 is the ensemble


def test_similarity_maps_heatmap_and_contrast():
    from ovseg.world import Scene, SceneObject

    names = ["background", "red circle", "blue square"]
    lab = np.zeros((4, 4), np.int64)
    lab[:2, :2] = 1
    clip = _FakeClip(names, [lab])
    feats = clip.dense_features(np.zeros((4, 4, 3), np.uint8))
    maps = F.similarity_maps(clip, feats, ["red circle"], F.layer_settings(clip))
    assert set(maps) == {"layer 1", "layer 2", "fused 1+2"} and maps["layer 1"].shape == (1, 4, 4)
    np.testing.assert_allclose(maps["layer 1"][0], (lab == 1).astype(np.float32), atol=1e-6)
    obj = SceneObject("red circle", "red", "circle", (1.0, 1.0), 2.0, 0.0, "filled", False)
    scene = Scene(np.zeros((4, 4, 3), np.uint8), (lab == 1)[None], lab.astype(np.uint8), [obj], "", 0)
    contrast = F.object_contrast(scene, ["red circle"], maps)
    assert contrast["layer 1"] == pytest.approx(1.0) and contrast["layer 2"] == pytest.approx(0.0)
    fig = F.heatmap_figure(np.zeros((4, 4, 3), np.uint8), ["red circle"], maps, title="t")
    assert len(fig.axes) == 5  # image + 3 maps + colorbar
    rows = [{"layers": ln, "templates": tn, "mIoU": 0.5, "mIoU_novel": 0.4} for ln in ("a", "b") for tn in ("x", "y")]
    assert len(F.ensemble_figure(rows).axes) == 2


def test_sample_scene_matches_shipped_png():
    scene = F.sample_scene(2)
    assert scene.image.shape == (192, 256, 3) and len(scene.objects) >= 2


def test_block_settings_list_every_block_then_the_fusions():
    clip = SimpleNamespace(depth=4, extract_layers=[1, 2, 3, 4])
    assert F.block_settings(clip, [2, 4]) == [("block 1", [1]), ("block 2", [2]), ("block 3", [3]), ("block 4", [4]),
                                              ("fused 2+4", [2, 4]), ("fused 1-4", [1, 2, 3, 4])]
    assert F.block_settings(clip, [1, 2, 3, 4])[-1] == ("fused 1+2+3+4", [1, 2, 3, 4])  # no duplicate "all" row
    from ovseg.errors import InputError

    with pytest.raises(InputError, match=r"needs a CLIP that extracts every block; got \[2, 4\]; fix: pass "
                                         r"clip.with_settings\(extract_layers=range\(1, 5\)\)"):
        F.block_settings(SimpleNamespace(depth=4, extract_layers=[2, 4]), [2, 4])
    with pytest.raises(InputError, match=r"the fused blocks must be among 1..4; got \[5\]"):
        F.block_settings(clip, [5])


def test_global_path_check_counts_retrievals_and_zero_shot_hits(tmp_path):
    """A fake CLIP whose image embedding is one-hot on the image's red value and whose text embedding is one-hot on
    a hand-made table: the retrieval and zero-shot rates are counted by hand."""
    import json

    import torch
    from PIL import Image

    from ovseg.world import CLASS_NAMES

    a, b, c = CLASS_NAMES[0], CLASS_NAMES[1], CLASS_NAMES[2]
    scenes = [([a], f"a {a}."), ([b], f"a {b}."), ([a, c], f"a {a} and a {c}."), ([c], f"a {c}.")]
    (tmp_path / "images").mkdir()
    index = []
    for k, (objs, cap) in enumerate(scenes):
        Image.fromarray(np.full((32, 32, 3), k, np.uint8)).save(tmp_path / "images" / f"s{k}.png")
        index.append({"stem": f"s{k}", "caption": cap, "objects": [{"class_name": o} for o in objs]})
    (tmp_path / "index.json").write_text(json.dumps({"images": index}))
    # image k -> axis k; caption of scene 0 -> axis 0 and scene 2's -> axis 0 too (so image 2 retrieves scene 0's
    # caption: wrong objects), scene 1 -> axis 1, scene 3 -> axis 3; class a -> axis 0, b -> axis 2 (image 1 misses),
    # c -> axis 3
    axis = {scenes[0][1]: 0, scenes[1][1]: 1, scenes[2][1]: 0, scenes[3][1]: 3, a: 0, b: 2, c: 3}
    for name in CLASS_NAMES:
        axis.setdefault(name, 7)

    class Fake:
        def global_image_embedding(self, image):
            return torch.eye(8)[int(image[0, 0, 0])]

        def encode_text(self, prompts, templates=None):
            return torch.eye(8)[[axis[p] for p in prompts]] * (1.0 if templates == ["{}"] else 0.9)

    r = F.global_path_check(Fake(), tmp_path)
    assert r["n_images"] == 4 and r["retrieval"].value == 0.75 and r["retrieval"].n == 4  # image 2 retrieves scene 0
    assert r["zero_shot"].n == 3 and r["zero_shot"].value == pytest.approx(2 / 3)  # a and c right, b wrong
    assert r["chance_zero_shot"] == pytest.approx(1 / len(CLASS_NAMES))
    assert F.global_path_check(Fake(), tmp_path, n_images=2)["retrieval"].value == 1.0


def test_block_figure_plots_every_block_and_each_fusion():
    rows = [{"layers": f"block {k}", "mIoU": 0.1 * k, "mIoU_ci95": f"[{0.1 * k - 0.05:.3f}, {0.1 * k + 0.05:.3f}]",
             "mIoU_novel": 0.05 * k, "mIoU_novel_ci95": None, "images": 10} for k in (1, 2, 3)]
    rows += [{"layers": "fused 1+3", "mIoU": 0.25, "mIoU_ci95": "[0.2, 0.3]", "mIoU_novel": 0.1, "images": 10}]
    fig = F.block_figure(rows)
    ax = fig.axes[0]
    blue = ax.lines[0].get_ydata()
    assert list(np.round(blue, 3)) == [0.1, 0.2, 0.3] and [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]
    assert any(list(ln.get_ydata()) == [0.25, 0.25] for ln in ax.lines)  # the fused setting's line
    assert ax.get_ylim()[1] >= 0.35  # the top of the widest error bar is inside the axes
