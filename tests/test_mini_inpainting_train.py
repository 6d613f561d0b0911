"""The mini inpainting trainer: diffusers classes, edit pairs from the world, exact resume, export -> load -> edit."""

import dataclasses

import numpy as np
import pytest
import torch

from ovseg.train.mini_inpainting import TrainConfig, Trainer, edit_batch
from ovseg.world import NOVEL_CLASSES

TINY = dict(image_size=64, vae_channels=[8, 16], unet_channels=[16, 32], attention_head_dim=4, norm_groups=4,
            batch_size=2, vae_steps=1, unet_steps=3, unet_crop=0)  # whole 64 px scenes (crops: tested below)


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    from ovseg.mini_clip import build_mini_clip, build_tokenizer, save_mini_clip

    arch = {"embed_dim": 16, "vision": {"image_size": 64, "patch_size": 8, "width": 16, "layers": 1, "head_width": 8,
                                        "mlp_ratio": 2.0}, "text": {"width": 16, "heads": 2, "layers": 1}}
    tok = build_tokenizer(context_length=16)
    folder = tmp_path_factory.mktemp("clip")
    save_mini_clip(build_mini_clip(arch, tok.vocab_size, 16, seed=0), tok, folder, dtype="float32")
    return folder


pytestmark = pytest.mark.usefixtures("one_thread")  # trainers are specified and tested at 1 thread


def _trainer(clip_dir, tmp_path):
    return Trainer(TrainConfig(**TINY), clip_dir=clip_dir, tokenizer_dir=tmp_path / "tok")


def test_edit_batches_are_exact_and_base_only():
    cfg = TrainConfig(**{**TINY, "batch_size": 6})
    a, b = edit_batch(cfg, 5, "empty background"), edit_batch(cfg, 5, "empty background")
    assert torch.equal(a["source"], b["source"]) and a["prompts"] == b["prompts"]
    assert a["source"].shape == (6, 3, 64, 64) and a["mask"].shape == (6, 1, 64, 64)
    outside = a["mask"].expand_as(a["source"]) < 0.5
    assert torch.equal(a["source"][outside], a["target"][outside])  # the edit changes only the masked region
    for step in range(10):
        assert not any(p in NOVEL_CLASSES for p in edit_batch(cfg, step, "x")["prompts"])


def test_edit_batch_targets_show_the_class_their_prompt_names():
    # the prompt is what the UNet is told to draw: the target must show that class. Checked three ways that do
    # not go through edit_batch: (1) the source is the world's scene and the named object is really there,
    # (2) inside the mask the target is, pixel for pixel, the world's rendering of that scene with the object
    # removed / drawn as the *prompt's* class, whose label map holds the prompt's class there, and (3) the colour
    # of a drawn object is nearest to the sRGB of the prompt's colour word.
    import cv2

    from ovseg.world import BASE_CLASSES, CLASS_NAMES, COLOURS, render_scene, replacement_rotation

    cfg = TrainConfig(**{**TINY, "batch_size": 12, "cfg_dropout": 0.0, "box_mask_fraction": 0.0})
    b = edit_batch(cfg, 3, "empty background")
    scfg = cfg.scene_config()

    def uint8(t):  # (3, S, S) in [-1, 1] -> (S, S, 3) uint8
        return np.rint((t.permute(1, 2, 0).numpy() + 1.0) * 127.5).astype(np.uint8)

    colour_checked = set()
    for k, (op, prompt, (seed, i, _)) in enumerate(zip(b["operations"], b["prompts"], b["edits"])):
        scene = render_scene(seed, scfg)
        obj, m = scene.objects[i], b["mask"][k, 0].numpy() > 0.5
        np.testing.assert_array_equal(uint8(b["source"][k]), scene.image)  # (1)
        assert (scene.label_map[scene.instance_masks[i]] == CLASS_NAMES.index(obj.class_name) + 1).all()
        named = None if op == "remove" else prompt
        if op == "remove":
            assert prompt == "empty background"
        else:
            assert prompt in BASE_CLASSES and prompt != obj.class_name
            if op == "style":
                assert prompt.split()[1] == obj.shape and prompt.split()[0] != obj.colour
        want = render_scene(seed, scfg, edit=(i, named), edit_rotation=replacement_rotation(op, cfg.replace_rotation))
        np.testing.assert_array_equal(uint8(b["target"][k])[m], want.image[m])  # (2)
        if named is None:  # the object's pixels hold its class no more (unless another object of it covers them)
            others = [j for j, o in enumerate(scene.objects) if j != i and o.class_name == obj.class_name]
            assert (want.label_map[scene.instance_masks[i]] != CLASS_NAMES.index(obj.class_name) + 1).all() or others
            continue
        new = want.instance_masks[i] & m
        assert new.any() and (want.label_map[new] == CLASS_NAMES.index(prompt) + 1).all()
        if want.objects[i].style == "filled" and not want.objects[i].textured:  # (3): plain surfaces only
            core = cv2.erode(new.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            if core.sum() >= 20:
                mean = uint8(b["target"][k])[core].reshape(-1, 3).mean(0)
                assert min(COLOURS, key=lambda c: np.abs(mean - COLOURS[c]).sum()) == prompt.split()[0], (k, prompt)
                colour_checked.add(op)
    assert {"remove", "replace", "style"} <= set(b["operations"]) and colour_checked == {"replace", "style"}


def test_steps_resume_exactly_and_export_loads_into_the_full_profile_code_path(clip_dir, tmp_path):
    straight = _trainer(clip_dir, tmp_path)
    losses = [straight.train_step()["loss"] for _ in range(3)]  # 1 VAE step, 2 UNet steps
    assert all(np.isfinite(losses))
    first = _trainer(clip_dir, tmp_path)
    first.train_step(), first.train_step()
    first.save(tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True)["opt_vae"] is None  # VAE stage over: not stored
    resumed = _trainer(clip_dir, tmp_path)
    resumed.load(tmp_path / "state.pt")
    assert resumed.train_step()["loss"] == pytest.approx(losses[2], abs=0, rel=0)
    for k, v in straight.parts["unet"].state_dict().items():
        assert torch.equal(v, resumed.parts["unet"].state_dict()[k]), k
    from ovseg.errors import InputError

    with pytest.raises(InputError, match="configuration it started with"):
        other = Trainer(dataclasses.replace(TrainConfig(**TINY), lr_unet=1.0), clip_dir=clip_dir,
                        tokenizer_dir=tmp_path / "tok")
        other.load(tmp_path / "state.pt")

    from ovseg.config import InpaintingConfig
    from ovseg.inpaint import Inpainter, load_inpaint_pipeline
    from ovseg.world import SceneConfig, render_scene

    folder = straight.export(tmp_path / "export")
    pipe = load_inpaint_pipeline(folder)
    assert type(pipe).__name__ == "StableDiffusionInpaintPipeline"
    sc = pipe.scheduler.config  # v-prediction at a zero terminal SNR: DDIM from t = T (trailing)
    assert sc.prediction_type == "v_prediction" and sc.rescale_betas_zero_snr and sc.timestep_spacing == "trailing"
    exported = pipe.unet.state_dict()  # the EMA weights are exported, not the raw ones
    for k, v in straight.ema.state_dict().items():
        assert torch.equal(exported[k], v.half().to(exported[k].dtype)), k
    assert any(not torch.equal(v, straight.parts["unet"].state_dict()[k]) for k, v in straight.ema.state_dict().items())
    scene = render_scene(3, SceneConfig(size=(64, 64), n_objects=(1, 1)))
    res = Inpainter(pipe, InpaintingConfig(num_inference_steps=2, mask_blur=1.0, mask_dilation=1)).edit(
        scene.image, scene.instance_masks[0], "replace", edit_prompt="blue star", seed=0)
    assert np.asarray(res.image).shape == (64, 64, 3)


def test_extend_changes_only_whitelisted_fields_and_is_recorded(clip_dir, tmp_path):
    from ovseg.errors import InputError
    from ovseg.train.mini_inpainting import saved_config

    t = _trainer(clip_dir, tmp_path)
    t.train_step()
    t.save(tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", map_location="cpu", weights_only=True)
    assert saved_config(state) == t.cfg
    r = _trainer(clip_dir, tmp_path)
    r.load(tmp_path / "state.pt")
    with pytest.raises(InputError, match="may only change"):
        r.extend({"lr_unet": 1.0})
    r.extend({"mask_loss_weight": 4.0, "unet_steps": t.cfg.unet_steps + 5})
    assert r.cfg.mask_loss_weight == 4.0 and r.phases == [{"step": 1, "changes": {"mask_loss_weight": 4.0,
                                                                                   "unet_steps": t.cfg.unet_steps + 5}}]
    r.save(tmp_path / "state2.pt")
    again = Trainer(r.cfg, clip_dir=clip_dir, tokenizer_dir=tmp_path / "tok")
    again.load(tmp_path / "state2.pt")  # the extended configuration is the run's configuration from now on
    assert again.phases == r.phases and again.step == 1


def test_extend_auto_latent_scale_sets_the_vae_config(clip_dir, tmp_path):
    t = _trainer(clip_dir, tmp_path)
    assert t.parts["vae"].config.scaling_factor == TrainConfig().vae_scaling_factor
    t.extend({"vae_scaling_factor": "auto"})
    scale = t.cfg.vae_scaling_factor
    assert isinstance(scale, float) and scale > 0 and t.parts["vae"].config.scaling_factor == scale
    assert t.phases[-1]["changes"] == {"vae_scaling_factor": scale}  # the measured value is what is recorded
    assert t.measure_latent_scale() == scale  # deterministic


def test_unet_lr_is_constant_then_a_cosine_down_to_the_final_fraction():
    from ovseg.train.mini_inpainting import unet_lr

    assert unet_lr(TrainConfig(lr_decay_from=-1), 5000) == TrainConfig().lr_unet  # lr_decay_from = -1: constant
    cfg = TrainConfig(vae_steps=0, unet_steps=1000, lr_unet=1.0, lr_decay_from=200, lr_final_fraction=0.1)
    lrs = [unet_lr(cfg, s) for s in range(0, 1201, 100)]
    assert lrs[:3] == [1.0, 1.0, 1.0] and lrs[10:] == pytest.approx([0.1, 0.1, 0.1])
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and unet_lr(cfg, 600) == pytest.approx(0.55)


def test_vae_lr_decays_over_the_vae_stage_only_and_old_states_keep_a_constant_one():
    from ovseg.train.mini_inpainting import saved_config, vae_lr

    cfg = TrainConfig(vae_steps=1000, lr_vae=1.0, lr_vae_decay_from=200, lr_vae_final_fraction=0.1)
    lrs = [vae_lr(cfg, s) for s in range(0, 1001, 100)]
    assert lrs[:3] == [1.0, 1.0, 1.0] and lrs[-1] == pytest.approx(0.1) and vae_lr(cfg, 600) == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    # a state saved before the field existed trained its VAE at a constant lr: it loads with lr_vae_decay_from = -1
    old = {k: v for k, v in dataclasses.asdict(TrainConfig()).items() if k not in ("lr_vae_decay_from", "lr_vae_final_fraction")}
    assert saved_config({"cfg": old}).lr_vae_decay_from == -1 and vae_lr(saved_config({"cfg": old}), 1500) == old["lr_vae"]


def test_extend_lr_decay_now_starts_at_the_current_step(clip_dir, tmp_path):
    t = _trainer(clip_dir, tmp_path)
    t.train_step(), t.train_step()
    t.extend({"lr_decay_from": "now", "unet_steps": 10})
    assert t.cfg.lr_decay_from == 2 and t.phases[-1]["changes"] == {"lr_decay_from": 2, "unet_steps": 10}
    assert t.train_step()["lr"] == pytest.approx(t.cfg.lr_unet)  # step 2: the decay's first step
    assert t.train_step()["lr"] < t.cfg.lr_unet


def test_box_masks_cover_the_region_bounding_box_and_zero_keeps_old_batches():
    def n_boxes(batch):
        n = 0
        for m in batch["mask"][:, 0]:
            ys, xs = torch.nonzero(m, as_tuple=True)
            n += bool(m[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all())
        return n

    cfg = TrainConfig(**{**TINY, "batch_size": 16, "box_mask_fraction": 0.0, "replace_mask": "source"})
    plain = edit_batch(cfg, 7, "empty background")
    assert torch.equal(plain["mask"], edit_batch(dataclasses.replace(cfg, box_mask_fraction=0.0), 7, "x")["mask"])
    boxed = edit_batch(dataclasses.replace(cfg, box_mask_fraction=1.0), 7, "empty background")
    assert n_boxes(plain) <= 2 and n_boxes(boxed) >= 8  # remove / replace masks (about 2/3) become boxes
    outside = boxed["mask"].expand_as(boxed["source"]) < 0.5
    assert torch.equal(boxed["source"][outside], boxed["target"][outside])  # a box contains the edit region


def test_init_vae_from_equals_training_the_vae_stage_here(clip_dir, tmp_path):
    from ovseg.errors import InputError

    a = _trainer(clip_dir, tmp_path)
    a.train_step()  # the whole (1-step) VAE stage
    a.save(tmp_path / "a.pt")
    b = _trainer(clip_dir, tmp_path)
    b.init_vae_from(tmp_path / "a.pt", vae_wall=12.0)
    assert b.step == a.step == 1 and b.wall == 12.0 and len(b.phases[0]["vae_from_sha256"]) == 64
    for k, v in a.parts["vae"].state_dict().items():
        assert torch.equal(v, b.parts["vae"].state_dict()[k]), k
    assert b.train_step()["loss"] == pytest.approx(a.train_step()["loss"], abs=0, rel=0)  # same UNet init and data
    other = Trainer(dataclasses.replace(TrainConfig(**TINY), lr_vae=1.0), clip_dir=clip_dir, tokenizer_dir=tmp_path / "tok")
    with pytest.raises(InputError, match="VAE settings equal"):
        other.init_vae_from(tmp_path / "a.pt", 1.0)


def test_states_saved_before_the_second_recipe_keep_their_values():
    from dataclasses import asdict

    from ovseg.train.mini_inpainting import LEGACY, saved_config

    old = saved_config({"cfg": {k: v for k, v in asdict(TrainConfig()).items() if k not in LEGACY}})
    assert old.prediction_type == "epsilon" and not old.zero_terminal_snr and old.ema_decay == 0.0
    assert old.replace_mask == "union" and len(set(old.op_weights)) == 1


def test_replace_examples_mask_the_old_object_and_clip_the_new_one():
    cfg = TrainConfig(**{**TINY, "batch_size": 16, "box_mask_fraction": 0.0, "cfg_dropout": 0.0, "replace_mask": "source"})
    b = edit_batch(cfg, 3, "empty background")
    union = edit_batch(dataclasses.replace(cfg, replace_mask="union"), 3, "empty background")  # same draws
    assert b["prompts"] == union["prompts"] and torch.equal(b["source"], union["source"])
    assert bool((b["mask"] <= union["mask"]).all())  # the old object's region only ...
    assert bool((b["mask"] < union["mask"]).any())  # ... where a new shape reaches beyond it
    outside = b["mask"].expand_as(b["source"]) < 0.5
    assert torch.equal(b["source"][outside], b["target"][outside])  # the new object is clipped to the old region


def test_a_finished_run_keeps_no_unet_optimiser_and_extending_it_restarts_adamw(clip_dir, tmp_path):
    t = _trainer(clip_dir, tmp_path)
    for _ in range(3):
        t.train_step()
    t.save(tmp_path / "running.pt")
    assert torch.load(tmp_path / "running.pt", weights_only=True)["opt_unet"] is not None  # still needed for resume
    t.train_step()  # the last UNet step: the run is finished
    t.save(tmp_path / "done.pt")
    state = torch.load(tmp_path / "done.pt", weights_only=True)
    assert state["opt_unet"] is None and state["ema"] is not None
    # UNet weights in float16 (the export's precision), the VAE's in float32 (--init-vae-from reuses it exactly)
    assert {v.dtype for k in ("unet", "ema") for v in state[k].values() if v.is_floating_point()} == {torch.float16}
    assert {v.dtype for v in state["vae"].values() if v.is_floating_point()} == {torch.float32}
    r = _trainer(clip_dir, tmp_path)
    r.load(tmp_path / "done.pt")
    for k, v in t.ema.state_dict().items():  # what export uses is kept exactly at the export's precision
        assert torch.equal(v.half().float(), r.ema.state_dict()[k]), k
        assert r.ema.state_dict()[k].dtype == torch.float32  # and trained on in float32 if extended
    for k, v in t.parts["vae"].state_dict().items():
        assert torch.equal(v, r.parts["vae"].state_dict()[k]), k
    a, b = t.export(tmp_path / "a"), r.export(tmp_path / "b")
    for name in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name  # re-exporting the saved run: same files
    r.extend({"unet_steps": t.cfg.unet_steps + 1})
    assert r.phases[-1] == {"step": 4, "changes": {"unet_steps": 4}, "adamw_restarted": True, "weights_from_float16": True}
    assert np.isfinite(r.train_step()["loss"])


def test_enclosing_replace_masks_are_the_editors_square_dilated_and_hold_the_whole_new_object():
    import cv2

    from ovseg.inpaint import enclosing_square_mask
    from ovseg.world import render_scene

    cfg = TrainConfig(**{**TINY, "batch_size": 24, "cfg_dropout": 0.0, "box_mask_fraction": 0.0})
    assert cfg.replace_mask == "enclosing"  # the fourth recipe's default
    b = edit_batch(cfg, 11, "empty background")
    src = edit_batch(dataclasses.replace(cfg, replace_mask="source"), 11, "empty background")
    assert b["edits"] == src["edits"] and b["prompts"] == src["prompts"]  # same draws, other masks
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * cfg.dilation + 1,) * 2)
    n = 0
    for k, (op, (seed, i, new)) in enumerate(zip(b["operations"], b["edits"])):
        m = b["mask"][k, 0].numpy() > 0.5
        if op != "replace":
            assert torch.equal(b["mask"][k], src["mask"][k])  # remove (no boxes here) and style: as before
            continue
        n += 1
        old = render_scene(seed, cfg.scene_config()).instance_masks[i]
        np.testing.assert_array_equal(m, cv2.dilate(enclosing_square_mask(old).astype(np.uint8), kernel) > 0)
        assert (render_scene(seed, cfg.scene_config(), edit=(i, new)).instance_masks[i] <= m).all()  # never clipped
    assert n >= 4
    outside = b["mask"].expand_as(b["source"]) < 0.5
    assert torch.equal(b["source"][outside], b["target"][outside])


def test_card_metrics_keep_the_summary_and_the_command_and_refuse_other_files(tmp_path):
    from ovseg.errors import InputError
    from ovseg.train.mini_inpainting import card_metrics

    f = tmp_path / "edits.json"
    f.write_text('{"n_edits": 2, "method": "diffusion", "success_remove": 1.0, "edits": [{"seed": 1}, {"seed": 2}]}')
    assert card_metrics(f, "ovseg evaluate ...") == {"n_edits": 2, "success_remove": 1.0, "command": "ovseg evaluate ..."}
    assert card_metrics(f) == {"n_edits": 2, "success_remove": 1.0}
    (tmp_path / "other.json").write_text('{"miou": 0.5}')
    for bad in (tmp_path / "other.json", tmp_path / "missing.json"):
        with pytest.raises(InputError, match="edits.json written by"):
            card_metrics(bad)


@pytest.mark.parametrize("text_time_embedding", [True, False])
def test_the_prompt_reaches_the_top_level_resnets_only_with_the_text_time_embedding(clip_dir, tmp_path,
                                                                                     text_time_embedding):
    # the top level (DownBlock2D, no cross-attention) sees the prompt only through the pooled text embedding
    cfg = dataclasses.replace(TrainConfig(**TINY), text_time_embedding=text_time_embedding,
                              resnet_time_scale_shift="scale_shift" if text_time_embedding else "default")
    unet = Trainer(cfg, clip_dir=clip_dir, tokenizer_dir=tmp_path / "tok").parts["unet"]
    assert unet.config.addition_embed_type == ("text" if text_time_embedding else None)
    seen = []
    unet.down_blocks[0].register_forward_hook(lambda module, args, out: seen.append(out[0]))
    torch.manual_seed(0)
    x, t = torch.randn(1, 9, 32, 32), torch.tensor([500])  # (B, 9, s, s) latents at 64 px / 2
    with torch.no_grad():
        for _ in range(2):  # two different prompts' hidden states: (B, tokens, width)
            unet(x, t, encoder_hidden_states=torch.randn(1, 16, unet.config.cross_attention_dim))
    assert torch.equal(seen[0], seen[1]) != text_time_embedding


def test_states_saved_before_the_sixth_recipe_build_their_unet_without_the_text_time_embedding():
    from dataclasses import asdict

    from ovseg.train.mini_inpainting import saved_config

    new = ("text_time_embedding", "text_time_embedding_heads", "resnet_time_scale_shift", "unet_crop",
           "replace_rotation")
    old = saved_config({"cfg": {k: v for k, v in asdict(TrainConfig()).items() if k not in new}})
    assert not old.text_time_embedding and old.resnet_time_scale_shift == "default"
    assert old.unet_crop == 0 and old.replace_rotation == "source"  # whole scenes, the old object's rotation
    # the defaults are the eighth recipe's (the shipped model's): the fourth recipe's plus these fields
    assert old == dataclasses.replace(TrainConfig(), text_time_embedding=False, resnet_time_scale_shift="default",
                                      unet_crop=0, replace_rotation="source")
    assert (TrainConfig().unet_crop, TrainConfig().replace_rotation, TrainConfig().unet_steps) == (80, "upright", 20000)


@pytest.mark.parametrize("crop", [100, 72, 256])
def test_crops_that_do_not_fit_the_scene_or_the_latent_grid_are_refused(crop):
    from ovseg.errors import InputError

    with pytest.raises(InputError, match="unet_crop must be 0 .* multiple of 16 up to image_size 128"):
        TrainConfig(unet_crop=crop)  # 100, 72: not whole latents at every UNet level; 256: larger than the scene
    assert TrainConfig(unet_crop=0).unet_crop == 0 and TrainConfig(unet_crop=128).unet_crop == 128


def test_cropped_batches_are_windows_of_the_same_examples_holding_the_whole_region():
    full = edit_batch(TrainConfig(**{**TINY, "batch_size": 12}), 7, "background")
    crop = edit_batch(TrainConfig(**{**TINY, "batch_size": 12, "unet_crop": 48}), 7, "background")
    assert full["windows"] == [] and len(crop["windows"]) == 12
    assert crop["edits"] == full["edits"] and crop["prompts"] == full["prompts"]  # same examples, only cropped
    assert crop["source"].shape == (12, 3, 48, 48) and crop["mask"].shape == (12, 1, 48, 48)
    for k, (top, left) in enumerate(crop["windows"]):
        window = (slice(None), slice(top, top + 48), slice(left, left + 48))
        assert torch.equal(crop["source"][k], full["source"][k][window])
        assert torch.equal(crop["target"][k], full["target"][k][window])
        assert torch.equal(crop["mask"][k], full["mask"][k][window])
        rows, cols = np.nonzero(full["mask"][k, 0].numpy())
        if np.ptp(rows) < 48 and np.ptp(cols) < 48:  # fits: the whole region is inside the window
            assert crop["mask"][k].sum() == full["mask"][k].sum()
    assert len(set(crop["windows"])) > 1


def test_a_unet_trained_on_crops_edits_whole_scenes(clip_dir, tmp_path):
    from ovseg.config import InpaintingConfig
    from ovseg.inpaint import Inpainter, load_inpaint_pipeline
    from ovseg.world import SceneConfig, render_scene

    t = Trainer(TrainConfig(**{**TINY, "unet_crop": 48}), clip_dir=clip_dir, tokenizer_dir=tmp_path / "tok")
    assert all(np.isfinite(t.train_step()["loss"]) for _ in range(3))  # 1 VAE step (whole scenes), 2 UNet steps
    folder = t.export(tmp_path / "export")
    assert "48 px windows around the edited region" in (folder / "MODEL_CARD.md").read_text()
    pipe = load_inpaint_pipeline(folder)
    scene = render_scene(3, SceneConfig(size=(64, 64), n_objects=(1, 1)))
    res = Inpainter(pipe, InpaintingConfig(num_inference_steps=2, mask_blur=1.0, mask_dilation=1)).edit(
        scene.image, scene.instance_masks[0], "remove", seed=0)
    assert np.asarray(res.image).shape == (64, 64, 3)


def test_upright_replacements_change_only_the_replace_targets_and_bad_values_are_refused():
    from ovseg.errors import InputError
    from ovseg.world import render_scene

    up_cfg = TrainConfig(**{**TINY, "batch_size": 16, "cfg_dropout": 0.0})
    assert up_cfg.replace_rotation == "upright"  # the eighth recipe's (the shipped model's)
    cfg = dataclasses.replace(up_cfg, replace_rotation="source")  # the earlier recipes' (the world's exact edit)
    a, up = edit_batch(cfg, 7, "empty background"), edit_batch(up_cfg, 7, "empty background")
    assert a["edits"] == up["edits"] and a["prompts"] == up["prompts"] and torch.equal(a["mask"], up["mask"])
    assert torch.equal(a["source"], up["source"])
    n = 0
    for k, (op, (seed, i, new)) in enumerate(zip(up["operations"], up["edits"])):
        if op != "replace":
            assert torch.equal(a["target"][k], up["target"][k])  # remove / style: the world's exact edit
            continue
        n += 1
        want = render_scene(seed, up_cfg.scene_config(), edit=(i, new), edit_rotation=0.0).image  # (S, S, 3) uint8
        m = up["mask"][k, 0].numpy() > 0.5
        got = np.rint((up["target"][k].permute(1, 2, 0).numpy() + 1.0) * 127.5).astype(np.uint8)
        np.testing.assert_array_equal(got[m], want[m])
    assert n >= 3
    with pytest.raises(InputError, match="replace_rotation must be one of"):
        TrainConfig(replace_rotation="sideways")


def test_extend_to_upright_replacements_is_a_recorded_phase_on_the_card(clip_dir, tmp_path):
    t = Trainer(TrainConfig(**TINY, replace_rotation="source"), clip_dir=clip_dir, tokenizer_dir=tmp_path / "tok")
    t.train_step()
    t.extend({"replace_rotation": "upright"})
    assert t.cfg.replace_rotation == "upright" and t.phases[-1]["changes"] == {"replace_rotation": "upright"}
    card = t.write_model_card(tmp_path / "card").read_text()
    assert "From step 1, the new object of a replacement is drawn upright" in card
