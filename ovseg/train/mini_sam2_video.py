"""Train the memory path of the mini SAM 2 on mini-world clips (SAM 2's video recipe, offline on CPU).

The mini SAM 2 (:mod:`ovseg.train.mini_sam2`) was trained on single images: its memory encoder, memory attention
and object pointers are still at their random initialisation, and its object-score head (which gates every tracked
mask) was never trained, so sam2's ``SAM2VideoPredictor`` loses an object right after the prompted frame. This
trainer continues from the image weights and trains only the modules the video path adds (:data:`TRAINED`); every
parameter the image path reads (:data:`FROZEN`) keeps its exact value, so automatic mask generation and every image
number stay bit-identical. With ``--set train_decoder=true`` the SAM mask decoder is trained too (at a lower lr):
a decoder trained on point prompts alone cannot turn the memory-conditioned features of an unprompted frame into the
tracked mask; the exported model then serves tracking only (keyframe detections keep the image model).

Recipe (SAM 2's idea: prompts on some frames, propagate, loss on all frames), per clip of T frames:

* data: ``render_clip(seed, ClipConfig(split="base", ...))`` with seeds below ``EVAL_SEED_OFFSET``, every
  ``stride``-th rendered frame (motion of 1-2 x the clip speed); one target object: visible in frame 0 and prompted
  there, or (``p_late_target``) a late object prompted at its first well-visible frame; optionally
  (``p_extra_prompt``) one more mask prompt on a random later frame. Each step's data is a pure function of
  ``(seed, step)``.
* forward, with sam2's own calls: ``forward_image`` on the T frames as one batch (no gradient: frozen) and
  ``_prepare_backbone_features``; then frame by frame from the prompt frame on, sam2's ``track_step`` (its two halves
  ``_track_step`` and ``_encode_memory_in_output``, so that the object-score logits, which ``track_step`` hands out only
  in eval mode, reach the loss), with the ground-truth mask as ``mask_inputs`` on prompted frames, and
  ``output_dict`` filled as ``SAM2VideoPredictor.propagate_in_video`` fills it (prompted frames under
  ``cond_frame_outputs``, the others under ``non_cond_frame_outputs``). Memories are encoded on every frame.
* loss on every propagated (not prompted) frame: 20 x focal + 1 x dice of the tracked mask (``pred_masks_high_res``,
  the mask the predictor outputs) against the target's visible mask, on frames where it is visible, plus BCE of the
  object-score logit against "the target is visible in this frame". AdamW, warmup + cosine, gradient clipping.

Run ``python -m ovseg.train.mini_sam2_video --out data/train/mini-sam2-video --minutes 60 [--steps N] [--resume]``.
Every ~2 minutes ``--out/state.pt`` (model, optimizer, step, RNG) is replaced atomically and
``--out/train_log.jsonl`` gets lines; a new run first evaluates the untrained memory (the baseline), then every
``--eval-minutes`` and at the end the model is evaluated on video dev clips (semi-supervised J&F with sam2's video
predictor, :func:`evaluate_dev`) and exported to ``--export`` (default ``data/models/mini-sam2-video``, never over
``data/models/mini-sam2``) with ``config.yaml``, ``model.safetensors``, ``MODEL_CARD.md`` and ``SHA256SUMS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..paths import DATA_DIR
from ..world import EVAL_SEED_OFFSET
from . import load_state
from .mini_sam2 import CONFIG_PATH
from .mini_sam2 import MODEL_DIR as IMAGE_MODEL_DIR

__all__ = ["EXPORT_DIR", "TRAINED", "FROZEN", "DECODER", "VideoTrainConfig", "VideoTrainer", "sample_clip", "evaluate_dev",
           "export_model", "main"]

#: Default export folder of the video-trained model (the image model's folder is never written).
EXPORT_DIR = DATA_DIR / "models" / "mini-sam2-video"
#: Image weights a new run starts from.
IMAGE_WEIGHTS = IMAGE_MODEL_DIR / "model.safetensors"

#: Parameter-name prefixes of the modules trained here: those only the video path (``track_step`` on frames after a
#: prompt, the memory encoder, object pointers) reads. sam2 1.1.0's ``SAM2Base`` with the mini config:
#:
#: * ``memory_attention``: cross-attention of the current frame's features to the memory bank (121 k parameters);
#: * ``memory_encoder``: mask downsampler + fuser + projection turning (features, mask) into a memory (348 k);
#: * ``maskmem_tpos_enc``: temporal position of each memory slot; ``no_obj_embed_spatial``: added to a memory whose
#:   frame has no object;
#: * ``obj_ptr_proj``, ``obj_ptr_tpos_proj``, ``no_obj_ptr``: object pointers (from the decoder's output token) and
#:   their temporal encoding;
#: * ``mask_downsample``: the mask prompt of a prompted frame downsampled for the decoder call that makes its pointer;
#: * ``sam_mask_decoder.pred_obj_score_head``: the MLP that reads the object-score token's output. The image predictor
#:   discards the object score (``SAM2ImagePredictor._predict`` keeps masks and IoUs only), so it is video-only; the
#:   ``obj_score_token`` itself is *not* trained (it attends with the mask tokens, so it changes image masks);
#: * ``no_mem_pos_enc``: unused with ``directly_add_no_mem_embed: true`` (listed so every parameter is classified).
TRAINED = ("memory_attention.", "memory_encoder.", "maskmem_tpos_enc", "no_obj_embed_spatial", "obj_ptr_proj.",
           "obj_ptr_tpos_proj.", "no_obj_ptr", "mask_downsample.", "sam_mask_decoder.pred_obj_score_head.",
           "no_mem_pos_enc")
#: Frozen: everything the image path reads (``SAM2ImagePredictor.set_image`` / ``_predict``). Note ``no_mem_embed``:
#: the image predictor adds it to every image embedding, so it stays frozen although it is a "memory" parameter.
FROZEN = ("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")
#: Trained besides :data:`TRAINED` with ``VideoTrainConfig.train_decoder`` (at ``decoder_lr_scale`` x the lr).
DECODER = ("sam_mask_decoder.",)
#: Seed-stream tags (``np.random.default_rng([seed, step, tag])``): one independent stream per use.
_DATA_TAG = 7717


def _is_trained(name: str) -> bool:
    return any(name == p or name.startswith(p) for p in TRAINED)


def _is_frozen(name: str) -> bool:
    return not _is_trained(name) and any(name == p or name.startswith(p) for p in FROZEN)


@dataclass
class VideoTrainConfig:
    """Hyper-parameters of a run (stored in ``state.pt``; a resumed run keeps the saved ones)."""

    # Seed of the data stream (clip seeds, targets, prompts) and of the dropout RNG.
    seed: int = 0
    # Frames per training clip (T): one prompt frame and T - 1 propagated frames at most.
    clip_frames: int = 8
    # Clips per optimisation step (their losses are averaged).
    clips_per_step: int = 1
    # Frame stride range: a clip is every stride-th frame of a rendered clip, stride uniform in [low, high].
    frame_stride: tuple[int, int] = (1, 2)
    # Objects present at frame 0 (ClipConfig.n_objects) and entering mid-clip (ClipConfig.n_entering).
    n_objects: tuple[int, int] = (1, 4)
    n_entering: tuple[int, int] = (0, 1)
    # Translation speed of objects present at frame 0, px per rendered frame (ClipConfig.speed).
    speed: tuple[float, float] = (0.0, 2.0)
    # Probability that the target is a late object (not in frame 0), prompted at its first frame with >= min_area
    # visible pixels, when the clip has one early enough (else a frame-0 object is the target).
    p_late_target: float = 0.25
    # Probability of one more mask prompt on a random later frame where the target is visible (a correction).
    p_extra_prompt: float = 0.2
    # An object needs this many visible pixels on a frame to be prompted there.
    min_area: int = 12
    lr: float = 5e-4
    weight_decay: float = 0.05
    # Linear warmup over warmup_steps, then cosine decay from lr to lr * min_lr_ratio at total_steps, then constant.
    warmup_steps: int = 200
    total_steps: int = 6000
    min_lr_ratio: float = 0.05
    # Gradient-norm clip over the trained parameters (0: off).
    grad_clip: float = 1.0
    # Mask loss on frames where the target is visible: focal_weight x focal + dice_weight x dice.
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # BCE of the object-score logit against "target visible in this frame" (every propagated frame).
    obj_score_weight: float = 1.0
    # Also train the SAM mask decoder (``sam_mask_decoder.*``), at lr x decoder_lr_scale. Off, every parameter the
    # image path reads stays frozen; on, the exported model's image path differs from the image model's (ovseg then
    # uses it for tracking only: keyframe detections keep data/models/mini-sam2). A frozen decoder trained on point
    # prompts must turn the memory-conditioned features of an unprompted frame into the tracked mask unaided.
    train_decoder: bool = False
    decoder_lr_scale: float = 0.2
    # Model YAML (sam2 schema) and the image weights a new run starts from.
    config_path: str = field(default_factory=lambda: str(CONFIG_PATH))
    init_weights: str = field(default_factory=lambda: str(IMAGE_WEIGHTS))

    def validate(self) -> "VideoTrainConfig":
        """Raise :class:`InputError` (rule, value, fix) for a value out of range; returns self."""

        def integer(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
                rng = f">= {lo}" if hi is None else f"from {lo} to {hi}"
                raise InputError(f"VideoTrainConfig.{name} must be an integer {rng}", repr(v),
                                 f"use e.g. {name}={getattr(VideoTrainConfig, name)}")

        def number(name: str, lo: float, hi: float | None = None, open_lo: bool = False) -> None:
            v = getattr(self, name)
            ok = (not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
                  and math.isfinite(float(v)) and (v > lo if open_lo else v >= lo) and (hi is None or v <= hi))
            if not ok:
                rng = f"{'>' if open_lo else '>='} {lo}" + ("" if hi is None else f" and <= {hi}")
                raise InputError(f"VideoTrainConfig.{name} must be a finite number {rng}", repr(v),
                                 f"use e.g. {name}={getattr(VideoTrainConfig, name)}")

        def pair(name: str, lo: float, integer_values: bool) -> None:
            v = getattr(self, name)
            kind = (int, np.integer) if integer_values else (int, float, np.integer, np.floating)
            ok = (isinstance(v, (tuple, list)) and len(v) == 2
                  and all(isinstance(x, kind) and not isinstance(x, bool) for x in v) and lo <= v[0] <= v[1])
            if not ok:
                raise InputError(f"VideoTrainConfig.{name} must be a (low, high) pair with {lo} <= low <= high",
                                 repr(v), f"use e.g. {name}={getattr(VideoTrainConfig(), name)}")

        integer("seed", 0)
        integer("clip_frames", 2, 64)
        integer("clips_per_step", 1, 16)
        pair("frame_stride", 1, True)
        pair("n_objects", 1, True)
        pair("n_entering", 0, True)
        pair("speed", 0.0, False)
        integer("min_area", 1)
        for name in ("p_late_target", "p_extra_prompt", "min_lr_ratio"):
            number(name, 0.0, 1.0)
        number("lr", 0.0, open_lo=True)
        integer("warmup_steps", 0)
        integer("total_steps", 1)
        for name in ("weight_decay", "grad_clip", "focal_weight", "dice_weight", "focal_gamma", "obj_score_weight"):
            number(name, 0.0)
        number("focal_alpha", 0.0, 1.0)
        number("decoder_lr_scale", 0.0, open_lo=True)
        if not isinstance(self.train_decoder, bool):
            raise InputError("VideoTrainConfig.train_decoder must be True or False", repr(self.train_decoder),
                             "use train_decoder=true")
        if self.focal_weight + self.dice_weight + self.obj_score_weight <= 0:
            raise InputError("VideoTrainConfig needs a positive loss weight", "focal, dice and obj_score weights all 0",
                             "use e.g. focal_weight=20.0")
        for name in ("config_path", "init_weights"):
            v = getattr(self, name)
            if not isinstance(v, str) or not Path(v).is_file():
                raise InputError(f"VideoTrainConfig.{name} must be an existing file", repr(v),
                                 f"use e.g. {getattr(VideoTrainConfig(), name)}")
        for stride in self.frame_stride:  # the clip settings must make a ClipConfig (its own InputError otherwise)
            clip_config(self, 128, int(stride))
        return self


# ---- data -------------------------------------------------------------------------------------------------

@dataclass
class ClipSample:
    """One training clip and its target."""

    frames: np.ndarray  # (T, S, S, 3) uint8
    target: np.ndarray  # (T, S, S) bool: the target object's visible pixels per frame
    prompts: list[int]  # frames given the ground-truth mask (sorted; prompts[0] = first processed frame)
    seed: int  # render_clip seed
    stride: int  # frame stride


def clip_config(cfg: VideoTrainConfig, size: int, stride: int) -> Any:
    """The :class:`~ovseg.world_video.ClipConfig` rendering a training clip (base split; ``(T - 1) * stride + 1``
    frames, every ``stride``-th of which is used)."""
    from ..world_video import ClipConfig

    n = (cfg.clip_frames - 1) * stride + 1
    # entering objects come in within the first half of the rendered clip (so they are seen before it ends)
    return ClipConfig(size=(size, size), n_frames=max(n, 2), n_objects=tuple(cfg.n_objects),
                      n_entering=tuple(cfg.n_entering), entry_window=(1, max(1, n - max(1, n // 2))),
                      speed=tuple(cfg.speed), split="base")


def sample_clip(cfg: VideoTrainConfig, rng: np.random.Generator, size: int) -> ClipSample:
    """A training clip, its target and prompt frames: a pure function of ``rng``'s state."""
    from ..world_video import render_clip

    t_len = cfg.clip_frames
    while True:  # a clip without any promptable object (rare) is replaced by the next draw
        seed = int(rng.integers(0, EVAL_SEED_OFFSET))
        stride = int(rng.integers(cfg.frame_stride[0], cfg.frame_stride[1] + 1))
        clip = render_clip(seed, clip_config(cfg, size, stride))
        keep = np.arange(t_len) * stride
        frames = clip.frames[keep]  # (T, S, S, 3)
        masks = clip.instance_masks[keep]  # (T, K, S, S)
        areas = masks.reshape(t_len, masks.shape[1], -1).sum(-1)  # (T, K)
        # 1. candidates: (object, first frame with >= min_area pixels), that frame leaving >= 1 frame to propagate
        early = [(k, 0) for k in range(masks.shape[1]) if areas[0, k] >= cfg.min_area]
        late = []
        for k in range(masks.shape[1]):
            ok = np.nonzero(areas[:, k] >= cfg.min_area)[0]
            if areas[0, k] == 0 and len(ok) and ok[0] <= t_len - 2:
                late.append((k, int(ok[0])))
        use_late = bool(late) and (not early or rng.random() < cfg.p_late_target)
        pool = late if use_late else early
        if not pool:
            continue
        k, start = pool[int(rng.integers(len(pool)))]
        prompts = [start]
        # 2. optionally one more prompt on a later frame where the target is well visible
        later = [t for t in range(start + 2, t_len) if areas[t, k] >= cfg.min_area]
        if later and rng.random() < cfg.p_extra_prompt:
            prompts.append(later[int(rng.integers(len(later)))])
        return ClipSample(np.ascontiguousarray(frames), np.ascontiguousarray(masks[:, k]), prompts, seed, stride)


def frames_to_model_input(frames: np.ndarray, size: int) -> Any:
    """(T, H, W, 3) uint8 -> (T, 3, S, S) float32 normalised as sam2's video predictor normalises frames
    (:class:`ovseg.video._ModelFrames`: PIL bicubic resize when H, W != S, then ImageNet mean / std)."""
    import torch
    from PIL import Image

    if frames.shape[1:3] != (size, size):
        frames = np.stack([np.array(Image.fromarray(f).resize((size, size))) for f in frames])
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0  # (T, 3, S, S)
    mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    return (x - mean) / std


# ---- losses ------------------------------------------------------------------------------------------------

def _mask_losses(logits: Any, target: Any, cfg: VideoTrainConfig) -> tuple[Any, Any]:
    """Focal (mean over pixels) and dice of one mask: logits, target (S, S) (target float in {0, 1})."""
    import torch.nn.functional as F

    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = ce * (1 - p_t) ** cfg.focal_gamma
    focal = (focal * (cfg.focal_alpha * target + (1 - cfg.focal_alpha) * (1 - target))).mean()
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return focal, dice


# ---- model -------------------------------------------------------------------------------------------------

def build_model(cfg: VideoTrainConfig) -> Any:
    """The mini SAM 2 with the image weights, frozen as :data:`FROZEN`, in train mode (frozen modules in eval)."""
    from ..masks import build_sam2_model

    model = build_sam2_model(cfg.config_path, cfg.init_weights, device="cpu")
    split_parameters(model)
    set_train_mode(model)
    return model


def split_parameters(model: Any) -> tuple[list[str], list[str]]:
    """Set ``requires_grad`` by :data:`TRAINED` / :data:`FROZEN`; returns (trained names, frozen names).

    Raises:
        InputError: a parameter in neither list (a sam2 version with other modules: classify it first).
    """
    trained, frozen, unknown = [], [], []
    for name, p in model.named_parameters():
        if _is_trained(name):
            p.requires_grad_(True)
            trained.append(name)
        elif _is_frozen(name):
            p.requires_grad_(False)
            frozen.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise InputError("every SAM 2 parameter must be listed as trained or frozen (ovseg.train.mini_sam2_video)",
                         ", ".join(unknown[:5]), "add its prefix to TRAINED (video-only) or FROZEN (read by images)")
    return trained, frozen


def set_train_mode(model: Any) -> None:
    """Train mode for the memory modules (dropout in the memory attention), eval mode for the frozen ones."""
    model.train()
    for m in (model.image_encoder, model.sam_prompt_encoder, model.sam_mask_decoder):
        m.eval()


class VideoTrainer:
    """Holds model, optimizer and step; :meth:`train_step` is deterministic given ``(seed, step)`` and the torch RNG."""

    def __init__(self, cfg: VideoTrainConfig | None = None, model: Any | None = None):
        import torch

        self.cfg = (cfg or VideoTrainConfig()).validate()
        self.model = model if model is not None else build_model(self.cfg)
        self.trained_names, self.frozen_names = split_parameters(self.model)
        set_train_mode(self.model)
        self.size = int(self.model.image_size)
        self.optimizer = torch.optim.AdamW(self._groups(self.trained_names, 1.0), lr=self.cfg.lr)
        self.decoder_names: list[str] = []
        if self.cfg.train_decoder:
            self.enable_decoder_training()
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions
        self.evals: list[dict[str, Any]] = []  # {"step", "jf", ...} of every dev evaluation (baseline first)
        self._predictor: Any = None

    def _groups(self, names: list[str], lr_scale: float) -> list[dict[str, Any]]:
        """AdamW parameter groups of ``names``: weight decay on weight matrices / kernels only (not on embeddings,
        biases, norms: raw nn.Parameters); each group's lr is ``lr_scale`` x :meth:`lr_at`."""
        named = dict(self.model.named_parameters())
        decay = [named[n] for n in names if named[n].ndim >= 2 and "." in n]
        ids = {id(p) for p in decay}
        no_decay = [named[n] for n in names if id(named[n]) not in ids]
        return [{"params": decay, "weight_decay": self.cfg.weight_decay, "lr_scale": lr_scale},
                {"params": no_decay, "weight_decay": 0.0, "lr_scale": lr_scale}]

    def enable_decoder_training(self) -> None:
        """Train the mask decoder too (:data:`DECODER`, ``VideoTrainConfig.train_decoder``): its parameters get
        gradients and two AdamW groups at ``decoder_lr_scale`` x the lr (fresh moments when a memory-only run turns
        it on). Idempotent."""
        if self.decoder_names:
            return
        names = [n for n, p in self.model.named_parameters()
                 if any(n.startswith(d) for d in DECODER) and n not in self.trained_names]
        named = dict(self.model.named_parameters())
        for n in names:
            named[n].requires_grad_(True)
        for g in self._groups(names, float(self.cfg.decoder_lr_scale)):
            self.optimizer.add_param_group(g)
        self.decoder_names = names
        self.cfg = dataclasses.replace(self.cfg, train_decoder=True)

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        frac = min(1.0, (step - c.warmup_steps) / max(1, c.total_steps - c.warmup_steps))
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    def clip_loss(self, sample: ClipSample) -> tuple[Any, dict[str, float]]:
        """Propagate one clip from its first prompt frame and return (loss, metrics).

        The loss is the mean over propagated frames (prompted frames output their input mask: no loss there).
        """
        import torch
        import torch.nn.functional as F

        model, cfg = self.model, self.cfg
        t_len = sample.frames.shape[0]
        target = torch.from_numpy(sample.target.astype(np.float32))  # (T, S, S)
        # 1. image features of every frame, as one batch (frozen: no graph)
        with torch.no_grad():
            backbone_out = model.forward_image(frames_to_model_input(sample.frames, self.size))
            _, vision_feats, vision_pos, feat_sizes = model._prepare_backbone_features(backbone_out)
        # vision_feats / vision_pos: per level (H_l * W_l, T, C_l), lowest resolution last
        # 2. frame by frame, as SAM2VideoPredictor.propagate_in_video does
        output_dict: dict[str, dict[int, Any]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        # the object pointers' temporal encoding is normalised by min(num_frames, max_obj_ptrs_in_encoder) - 1: pass
        # at least max_obj_ptrs_in_encoder so that it is the one of the (longer) clips tracked at inference
        num_frames = max(t_len, int(model.max_obj_ptrs_in_encoder))
        terms: list[Any] = []
        stats: dict[str, list[float]] = {k: [] for k in ("focal", "dice", "obj_bce", "iou", "obj_acc")}
        start = sample.prompts[0]
        for t in range(start, t_len):
            feats = [f[:, t:t + 1] for f in vision_feats]  # (HW, 1, C) per level
            pos = [p[:, t:t + 1] for p in vision_pos]
            prompted = t in sample.prompts
            mask_in = target[t][None, None] if prompted else None  # (1, 1, S, S)
            # sam2's track_step, split in its two halves to keep the object-score logits (train mode drops them)
            current_out, sam_outputs, _, _ = model._track_step(
                t, t == start, feats, pos, feat_sizes, None, mask_in, output_dict, num_frames, False, None)
            _, _, _, low_res, high_res, obj_ptr, obj_logits = sam_outputs
            current_out["pred_masks"] = low_res  # (1, 1, S/4, S/4)
            current_out["pred_masks_high_res"] = high_res  # (1, 1, S, S)
            current_out["obj_ptr"] = obj_ptr  # (1, C)
            model._encode_memory_in_output(feats, feat_sizes, None, True, high_res, obj_logits, current_out)
            output_dict["cond_frame_outputs" if prompted else "non_cond_frame_outputs"][t] = current_out
            if prompted:
                continue
            # 3. losses of a propagated frame
            visible = bool(target[t].any())
            term = cfg.obj_score_weight * F.binary_cross_entropy_with_logits(
                obj_logits.reshape(()), torch.tensor(float(visible)))
            stats["obj_bce"].append(float(term.detach()) / max(cfg.obj_score_weight, 1e-12))
            stats["obj_acc"].append(float((float(obj_logits.detach().reshape(())) > 0) == visible))
            if visible:
                focal, dice = _mask_losses(high_res[0, 0], target[t], cfg)
                term = term + cfg.focal_weight * focal + cfg.dice_weight * dice
                stats["focal"].append(float(focal.detach()))
                stats["dice"].append(float(dice.detach()))
                with torch.no_grad():
                    pred, gt = high_res[0, 0] > 0, target[t] > 0.5
                    stats["iou"].append(float((pred & gt).sum()) / max(float((pred | gt).sum()), 1.0))
            terms.append(term)
        loss = torch.stack(terms).mean() if terms else vision_feats[-1].sum() * 0
        return loss, {k: float(np.mean(v)) if v else float("nan") for k, v in stats.items()}

    def samples_at(self, step: int) -> list[ClipSample]:
        """The ``clips_per_step`` training clips of ``step`` (a pure function of ``(seed, step)``)."""
        rng = np.random.default_rng([self.cfg.seed, step, _DATA_TAG])
        return [sample_clip(self.cfg, rng, self.size) for _ in range(self.cfg.clips_per_step)]

    def train_step(self, samples: list[ClipSample] | None = None) -> dict[str, float]:
        """One optimisation step on ``samples`` (default :meth:`samples_at` the current step); returns its metrics."""
        import torch

        cfg = self.cfg
        samples = self.samples_at(self.step) if samples is None else samples
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step) * group.get("lr_scale", 1.0)
        set_train_mode(self.model)
        losses, stats = [], []
        for s in samples:
            loss, m = self.clip_loss(s)
            losses.append(loss)
            stats.append(m)
        loss = torch.stack(losses).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf")))
        self.optimizer.step()
        self.step += 1
        out = {"loss": float(loss.detach()), "lr": self.lr_at(self.step - 1), "grad_norm": grad_norm}
        for k in stats[0]:
            vals = [m[k] for m in stats if not math.isnan(m[k])]
            out[k] = float(np.mean(vals)) if vals else float("nan")
        return out

    # ---- evaluation ------------------------------------------------------------------------------------
    def predictor(self) -> Any:
        """sam2's ``SAM2VideoPredictor`` (as :func:`ovseg.video.build_sam2_video_predictor_from` builds it) holding the
        trainer's current weights."""
        from ..video import build_sam2_video_predictor_from

        if self._predictor is None:
            self._predictor = build_sam2_video_predictor_from(self.cfg.config_path, self.cfg.init_weights)
        self._predictor.load_state_dict(self.model.state_dict())
        self._predictor.eval()
        return self._predictor

    def evaluate(self, n_clips: int, n_frames: int | None = None) -> dict[str, Any]:
        return evaluate_dev(self.predictor(), n_clips, n_frames)

    # ---- state -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "elapsed": self.elapsed, "config": dataclasses.asdict(self.cfg), "torch_rng": torch.get_rng_state(),
                "evals": json.dumps(self.evals)}

    def save(self, path: str | Path) -> Path:
        """Write the training state atomically (:func:`ovseg.io.write_atomic`)."""
        import torch

        from ..io import write_atomic

        buf = io.BytesIO()
        torch.save(self.state_dict(), buf)
        return write_atomic(path, lambda fh: fh.write(buf.getvalue()))

    @classmethod
    def load(cls, path: str | Path) -> "VideoTrainer":
        """A trainer restored from :meth:`save` (its saved config, model, optimizer, step, RNG); read with
        ``torch.load(weights_only=True)`` (:func:`ovseg.train.load_state`)."""
        import torch

        state = load_state(Path(path))
        names = {f.name for f in dataclasses.fields(VideoTrainConfig)}
        c = {k: tuple(v) if isinstance(v, list) else v for k, v in state["config"].items() if k in names}
        defaults = VideoTrainConfig()
        for key in ("config_path", "init_weights"):  # run folder moved to another checkout
            if not Path(str(c.get(key, ""))).is_file():
                c[key] = getattr(defaults, key)
        trainer = cls(VideoTrainConfig(**c))
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.step, trainer.elapsed = int(state["step"]), float(state["elapsed"])
        trainer.evals = json.loads(state.get("evals", "[]"))
        torch.set_rng_state(state["torch_rng"])
        return trainer


# ---- evaluation --------------------------------------------------------------------------------------------

def evaluate_dev(predictor: Any, n_clips: int = 3, n_frames: int | None = None) -> dict[str, Any]:
    """Semi-supervised J&F on the first ``n_clips`` video dev clips (``seed_range("video", "dev")`` rendered with
    :func:`ovseg.video_eval.dev_clip_config`, the shipped test set's config; ``n_frames`` cuts them shorter).

    Every object visible in frame 0 is given by its frame-0 mask (:func:`ovseg.video.propagate_masks`: sam2's
    ``add_new_mask`` + ``propagate_in_video``, objects composed by argmax); J and F per object
    (:func:`ovseg.video_eval.object_scores`) over frames 1..T-1 (frame 0 is given: left out as in DAVIS).

    Returns ``{"jf", "j", "f", "empty_rate", "n_objects", "n_clips", "n_frames", "seconds", "clips"}``; ``empty_rate``:
    the share of (object, frame) pairs after frame 0 with a visible object and an empty prediction.
    """
    from ..video import propagate_masks
    from ..video_eval import dev_clip_config, object_scores
    from ..world import seed_range
    from ..world_video import render_clip

    cfg = dev_clip_config()
    if n_frames is not None:
        cfg = dataclasses.replace(cfg, n_frames=int(n_frames), n_entering=(0, 0))
    t0 = time.perf_counter()
    per_clip, scores = [], []
    empty = visible = 0
    for seed in seed_range("video", "dev").seeds[:n_clips]:
        clip = render_clip(seed, cfg)
        ids = clip.instance_maps  # (T, H, W) uint8, k + 1 = object k
        first = ids[0]
        obj_ids = [int(k) for k in np.unique(first) if k > 0]
        if not obj_ids:
            continue
        pred = propagate_masks(predictor, clip.frames, first)  # (T, H, W) uint8
        clip_scores = []
        for k in obj_ids:
            s = object_scores(pred[1:] == k, ids[1:] == k)
            clip_scores.append(s.jf)
            scores.append((s.j, s.f))
            vis = (ids[1:] == k).reshape(ids.shape[0] - 1, -1).any(1)
            got = (pred[1:] == k).reshape(ids.shape[0] - 1, -1).any(1)
            visible += int(vis.sum())
            empty += int((vis & ~got).sum())
        per_clip.append({"seed": int(seed), "objects": len(obj_ids), "jf": float(np.mean(clip_scores))})
    arr = np.array(scores, np.float64).reshape(-1, 2)
    return {"jf": float(arr.mean()) if len(arr) else float("nan"),
            "j": float(arr[:, 0].mean()) if len(arr) else float("nan"),
            "f": float(arr[:, 1].mean()) if len(arr) else float("nan"),
            "empty_rate": empty / visible if visible else float("nan"), "n_objects": len(arr),
            "n_clips": len(per_clip), "n_frames": int(cfg.n_frames), "seconds": time.perf_counter() - t0,
            "clips": per_clip}


# ---- export ------------------------------------------------------------------------------------------------

def export_model(trainer: VideoTrainer, out_dir: str | Path = EXPORT_DIR, metrics: dict[str, Any] | None = None,
                 recent: dict[str, float] | None = None) -> Path:
    """Write ``config.yaml`` (the model config, unchanged), ``model.safetensors``, ``MODEL_CARD.md`` and ``SHA256SUMS``
    into ``out_dir``, each atomically. Not registered or pinned (``ovseg/pins.json`` is not touched).

    Raises:
        InputError: ``out_dir`` is the image model's folder (``data/models/mini-sam2``).
    """
    from safetensors.torch import save

    from ..io import write_bytes_atomic, write_text_atomic
    from ..testlog import write_card_section
    from ..weights import sha256_file

    out = Path(out_dir)
    if out.resolve() == IMAGE_MODEL_DIR.resolve():
        raise InputError("the video-trained model must not be exported over the image model", str(out),
                         f"export to another folder, e.g. {EXPORT_DIR}")
    state = {k: v.detach().contiguous().clone() for k, v in trainer.model.state_dict().items()}
    write_bytes_atomic(out / "model.safetensors",
                       save(state, metadata={"format": "pt", "source": "ovseg.train.mini_sam2_video"}))
    write_bytes_atomic(out / "config.yaml", Path(trainer.cfg.config_path).read_bytes())
    write_text_atomic(out / "MODEL_CARD.md", _model_card(trainer, metrics, recent or {}))
    sums = {f: sha256_file(out / f) for f in ("model.safetensors", "config.yaml")}
    write_text_atomic(out / "SHA256SUMS", "".join(f"{d}  {f}\n" for f, d in sums.items()))
    write_card_section("mini-sam2-video", out)  # "not evaluated on the test split with these weights yet" + command
    return out / "model.safetensors"


def _model_card(trainer: VideoTrainer, metrics: dict[str, Any] | None, recent: dict[str, float]) -> str:
    c = trainer.cfg
    m = trainer.model
    named = dict(m.named_parameters())
    n_train = sum(named[n].numel() for n in trainer.trained_names + trainer.decoder_names)
    n_all = sum(p.numel() for p in m.parameters())
    lines = [
        "# mini SAM 2, memory trained on clips (ovseg mini profile)", "",
        "The mini SAM 2 of `data/models/mini-sam2` with its video path (memory encoder, memory attention, object",
        "pointers, object-score head) trained on mini-world clips by `python -m ovseg.train.mini_sam2_video`, offline",
        "on CPU. Architecture and `config.yaml` are unchanged."
        + ("" if c.train_decoder else " Every parameter the image path reads is bit-identical to the image model's, so"),
        ("The SAM mask decoder was trained too (from the step in the log's `train_decoder` event, at "
         f"{c.decoder_lr_scale:g} x the lr), so this model's image path differs from the image model's: ovseg uses it "
         "for tracking only, keyframe detections keep `data/models/mini-sam2`." if c.train_decoder
         else "automatic mask generation gives the same masks."), "",
        "## What was trained", "",
        f"- trained ({n_train / 1e3:.0f} k of {n_all / 1e6:.2f} M parameters): "
        + ", ".join(f"`{p}`" for p in TRAINED + (DECODER if c.train_decoder else ())),
        "- frozen: " + ", ".join(f"`{p}`" for p in FROZEN if not (c.train_decoder and p in DECODER))
        + ("" if c.train_decoder else " (the obj_score_token stays frozen; only the"),
        "" if c.train_decoder else "  pred_obj_score_head reading it was trained: the image predictor discards object "
        "scores)",
        "- load: `ovseg.video.build_sam2_video_predictor_from('data/models/mini-sam2-video')`", "",
        "## Data and recipe", "",
        f"- `ovseg.world_video.render_clip(seed, ClipConfig(split='base'))`, seeds < EVAL_SEED_OFFSET; clips of "
        f"{c.clip_frames} frames, frame stride {c.frame_stride[0]}-{c.frame_stride[1]},",
        f"  {c.n_objects[0]}-{c.n_objects[1]} objects at frame 0, {c.n_entering[0]}-{c.n_entering[1]} entering, "
        f"speed {c.speed[0]}-{c.speed[1]} px/frame",
        f"- one target per clip: a frame-0 object given by its mask on frame 0, or (p={c.p_late_target}) a late object",
        f"  given at its first frame with >= {c.min_area} px; p={c.p_extra_prompt} one more mask prompt on a later frame",
        "- frames propagated with sam2's track_step (memories encoded on every frame); loss on every propagated frame:",
        f"  {c.focal_weight:g} focal + {c.dice_weight:g} dice of the tracked mask where the target is visible, "
        f"+ {c.obj_score_weight:g} BCE(object score, visible)",
        f"- AdamW lr {c.lr} (weight decay {c.weight_decay}), warmup {c.warmup_steps} + cosine over {c.total_steps} "
        f"steps, grad clip {c.grad_clip}; {c.clips_per_step} clip(s) per step, seed {c.seed}", "",
        "## Training so far", "",
        f"- steps: {trainer.step}; wall time {trainer.elapsed / 60:.1f} min",
        f"- recent training metrics: {json.dumps({k: round(v, 4) for k, v in recent.items() if not math.isnan(v)})}",
        "",
    ]
    evals = list(trainer.evals)
    if evals:
        lines += ["## Evaluation (semi-supervised J&F on video dev clips)", "",
                  "Objects visible in frame 0 given by their frame-0 masks, propagated by sam2's SAM2VideoPredictor",
                  "(`ovseg.video.propagate_masks`); J, F over frames 1..T-1 (`ovseg.video_eval.object_scores`); dev",
                  "clips: the first seeds of `seed_range('video', 'dev')` rendered with the video test set's ClipConfig.",
                  "", "| step | clips | frames | objects | J&F | J | F | empty rate |", "|---|---|---|---|---|---|---|---|"]
        for e in evals:
            lines.append(f"| {e['step']} | {e['n_clips']} | {e['n_frames']} | {e['n_objects']} | {e['jf']:.3f} | "
                         f"{e['j']:.3f} | {e['f']:.3f} | {e['empty_rate']:.3f} |")
        lines += ["", "(step 0: the image model's untrained memory, the baseline)", ""]
    return "\n".join(lines)


# ---- CLI ---------------------------------------------------------------------------------------------------

def trim_log(log_path: Path, step: int) -> int:
    """Drop the records of ``log_path`` (JSON lines) whose ``step`` is after ``step`` (a run killed between two
    checkpoints logged steps that its resumption repeats); rewrites the file atomically. Returns the number dropped."""
    from ..io import write_atomic

    if not log_path.is_file():
        return 0
    lines = log_path.read_text().splitlines()
    kept = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= step]
    dropped = sum(1 for ln in lines if ln.strip()) - len(kept)
    if dropped:
        write_atomic(log_path, lambda fh: fh.write(("\n".join(kept) + "\n").encode()))
    return dropped


def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m ovseg.train.mini_sam2_video", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run folder (state.pt, train_log.jsonl)")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training budget of this session")
    ap.add_argument("--steps", type=int, default=None,
                    help="length of the cosine lr schedule (default VideoTrainConfig.total_steps; also on --resume)")
    ap.add_argument("--resume", action="store_true", help="continue from --out/state.pt")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: faster than 2 for this small model on a shared CPU; a resumed run "
                    "is bit-exact at the same count)")
    ap.add_argument("--export", default=str(EXPORT_DIR), help="export folder (never data/models/mini-sam2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a VideoTrainConfig field (JSON value), for new and resumed runs, e.g. --set lr=3e-4")
    ap.add_argument("--checkpoint-minutes", type=float, default=2.0)
    ap.add_argument("--eval-minutes", type=float, default=15.0)
    ap.add_argument("--eval-clips", type=int, default=3, help="dev clips of each periodic evaluation")
    ap.add_argument("--final-eval-clips", type=int, default=6)
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args(argv)
    for name, ok in (("minutes", args.minutes > 0), ("threads", args.threads >= 1),
                     ("checkpoint-minutes", args.checkpoint_minutes > 0), ("eval-minutes", args.eval_minutes > 0),
                     ("eval-clips", args.eval_clips >= 1), ("final-eval-clips", args.final_eval_clips >= 1),
                     ("log-every", args.log_every >= 1), ("steps", args.steps is None or args.steps >= 1)):
        if not ok:
            raise InputError(f"--{name} must be positive", repr(getattr(args, name.replace("-", "_"))),
                             f"pass e.g. --{name} 2")
    if Path(args.export).resolve() == IMAGE_MODEL_DIR.resolve():
        raise InputError("the video-trained model must not be exported over the image model", args.export,
                         f"use e.g. --export {EXPORT_DIR}")
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "state.pt", out / "train_log.jsonl"
    resumed = args.resume and state_path.is_file()
    names = {f.name for f in dataclasses.fields(VideoTrainConfig)} - {"config_path", "init_weights"}
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise InputError("--set needs FIELD=VALUE with FIELD a VideoTrainConfig field", repr(item),
                             f"use one of {sorted(names)}")
        try:
            val = json.loads(value)
        except json.JSONDecodeError:
            raise InputError("--set values are JSON", repr(value), "write e.g. --set lr=3e-4 or --set speed=[0,2]") from None
        overrides[key] = tuple(val) if isinstance(val, list) else val
    def log(rec: dict[str, Any]) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    if resumed:
        trainer = VideoTrainer.load(state_path)
        print(f"resumed at step {trainer.step} ({trainer.elapsed / 60:.1f} min trained)", flush=True)
        dropped = trim_log(log_path, trainer.step)
        if dropped:
            print(f"dropped {dropped} log record(s) after step {trainer.step} (written after the last checkpoint; "
                  "the resumed run repeats those steps)", flush=True)
    else:
        trainer = VideoTrainer(VideoTrainConfig(seed=args.seed))
    if args.steps is not None:
        overrides["total_steps"] = args.steps
    if overrides:
        trainer.cfg = dataclasses.replace(trainer.cfg, **overrides).validate()
        if trainer.cfg.train_decoder and not trainer.decoder_names:
            trainer.enable_decoder_training()
            print(f"training the mask decoder too from step {trainer.step} ({len(trainer.decoder_names)} tensors, "
                  f"lr x {trainer.cfg.decoder_lr_scale:g})", flush=True)
            log({"step": trainer.step, "time": round(trainer.elapsed, 1), "event": "train_decoder",
                 "decoder_lr_scale": trainer.cfg.decoder_lr_scale})

    window: list[dict[str, float]] = []
    last_rec: dict[str, float] = {}

    def recent() -> dict[str, float]:
        if not window:
            return dict(last_rec)
        return {k: float(np.nanmean([w[k] for w in window])) for k in window[0] if k != "lr"}

    def evaluate(n_clips: int) -> dict[str, Any]:
        metrics = trainer.evaluate(n_clips)
        rec = {k: v for k, v in metrics.items() if k != "clips"} | {"step": trainer.step}
        trainer.evals.append(rec)
        log({"step": trainer.step, "time": round(trainer.elapsed, 1), "eval": metrics})
        print(f"step {trainer.step} dev J&F {metrics['jf']:.3f} (J {metrics['j']:.3f}, F {metrics['f']:.3f}, "
              f"empty {metrics['empty_rate']:.3f}; {metrics['seconds']:.0f} s)", flush=True)
        return metrics

    if not resumed and trainer.step == 0:
        evaluate(args.final_eval_clips)  # the untrained memory: the baseline, on the clips of the final evaluation
    start = time.monotonic()
    last_ckpt = last_eval = start
    while time.monotonic() - start < args.minutes * 60:
        t0 = time.monotonic()
        m = trainer.train_step()
        trainer.elapsed += time.monotonic() - t0
        window.append(m)
        if trainer.step % args.log_every == 0:
            last_rec = recent()
            rec = {"step": trainer.step, "time": round(trainer.elapsed, 1), "lr": m["lr"], **last_rec}
            log(rec)
            print(json.dumps(rec), flush=True)
            window.clear()
        now = time.monotonic()
        if now - last_ckpt >= args.checkpoint_minutes * 60:
            trainer.save(state_path)
            last_ckpt = now
        if now - last_eval >= args.eval_minutes * 60:
            trainer.save(state_path)
            metrics = evaluate(args.eval_clips)
            export_model(trainer, args.export, metrics, recent())
            last_eval = last_ckpt = time.monotonic()
    trainer.save(state_path)
    metrics = evaluate(args.final_eval_clips)
    export_model(trainer, args.export, metrics, recent())
    trainer.save(state_path)
    print(f"exported to {args.export}", flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from . import run_main

    raise SystemExit(run_main(main))
