"""Train the mini SAM 2 (a small ``sam2`` SAM2Base) on mini-world scenes, offline on CPU.

The model is sam2's own SAM2Base (Hiera trunk, FPN neck, SAM prompt encoder / mask decoder with
IoU head) built by :func:`ovseg.masks.build_sam2_model` from ``data/models/mini-sam2/config.yaml``.
Training follows SAM's interactive recipe, calling the model's components exactly as
``SAM2ImagePredictor.set_image`` / ``_predict`` do at inference:

* image: sam2's ``SAM2Transforms`` (resize to ``image_size``, ImageNet normalisation), then
  ``forward_image`` -> ``_prepare_backbone_features`` -> ``+ no_mem_embed`` on the lowest-resolution
  level -> ``image_embed`` (stride 16) and ``high_res_feats`` (stride 4 and 8, already projected by
  the decoder's ``conv_s0`` / ``conv_s1``);
* prompts (per image several objects; coordinates in model-input pixels): one random positive
  point inside an object's visible mask (multimask output, loss on the best of the 3 masks), or a
  jittered box (single mask; box corners as points with labels 2 / 3, as the predictor does), plus
  some background points whose target is the empty mask (so background masks get a low predicted
  IoU); then 0-3 corrective iterations: a point sampled from the error region of the previous
  prediction (positive on a miss, negative on a false alarm), with the previous low-res mask
  logits as ``mask_input`` (single-mask output);
* loss per iteration: 20 x focal + 1 x dice on the best mask, + MSE between the IoU head and the
  actual IoU of every output mask (so ``pred_iou_thresh`` is meaningful); masks are compared at
  the model input size after the predictor's bilinear upsampling.

Data: ``render_scene(seed, SceneConfig(split="base", ...))`` with seeds below ``EVAL_SEED_OFFSET``
(no novel composition ever appears), a curriculum from one or two objects to cluttered scenes and
random zoom crops (the generator's crop layers show the model magnified image parts).
Each step's data is a pure function of ``(seed, step)``, so a resumed run equals an uninterrupted one.

Run ``python -m ovseg.train.mini_sam2 --out data/train/mini-sam2 --minutes 60 [--resume]``.
Every ~2 minutes ``--out/state.pt`` (model, optimizer, step, RNG states) is replaced atomically and
``--out/train_log.jsonl`` gets a line; every ~10 minutes and at the end the model is evaluated
with sam2's unmodified automatic mask generator (:func:`evaluate_recall`) and exported to
``data/models/mini-sam2/model.safetensors`` with ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import DATA_DIR
from ..world import EVAL_SEED_OFFSET, SceneConfig, render_scene
from . import load_state

__all__ = ["MODEL_DIR", "CONFIG_PATH", "TrainConfig", "Trainer", "build_model", "sample_scenes",
           "evaluate_recall", "export_model", "main"]

MODEL_DIR = DATA_DIR / "models" / "mini-sam2"
CONFIG_PATH = MODEL_DIR / "config.yaml"
EVAL_DIR = DATA_DIR / "mini_world" / "dev"


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (stored in ``state.pt``; a resumed run keeps the saved ones)."""

    seed: int = 0
    images_per_step: int = 8
    # Object prompts per image (all visible objects up to this many, largest first when more).
    max_prompts: int = 8
    # Probability per image of one extra background point with an empty target.
    p_background: float = 0.5
    # Probability that an image is prompted with jittered boxes instead of single points.
    p_box: float = 0.3
    # Corrective iterations after the first prompt: uniform in [0, max_corrections].
    max_corrections: int = 2
    # Box jitter: std as a fraction of the box side, capped in pixels (SAM: 10 %, 20 px).
    box_noise: float = 0.1
    box_noise_max: float = 20.0
    # Random zoom crop (mimics the generator's crop layers): probability and side fraction range.
    p_zoom: float = 0.35
    zoom_range: tuple[float, float] = (0.5, 0.9)
    # Curriculum: the largest object count grows by one every ``curriculum_steps`` up to ``max_objects``.
    # Start at 1..start_objects objects (>= 2 so that the prompt location matters from the start).
    start_objects: int = 3
    curriculum_steps: int = 1000
    max_objects: int = 5
    object_size: tuple[float, float] = (0.18, 0.45)
    scene_size: int = 128
    # Objects with fewer visible pixels (at model resolution) are not prompted.
    min_area: int = 12
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup_steps: int = 1000
    # Cosine decay from lr to lr * min_lr_ratio over total_steps, then constant.
    total_steps: int = 12000
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    focal_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    config_path: str = field(default_factory=lambda: str(CONFIG_PATH))


# ---- model ------------------------------------------------------------------------------------

def build_model(config_path: str | Path = CONFIG_PATH, seed: int = 0, checkpoint: str | Path | None = None) -> Any:
    """The mini SAM 2 from its YAML (random init from ``seed`` unless ``checkpoint``), in train mode."""
    import torch

    from ..masks import build_sam2_model

    torch.manual_seed(seed)
    model = build_sam2_model(str(config_path), checkpoint=checkpoint, device="cpu")
    model.train()
    return model


def encode_images(model: Any, batch: Any) -> tuple[Any, list[Any]]:
    """``SAM2ImagePredictor.set_image`` for a normalised batch (B, 3, S, S), with gradients.

    Returns ``image_embed`` (B, C, S/16, S/16) and ``high_res_feats`` [(B, C/8, S/4, S/4), (B, C/4, S/8, S/8)].
    """
    backbone_out = model.forward_image(batch)
    _, vision_feats, _, feat_sizes = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    b = batch.shape[0]
    feats = [f.permute(1, 2, 0).reshape(b, -1, *hw) for f, hw in zip(vision_feats, feat_sizes)]
    return feats[-1], feats[:-1]


def decode(model: Any, embed: Any, high_res: list[Any], coords: Any, labels: Any, mask_input: Any | None,
           multimask: bool) -> tuple[Any, Any]:
    """``SAM2ImagePredictor._predict`` for one image and a batch of prompts (coords in input pixels).

    Returns low-res mask logits (N, M, S/4, S/4) and predicted IoUs (N, M), M = 3 if multimask else 1.
    """
    sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=mask_input)
    low_res, iou_pred, _, _ = model.sam_mask_decoder(
        image_embeddings=embed, image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask,
        repeat_image=coords.shape[0] > 1, high_res_features=high_res)
    return low_res, iou_pred


# ---- data -------------------------------------------------------------------------------------

def scene_config(cfg: TrainConfig, step: int) -> SceneConfig:
    """Training scenes at ``step``: base split only, object count growing with the curriculum."""
    hi = min(cfg.max_objects, cfg.start_objects + step // max(cfg.curriculum_steps, 1))
    return SceneConfig(size=(cfg.scene_size, cfg.scene_size), n_objects=(1, hi), object_size=cfg.object_size,
                       split="base")


def sample_scenes(cfg: TrainConfig, step: int, rng: np.random.Generator, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` training samples: (image (S, S, 3) uint8, masks (K, S, S) bool), zoom-cropped at random."""
    scfg = scene_config(cfg, step)
    out = []
    for _ in range(n):
        seed = int(rng.integers(0, EVAL_SEED_OFFSET))
        scene = render_scene(seed, scfg)
        image, masks = scene.image, scene.instance_masks
        if rng.random() < cfg.p_zoom:
            h, w = image.shape[:2]
            side = int(round(rng.uniform(*cfg.zoom_range) * min(h, w)))
            y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            image, masks = image[y0:y0 + side, x0:x0 + side], masks[:, y0:y0 + side, x0:x0 + side]
        if rng.random() < 0.5:
            image, masks = image[:, ::-1], masks[:, :, ::-1]
        out.append((np.ascontiguousarray(image), np.ascontiguousarray(masks)))
    return out


# ---- losses -----------------------------------------------------------------------------------

def _losses(logits: Any, target: Any, iou_pred: Any, cfg: TrainConfig) -> dict[str, Any]:
    """SAM's loss for N prompts with M masks each: logits (N, M, S, S), target (N, 1, S, S) float."""
    import torch
    import torch.nn.functional as F

    target = target.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    focal = ce * (1 - p_t) ** cfg.focal_gamma
    focal = focal * (cfg.focal_alpha * target + (1 - cfg.focal_alpha) * (1 - target))
    focal = focal.flatten(2).mean(-1)  # (N, M)
    p, t = prob.flatten(2), target.flatten(2)
    dice = 1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)  # (N, M)
    combo = cfg.focal_weight * focal + cfg.dice_weight * dice
    best = combo.argmin(-1)  # (N,)
    rows = torch.arange(logits.shape[0])
    with torch.no_grad():
        pred = logits.flatten(2) > 0
        gt = t > 0.5
        actual = (pred & gt).sum(-1).float() / (pred | gt).sum(-1).float().clamp(min=1)  # (N, M)
    iou_mse = F.mse_loss(iou_pred, actual, reduction="none").mean(-1)  # (N,)
    return {"focal": focal[rows, best], "dice": dice[rows, best], "iou_mse": iou_mse,
            "loss": combo[rows, best] + cfg.iou_weight * iou_mse, "best_iou": actual[rows, best],
            "actual": actual, "iou_err": (iou_pred - actual).abs().detach()}


# ---- trainer ----------------------------------------------------------------------------------

class Trainer:
    """Holds model, optimizer and step; :meth:`train_step` is deterministic given ``(seed, step)``."""

    def __init__(self, cfg: TrainConfig | None = None, model: Any | None = None):
        import torch

        self.cfg = cfg or TrainConfig()
        self.model = model if model is not None else build_model(self.cfg.config_path, self.cfg.seed)
        self.model.train()
        from sam2.utils.transforms import SAM2Transforms

        self.size = int(self.model.image_size)
        self.low = self.size // 4
        self.transforms = SAM2Transforms(resolution=self.size, mask_threshold=0.0)
        params = [p for p in self.model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.cfg.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=self.cfg.lr)
        self.step = 0
        self.elapsed = 0.0  # training seconds over all sessions

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup_steps:
            return c.lr * (step + 1) / c.warmup_steps
        frac = min(1.0, (step - c.warmup_steps) / max(1, c.total_steps - c.warmup_steps))
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    def _prepare(self, samples: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Any, list[Any]]:
        """Normalised batch (B, 3, S, S) and per image masks (K, S, S) float at model resolution."""
        import torch
        import torch.nn.functional as F

        images = torch.stack([self.transforms(img) for img, _ in samples])
        masks = []
        for _, m in samples:
            t = torch.from_numpy(m.astype(np.float32))[:, None]  # (K, 1, h, w)
            if t.shape[0] and t.shape[-2:] != (self.size, self.size):
                t = F.interpolate(t, size=(self.size, self.size), mode="bilinear", align_corners=False)
            masks.append((t[:, 0] >= 0.5).float())
        return images, masks

    def _prompts(self, rng: np.random.Generator, masks: Any) -> tuple[str, Any, Any, Any] | None:
        """First prompts of one image: mode, coords (N, P, 2), labels (N, P) int, targets (N, S, S)."""
        import torch

        areas = masks.flatten(1).sum(1).numpy() if masks.shape[0] else np.zeros(0)
        objs = [int(i) for i in np.argsort(-areas, kind="stable") if areas[i] >= self.cfg.min_area]
        objs = objs[: self.cfg.max_prompts]
        box = bool(objs) and rng.random() < self.cfg.p_box
        coords, labels, targets = [], [], []
        for i in objs:
            m = masks[i].numpy() > 0.5
            ys, xs = np.nonzero(m)
            if box:
                x0, x1, y0, y1 = xs.min(), xs.max() + 1.0, ys.min(), ys.max() + 1.0
                bw, bh = x1 - x0, y1 - y0
                sx = min(self.cfg.box_noise * bw, self.cfg.box_noise_max)
                sy = min(self.cfg.box_noise * bh, self.cfg.box_noise_max)
                noise = rng.normal(0, 1, 4) * np.array([sx, sy, sx, sy])
                b = np.array([x0, y0, x1, y1]) + noise
                b = np.clip(b, 0, self.size)
                b = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])])
                coords.append(b.reshape(2, 2))
                labels.append([2, 3])
            else:
                k = int(rng.integers(len(xs)))
                coords.append(np.array([[xs[k] + 0.5, ys[k] + 0.5]]))
                labels.append([1])
            targets.append(masks[i])
        if not box and rng.random() < self.cfg.p_background:
            bg = ~(masks.sum(0).numpy() > 0) if masks.shape[0] else np.ones((self.size, self.size), bool)
            ys, xs = np.nonzero(bg)
            if len(xs):
                k = int(rng.integers(len(xs)))
                coords.append(np.array([[xs[k] + 0.5, ys[k] + 0.5]]))
                labels.append([1])
                targets.append(torch.zeros(self.size, self.size))
        if not coords:
            return None
        return ("box" if box else "point", torch.tensor(np.stack(coords), dtype=torch.float32),
                torch.tensor(labels, dtype=torch.int), torch.stack(targets))

    def _corrective_points(self, rng: np.random.Generator, pred: Any, targets: Any) -> tuple[Any, Any]:
        """One point per prompt from the error region of ``pred`` (N, S, S) bool: (N, 1, 2), (N, 1)."""
        import torch

        gt = targets.numpy() > 0.5
        err = pred.numpy() != gt
        coords, labels = [], []
        for n in range(gt.shape[0]):
            region = err[n] if err[n].any() else (gt[n] if gt[n].any() else ~gt[n])
            ys, xs = np.nonzero(region)
            k = int(rng.integers(len(xs)))
            coords.append([[xs[k] + 0.5, ys[k] + 0.5]])
            labels.append([1 if gt[n, ys[k], xs[k]] else 0])
        return torch.tensor(coords, dtype=torch.float32), torch.tensor(labels, dtype=torch.int)

    def train_step(self) -> dict[str, float]:
        """One optimisation step on ``images_per_step`` fresh scenes; returns its metrics."""
        import torch
        import torch.nn.functional as F

        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.step])
        samples = sample_scenes(cfg, self.step, rng, cfg.images_per_step)
        images, masks = self._prepare(samples)
        n_corr = int(rng.integers(0, cfg.max_corrections + 1))
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(self.step)
        embed, high_res = encode_images(self.model, images)
        terms: list[Any] = []
        stats: dict[str, list[float]] = {k: [] for k in ("focal", "dice", "iou_mse", "first_iou", "iou_err", "last_iou")}
        for b in range(images.shape[0]):
            first = self._prompts(rng, masks[b])
            if first is None:
                continue
            mode, coords, labels, targets = first
            is_obj = targets.flatten(1).sum(1) > 0  # background prompts have empty targets
            emb, hr = embed[b:b + 1], [f[b:b + 1] for f in high_res]
            mask_input = None
            for it in range(1 + n_corr):
                multimask = it == 0 and mode == "point"
                low, iou_pred = decode(self.model, emb, hr, coords, labels, mask_input, multimask)
                logits = F.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)
                out = _losses(logits, targets[:, None], iou_pred, cfg)
                terms.append(out["loss"].mean())
                stats["focal"].append(float(out["focal"].detach().mean()))
                stats["dice"].append(float(out["dice"].detach().mean()))
                stats["iou_mse"].append(float(out["iou_mse"].detach().mean()))
                stats["iou_err"].append(float(out["iou_err"].mean()))
                if it == 0 and mode == "point" and bool(is_obj.any()):
                    stats["first_iou"].append(float(out["best_iou"][is_obj].mean()))
                if it == n_corr and bool(is_obj.any()):
                    stats["last_iou"].append(float(out["best_iou"][is_obj].mean()))
                if it < n_corr:
                    # as SAM 2's training: keep the mask with the highest predicted IoU, detached
                    with torch.no_grad():
                        pick = iou_pred.argmax(-1)
                        rows = torch.arange(low.shape[0])
                        # clamped as SAM2ImagePredictor._predict returns its low-res logits
                        mask_input = low[rows, pick][:, None].detach().clamp(-32.0, 32.0)
                        pred = logits[rows, pick].detach() > 0
                    c, lab = self._corrective_points(rng, pred, targets)
                    coords, labels = torch.cat([coords, c], 1), torch.cat([labels, lab], 1)
        loss = torch.stack(terms).mean() if terms else embed.sum() * 0
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        metrics = {"loss": float(loss.detach()), "lr": self.optimizer.param_groups[0]["lr"], "corrections": n_corr}
        metrics.update({k: float(np.mean(v)) if v else float("nan") for k, v in stats.items()})
        return metrics

    # ---- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        import torch

        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "elapsed": self.elapsed, "config": dataclasses.asdict(self.cfg),
                "torch_rng": torch.get_rng_state()}

    def save(self, path: str | Path) -> Path:
        """Write the training state atomically (temp file + rename)."""
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Trainer:
        """A trainer restored from :meth:`save` (its saved config, model, optimizer, step, RNG)."""
        import torch

        state = load_state(Path(path))
        c = state["config"]
        cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()
                             if k in {f.name for f in dataclasses.fields(TrainConfig)}})
        if not Path(cfg.config_path).is_file():  # run folder moved to another checkout
            cfg.config_path = str(CONFIG_PATH)
        trainer = cls(cfg, model=build_model(cfg.config_path, cfg.seed))
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.step, trainer.elapsed = int(state["step"]), float(state["elapsed"])
        torch.set_rng_state(state["torch_rng"])
        return trainer


# ---- evaluation -------------------------------------------------------------------------------

def _load_eval(n_images: int, root: Path = EVAL_DIR) -> list[tuple[np.ndarray, np.ndarray]]:
    from PIL import Image

    from ..world import load_dataset_index

    index = load_dataset_index(root)
    out = []
    for rec in index["images"][:n_images]:
        image = np.asarray(Image.open(root / "images" / f"{rec['stem']}.png").convert("RGB"))
        inst = np.asarray(Image.open(root / "instances" / f"{rec['stem']}.png"))
        ids = [i for i in np.unique(inst) if i > 0]
        out.append((image, np.stack([inst == i for i in ids]) if ids else np.zeros((0, *inst.shape), bool)))
    return out


def _generate_or_empty(gen: Any, image: np.ndarray) -> np.ndarray:
    """Masks (N, H, W) bool of ``gen.generate(image)``; (0, H, W) where no mask survives the filters.

    sam2 1.1.0's ``SAM2AutomaticMaskGenerator._generate_masks`` raises ``IndexError`` in
    ``box_area(data["crop_boxes"])`` when ``crop_n_layers > 0`` and no crop kept any mask.
    """
    try:
        return gen.generate(image).masks
    except IndexError:
        return np.zeros((0, *image.shape[:2]), bool)


def evaluate_recall(model: Any, n_images: int = 50, sam2_config: Any | None = None, *,
                    relaxed: dict[str, Any] | None = None, root: str | Path = EVAL_DIR,
                    iou_thresh: float = 0.5) -> dict[str, Any]:
    """Object recall of sam2's automatic mask generator (via :class:`ovseg.masks.MaskGenerator`).

    Runs the generator on the first ``n_images`` eval scenes with ``sam2_config`` (default: the
    thesis settings, 32 x 32 points, pred IoU 0.88, stability 0.95, one crop layer) and with
    ``relaxed`` field changes (default pred IoU 0.5, stability 0.7; ``{}`` skips it). A ground-truth
    instance counts as recalled when some mask overlaps it with IoU >= ``iou_thresh``.

    Returns ``{"thesis": {...}, "relaxed": {...}}``; each holds ``recall``, ``mean_best_iou``,
    ``masks_per_image``, ``seconds_per_image``, ``n_images``, ``n_objects`` and the settings used.
    """
    from ..config import SAM2Config
    from ..masks import MaskGenerator

    base = sam2_config or SAM2Config()
    relaxed = {"pred_iou_thresh": 0.5, "stability_score_thresh": 0.7} if relaxed is None else relaxed
    data = _load_eval(n_images, Path(root))
    was_training = model.training
    model.eval()
    results: dict[str, Any] = {}
    try:
        settings = {"thesis": base}
        if relaxed:
            settings["relaxed"] = dataclasses.replace(base, **relaxed)
        for name, conf in settings.items():
            gen = MaskGenerator(model, conf)
            best, counts, t0 = [], [], time.perf_counter()
            for image, gt in data:
                pred = _generate_or_empty(gen, image).reshape(-1, gt.shape[1] * gt.shape[2])  # (N, HW) bool
                counts.append(len(pred))
                for g in gt.reshape(len(gt), -1):
                    if len(pred) == 0:
                        best.append(0.0)
                        continue
                    inter = (pred & g).sum(1)
                    union = (pred | g).sum(1)
                    best.append(float((inter / np.maximum(union, 1)).max()))
            dt = time.perf_counter() - t0
            arr = np.array(best)
            results[name] = {"recall": float((arr >= iou_thresh).mean()) if len(arr) else float("nan"),
                             "mean_best_iou": float(arr.mean()) if len(arr) else float("nan"),
                             "masks_per_image": float(np.mean(counts)), "seconds_per_image": dt / max(len(data), 1),
                             "n_images": len(data), "n_objects": len(arr),
                             "settings": {k: getattr(conf, k) for k in ("points_per_side", "pred_iou_thresh",
                                                                         "stability_score_thresh", "crop_n_layers")}}
    finally:
        model.train(was_training)
    return results


# ---- export -----------------------------------------------------------------------------------

def export_model(model: Any, model_dir: str | Path = MODEL_DIR, config_path: str | Path = CONFIG_PATH,
                 card: str | None = None) -> Path:
    """Write ``model.safetensors`` (+ ``config.yaml`` and ``MODEL_CARD.md``) into ``model_dir`` atomically."""
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    out = model_dir / "model.safetensors"
    tmp = out.with_name(out.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "source": "ovseg.train.mini_sam2"})
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    cfg_dst = model_dir / "config.yaml"
    if Path(config_path).resolve() != cfg_dst.resolve():
        shutil.copyfile(config_path, cfg_dst)
    if card is not None:
        tmp = model_dir / "MODEL_CARD.md.tmp"
        tmp.write_text(card)
        os.replace(tmp, model_dir / "MODEL_CARD.md")
    from ..weights import pin_if_embedded

    pin_if_embedded(model_dir, "mini-sam2")  # SHA256SUMS for the weights registry
    if card is not None:  # what the test-set log holds for exactly these weights (a fresh export: nothing yet)
        from ..testlog import write_card_section

        write_card_section("mini-sam2", model_dir)
    return out


def _model_card(trainer: Trainer, metrics: dict[str, Any] | None, recent: dict[str, float]) -> str:
    m = trainer.model
    n_params = sum(p.numel() for p in m.parameters())
    trunk = m.image_encoder.trunk
    lines = [
        "# mini SAM 2 (ovseg mini profile)", "",
        "A small SAM 2 (`sam2.modeling.sam2_base.SAM2Base`) trained from scratch on the procedural mini world",
        "by `python -m ovseg.train.mini_sam2`, offline on CPU (1 thread).", "",
        "## Architecture", "",
        f"- input size {m.image_size} px; Hiera trunk ({len(trunk.blocks)} blocks, stage ends {trunk.stage_ends}),",
        f"  FPN neck / SAM decoder width {m.hidden_dim}, memory width {m.mem_dim} (memory modules unused for images)",
        f"- {n_params / 1e6:.2f} M parameters; config `config.yaml` (sam2 schema), weights `model.safetensors`",
        "- load: `ovseg.masks.build_sam2_model('data/models/mini-sam2/config.yaml', 'data/models/mini-sam2/model.safetensors')`",
        "",
        "## Data and recipe", "",
        "- `ovseg.world.render_scene(seed, SceneConfig(split='base'))`, seeds < EVAL_SEED_OFFSET (no novel composition),",
        f"  curriculum 1-{trainer.cfg.start_objects} objects growing to 1-{trainer.cfg.max_objects},",
        f"  zoom crops p={trainer.cfg.p_zoom}, flips",
        "- prompts: random positive point (multimask, best-of-3 loss) or jittered box, background points with empty",
        f"  targets, 0-{trainer.cfg.max_corrections} corrective points from the error region with previous mask logits",
        "- loss: 20 focal + 1 dice (best mask) + MSE(IoU head, actual IoU of every mask); AdamW,",
        f"  lr {trainer.cfg.lr} warmup {trainer.cfg.warmup_steps} + cosine over {trainer.cfg.total_steps} steps",
        f"- {trainer.cfg.images_per_step} images per step, seed {trainer.cfg.seed}", "",
        "## Training so far", "",
        f"- steps: {trainer.step}; wall time {trainer.elapsed / 60:.1f} min",
        f"- recent training metrics: {json.dumps({k: round(v, 4) for k, v in recent.items()})}", "",
    ]
    if metrics:
        lines += ["## Evaluation (sam2 automatic mask generator on data/mini_world/dev)", "",
                  "| setting | points/side | pred IoU | stability | crops | recall@0.5 | mean best IoU | masks/img | s/img |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, r in metrics.items():
            s = r["settings"]
            lines.append(f"| {name} | {s['points_per_side']} | {s['pred_iou_thresh']} | {s['stability_score_thresh']} | "
                         f"{s['crop_n_layers']} | {r['recall']:.3f} | {r['mean_best_iou']:.3f} | "
                         f"{r['masks_per_image']:.1f} | {r['seconds_per_image']:.2f} |")
        lines += ["", f"({next(iter(metrics.values()))['n_images']} images, CPU 1 thread)", ""]
    return "\n".join(lines)


# ---- CLI --------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    import torch

    ap = argparse.ArgumentParser(prog="python -m ovseg.train.mini_sam2", description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="run folder (state.pt, train_log.jsonl)")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock training budget of this session")
    ap.add_argument("--resume", action="store_true", help="continue from --out/state.pt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default=str(CONFIG_PATH), help="model YAML (sam2 schema) of a new run")
    ap.add_argument("--total-steps", type=int, default=None,
                    help="length of the cosine lr schedule (default TrainConfig.total_steps; also applied on --resume)")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a TrainConfig field (JSON value), for new and resumed runs, e.g. --set iou_weight=5")
    ap.add_argument("--model-dir", default=str(MODEL_DIR), help="export folder (model.safetensors, MODEL_CARD.md)")
    ap.add_argument("--checkpoint-minutes", type=float, default=2.0)
    ap.add_argument("--eval-minutes", type=float, default=10.0)
    ap.add_argument("--eval-images", type=int, default=16)
    ap.add_argument("--final-eval-images", type=int, default=40)
    ap.add_argument("--eval-points", type=int, default=32, help="points_per_side of the periodic evaluation")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path, log_path = out / "state.pt", out / "train_log.jsonl"
    if args.resume and state_path.is_file():
        trainer = Trainer.load(state_path)
        print(f"resumed at step {trainer.step} ({trainer.elapsed / 60:.1f} min trained)", flush=True)
    else:
        trainer = Trainer(TrainConfig(seed=args.seed, config_path=str(args.config)))
    if args.total_steps is not None:
        trainer.cfg.total_steps = args.total_steps
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in names or key == "config_path":
            ap.error(f"--set needs FIELD=VALUE with FIELD one of {sorted(names - {'config_path'})}, got {item!r}")
        val = json.loads(value)
        setattr(trainer.cfg, key, tuple(val) if isinstance(val, list) else val)
    from ..config import SAM2Config

    eval_conf = SAM2Config(points_per_side=args.eval_points)
    start = time.monotonic()
    last_ckpt = last_eval = start
    window: list[dict[str, float]] = []
    last_rec: dict[str, float] = {}
    metrics: dict[str, Any] | None = None

    def log(rec: dict[str, Any]) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def recent() -> dict[str, float]:
        if not window:
            return dict(last_rec)
        keys = [k for k in window[0] if k not in ("lr", "corrections")]
        return {k: float(np.nanmean([w[k] for w in window])) for k in keys}

    def evaluate_and_export(n_images: int) -> None:
        nonlocal metrics
        t0 = time.monotonic()
        metrics = evaluate_recall(trainer.model, n_images, eval_conf)
        log({"step": trainer.step, "time": trainer.elapsed, "eval": metrics, "eval_seconds": time.monotonic() - t0})
        export_model(trainer.model, args.model_dir, trainer.cfg.config_path, _model_card(trainer, metrics, recent()))
        short = {k: (round(v["recall"], 3), round(v["mean_best_iou"], 3)) for k, v in metrics.items()}
        print(f"step {trainer.step} eval (recall, mean best IoU): {json.dumps(short)}", flush=True)

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
            evaluate_and_export(args.eval_images)
            last_eval = last_ckpt = time.monotonic()
    trainer.save(state_path)
    evaluate_and_export(args.final_eval_images)
    trainer.save(state_path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    from . import run_main

    raise SystemExit(run_main(main))
