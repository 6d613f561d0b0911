"""The mini CLIP: trimmed tokenizer, DenseCLIP compatibility, save/load, reproducible resumable training."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from ovseg.mini_clip import DEFAULT_TEMPLATES, MiniTokenizer, build_mini_clip, build_tokenizer, load_mini_clip, save_mini_clip  # noqa: E402

TINY_ARCH = {
    "embed_dim": 32,
    "vision": {"image_size": 64, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16, "mlp_ratio": 2.0},
    "stem": {"channels": [8, 16, 16], "strides": [2, 2, 2], "norm": "group"},
    "text": {"width": 32, "heads": 2, "layers": 1},
}


def tiny_cfg(**kw):
    from ovseg.train.mini_clip import TrainConfig

    opts = dict(arch=json.loads(json.dumps(TINY_ARCH)), batch_size=4, warmup_steps=2, context_length=16,
                templates=["a {}.", "a photo of a {}."], n_objects=(1, 3))
    opts.update(kw)
    return TrainConfig(**opts)


pytestmark = pytest.mark.usefixtures("one_thread")  # trainers are specified and tested at 1 thread


def test_tokenizer_remap_round_trip_and_unknown_words():
    tok = build_tokenizer(context_length=16)
    ids = tok.encode("A red star.")
    assert tok.unk_id not in ids and all(0 < i < tok.sot_id for i in ids)
    assert tok.decode(ids) == "a red star ."
    assert tok.encode("zebra") and set(tok.encode("zebra")) == {tok.unk_id}
    assert tok.decode(tok.encode("a zebra")) == "a <unk>"
    t = tok(["a red star.", "there is a blue ring in the scene."])
    assert t.shape == (2, 16) and t.dtype == torch.long
    assert (t[:, 0] == tok.sot_id).all()
    assert (t.argmax(-1) == torch.tensor([5, 10])).all()  # end token = highest id (argmax pooling)
    long = tok(["red " * 40])
    assert long[0, -1] == tok.eot_id and (long[0] != 0).all()  # truncated, keeps its end token
    again = MiniTokenizer(**{k: v for k, v in tok.to_config().items() if k != "type"})
    assert torch.equal(again(["a red star.", "a zebra"]), tok(["a red star.", "a zebra"]))
    assert tok.vocab_size < 100


def test_tiny_model_runs_in_dense_clip_and_round_trips(tmp_path):
    from ovseg.features import DenseCLIP

    tok = build_tokenizer(context_length=16)
    model = build_mini_clip(TINY_ARCH, tok.vocab_size, 16, seed=0).eval()
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    opts = dict(extract_layers=[1, 2], dense_path="tokens", templates=list(DEFAULT_TEMPLATES))
    dense = DenseCLIP(model, tok, [0.5] * 3, [0.25] * 3, **opts)
    f = dense.dense_features(img)
    assert f.per_layer.shape == (2, 32, 8, 8)
    text = dense.encode_text(["red star", "background"])
    assert text.shape == (2, 32)
    sim = f.similarity(text)
    assert sim.shape == (2, 64, 64)

    save_mini_clip(model, tok, tmp_path / "m32", dtype="float32")
    m2, tok2, cfg = load_mini_clip(tmp_path / "m32")
    assert cfg["dense_path"] == "tokens" and cfg["extract_layers"] == [1, 2] and cfg["templates"] == DEFAULT_TEMPLATES
    d2 = DenseCLIP(m2, tok2, cfg["mean"], cfg["std"], extract_layers=cfg["extract_layers"],
                   dense_path=cfg["dense_path"], templates=cfg["templates"])
    assert torch.equal(d2.dense_features(img).per_layer, f.per_layer)
    assert torch.equal(d2.encode_text(["red star", "background"]), text)
    # default export: fp16 weights, close outputs, small file
    save_mini_clip(model, tok, tmp_path / "m16")
    m3, tok3, _ = load_mini_clip(tmp_path / "m16")
    d3 = DenseCLIP(m3, tok3, [0.5] * 3, [0.25] * 3, **opts)
    assert torch.allclose(d3.dense_features(img).per_layer, f.per_layer, atol=2e-2)
    assert (tmp_path / "m16" / "model.safetensors").stat().st_size < (tmp_path / "m32" / "model.safetensors").stat().st_size


def test_training_batches_never_contain_novel_classes():
    from ovseg.train.mini_clip import make_batch
    from ovseg.world import CLASS_NAMES, EVAL_SEED_OFFSET, NOVEL_CLASSES

    cfg = tiny_cfg(batch_size=8)
    novel_labels = [k + 1 for k, c in enumerate(CLASS_NAMES) if c in NOVEL_CLASSES]
    seen = set()
    for step in range(40):
        b = make_batch(step, cfg)
        seen |= b["classes"]
        assert (b["seeds"] < EVAL_SEED_OFFSET).all()
        assert b["soft"][..., novel_labels].sum() == 0
        assert np.allclose(b["soft"].sum(-1), 1)
        assert b["images"].shape == (8, 64, 64, 3) and b["gray"].sum() == 2
    assert not seen & NOVEL_CLASSES and len(seen) > 20
    b1, b2 = make_batch(3, cfg), make_batch(3, cfg)
    assert np.array_equal(b1["images"], b2["images"])  # a pure function of (seed, step)


def test_two_steps_and_resume_reproduce_an_uninterrupted_run(tmp_path):
    from ovseg.train.mini_clip import _load_state, train

    cfg = tiny_cfg()
    common = dict(cfg=cfg, total_steps=3, log_every=1, verbose=False, eval_images=2, final_eval_images=2)
    res = train(tmp_path / "a", export_dir=tmp_path / "export", **common)
    assert res["step"] == 3 and set(res["metrics"]) >= {"pixel_acc", "miou_base", "miou_novel", "colour_acc",
                                                         "shape_acc"}
    train(tmp_path / "b", export_dir=None, stop_at=1, **common)
    assert _load_state(tmp_path / "b" / "state.pt")["step"] == 1
    train(tmp_path / "b", resume=True, export_dir=None, log_every=1, verbose=False)
    sa, sb = _load_state(tmp_path / "a" / "state.pt"), _load_state(tmp_path / "b" / "state.pt")
    assert sb["step"] == 3
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k

    def losses(path):
        return {r["step"]: r["total"] for r in map(json.loads, path.read_text().splitlines()) if "total" in r}

    la, lb = losses(tmp_path / "a" / "train_log.jsonl"), losses(tmp_path / "b" / "train_log.jsonl")
    assert la == lb and sorted(la) == [1, 2, 3]
    # the export loads and carries the inference settings
    model, tok, conf = load_mini_clip(tmp_path / "export")
    assert conf["extract_layers"] == [1, 2] and conf["dense_path"] == "tokens"
    assert conf["templates"] == cfg.templates and conf["training"]["steps"] == 3
    assert (tmp_path / "export" / "MODEL_CARD.md").is_file()
    with pytest.raises(Exception, match="checkpoint"):
        train(tmp_path / "a", **common)  # refuses to overwrite a run without --resume
