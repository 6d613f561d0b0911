"""The mini CLIP's contrastive recipe (issue #22): CLIP's image-caption loss only, a plain ViT, resumable, exported
for the MaskCLIP value path; and the default (dense) recipe left as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

import ovseg.train.mini_clip as MC  # noqa: E402
from ovseg.errors import InputError  # noqa: E402
from ovseg.mini_clip import build_tokenizer, load_mini_clip  # noqa: E402
from ovseg.paths import REPO_ROOT  # noqa: E402

# a plain ViT (no "stem": open_clip's patchify conv1), 4 blocks so the 4 evenly spaced blocks are 1, 2, 3, 4
TINY_ARCH = {
    "embed_dim": 32,
    "vision": {"image_size": 64, "patch_size": 8, "width": 32, "layers": 4, "head_width": 16, "mlp_ratio": 2.0},
    "text": {"width": 32, "heads": 2, "layers": 1},
}

pytestmark = pytest.mark.usefixtures("one_thread")  # trainers are specified and tested at 1 thread


def tiny_cfg(**kw):
    opts = dict(arch=json.loads(json.dumps(TINY_ARCH)), batch_size=4, warmup_steps=2, context_length=32,
                n_objects=(1, 3))
    opts.update(kw)
    return MC.contrastive_config(**opts)


def _forbid_dense_losses(monkeypatch):
    """Every piece of the dense recipe raises when called: its loss method, batch, token path, prompts, labels."""
    def boom(*a, **k):
        raise AssertionError("the contrastive recipe must not compute the dense recipe's losses")

    for name in ("make_batch", "_visual_forward", "_text_embed", "_label_matrices", "_gray_view"):
        monkeypatch.setattr(MC, name, boom)
    monkeypatch.setattr(MC._Trainer, "losses", boom)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One uninterrupted 3-step run with an export (evaluated on 2 dev images), shared by the tests below."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("contrastive")
    cfg = tiny_cfg()
    res = MC.train(root / "a", cfg=cfg, total_steps=3, log_every=1, verbose=False, eval_images=2,
                   final_eval_images=2, export_dir=root / "export")
    torch.set_num_threads(old)
    return root, cfg, res


def test_the_contrastive_recipe_computes_only_clips_image_caption_loss(monkeypatch):
    _forbid_dense_losses(monkeypatch)
    trainer = MC._Trainer(tiny_cfg())
    trainer.total_steps = 10
    batch = MC.make_caption_batch(0, trainer.cfg)
    out = trainer.contrastive_losses(batch)
    assert set(out) == {"global", "total"}
    # CLIP's symmetric InfoNCE, computed here from open_clip's own forward (unique captions: hard targets)
    assert len(set(batch["keys"])) == len(batch["keys"])
    with torch.no_grad():
        x = (torch.from_numpy(batch["images"]).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
        img, txt, scale = trainer.model(x, trainer.tok(batch["captions"]))
        logits = scale * img @ txt.T
        target = torch.arange(len(logits))
        want = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                      + torch.nn.functional.cross_entropy(logits.T, target))
    assert torch.allclose(out["global"].detach(), want, atol=1e-5)
    rec = trainer.train_step()
    assert set(rec) == {"global", "total", "lr", "grad_norm", "logit_scale"} and trainer.step == 1
    assert trainer.dense_logit_scale.grad is None  # the dense temperature is not touched
    assert trainer.model.visual.conv1.weight.grad is not None and trainer.model.token_embedding.weight.grad is not None


def test_contrastive_config_is_a_plain_vit_that_computes_nothing_else():
    cfg = MC.contrastive_config()
    assert cfg.recipe == "contrastive" and "stem" not in cfg.arch
    assert cfg.arch["vision"] | {"layers": 6, "image_size": 128} == MC.default_arch()["vision"]  # patch 8, width 128
    assert cfg.arch["vision"]["image_size"] == 96 and cfg.batch_size == 64  # the shipped run's recipe
    assert cfg.arch["vision"]["layers"] == 8 and cfg.layers() == [2, 4, 6, 8]  # ViT-L/14's 6/12/18/24 of 24
    assert cfg.arch["text"] == MC.default_arch()["text"] and cfg.gray_fraction == 0
    assert [cfg.w_dense, cfg.w_colour, cfg.w_shape, cfg.w_gray, cfg.w_layers, cfg.w_mask, cfg.w_compose] == [0] * 7
    assert MC._inference_cfg(cfg)["dense_path"] == "maskclip" and cfg.to_dict()["recipe"] == "contrastive"
    model = MC._Trainer(tiny_cfg()).model
    conv = model.visual.conv1
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == conv.stride == (8, 8)
    with pytest.raises(InputError, match="image-caption loss only"):
        MC._Trainer(tiny_cfg(w_mask=0.5))
    with pytest.raises(InputError, match="recipe must be one of"):
        MC.recipe_config("masked")


def test_caption_batches_describe_whole_base_scenes_in_random_order():
    from ovseg.world import EVAL_SEED_OFFSET, NOVEL_CLASSES, render_scene

    cfg = tiny_cfg(batch_size=8, n_objects=(1, 5))
    tok = build_tokenizer(context_length=cfg.context_length)
    seen, orders = set(), set()
    for step in range(6):
        b = MC.make_caption_batch(step, cfg)
        assert (b["seeds"] < EVAL_SEED_OFFSET).all() and b["images"].shape == (8, 64, 64, 3)
        seen |= b["classes"]
        for seed, cap, key in zip(b["seeds"], b["captions"], b["keys"]):
            scene = render_scene(int(seed), cfg.scene_config())
            drawn = [o.class_name for o, m in zip(scene.objects, scene.instance_masks) if m.sum() >= 16]
            named = cap.rstrip(".").replace(" and ", ", ").split(", ")
            assert list(key) == sorted(drawn) and sorted(named) == sorted(f"a {n}" for n in drawn)
            assert tok.unk_id not in tok.encode(cap) and len(tok.encode(cap)) + 2 <= cfg.context_length
            if len(drawn) >= 3:
                orders.add(named == [f"a {n}" for n in drawn])  # in drawing order or not
    assert not seen & NOVEL_CLASSES and orders == {True, False}  # some captions leave the drawing order
    b1, b2 = MC.make_caption_batch(3, cfg), MC.make_caption_batch(3, cfg)
    assert np.array_equal(b1["images"], b2["images"]) and b1["captions"] == b2["captions"]


def test_a_resumed_contrastive_run_reproduces_the_uninterrupted_one(run, monkeypatch):
    root, cfg, res = run
    assert res["step"] == 3
    _forbid_dense_losses(monkeypatch)
    common = dict(cfg=cfg, total_steps=3, log_every=1, verbose=False, export_dir=None)
    MC.train(root / "b", stop_at=1, **common)
    state = MC._load_state(root / "b" / "state.pt")  # weights_only loading (ovseg.train.load_state)
    assert state["step"] == 1 and state["cfg"]["recipe"] == "contrastive"
    with pytest.raises(InputError, match="resumed run's recipe"):
        MC.train(root / "b", resume=True, export_dir=None, recipe="dense", verbose=False)
    MC.train(root / "b", resume=True, export_dir=None, log_every=1, verbose=False, recipe="contrastive")
    sa, sb = MC._load_state(root / "a" / "state.pt"), MC._load_state(root / "b" / "state.pt")
    assert sb["step"] == 3
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k

    def losses(path):
        return {r["step"]: r["global"] for r in map(json.loads, path.read_text().splitlines()) if "global" in r}

    la, lb = losses(root / "a" / "train_log.jsonl"), losses(root / "b" / "train_log.jsonl")
    assert la == lb and sorted(la) == [1, 2, 3]


def test_the_export_loads_and_reads_dense_features_through_the_value_path(run, monkeypatch):
    from ovseg.features import DenseCLIP
    from ovseg.weights import sha256_file

    root, cfg, _ = run
    folder = root / "export"
    model, tok, conf = load_mini_clip(folder)
    assert conf["dense_path"] == "maskclip" and conf["extract_layers"] == [1, 2, 3, 4]
    assert conf["templates"] == ["a {}."] and conf["training"]["recipe"] == "contrastive"
    assert "stem" not in conf["architecture"] and conf["weights_dtype"] == "float16"
    assert set(conf["metrics"]) >= {"miou_base", "miou_novel", "pixel_acc"} and conf["metrics"]["n_images"] == 2
    sums = dict(reversed(line.split("  ")) for line in (folder / "SHA256SUMS").read_text().splitlines())
    assert sums == {f: sha256_file(folder / f) for f in ("model.safetensors", "config.json")}
    card = (folder / "MODEL_CARD.md").read_text()
    assert "contrastive" in card and "dev split" in card and "miou_base" in card and "no conv stem" in card
    from ovseg.experiments.features import global_path_check
    from ovseg.paths import DATA_DIR

    g = global_path_check(DenseCLIP(model, tok, conf["mean"], conf["std"], extract_layers=conf["extract_layers"],
                                    templates=conf["templates"]), DATA_DIR / "mini_world" / "dev")
    r = g["retrieval"]  # the card quotes the global path of exactly the exported (fp16) weights
    assert f"dev captions (same set of objects): {r.value:.3f} [{r.lo:.3f}, {r.hi:.3f}], n = 200" in card
    from ovseg.testlog import CARD_HEADING

    assert card.count(CARD_HEADING) == 1 and "not evaluated on the test split with these weights" in card
    pins = json.loads((REPO_ROOT / "ovseg" / "pins.json").read_text())
    assert "mini-clip-contrastive" not in pins or pins["mini-clip-contrastive"] != sums  # a tmp export pins nothing

    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    kw = dict(extract_layers=conf["extract_layers"], templates=conf["templates"])
    dense = DenseCLIP(model, tok, conf["mean"], conf["std"], dense_path=conf["dense_path"], **kw)
    f = dense.dense_features(img)
    assert f.per_layer.shape == (4, 32, 8, 8)
    assert torch.allclose(f.per_layer.norm(dim=1), torch.ones(4, 8, 8), atol=1e-4)
    tokens = DenseCLIP(model, tok, conf["mean"], conf["std"], dense_path="tokens", **kw).dense_features(img)
    assert not torch.allclose(tokens.per_layer, f.per_layer, atol=1e-3)  # the value path, not the tokens
    # the dev evaluation goes through the value path: every extracted block of every image
    calls = []
    real = DenseCLIP._custom_block

    def spy(block, x, path):
        calls.append(path)
        return real(block, x, path)

    monkeypatch.setattr(DenseCLIP, "_custom_block", staticmethod(spy))
    m = MC.evaluate_dense(model, tok, conf, n_images=2)
    assert calls == ["maskclip"] * 4 * 2 and m["n_images"] == 2 and 0 <= m["miou_base"] <= 1


def test_the_contrastive_recipe_never_exports_over_the_dense_mini_clip(tmp_path, monkeypatch):
    shipped = tmp_path / "models" / "mini-clip"  # stands in for data/models/mini-clip: a broken guard writes here
    monkeypatch.setattr(MC, "DEFAULT_EXPORT", shipped)
    with pytest.raises(InputError, match="must not export over the shipped dense mini-clip"):
        MC.train(tmp_path / "r", cfg=tiny_cfg(), total_steps=1, verbose=False, export_dir=shipped, eval_images=1,
                 final_eval_images=1)
    assert not (tmp_path / "r").exists() and not shipped.exists()


def test_the_default_recipe_is_unchanged(monkeypatch, tmp_path):
    shipped = json.loads((REPO_ROOT / "data" / "models" / "mini-clip" / "config.json").read_text())
    cfg = MC.TrainConfig()
    assert cfg.recipe == "dense" and MC.recipe_config("dense") == cfg
    # the shipped model was trained with the defaults, and the dense config serialises as it always did
    assert json.dumps(cfg.to_dict()) == json.dumps(shipped["training"]["train_config"])  # same keys, same order
    assert "recipe" not in cfg.to_dict()
    assert MC.TrainConfig.from_dict(shipped["training"]["train_config"]) == cfg
    inference = MC._inference_cfg(cfg)
    assert {k: shipped[k] for k in inference} == inference  # tokens path, blocks [5, 6], the three templates
    assert MC.DEFAULT_EXPORTS["dense"] == MC.DEFAULT_EXPORT == REPO_ROOT / "data" / "models" / "mini-clip"
    seen = {}
    monkeypatch.setattr(MC, "train", lambda out, **kw: seen.update(kw) or {"step": 0})
    MC.main(["--out", str(tmp_path / "x"), "--minutes", "1"])
    assert seen["cfg"] == cfg and seen["threads"] == 1 and seen["recipe"] is None
    assert seen["export_dir"] is MC._RECIPE_DEFAULT  # resolved to data/models/mini-clip for a dense run
    MC.main(["--out", str(tmp_path / "x"), "--minutes", "1", "--recipe", "contrastive"])
    assert seen["cfg"] == MC.contrastive_config() and seen["recipe"] == "contrastive"


def test_another_mini_clip_entry_is_selectable_by_clip_model(run, monkeypatch):
    """With a registry entry for the export (as the shipped one will have), --set clip.model selects it in the mini
    profile and its inference settings (value path, its blocks, its templates) come with it."""
    import dataclasses

    from ovseg import weights as W
    from ovseg.config import apply_overrides, get_balanced_config
    from ovseg.experiments.evaluation import model_label
    from ovseg.pipeline import _model_name, effective_config, load_dense_clip

    root, _, _ = run
    entry = dataclasses.replace(W.REGISTRY["mini-clip"], name="mini-clip-test", local_dir=str(root / "export"))
    monkeypatch.setitem(W.REGISTRY, entry.name, entry)
    cfg = apply_overrides(get_balanced_config("mini"), ["clip.model=mini-clip-test"])
    assert _model_name(cfg.clip.model, "mini", "clip") == "mini-clip-test"
    assert _model_name("ViT-B-16", "mini", "clip") == "mini-clip"  # anything else stays pinned
    d = effective_config(cfg)["clip"]
    assert (d["model"], d["dense_path"], d["extract_layers"], d["templates"]) == \
        ("mini-clip-test", "maskclip", [1, 2, 3, 4], ["a {}."])
    clip = load_dense_clip(cfg)
    assert clip.dense_path == "maskclip" and clip.extract_layers == [1, 2, 3, 4] and clip.depth == 4
    assert model_label(cfg, "ovseg").startswith("mini-clip-test (contrastive like real CLIP, read through the full "
                                                "profile's maskclip path")
    # the layer ablation: clip.extract_layers set away from the ViT-L/14 default chooses the mini CLIP's blocks
    last = apply_overrides(cfg, ["clip.extract_layers=[4]"])
    assert effective_config(last)["clip"]["extract_layers"] == [4] and load_dense_clip(last).extract_layers == [4]
    with pytest.raises(InputError, match=r"clip.extract_layers must be block numbers in \[1, 4\] for this model; "
                                         r"got \[9\]"):
        load_dense_clip(apply_overrides(cfg, ["clip.extract_layers=[9]"]))
    assert "designed for" in model_label(cfg, "maskclip")
    assert model_label(get_balanced_config("mini"), "maskclip").startswith("mini-clip (dense-trained")


def test_the_shipped_contrastive_model_is_selectable_and_pinned(capsys):
    """The registry's mini-clip-contrastive (data/models/mini-clip-contrastive): pinned, listed, loaded by
    --set clip.model=mini-clip-contrastive with its value-path settings, the plain ViT of the recipe."""
    from ovseg import weights as W
    from ovseg.cli import main
    from ovseg.config import apply_overrides, get_balanced_config
    from ovseg.pipeline import effective_config, load_dense_clip

    folder = REPO_ROOT / "data" / "models" / "mini-clip-contrastive"
    assert [s for _, s in W.verify("mini-clip-contrastive")] == ["ok", "ok"]
    assert W.pinned_sha256(W.REGISTRY["mini-clip-contrastive"]) == json.loads(
        (REPO_ROOT / "ovseg" / "pins.json").read_text())["mini-clip-contrastive"]
    assert sum(f.stat().st_size for f in folder.iterdir()) < 10e6 and (folder / "MODEL_CARD.md").is_file()
    conf = json.loads((folder / "config.json").read_text())
    assert conf["training"]["recipe"] == "contrastive" and conf["metrics"]["n_images"] == 200
    assert main(["weights", "list", "--profile", "mini"]) == 0
    assert "mini-clip-contrastive" in next(ln for ln in capsys.readouterr().out.splitlines()
                                           if " mini-clip-contrastive " in ln)
    cfg = apply_overrides(get_balanced_config("mini"), ["clip.model=mini-clip-contrastive"])
    d = effective_config(cfg)["clip"]
    assert (d["model"], d["dense_path"], d["extract_layers"]) == ("mini-clip-contrastive", "maskclip", [2, 4, 6, 8])
    clip = load_dense_clip(cfg)
    assert clip.dense_path == "maskclip" and clip.depth == 8 and isinstance(clip.model.visual.conv1, torch.nn.Conv2d)
    assert effective_config(get_balanced_config("mini"))["clip"]["model"] == "mini-clip"  # the default is unchanged
