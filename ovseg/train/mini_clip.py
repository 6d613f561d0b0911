"""Train the mini CLIP on the mini world (reproducible, resumable).

    python -m ovseg.train.mini_clip --out data/train/mini-clip --minutes 110 [--resume] [--steps N]
    python -m ovseg.train.mini_clip --recipe contrastive --out data/train/mini-clip-contrastive --steps 2000 \
        --minutes 60 --threads 2

Recipes (``--recipe``, :data:`RECIPES`): ``dense`` (the default, the shipped ``mini-clip``: every loss
below) and ``contrastive`` (issue #22: the way real CLIP is trained, see :func:`contrastive_config`).

Data: scenes rendered on the fly by :func:`ovseg.world.render_scene` from seeds below
:data:`~ovseg.world.EVAL_SEED_OFFSET` with ``SceneConfig(split="base")``, so the eight novel
compositions never appear in a training image. The batch of step ``s`` is a pure function of
``(seed, s)``: a resumed run sees exactly the batches an uninterrupted one would.

Losses (all through the path DenseCLIP reads at inference: block tokens -> ``ln_post`` -> ``proj``
-> L2 normalisation, fused over ``extract_layers`` by a normalised mean):

* ``global``: CLIP's symmetric image-caption contrastive loss (class token, colour views only).
* ``dense``: per patch, cross-entropy of the scaled cosine similarities to the text embeddings of
  ``[background] + base classes`` (template-ensembled exactly as DenseCLIP does) against the label
  map pooled to the patch grid (soft labels). Novel classes are left out of the softmax: they never
  appear, and pushing them down would teach "red is never a star".
* ``colour`` / ``shape``: the same against ``[background] + "<colour> thing"`` and
  ``[background] + "<shape>"`` prompts (factorised words the class prompts are built from).
* ``gray``: the shape loss on grayscale views whose objects get random luminance, so shape
  features cannot use colour (or brightness) as a shortcut; these views get only this loss.
* per-layer copies of the dense loss at each extracted layer (weight ``w_layers``).
* ``mask``: the class / colour / shape losses on each object's mask-averaged similarity (the
  alignment's S_i), so mask-level scores are trained directly.
* ``compose`` (text only, base classes): ``e("<c> <s>")`` close to the normalised sum of
  ``e("<c> thing")`` and ``e("<s>")``, so unseen compositions get sensible text embeddings.

The ``contrastive`` recipe computes only the ``global`` loss, through open_clip's own
``encode_image`` / ``encode_text`` (class token -> ``ln_post`` -> ``proj``; end-of-text token), on
whole-scene captions of the visible objects in random order (:func:`make_caption_batch`); none of the
other losses (nor their text prompts) is computed. Its model is a plain ViT (open_clip's patchify
``conv1``, no conv stem) and it is exported for the MaskCLIP value path (``dense_path: maskclip``) at
4 evenly spaced blocks, like the full profile reads ViT-L/14 (to ``data/models/mini-clip-contrastive``).

Checkpoints (``--out/state.pt``: model, optimizer, step, RNG states, config) are written atomically
every ``ckpt_every_s``; a JSON line per ``log_every`` steps goes to ``--out/train_log.jsonl``; every
``eval_every_s`` and at the end :func:`evaluate_dense` runs on the dev split (data/mini_world/dev) and the model is
exported with :func:`ovseg.mini_clip.save_mini_clip` (plus ``MODEL_CARD.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..mini_clip import DEFAULT_TEMPLATES, default_arch
from ..paths import DATA_DIR
from ..world import BASE_CLASSES, CLASS_NAMES, COLOURS, EVAL_SEED_OFFSET, NOVEL_CLASSES, SHAPES, SceneConfig, render_scene
from . import load_state, numpy_rng_from_tensors, numpy_rng_to_tensors

__all__ = ["TrainConfig", "make_batch", "make_caption_batch", "scene_caption", "contrastive_arch",
           "contrastive_config", "recipe_config", "train", "evaluate_dense", "main", "RECIPES", "DEFAULT_EXPORT",
           "DEFAULT_EXPORTS", "DEFAULT_EVAL"]

DEFAULT_EXPORT = DATA_DIR / "models" / "mini-clip"
DEFAULT_EVAL = DATA_DIR / "mini_world" / "dev"
COLOUR_NAMES = list(COLOURS)
BACKGROUND_PROMPT = "background"
#: Training recipes: ``dense`` (the shipped mini-clip) and ``contrastive`` (CLIP's own objective only, issue #22).
RECIPES = ("dense", "contrastive")
#: The registry entry (and embedded folder) each recipe exports to by default.
REGISTRY_NAMES = {"dense": "mini-clip", "contrastive": "mini-clip-contrastive"}
DEFAULT_EXPORTS = {"dense": DEFAULT_EXPORT, "contrastive": DATA_DIR / "models" / "mini-clip-contrastive"}
#: Fewest visible pixels for an object to count as in the image (its caption entry, its mask-level loss).
MIN_VISIBLE_PX = 16
_RECIPE_DEFAULT: Any = object()  # train()'s export_dir default: the recipe's DEFAULT_EXPORTS folder


@dataclass
class TrainConfig:
    """Everything that determines the trained weights (with the step count)."""

    seed: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    min_lr_ratio: float = 0.02
    grad_clip: float = 1.0
    arch: dict[str, Any] = field(default_factory=default_arch)
    context_length: int = 32
    templates: list[str] = field(default_factory=lambda: list(DEFAULT_TEMPLATES))
    extract_layers: list[int] | None = None  # default: the last two blocks
    # data
    n_objects: tuple[int, int] = (1, 5)
    object_size: tuple[float, float] = (0.15, 0.5)
    styles: tuple[str, ...] = ("filled", "filled", "filled", "filled", "outline", "textured")
    gray_fraction: float = 0.25
    # loss weights
    w_global: float = 1.0
    w_dense: float = 1.0
    w_colour: float = 0.5
    w_shape: float = 1.0
    w_gray: float = 1.0
    w_layers: float = 0.25
    w_mask: float = 0.5  # object-level loss on mask-averaged similarities (the alignment's S_i)
    w_compose: float = 0.5  # text: e("<c> <s>") ~ normalize(e("<c> thing") + e("<s>")) on base classes
    dense_scale_init: float = 10.0
    # "dense" or "contrastive" (RECIPES); left out of to_dict() when "dense", so the default recipe's states, logs
    # and exported config.json are byte-for-byte what they were before recipes existed
    recipe: str = "dense"

    def to_dict(self) -> dict[str, Any]:
        """``asdict(self)``, without ``recipe`` for the default (dense) recipe."""
        d = asdict(self)
        if d["recipe"] == "dense":
            d.pop("recipe")
        return d

    def layers(self) -> list[int]:
        """``extract_layers``; default: the last two blocks (dense recipe), or 4 evenly spaced blocks ending with the
        last (contrastive recipe: ``ceil(depth * k / 4)``, k = 1..4, as 6 / 12 / 18 / 24 of ViT-L/14's 24)."""
        depth = int(self.arch["vision"]["layers"])
        if self.extract_layers:
            return list(self.extract_layers)
        if self.recipe == "contrastive":
            return sorted({math.ceil(depth * k / 4) for k in range(1, 5)})
        return [depth - 1, depth]

    def scene_config(self) -> SceneConfig:
        s = int(self.arch["vision"]["image_size"])
        return SceneConfig(size=(s, s), split="base", n_objects=tuple(self.n_objects),
                           object_size=tuple(self.object_size), styles=tuple(self.styles))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        for k in ("n_objects", "object_size", "styles"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def contrastive_arch() -> dict[str, Any]:
    """The contrastive recipe's model: a plain ViT like real CLIP's (open_clip's patchify ``conv1``, a kernel-8
    stride-8 convolution, no conv stem), 96 px, patch 8 (12^2 grid), width 128, 8 blocks (so 4 evenly spaced
    blocks 2 / 4 / 6 / 8 sit where ViT-L/14's 6 / 12 / 18 / 24 do), head width 32; text tower and joint
    embedding as the shipped mini CLIP (:func:`ovseg.mini_clip.default_arch`).

    96 px rather than the dense mini-clip's 128: a step costs 2.5x less, so the 60-minute budget sees about twice
    the image-caption pairs at twice the batch (chosen on dev: 128 px, batch 32, 1800 steps reached image -> caption
    retrieval 0.465 [0.395, 0.535] on the 200 dev scenes; 96 px, batch 64, 2000 steps 0.545 [0.475, 0.615])."""
    arch = default_arch()
    arch.pop("stem")
    arch["vision"]["layers"] = 8
    arch["vision"]["image_size"] = 96
    return arch


def contrastive_config(**overrides: Any) -> TrainConfig:
    """The ``contrastive`` recipe (issue #22): CLIP's symmetric image-caption InfoNCE on the class token and
    nothing else (every other loss weight 0; those losses are not computed), no grayscale views, whole-scene
    captions (:func:`scene_caption`), the plain ViT of :func:`contrastive_arch`. Inference settings of the
    export: the MaskCLIP value path at 4 evenly spaced blocks (:meth:`TrainConfig.layers`: 2 / 4 / 6 / 8), the
    template ``"a {}."`` (the captions' own form: a single-object caption is exactly ``"a <colour> <shape>."``).
    Batch 64 (more in-batch negatives per caption); optimiser and schedule as the dense recipe. The shipped model:
    ``--steps 2000 --threads 2`` (50 min of steps on 2 cores)."""
    base: dict[str, Any] = dict(
        recipe="contrastive", arch=contrastive_arch(), templates=["a {}."], extract_layers=None, gray_fraction=0.0,
        batch_size=64,
        w_global=1.0, w_dense=0.0, w_colour=0.0, w_shape=0.0, w_gray=0.0, w_layers=0.0, w_mask=0.0, w_compose=0.0)
    base.update(overrides)
    return TrainConfig(**base)


def recipe_config(recipe: str) -> TrainConfig:
    """The default :class:`TrainConfig` of ``recipe`` (one of :data:`RECIPES`)."""
    if recipe not in RECIPES:
        raise InputError("the mini CLIP recipe must be one of " + ", ".join(RECIPES), repr(recipe),
                         "pass --recipe dense (the shipped mini-clip) or --recipe contrastive")
    return TrainConfig() if recipe == "dense" else contrastive_config()


def _check_recipe(cfg: TrainConfig) -> None:
    """A contrastive config must not name a loss it does not compute (they would be silently ignored)."""
    recipe_config(cfg.recipe)  # a known recipe
    if cfg.recipe != "contrastive":
        return
    on = {k: v for k, v in (("w_dense", cfg.w_dense), ("w_colour", cfg.w_colour), ("w_shape", cfg.w_shape),
                            ("w_gray", cfg.w_gray), ("w_layers", cfg.w_layers), ("w_mask", cfg.w_mask),
                            ("w_compose", cfg.w_compose), ("gray_fraction", cfg.gray_fraction)) if v}
    if on or cfg.w_global <= 0:
        raise InputError("the contrastive recipe trains CLIP's image-caption loss only (w_global > 0, every other "
                         "loss weight and gray_fraction 0)", on or {"w_global": cfg.w_global},
                         "leave those fields out of --config, or use --recipe dense")


# ---- prompts and label algebra -------------------------------------------------------------------

def prompt_sets() -> dict[str, list[str]]:
    """The prompts of the dense losses; index 0 of every set is the background prompt."""
    return {"class": [BACKGROUND_PROMPT, *BASE_CLASSES],
            "colour": [BACKGROUND_PROMPT, *[f"{c} thing" for c in COLOUR_NAMES]],
            "shape": [BACKGROUND_PROMPT, *SHAPES]}


def _label_matrices() -> dict[str, np.ndarray]:
    """(49, n) matrices mapping a soft label over [background] + CLASS_NAMES to each prompt set."""
    n = len(CLASS_NAMES) + 1
    cls = np.zeros((n, len(BASE_CLASSES) + 1), np.float32)
    col = np.zeros((n, len(COLOUR_NAMES) + 1), np.float32)
    shp = np.zeros((n, len(SHAPES) + 1), np.float32)
    cls[0, 0] = col[0, 0] = shp[0, 0] = 1
    for k, name in enumerate(CLASS_NAMES):
        c, s = name.split(" ")
        if name in BASE_CLASSES:
            cls[k + 1, BASE_CLASSES.index(name) + 1] = 1
        col[k + 1, COLOUR_NAMES.index(c) + 1] = 1
        shp[k + 1, SHAPES.index(s) + 1] = 1
    return {"class": cls, "colour": col, "shape": shp}


# ---- data ----------------------------------------------------------------------------------------------

def _gray_view(scene: Any, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 grayscale image whose background and (solid) objects get random luminance."""
    img = scene.image.astype(np.float32)
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    out = lum.copy()
    bg = scene.label_map == 0
    if bg.any():
        out[bg] = (lum[bg] - lum[bg].mean()) * rng.uniform(0.5, 1.5) + rng.uniform(30, 225)
    for obj, mask in zip(scene.objects, scene.instance_masks):
        if obj.style == "outline" or not mask.any():
            continue
        out[mask] = (lum[mask] - lum[mask].mean()) * rng.uniform(0.6, 1.4) + rng.uniform(15, 240)
    return np.repeat(np.clip(out, 0, 255).round().astype(np.uint8)[..., None], 3, axis=2)


def make_batch(step: int, cfg: TrainConfig) -> dict[str, Any]:
    """The batch of ``step``: a pure function of ``(cfg.seed, step)``.

    Returns:
        dict with ``images`` (B, H, W, 3) uint8, ``soft`` (B, g, g, 49) float32 patch label
        distributions over [background] + CLASS_NAMES, ``gray`` (B,) bool (grayscale views),
        ``captions`` (B,) str, ``seeds`` (B,) scene seeds, ``classes`` set of class names drawn,
        ``obj_cover`` (B, K, g, g) float32 fraction of each patch covered by visible object k and
        ``obj_label`` (B, K) int64 its label value (k + 1 = CLASS_NAMES[k]; 0 = no object), K = max objects.
    """
    rng = np.random.default_rng([cfg.seed, step, 7919])
    scfg = cfg.scene_config()
    patch = int(cfg.arch["vision"]["patch_size"])
    size = int(cfg.arch["vision"]["image_size"])
    g = size // patch
    seeds = rng.integers(0, EVAL_SEED_OFFSET, size=cfg.batch_size)
    n_gray = int(round(cfg.gray_fraction * cfg.batch_size))
    gray = np.zeros(cfg.batch_size, bool)
    gray[rng.permutation(cfg.batch_size)[:n_gray]] = True
    kmax = int(cfg.n_objects[1])
    obj_cover = np.zeros((cfg.batch_size, kmax, g, g), np.float32)
    obj_label = np.zeros((cfg.batch_size, kmax), np.int64)
    images, softs, captions, classes = [], [], [], set()
    n_lab = len(CLASS_NAMES) + 1
    cell = (np.arange(size)[:, None] // patch) * g + (np.arange(size)[None, :] // patch)  # (H, W) patch index
    for b, seed in enumerate(seeds):
        scene = render_scene(int(seed), scfg)
        classes.update(scene.class_names)
        images.append(_gray_view(scene, rng) if gray[b] else scene.image)
        counts = np.bincount((cell * n_lab + scene.label_map).ravel(), minlength=g * g * n_lab)
        softs.append((counts.reshape(g, g, n_lab) / float(patch * patch)).astype(np.float32))
        captions.append(scene.caption)
        for k, (obj, mask) in enumerate(zip(scene.objects, scene.instance_masks)):
            if mask.sum() >= 16:
                obj_cover[b, k] = mask.reshape(g, patch, g, patch).mean(axis=(1, 3))
                obj_label[b, k] = CLASS_NAMES.index(obj.class_name) + 1
    return {"images": np.stack(images), "soft": np.stack(softs), "gray": gray, "captions": captions,
            "seeds": seeds, "classes": classes, "obj_cover": obj_cover, "obj_label": obj_label}


def scene_caption(scene: Any, rng: np.random.Generator) -> tuple[str, tuple[str, ...]]:
    """A whole-scene caption naming every visible object (at least :data:`MIN_VISIBLE_PX` pixels) once, in random
    order, in the world's caption form (``"a red circle, a blue star and a green ring."``; ``"an empty
    background."`` when nothing is visible), and its order-free key (the sorted class names): two scenes with the
    same key are described by the same set of objects."""
    names = [o.class_name for o, m in zip(scene.objects, scene.instance_masks) if int(m.sum()) >= MIN_VISIBLE_PX]
    key = tuple(sorted(names))
    if not names:
        return "an empty background.", key
    names = [names[i] for i in rng.permutation(len(names))]
    if len(names) == 1:
        return f"a {names[0]}.", key
    return "a " + ", a ".join(names[:-1]) + f" and a {names[-1]}.", key


def make_caption_batch(step: int, cfg: TrainConfig) -> dict[str, Any]:
    """The contrastive recipe's batch of ``step``: a pure function of ``(cfg.seed, step)`` (the same scene seeds as
    :func:`make_batch`), images and whole-scene captions only.

    Returns:
        dict with ``images`` (B, H, W, 3) uint8, ``captions`` (B,) str (:func:`scene_caption`), ``keys`` (B,)
        tuples of the visible objects' sorted class names, ``seeds`` (B,) scene seeds, ``classes`` set of class
        names drawn.
    """
    rng = np.random.default_rng([cfg.seed, step, 7919])
    scfg = cfg.scene_config()
    seeds = rng.integers(0, EVAL_SEED_OFFSET, size=cfg.batch_size)
    images, captions, keys, classes = [], [], [], set()
    for seed in seeds:
        scene = render_scene(int(seed), scfg)
        classes.update(scene.class_names)
        caption, key = scene_caption(scene, rng)
        images.append(scene.image)
        captions.append(caption)
        keys.append(key)
    return {"images": np.stack(images), "captions": captions, "keys": keys, "seeds": seeds, "classes": classes}


# ---- model pieces ----------------------------------------------------------------------------------------

def _visual_forward(model: Any, x: Any, layers: list[int]):
    """(pooled (B, E), {layer: (B, g*g, E) normalised patch features}) by DenseCLIP's token path."""
    import torch
    import torch.nn.functional as F

    v = model.visual
    t = v.conv1(x).flatten(2).transpose(1, 2)
    cls = v.class_embedding.to(t.dtype).view(1, 1, -1).expand(t.shape[0], -1, -1)
    t = v.ln_pre(torch.cat([cls, t], dim=1) + v.positional_embedding.to(t.dtype))
    feats = {}
    for i, block in enumerate(v.transformer.resblocks, start=1):
        t = block(t)
        if i in layers:
            feats[i] = F.normalize(v.ln_post(t[:, 1:]) @ v.proj, dim=-1)
    pooled = v.ln_post(t[:, 0]) @ v.proj
    return pooled, feats


def _text_embed(model: Any, tokenizer: Any, prompts: list[str], templates: list[str]):
    """(T, E) template-ensembled normalised text embeddings (as DenseCLIP.encode_text, with grad)."""
    import torch.nn.functional as F

    texts = [t.format(p) for p in prompts for t in templates]
    emb = F.normalize(model.encode_text(tokenizer(texts)), dim=-1).view(len(prompts), len(templates), -1)
    return F.normalize(emb.mean(dim=1), dim=-1)


def _soft_ce(logits: Any, target: Any, weight: Any | None = None):
    """Mean over rows of -sum(target * log_softmax(logits)) (rows with zero target mass ignored)."""
    import torch

    mass = target.sum(-1)
    loss = -(target * torch.log_softmax(logits, dim=-1)).sum(-1)
    keep = (mass > 0.5).float() if weight is None else weight * (mass > 0.5).float()
    return (loss * keep).sum() / keep.sum().clamp_min(1.0)


def _lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


class _Trainer:
    def __init__(self, cfg: TrainConfig):
        import torch

        from ..mini_clip import build_mini_clip, build_tokenizer

        _check_recipe(cfg)
        self.cfg = cfg
        self.tok = build_tokenizer(context_length=cfg.context_length)
        self.model = build_mini_clip(cfg.arch, self.tok.vocab_size, cfg.context_length, seed=cfg.seed)
        self.model.train()
        self.dense_logit_scale = torch.nn.Parameter(torch.tensor(math.log(cfg.dense_scale_init)))
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or "embedding" in name or "logit" in name else decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay + [self.dense_logit_scale], "weight_decay": 0.0}],
                                     lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
        self.step = 0
        self.total_steps: int | None = None
        self.wall = 0.0  # training seconds accumulated over all sessions
        self.threads = 1  # torch CPU threads of this session (set by train(); recorded by the contrastive export)
        self.mats: dict[str, Any] = {}
        self.prompts: dict[str, list[str]] = {}
        if cfg.recipe == "dense":  # label algebra and prompts of the dense losses (the contrastive recipe has none)
            self.mats = {k: torch.from_numpy(v) for k, v in _label_matrices().items()}
            self.prompts = prompt_sets()
        self.mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
        self.std = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)

    # -- one step --
    def losses(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        cfg, model = self.cfg, self.model
        layers = cfg.layers()
        x = torch.from_numpy(batch["images"]).permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        pooled, feats = _visual_forward(model, x, layers)
        fused = F.normalize(torch.stack([feats[layer] for layer in layers]).mean(0), dim=-1)  # (B, N, E)
        soft = torch.from_numpy(batch["soft"]).flatten(1, 2)  # (B, N, 49)
        gray = torch.from_numpy(batch["gray"])
        colour_w = (~gray).float()[:, None].expand(-1, soft.shape[1])
        gray_w = gray.float()[:, None].expand(-1, soft.shape[1])
        all_prompts = self.prompts["class"] + self.prompts["colour"][1:] + self.prompts["shape"][1:]
        text = _text_embed(model, self.tok, all_prompts, cfg.templates)  # (P, E)
        n_c, n_col = len(self.prompts["class"]), len(self.prompts["colour"]) - 1
        t_class = text[:n_c]
        t_colour = torch.cat([text[:1], text[n_c:n_c + n_col]])
        t_shape = torch.cat([text[:1], text[n_c + n_col:]])
        scale = self.dense_logit_scale.exp().clamp(max=100)
        out: dict[str, Any] = {}
        if cfg.w_compose > 0:
            # compositional text side: a class embedding is the sum of its colour and shape embeddings
            ci = torch.tensor([COLOUR_NAMES.index(c.split(" ")[0]) + 1 for c in BASE_CLASSES])
            si = torch.tensor([SHAPES.index(c.split(" ")[1]) + 1 for c in BASE_CLASSES])
            target = F.normalize(t_colour[ci] + t_shape[si], dim=-1)
            out["compose"] = (1 - (t_class[1:] * target).sum(-1)).mean()

        def dense_terms(f: Any) -> tuple[Any, Any, Any, Any]:
            lc = _soft_ce(scale * f @ t_class.T, soft @ self.mats["class"], colour_w)
            lcol = _soft_ce(scale * f @ t_colour.T, soft @ self.mats["colour"], colour_w)
            t_s = soft @ self.mats["shape"]
            lshape = _soft_ce(scale * f @ t_shape.T, t_s, colour_w)
            lgray = _soft_ce(scale * f @ t_shape.T, t_s, gray_w)
            return lc, lcol, lshape, lgray

        lc, lcol, lshape, lgray = dense_terms(fused)
        out["dense"], out["colour"], out["shape"], out["gray"] = lc, lcol, lshape, lgray
        total = cfg.w_dense * lc + cfg.w_colour * lcol + cfg.w_shape * lshape + cfg.w_gray * lgray
        if cfg.w_layers > 0 and len(layers) > 1:
            per = [dense_terms(feats[layer]) for layer in layers]
            lay = sum(cfg.w_dense * a + cfg.w_colour * b + cfg.w_shape * c + cfg.w_gray * d for a, b, c, d in per)
            out["layers"] = lay / len(layers)
            total = total + cfg.w_layers * out["layers"]
        if cfg.w_mask > 0:
            # S_i of the alignment: mean similarity over each object's pixels (patch-coverage weights)
            cover = torch.from_numpy(batch["obj_cover"]).flatten(2)  # (B, K, N)
            lab = torch.from_numpy(batch["obj_label"])  # (B, K)
            wts = cover / cover.sum(-1, keepdim=True).clamp_min(1e-6)
            onehot = F.one_hot(lab, len(CLASS_NAMES) + 1).float()  # (B, K, 49); label 0 rows are masked out
            valid = (lab > 0).float()
            col_k = (~gray).float()[:, None] * valid
            gray_k = gray.float()[:, None] * valid

            def obj_ce(t: Any, mat: Any, w: Any) -> Any:
                sim = torch.einsum("bkn,bne->bke", wts, fused) @ t.T  # linear in the feature: mean of cosines
                return _soft_ce(scale * sim, onehot @ mat, w)

            lm = (obj_ce(t_class, self.mats["class"], col_k) + cfg.w_colour * obj_ce(t_colour, self.mats["colour"], col_k)
                  + cfg.w_shape * obj_ce(t_shape, self.mats["shape"], col_k)
                  + cfg.w_gray * obj_ce(t_shape, self.mats["shape"], gray_k))
            out["mask"] = lm
            total = total + cfg.w_mask * lm
        if cfg.w_global > 0 and (~gray).sum() > 1:
            keep = (~gray).nonzero().flatten()
            img = F.normalize(pooled[keep], dim=-1)
            caps = [batch["captions"][i] for i in keep.tolist()]
            txt = F.normalize(model.encode_text(self.tok(caps)), dim=-1)
            logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
            # identical captions are positives of each other
            same = torch.tensor([[a == b for b in caps] for a in caps], dtype=torch.float32)
            same = same / same.sum(-1, keepdim=True)
            out["global"] = 0.5 * (_soft_ce(logits, same) + _soft_ce(logits.T, same))
            total = total + cfg.w_global * out["global"]
        if "compose" in out:
            total = total + cfg.w_compose * out["compose"]
        out["total"] = total
        return out

    def contrastive_losses(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The contrastive recipe's only loss: CLIP's symmetric image-caption InfoNCE through open_clip's own
        ``encode_image`` (class token -> ``ln_post`` -> ``proj``) and ``encode_text``; captions describing the same
        set of objects (:func:`scene_caption`'s keys) are positives of each other."""
        import torch
        import torch.nn.functional as F

        model = self.model
        x = torch.from_numpy(batch["images"]).permute(0, 3, 1, 2).float() / 255.0
        x = (x - self.mean) / self.std
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(self.tok(batch["captions"])), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        keys = batch["keys"]
        same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32)
        same = same / same.sum(-1, keepdim=True)  # symmetric, so rows and columns alike
        loss = 0.5 * (_soft_ce(logits, same) + _soft_ce(logits.T, same))
        return {"global": loss, "total": self.cfg.w_global * loss}

    def train_step(self) -> dict[str, float]:
        import torch

        assert self.total_steps is not None
        lr = _lr_at(self.step, self.cfg, self.total_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr
        if self.cfg.recipe == "contrastive":
            losses = self.contrastive_losses(make_caption_batch(self.step, self.cfg))
        else:
            losses = self.losses(make_batch(self.step, self.cfg))
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        params = [p for g in self.opt.param_groups for p in g["params"]]
        gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        self.opt.step()
        self.step += 1
        rec = {k: float(v.detach()) for k, v in losses.items()}
        rec.update(lr=lr, grad_norm=float(gnorm), dense_scale=float(self.dense_logit_scale.detach().exp()),
                   logit_scale=float(self.model.logit_scale.detach().exp()))
        if self.cfg.recipe == "contrastive":
            rec.pop("dense_scale")  # not trained by this recipe
        return rec

    # -- state --
    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"format": "ovseg-mini-clip-train", "version": 1, "cfg": self.cfg.to_dict(), "step": self.step,
                "total_steps": self.total_steps, "wall": self.wall, "model": self.model.state_dict(),
                "dense_logit_scale": self.dense_logit_scale.detach().clone(), "opt": self.opt.state_dict(),
                "torch_rng": torch.get_rng_state(), "numpy_rng": numpy_rng_to_tensors(np.random.get_state())}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        import torch

        self.model.load_state_dict(st["model"])
        with torch.no_grad():
            self.dense_logit_scale.copy_(st["dense_logit_scale"])
        self.opt.load_state_dict(st["opt"])
        self.step, self.total_steps, self.wall = int(st["step"]), st["total_steps"], float(st["wall"])
        torch.set_rng_state(st["torch_rng"])
        np.random.set_state(numpy_rng_from_tensors(st["numpy_rng"]))


def _save_state(trainer: _Trainer, path: Path) -> None:
    import torch

    from ..io import write_atomic

    state = trainer.state_dict()
    write_atomic(path, lambda fh: torch.save(state, fh))


def _load_state(path: Path) -> dict[str, Any]:
    return load_state(path)


# ---- evaluation ---------------------------------------------------------------------------------------------

_EVAL_CACHE: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}


def _eval_images(root: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from PIL import Image

    from ..world import load_dataset_index

    key = str(root)
    if key not in _EVAL_CACHE:
        index = load_dataset_index(root)
        items = []
        for rec in index["images"]:
            img = np.array(Image.open(root / "images" / f"{rec['stem']}.png").convert("RGB"))
            lab = np.array(Image.open(root / "labels" / f"{rec['stem']}.png"))
            items.append((img, lab))
        _EVAL_CACHE[key] = items
    return _EVAL_CACHE[key][:n]


def evaluate_dense(model: Any, tokenizer: Any, cfg: dict[str, Any], n_images: int = 200,
                   root: str | Path = DEFAULT_EVAL) -> dict[str, Any]:
    """Per-pixel open-vocabulary segmentation of the dev split (data/mini_world/dev) through ``DenseCLIP``.

    Each pixel takes the argmax over ``[background] + CLASS_NAMES`` of the DenseCLIP similarity
    maps (bilinearly upsampled). IoU per class is accumulated over the images.

    Args:
        cfg: the model's inference settings: ``mean``, ``std``, ``extract_layers``, ``dense_path``,
            ``templates`` (a ``config.json`` dict of :func:`ovseg.mini_clip.save_mini_clip`).

    Returns:
        ``pixel_acc``; ``miou_base`` (background + base classes present), ``miou_novel`` (novel
        classes present, background not counted), ``miou_all``; ``colour_acc`` / ``shape_acc`` on
        object pixels (the predicted class's colour / shape is right; background = wrong) and their
        ``_novel`` variants on pixels of novel objects; ``n_images``.
    """
    from ..features import DenseCLIP

    was_training = model.training
    dense = DenseCLIP(model, tokenizer, cfg["mean"], cfg["std"], extract_layers=cfg["extract_layers"],
                      dense_path=cfg.get("dense_path", "tokens"), templates=cfg["templates"])
    text = dense.encode_text([cfg.get("background_prompt", BACKGROUND_PROMPT), *CLASS_NAMES])
    n_lab = len(CLASS_NAMES) + 1
    conf = np.zeros((n_lab, n_lab), np.int64)  # (gt, pred)
    for img, lab in _eval_images(Path(root), n_images):
        sim = dense.dense_features(img).similarity(text, size=lab.shape)
        pred = sim.argmax(0).numpy()
        conf += np.bincount(lab.astype(np.int64).ravel() * n_lab + pred.ravel(), minlength=n_lab * n_lab).reshape(
            n_lab, n_lab)
    if was_training:
        model.train()
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    present = conf.sum(1) > 0
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    novel_idx = np.array([k + 1 for k, c in enumerate(CLASS_NAMES) if c in NOVEL_CLASSES])
    base_idx = np.array([0] + [k + 1 for k, c in enumerate(CLASS_NAMES) if c not in NOVEL_CLASSES])

    def miou(idx: np.ndarray) -> float:
        sel = [i for i in idx if present[i]]
        return float(np.mean(iou[sel])) if sel else float("nan")

    colour_of = np.array([-1] + [COLOUR_NAMES.index(c.split(" ")[0]) for c in CLASS_NAMES])
    shape_of = np.array([-1] + [SHAPES.index(c.split(" ")[1]) for c in CLASS_NAMES])

    def attr_acc(attr: np.ndarray, rows: np.ndarray) -> float:
        sub = conf[rows]
        ok = sum(sub[r, p] for r in range(len(rows)) for p in range(n_lab) if attr[rows[r]] == attr[p] and p > 0)
        return float(ok / max(sub.sum(), 1))

    obj_rows = np.arange(1, n_lab)
    return {
        "n_images": min(n_images, len(_eval_images(Path(root), n_images))),
        "pixel_acc": float(inter.sum() / max(conf.sum(), 1)),
        "miou_base": miou(base_idx), "miou_novel": miou(novel_idx), "miou_all": miou(np.arange(n_lab)),
        "colour_acc": attr_acc(colour_of, obj_rows), "shape_acc": attr_acc(shape_of, obj_rows),
        "colour_acc_novel": attr_acc(colour_of, novel_idx), "shape_acc_novel": attr_acc(shape_of, novel_idx),
        "background_iou": float(iou[0]),
    }


# ---- export ------------------------------------------------------------------------------------------------

def _inference_cfg(cfg: TrainConfig) -> dict[str, Any]:
    # the dense recipe trains its tokens path; a contrastive CLIP is read densely through MaskCLIP's value path
    # ("maskclip", the full profile's clip.dense_path)
    return {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "extract_layers": cfg.layers(),
            "dense_path": "maskclip" if cfg.recipe == "contrastive" else "tokens", "templates": list(cfg.templates),
            "background_prompt": BACKGROUND_PROMPT}


def _export(trainer: _Trainer, folder: Path, metrics: dict[str, Any] | None) -> None:
    from ..io import write_text_atomic
    from ..mini_clip import save_mini_clip
    from ..weights import pin_if_embedded

    cfg = trainer.cfg
    if cfg.recipe == "contrastive":
        return _export_contrastive(trainer, folder, metrics)
    training = {"steps": trainer.step, "total_steps": trainer.total_steps, "wall_seconds": round(trainer.wall, 1),
                "seed": cfg.seed, "batch_size": cfg.batch_size, "train_config": cfg.to_dict()}
    save_mini_clip(trainer.model, trainer.tok, folder, extra={**_inference_cfg(cfg), "training": training,
                                                             "metrics": metrics or {}})
    a = cfg.arch
    lines = [
        "# mini CLIP (ovseg mini profile)", "",
        "An `open_clip.CLIP` (VisionTransformer + text Transformer) trained from scratch by "
        "`python -m ovseg.train.mini_clip` on the procedural mini world (`ovseg/world.py`).", "",
        "## Architecture", "",
        f"- image: {a['vision']['image_size']} px, patch stride {a['vision']['patch_size']} "
        f"({a['vision']['image_size'] // a['vision']['patch_size']}^2 grid), conv stem {a.get('stem')}, "
        f"ViT width {a['vision']['width']}, {a['vision']['layers']} blocks, head width {a['vision']['head_width']}",
        f"- text: width {a['text']['width']}, {a['text']['layers']} layers, {a['text']['heads']} heads, context "
        f"{trainer.tok.context_length}, CLIP BPE trimmed to {trainer.tok.vocab_size} tokens (remap in config.json)",
        f"- joint embedding {a['embed_dim']}; weights fp16 safetensors",
        f"- inference: dense_path `tokens`, extract_layers {cfg.layers()}, templates {cfg.templates}", "",
        "## Data", "",
        f"Scenes rendered on the fly, seeds < {EVAL_SEED_OFFSET}, `SceneConfig(split=\"base\")` (the 8 novel "
        f"compositions never appear), {cfg.n_objects[0]}-{cfg.n_objects[1]} objects, size {cfg.object_size}, styles "
        f"{sorted(set(cfg.styles))}, all backgrounds; {cfg.gray_fraction:.0%} of each batch are grayscale views with "
        "random per-object luminance (shape loss only).", "",
        "## Training", "",
        "Losses: global caption contrastive; dense patch cross-entropy against the text embeddings of background + "
        "base classes, colour prompts, shape prompts and (grayscale views) shape prompts, on the fused feature and "
        "each extracted layer; the same on mask-averaged similarities per object; text compositionality "
        "(e(colour shape) ~ e(colour thing) + e(shape), base classes). "
        f"Loss weights: global {cfg.w_global}, dense {cfg.w_dense}, colour {cfg.w_colour}, shape {cfg.w_shape}, "
        f"gray {cfg.w_gray}, layers {cfg.w_layers}, mask {cfg.w_mask}, compose {cfg.w_compose}. "
        f"AdamW lr {cfg.lr}, wd {cfg.weight_decay}, warmup {cfg.warmup_steps} + cosine, batch {cfg.batch_size}, "
        f"seed {cfg.seed}, 1 CPU thread. Steps: {trainer.step} of {trainer.total_steps}; wall time "
        f"{trainer.wall / 60:.1f} min.", "",
        "## Metrics (dense per-pixel argmax over background + 48 classes, dev split data/mini_world/dev)", "",
    ]
    if metrics:
        lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()]
    else:
        lines.append("- not evaluated")
    write_text_atomic(folder / "MODEL_CARD.md", "\n".join(lines) + "\n")
    pin_if_embedded(folder, "mini-clip")  # SHA256SUMS for the weights registry
    from ..testlog import write_card_section

    write_card_section("mini-clip", folder)  # what the test-set log holds for exactly these weights


def _export_contrastive(trainer: _Trainer, folder: Path, metrics: dict[str, Any] | None) -> None:
    """The contrastive recipe's export: weights + config.json (:func:`ovseg.mini_clip.save_mini_clip`), its own
    model card, ``SHA256SUMS``; pinned in ``ovseg/pins.json`` when ``folder`` is its registry entry's folder."""
    from ..io import write_text_atomic
    from ..mini_clip import save_mini_clip
    from ..weights import REGISTRY, pin_if_embedded, sha256_file

    cfg = trainer.cfg
    folder = Path(folder)
    training = {"recipe": cfg.recipe, "steps": trainer.step, "total_steps": trainer.total_steps,
                "wall_seconds": round(trainer.wall, 1), "threads": trainer.threads, "seed": cfg.seed,
                "batch_size": cfg.batch_size, "train_config": cfg.to_dict()}
    save_mini_clip(trainer.model, trainer.tok, folder, extra={**_inference_cfg(cfg), "training": training,
                                                             "metrics": metrics or {}})
    a, layers = cfg.arch, cfg.layers()
    depth = int(a["vision"]["layers"])
    lines = [
        "# mini CLIP, contrastive recipe (ovseg mini profile, issue #22)", "",
        "An `open_clip.CLIP` (VisionTransformer + text Transformer) trained from scratch the way real CLIP is trained "
        "-- CLIP's global image-caption contrastive loss only, no dense, patch or mask loss -- by "
        "`python -m ovseg.train.mini_clip --recipe contrastive` on the procedural mini world (`ovseg/world.py`). "
        "Its dense features are read as the full profile reads CLIP ViT-L/14: MaskCLIP's value path at 4 evenly "
        "spaced blocks, fused by an equal-weight mean.", "",
        "## Architecture", "",
        f"- image: {a['vision']['image_size']} px, patch {a['vision']['patch_size']} "
        f"({a['vision']['image_size'] // a['vision']['patch_size']}^2 grid), no conv stem: open_clip's patchify "
        f"`conv1` (kernel = stride = {a['vision']['patch_size']}), as in real CLIP ViTs; ViT width "
        f"{a['vision']['width']}, {depth} blocks, head width {a['vision']['head_width']}, MLP ratio "
        f"{a['vision']['mlp_ratio']}",
        f"- text: width {a['text']['width']}, {a['text']['layers']} layers, {a['text']['heads']} heads, context "
        f"{trainer.tok.context_length}, CLIP BPE trimmed to {trainer.tok.vocab_size} tokens (remap in config.json); "
        "as the dense mini-clip",
        f"- joint embedding {a['embed_dim']}; weights fp16 safetensors",
        f"- inference: dense_path `maskclip` (MaskCLIP's value path: v -> out_proj of the block, no residual, no FFN, "
        f"then ln_post and proj -- the full profile's `clip.dense_path`), extract_layers {layers} of {depth} (the "
        f"blocks at 1/4, 2/4, 3/4 and 4/4 of the depth, where the full profile's 6 / 12 / 18 / 24 of ViT-L/14's 24 "
        f"sit), equal layer weights, templates {cfg.templates} (the captions' own form: a one-object caption is "
        f"\"a <colour> <shape>.\"), background prompt \"{BACKGROUND_PROMPT}\" (never in a caption)", "",
        "## Data", "",
        f"Scenes rendered on the fly, seeds < {EVAL_SEED_OFFSET}, `SceneConfig(split=\"base\")` (the 8 novel "
        f"compositions never appear), {cfg.n_objects[0]}-{cfg.n_objects[1]} objects, size {cfg.object_size}, styles "
        f"{sorted(set(cfg.styles))}, all backgrounds, colour images only. Caption of each scene: every visible object "
        f"(>= {MIN_VISIBLE_PX} px) named once, in random order, in the world's caption form (\"a red circle, a blue "
        "star and a green ring.\"); scenes naming the same set of objects are positives of each other.", "",
        "## Training", "",
        "Loss: CLIP's symmetric image-caption InfoNCE on the class token (open_clip's `encode_image` / "
        f"`encode_text`, learnable temperature); no other loss is computed. AdamW lr {cfg.lr}, wd "
        f"{cfg.weight_decay}, warmup {cfg.warmup_steps} + cosine, batch {cfg.batch_size}, seed {cfg.seed}, "
        f"{trainer.threads} CPU thread(s). Steps: {trainer.step} of {trainer.total_steps}; wall time "
        f"{trainer.wall / 60:.1f} min.", "",
        "## Metrics (dense per-pixel argmax over background + 48 classes through the value path, dev split "
        "data/mini_world/dev)", "",
    ]
    if metrics:
        lines += [f"- {k}: {v:.4f}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items()]
        lines += ["", "## Global path (class token, the path the loss trains; dev split, seeded 95% bootstrap)", ""]
        lines += _global_lines(folder)
    else:
        lines.append("- not evaluated")
    write_text_atomic(folder / "MODEL_CARD.md", "\n".join(lines) + "\n")
    name = REGISTRY_NAMES[cfg.recipe]
    if not (name in REGISTRY and pin_if_embedded(folder, name)):  # SHA256SUMS beside the weights in any case
        files = ("model.safetensors", "config.json")
        write_text_atomic(folder / "SHA256SUMS", "".join(f"{sha256_file(folder / f)}  {f}\n" for f in files))
    from ..testlog import write_card_section

    write_card_section(name, folder)  # what the test-set log holds for exactly these weights


def _global_lines(folder: Path) -> list[str]:
    """The model card's lines on the global path of the exported weights in ``folder`` (fp16, as shipped):
    :func:`ovseg.experiments.features.global_path_check` on the dev split (image -> caption retrieval, one-object
    zero-shot), each with its interval and n -- what ``scripts/mini_clip_global_check.py FOLDER`` prints."""
    from ..experiments.features import global_path_check
    from ..features import DenseCLIP
    from ..mini_clip import load_mini_clip
    from ..paths import DATA_DIR

    model, tok, m = load_mini_clip(folder)
    clip = DenseCLIP(model, tok, m["mean"], m["std"], extract_layers=m["extract_layers"], dense_path=m["dense_path"],
                     templates=m["templates"], image_size=m["image_size"])
    r = global_path_check(clip, DATA_DIR / "mini_world" / "dev")
    ret, zs = r["retrieval"], r["zero_shot"]
    return [f"- image -> caption top-1 among the {r['n_images']} dev captions (same set of objects): {ret.value:.3f} "
            f"[{ret.lo:.3f}, {ret.hi:.3f}], n = {ret.n}",
            f"- one-object zero-shot top-1 over 48 classes (\"a {{}}.\"): {zs.value:.3f} [{zs.lo:.3f}, {zs.hi:.3f}], "
            f"n = {zs.n} (chance {r['chance_zero_shot']:.3f})",
            "- `python scripts/mini_clip_global_check.py FOLDER` recomputes them"]


# ---- loop --------------------------------------------------------------------------------------------------

def train(out: str | Path, minutes: float | None = None, total_steps: int | None = None, resume: bool = False,
          cfg: TrainConfig | None = None, stop_at: int | None = None, export_dir: str | Path | None = _RECIPE_DEFAULT,
          eval_images: int = 100, final_eval_images: int = 200, log_every: int = 10, ckpt_every_s: float = 120.0,
          eval_every_s: float = 600.0, eval_root: str | Path = DEFAULT_EVAL, verbose: bool = True,
          threads: int = 1, recipe: str | None = None) -> dict[str, Any]:
    """Train (or resume) the mini CLIP.

    Args:
        out: run folder (``state.pt``, ``train_log.jsonl``).
        minutes: wall-clock budget of this call; also sets ``total_steps`` (the cosine schedule's
            length) from the measured step time when neither ``total_steps`` nor a resumed state gives it.
        total_steps: schedule length (reproducibility: same seed + same total_steps -> same weights).
        stop_at: stop (checkpointed) once this step is reached, even before ``total_steps``.
        export_dir: where to export the model (None: no export, no evaluation); default: the recipe's
            :data:`DEFAULT_EXPORTS` folder (``data/models/mini-clip`` for the dense recipe).
        threads: torch CPU threads (1, the default, is what the shipped models and the tests use; a resumed
            run reproduces an uninterrupted one at the same thread count).
        recipe: with ``resume``, the recipe the state must hold (a mismatch raises); ignored otherwise (``cfg``
            says it).

    Returns:
        ``{"step", "total_steps", "metrics"}``.
    """
    import torch

    torch.set_num_threads(threads)
    out = Path(out)
    state_path, log_path = out / "state.pt", out / "train_log.jsonl"
    if resume:
        if not state_path.is_file():
            raise InputError("--resume needs a checkpoint", str(state_path), "start without --resume")
        st = _load_state(state_path)
        trainer = _Trainer(TrainConfig.from_dict(st["cfg"]))
        if recipe is not None and recipe != trainer.cfg.recipe:
            raise InputError("--recipe must be the resumed run's recipe", f"{recipe} (the state holds "
                             f"{trainer.cfg.recipe})", f"pass --recipe {trainer.cfg.recipe}, or leave --recipe out")
        trainer.load_state_dict(st)
        if total_steps is not None:
            trainer.total_steps = int(total_steps)
    else:
        if state_path.exists():
            raise InputError("the run folder already holds a checkpoint", str(state_path),
                             "pass --resume to continue it, or choose another --out")
        if minutes is None and total_steps is None:
            raise InputError("training needs --minutes or --steps", "neither", "pass e.g. --minutes 30")
        trainer = _Trainer(cfg or TrainConfig())
        trainer.total_steps = int(total_steps) if total_steps is not None else None
    trainer.threads = int(threads)
    if export_dir is _RECIPE_DEFAULT:
        export_dir = DEFAULT_EXPORTS[trainer.cfg.recipe]
    if (trainer.cfg.recipe != "dense" and export_dir is not None
            and Path(export_dir).resolve() == DEFAULT_EXPORT.resolve()):
        raise InputError(f"the {trainer.cfg.recipe} recipe must not export over the shipped dense mini-clip",
                         str(export_dir), f"export to {DEFAULT_EXPORTS[trainer.cfg.recipe]} (the default) or a "
                         "folder of your own")
    out.mkdir(parents=True, exist_ok=True)
    budget = minutes * 60 if minutes is not None else float("inf")
    reserve = 90.0 if export_dir is not None else 5.0  # final evaluation + export
    start = time.time()
    last_ckpt = last_eval = start
    acc: dict[str, float] = {}
    n_acc = 0
    step_times: list[float] = []
    metrics: dict[str, Any] | None = None

    def log(rec: dict[str, Any]) -> None:
        with open(log_path, "a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if verbose:
            print(json.dumps(rec), flush=True)

    def evaluate_and_export(n: int) -> dict[str, Any]:
        assert export_dir is not None
        t0 = time.time()
        m = evaluate_dense(trainer.model, trainer.tok, _inference_cfg(trainer.cfg), n_images=n, root=eval_root)
        _export(trainer, Path(export_dir), m)
        log({"event": "eval", "step": trainer.step, "wall": round(trainer.wall, 1), "eval_seconds": round(time.time() - t0, 1),
             **m})
        return m

    log({"event": "start" if not resume else "resume", "step": trainer.step, "total_steps": trainer.total_steps,
         "minutes": minutes, "cfg": trainer.cfg.to_dict()})
    while True:
        if trainer.total_steps is not None and trainer.step >= trainer.total_steps:
            break
        if stop_at is not None and trainer.step >= stop_at:
            break
        if time.time() - start > budget - reserve:
            break
        if trainer.total_steps is None and trainer.step >= 20 and len(step_times) >= 10:
            # fix the schedule length from the measured speed (recorded in the log and the state)
            per = float(np.median(step_times[-10:]))
            left = budget - (time.time() - start) - reserve
            n_evals = max(1, left / eval_every_s)
            left -= n_evals * 25.0  # periodic evaluations
            trainer.total_steps = max(trainer.step + 1, trainer.cfg.warmup_steps + 1, int(trainer.step + left / per))
            log({"event": "schedule", "step": trainer.step, "total_steps": trainer.total_steps, "step_seconds": per})
        t0 = time.time()
        if trainer.total_steps is None:
            # schedule length not fixed yet: warmup steps do not depend on it
            trainer.total_steps = 10 ** 9
            rec = trainer.train_step()
            trainer.total_steps = None
        else:
            rec = trainer.train_step()
        dt = time.time() - t0
        trainer.wall += dt
        step_times.append(dt)
        for k, v in rec.items():
            acc[k] = acc.get(k, 0.0) + v
        n_acc += 1
        if trainer.step % log_every == 0:
            log({"step": trainer.step, "wall": round(trainer.wall, 1), "step_seconds": round(dt, 3),
                 **{k: round(v / n_acc, 5) for k, v in acc.items()}})
            acc, n_acc = {}, 0
        now = time.time()
        if now - last_ckpt >= ckpt_every_s:
            _save_state(trainer, state_path)
            last_ckpt = now
        if export_dir is not None and now - last_eval >= eval_every_s:
            metrics = evaluate_and_export(eval_images)
            last_eval = time.time()
    _save_state(trainer, state_path)
    if export_dir is not None:
        metrics = evaluate_and_export(final_eval_images)
    log({"event": "end", "step": trainer.step, "total_steps": trainer.total_steps, "wall": round(trainer.wall, 1)})
    return {"step": trainer.step, "total_steps": trainer.total_steps, "metrics": metrics}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ovseg.train.mini_clip", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder: state.pt, train_log.jsonl")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget of this invocation")
    p.add_argument("--steps", type=int, default=None, help="cosine schedule length (default: fit --minutes)")
    p.add_argument("--stop-at", type=int, default=None, help="stop at this step (checkpointed)")
    p.add_argument("--resume", action="store_true", help="continue --out/state.pt exactly")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--config", type=str, default=None, help="JSON of TrainConfig fields to override")
    p.add_argument("--recipe", choices=RECIPES, default=None,
                   help="dense (default for a new run; the shipped mini-clip) or contrastive (CLIP's image-caption "
                        "loss only, issue #22); with --resume: default the state's, and it must match")
    p.add_argument("--export", type=str, default=None,
                   help="export folder ('' = no export; default: data/models/mini-clip for the dense recipe, "
                        "data/models/mini-clip-contrastive for the contrastive one)")
    p.add_argument("--eval-images", type=int, default=100)
    p.add_argument("--eval-every", type=float, default=600.0, help="seconds between evaluations")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1, the shipped model's; resume with the same count to reproduce)")
    args = p.parse_args(argv)
    if args.threads < 1:
        raise InputError("--threads must be at least 1", args.threads, "pass --threads 1 or 2")
    over: dict[str, Any] = json.loads(args.config) if args.config else {}
    over["seed"] = args.seed
    if args.batch_size:
        over["batch_size"] = args.batch_size
    if args.lr:
        over["lr"] = args.lr
    base = recipe_config(args.recipe or "dense").to_dict()
    if "arch" in over:  # shallow-merge per tower
        arch = base["arch"]
        for k, v in over.pop("arch").items():
            arch[k] = {**arch[k], **v} if isinstance(v, dict) and isinstance(arch.get(k), dict) else v
        base["arch"] = arch
    base.update(over)
    cfg = TrainConfig.from_dict(base)
    export: Any = _RECIPE_DEFAULT if args.export is None else (args.export or None)
    res = train(args.out, minutes=args.minutes, total_steps=args.steps, resume=args.resume, cfg=cfg,
                stop_at=args.stop_at, export_dir=export, eval_images=args.eval_images,
                eval_every_s=args.eval_every, threads=args.threads, recipe=args.recipe)
    print(json.dumps({k: v for k, v in res.items()}, default=str))
    return 0


if __name__ == "__main__":  # pragma: no cover
    from . import run_main

    raise SystemExit(run_main(main))
