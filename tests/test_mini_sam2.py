"""The mini SAM 2 trainer (ovseg.train.mini_sam2): config, steps, exact resume, export, data split."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from ovseg.config import SAM2Config  # noqa: E402
from ovseg.masks import MaskGenerator, build_sam2_model  # noqa: E402
from ovseg.train import mini_sam2  # noqa: E402
from ovseg.world import EVAL_SEED_OFFSET, NOVEL_CLASSES, SceneConfig, render_scene  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # trainers are specified and tested at 1 thread


def _small_cfg(**kw) -> mini_sam2.TrainConfig:
    base = dict(images_per_step=2, max_prompts=3, max_corrections=1, warmup_steps=2, seed=3)
    base.update(kw)
    return mini_sam2.TrainConfig(**base)


def test_yaml_builds_with_build_sam2_model():
    model = build_sam2_model(str(mini_sam2.CONFIG_PATH))
    assert type(model).__name__ == "SAM2Base"
    assert model.image_size == 128 and model.image_size % 32 == 0
    assert model.use_high_res_features_in_sam and model.directly_add_no_mem_embed
    n = sum(p.numel() for p in model.parameters())
    assert 1e5 < n < 1e7  # small: a compact checkpoint (model + AdamW moments < ~40 MB)


def test_training_steps_give_finite_decreasing_loss():
    trainer = mini_sam2.Trainer(_small_cfg(lr=3e-3, p_zoom=0.0))
    losses = []
    for _ in range(4):
        m = trainer.train_step()
        assert all(math.isfinite(m[k]) for k in ("loss", "focal", "dice", "iou_mse"))
        losses.append(m["loss"])
    assert trainer.step == 4
    assert min(losses[1:]) < losses[0] * 1.5  # finite and not exploding


def test_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = _small_cfg()
    straight = mini_sam2.Trainer(cfg)
    for _ in range(3):
        straight.train_step()

    first = mini_sam2.Trainer(cfg)
    first.train_step()
    path = first.save(tmp_path / "state.pt")
    assert path.is_file() and not (tmp_path / "state.pt.tmp").exists()
    resumed = mini_sam2.Trainer.load(path)
    assert resumed.step == 1
    for _ in range(2):
        resumed.train_step()

    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_export_loads_back_and_generates_masks(tmp_path):
    trainer = mini_sam2.Trainer(_small_cfg())
    trainer.train_step()
    out = mini_sam2.export_model(trainer.model, tmp_path, card="# card\n")
    assert out.name == "model.safetensors" and (tmp_path / "config.yaml").is_file()
    assert (tmp_path / "MODEL_CARD.md").read_text() == "# card\n"
    model = build_sam2_model(str(tmp_path / "config.yaml"), out)  # strict key / shape check
    ref = trainer.model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k
    scene = render_scene(EVAL_SEED_OFFSET + 5, SceneConfig())
    conf = SAM2Config(points_per_side=4, crop_n_layers=0, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                      min_mask_region_area=0)
    masks = MaskGenerator(model, conf).generate(scene.image)
    assert masks.masks.shape[1:] == (128, 128)


def test_evaluate_recall_reports_both_settings():
    model = build_sam2_model(str(mini_sam2.CONFIG_PATH))
    res = mini_sam2.evaluate_recall(model, 1, SAM2Config(points_per_side=4, crop_n_layers=0))
    assert set(res) == {"thesis", "relaxed"}
    for r in res.values():
        assert 0.0 <= r["recall"] <= 1.0 and r["n_images"] == 1 and r["n_objects"] >= 1
        assert r["seconds_per_image"] > 0


def test_training_scenes_never_contain_novel_compositions(monkeypatch):
    seen = []

    def spy(seed, cfg):
        scene = render_scene(seed, cfg)
        seen.append((seed, cfg, scene.class_names))
        return scene

    monkeypatch.setattr(mini_sam2, "render_scene", spy)
    cfg = mini_sam2.TrainConfig(scene_size=64)
    for step in (0, 5000, 10**6):
        mini_sam2.sample_scenes(cfg, step, np.random.default_rng(step), 20)
    assert len(seen) == 60
    for seed, scfg, names in seen:
        assert 0 <= seed < EVAL_SEED_OFFSET
        assert scfg.split == "base"
        assert not set(names) & NOVEL_CLASSES
    # curriculum: more objects later
    assert mini_sam2.scene_config(cfg, 0).n_objects[1] < mini_sam2.scene_config(cfg, 10**6).n_objects[1]
