"""3.2.1 Dense CLIP features: multi-layer patch features and ensembled text embeddings.

The image side reads the patch tokens of several transformer blocks of an ``open_clip``
ViT (6/12/18/24 of ViT-L/14 in the thesis) and maps each into the joint image-text space:

* ``dense_path="maskclip"`` (the full profile): MaskCLIP's value path. Block ``l``'s attention is
  replaced by its value projection (``v -> out_proj``: every patch keeps its own content instead of
  mixing in the global context that CLIP's last layers learn), no residual and no FFN, then the
  model's ``ln_post`` and ``proj``. This is what makes real CLIP's patch features localise.
* ``dense_path="tokens"``: the block's output tokens through ``ln_post`` and ``proj``; for models
  trained with a dense loss through that path (the mini profile).
* ``dense_path="sclip"`` / ``"clearclip"``: the training-free baselines' attention (SCLIP's
  correlative self-attention with residual; ClearCLIP's q-q attention without residual or FFN),
  used in the Chapter 5 comparison (:meth:`DenseCLIP._custom_block`).

Each layer's features are L2-normalised; fusion is a weighted mean of normalised features,
renormalised. Because cosine similarity is linear in the image feature once the text embedding is
fixed, the similarity of the fused feature equals the weighted mean of per-layer similarities up
to the renormalisation.

Large images are resized so their short side is ``image_size`` and covered by overlapping
``image_size`` windows (stride ``window_stride * image_size``, aligned to the patch grid); the
features of overlapping windows are averaged per patch.

Text prompts are embedded with prompt-template ensembling: each template is filled with the
prompt, embedded and normalised; the mean is renormalised (CLIP's zero-shot recipe).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import TEMPLATE_SETS
from .errors import InputError, OvsegWarning

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["get_templates", "list_template_sets", "DenseFeatures", "DenseCLIP", "check_prompts"]


def list_template_sets() -> list[str]:
    return list(TEMPLATE_SETS)


def get_templates(name: str | Sequence[str]) -> list[str]:
    """Prompt templates with a ``{}`` placeholder.

    ``imagenet80``: the 80 templates CLIP used for ImageNet zero-shot; ``imagenet7``: the 7-template
    subset its authors selected for speed; ``none``: the bare prompt. Both lists come from
    ``open_clip.zero_shot_metadata`` (imported lazily).
    """
    if not isinstance(name, str):
        return list(name)  # an explicit list (validated by the config)
    if name == "none":
        return ["{}"]
    from open_clip import zero_shot_metadata as meta

    sets = {"imagenet80": meta.OPENAI_IMAGENET_TEMPLATES, "imagenet7": meta.SIMPLE_IMAGENET_TEMPLATES}
    if name not in sets:
        raise InputError("template set must be one of " + ", ".join(list_template_sets()), repr(name),
                         "set clip.templates accordingly")
    return [t("{}") for t in sets[name]]


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    """Validate text prompts: a non-empty string or list of non-empty strings, stripped."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, (list, tuple)) or not prompts:
        raise InputError("prompts must be a non-empty string or list of strings", repr(prompts),
                         'pass e.g. --prompt "red car"')
    out = []
    for p in prompts:
        if not isinstance(p, str) or not p.strip():
            raise InputError("prompt must contain text (not empty or whitespace)", repr(p),
                             'pass a description such as "red car"')
        out.append(" ".join(p.split()))
    return out


@dataclass
class DenseFeatures:
    """Per-layer dense features of one image.

    Attributes:
        per_layer: (L, E, gh, gw) float32 tensor, each feature vector L2-normalised; the grid
            covers the resized (and possibly padded) image at one vector per patch.
        layers: the 1-indexed block numbers, length L.
        image_shape: (H, W) of the original image.
        valid_grid: (gh_valid, gw_valid): the part of the grid that covers the image (the rest is padding).
    """

    per_layer: "torch.Tensor"
    layers: list[int]
    image_shape: tuple[int, int]
    valid_grid: tuple[int, int]

    def fused(self, weights: Sequence[float] | None = None, layers: Sequence[int] | None = None) -> "torch.Tensor":
        """(E, gh, gw) weighted mean of the selected layers' features, L2-normalised."""
        import torch

        idx = list(range(len(self.layers))) if layers is None else [self.layers.index(layer) for layer in layers]
        w = torch.ones(len(idx)) if weights is None else torch.as_tensor(list(weights), dtype=torch.float32)
        w = w / w.sum()
        fused = torch.einsum("l,lehw->ehw", w.to(self.per_layer), self.per_layer[idx])  # (E, gh, gw)
        return torch.nn.functional.normalize(fused, dim=0)

    def similarity(self, text: "torch.Tensor", size: tuple[int, int] | None = None,
                   weights: Sequence[float] | None = None, layers: Sequence[int] | None = None) -> "torch.Tensor":
        """Cosine similarity maps between the fused features and text embeddings.

        Args:
            text: (T, E) L2-normalised text embeddings.
            size: output (h, w); default: the image's (H, W). Bilinear upsampling of the valid grid.

        Returns:
            (T, h, w) float32 cosine similarities in [-1, 1].
        """
        import torch

        feats = self.fused(weights, layers)[:, : self.valid_grid[0], : self.valid_grid[1]]  # (E, gh, gw)
        sim = torch.einsum("te,ehw->thw", text.to(feats), feats)  # (T, gh, gw)
        h, w = size if size is not None else self.image_shape
        return torch.nn.functional.interpolate(sim[None], size=(h, w), mode="bilinear", align_corners=False)[0]


class DenseCLIP:
    """An ``open_clip`` CLIP model used densely.

    Args:
        model: an ``open_clip.CLIP`` whose ``visual`` is an open_clip ``VisionTransformer``.
        tokenizer: the matching open_clip tokenizer.
        mean, std: per-channel normalisation of the model's pretrained entry (RGB, [0, 1] scale).
        extract_layers: 1-indexed blocks to read; each must be <= the model's depth.
        dense_path: ``"maskclip"``, ``"tokens"``, ``"sclip"`` or ``"clearclip"`` (module docstring).
        templates: template set name or list of templates (:func:`get_templates`).
        image_size: window size in pixels (the model's native input size).
        window_stride: window step as a fraction of ``image_size``.
        max_windows_per_side: bound on the resized long side, in windows.
        device: torch device string.
    """

    def __init__(self, model: Any, tokenizer: Any, mean: Sequence[float], std: Sequence[float],
                 extract_layers: Sequence[int], dense_path: str = "maskclip", templates: str | Sequence[str] = "imagenet80",
                 image_size: int | None = None, window_stride: float = 2 / 3, sliding_window: bool = True,
                 max_windows_per_side: int = 4, layer_weights: Sequence[float] | None = None,
                 device: str = "cpu"):
        import torch

        visual = model.visual
        if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
            raise InputError("dense features need an open_clip VisionTransformer image tower",
                             type(visual).__name__, "use a ViT-based open_clip model (e.g. ViT-L-14-336)")
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.device = device
        self.depth = len(visual.transformer.resblocks)
        bad = [layer for layer in extract_layers if not 1 <= layer <= self.depth]
        if bad:
            raise InputError(f"clip.extract_layers must be block numbers in [1, {self.depth}] for this model",
                             list(extract_layers), f"choose layers <= {self.depth}")
        self.extract_layers = list(extract_layers)
        self.layer_weights = None if layer_weights is None else list(layer_weights)
        self.dense_path = dense_path
        self.templates = get_templates(templates)
        self.patch = int(visual.patch_size[0] if isinstance(visual.patch_size, tuple) else visual.patch_size)
        native = visual.image_size[0] if isinstance(visual.image_size, tuple) else visual.image_size
        self.image_size = int(image_size or native)
        if self.image_size != native:
            raise InputError("clip.image_size must equal the model's native input size", self.image_size,
                             f"set clip.image_size: {native}")
        self.sliding_window = sliding_window
        self.stride = max(self.patch, round(window_stride * self.image_size / self.patch) * self.patch)
        self.max_windows_per_side = max_windows_per_side
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.context_length = int(getattr(model, "context_length", 77))
        self._text_cache: dict[tuple[str, ...], torch.Tensor] = {}

    def with_settings(self, extract_layers: Sequence[int] | None = None, dense_path: str | None = None,
                      layer_weights: Sequence[float] | None = None) -> "DenseCLIP":
        """A DenseCLIP on the same model, tokenizer, preprocessing, templates and windows that reads other blocks
        (``extract_layers``, 1-indexed; default: this one's) through another path (``dense_path``; default: this
        one's), fused with ``layer_weights`` (None = equal). The weights are shared, not copied: a layer ablation or
        a training-free baseline on a loaded CLIP costs no second load.

        Raises:
            InputError: a layer outside ``[1, depth]`` (the message names the model's depth).
        """
        return DenseCLIP(self.model, self.tokenizer, self.mean.flatten().tolist(), self.std.flatten().tolist(),
                         extract_layers=list(self.extract_layers if extract_layers is None else extract_layers),
                         dense_path=self.dense_path if dense_path is None else dense_path, templates=self.templates,
                         image_size=self.image_size, window_stride=self.stride / self.image_size,
                         sliding_window=self.sliding_window, max_windows_per_side=self.max_windows_per_side,
                         layer_weights=layer_weights, device=self.device)

    # ---- text ------------------------------------------------------------------------------
    def _warn_truncation(self, texts: list[str]) -> None:
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:
            return
        for t in texts:
            n = len(encode(t)) + 2  # + start / end tokens
            if n > self.context_length:
                warnings.warn(f"prompt is {n} tokens, longer than the text encoder's context of "
                              f"{self.context_length}; it is truncated: {t[:60]!r}...", OvsegWarning, stacklevel=3)

    def encode_text(self, prompts: str | Sequence[str], templates: Sequence[str] | None = None) -> "torch.Tensor":
        """Ensembled text embeddings.

        Returns:
            (T, E) float32, L2-normalised; row t is the renormalised mean over templates of the
            normalised embedding of ``template.format(prompts[t])``. Cached per prompt tuple.
        """
        import torch

        prompts = check_prompts(prompts)
        templates = list(templates) if templates is not None else self.templates
        key = tuple(prompts) + ("\x00",) + tuple(templates)
        if key in self._text_cache:
            return self._text_cache[key]
        texts = [t.format(p) for p in prompts for t in templates]
        self._warn_truncation(texts)
        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)  # (T*K, ctx)
            emb = self.model.encode_text(tokens).float()  # (T*K, E)
            emb = torch.nn.functional.normalize(emb, dim=-1).view(len(prompts), len(templates), -1)
            emb = torch.nn.functional.normalize(emb.mean(dim=1), dim=-1).cpu()  # (T, E)
        self._text_cache[key] = emb
        return emb

    # ---- image -----------------------------------------------------------------------------
    def _layout(self, h: int, w: int) -> tuple[int, int, int, int]:
        """Resized (rh, rw) and padded (ph, pw) sizes, multiples of the patch size."""
        s = self.image_size
        if not self.sliding_window:
            return s, s, s, s
        scale = s / min(h, w)
        cap = s * self.max_windows_per_side
        if max(h, w) * scale > cap:
            scale = cap / max(h, w)
        rh = max(self.patch, round(h * scale / self.patch) * self.patch)
        rw = max(self.patch, round(w * scale / self.patch) * self.patch)
        return rh, rw, max(rh, s), max(rw, s)

    @staticmethod
    def _starts(length: int, window: int, stride: int) -> list[int]:
        if length <= window:
            return [0]
        starts = list(range(0, length - window + 1, stride))
        if starts[-1] != length - window:
            starts.append(length - window)
        return starts

    def _embed(self, x: "torch.Tensor") -> "torch.Tensor":
        """(B, 3, S, S) normalised pixels -> (B, 1 + g*g, D) tokens entering block 1."""
        import torch

        v = self.model.visual
        x = v.conv1(x)  # (B, D, g, g)
        x = x.flatten(2).transpose(1, 2)  # (B, g*g, D)
        cls = v.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (B, 1 + g*g, D)
        return v.ln_pre(x)

    @staticmethod
    def _custom_block(block: Any, x: "torch.Tensor", path: str) -> "torch.Tensor":
        """Block output with a training-free dense attention; x: (B, N, D) tokens entering the block.

        * ``maskclip``: value path ``out_proj(v)`` (each token attends only to itself), no residual, no FFN.
        * ``sclip``: SCLIP's correlative self-attention ``softmax(q q^T) + softmax(k k^T)`` applied to v,
          with the residual, no FFN.
        * ``clearclip``: ClearCLIP's ``softmax(q q^T)`` self-self attention, no residual, no FFN.
        """
        import torch

        attn = block.attn
        if not isinstance(attn, torch.nn.MultiheadAttention):
            raise InputError(f"the {path} dense path needs nn.MultiheadAttention blocks", type(attn).__name__,
                             "set clip.dense_path: tokens for this model")
        y = block.ln_1(x)
        b, n, d = y.shape
        qkv = torch.nn.functional.linear(y, attn.in_proj_weight, attn.in_proj_bias)  # (B, N, 3D)
        q, k, v = qkv.split(d, dim=-1)
        if path == "maskclip":
            out = v  # (B, N, D)
        else:
            h = attn.num_heads
            scale = (d // h) ** -0.5

            def heads(t: "torch.Tensor") -> "torch.Tensor":
                return t.view(b, n, h, d // h).transpose(1, 2)  # (B, h, N, d/h)

            qh, kh, vh = heads(q), heads(k), heads(v)
            weights = torch.softmax(qh @ qh.transpose(-1, -2) * scale, dim=-1)  # (B, h, N, N)
            if path == "sclip":
                weights = weights + torch.softmax(kh @ kh.transpose(-1, -2) * scale, dim=-1)
            out = (weights @ vh).transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        out = block.ls_1(attn.out_proj(out))
        return x + out if path == "sclip" else out

    def _window_features(self, x: "torch.Tensor") -> "torch.Tensor":
        """(B, 3, S, S) -> (L, B, E, g, g) L2-normalised per-layer patch features."""
        import torch

        v = self.model.visual
        batch_first = getattr(v.transformer, "batch_first", True)
        tokens = self._embed(x)  # (B, 1 + g*g, D)
        if not batch_first:
            tokens = tokens.transpose(0, 1)
        wanted = set(self.extract_layers)
        out: dict[int, torch.Tensor] = {}
        for i, block in enumerate(v.transformer.resblocks[: max(wanted)], start=1):
            if i in wanted and self.dense_path != "tokens":
                seq = tokens if batch_first else tokens.transpose(0, 1)
                out[i] = self._custom_block(block, seq, self.dense_path)  # (B, 1 + g*g, D)
            tokens = block(tokens)
            if i in wanted and self.dense_path == "tokens":
                out[i] = tokens if batch_first else tokens.transpose(0, 1)
        g = self.image_size // self.patch
        feats = []
        for layer in self.extract_layers:
            t = v.ln_post(out[layer][:, 1:])  # (B, g*g, D), class token dropped
            if v.proj is not None:
                t = t @ v.proj  # (B, g*g, E)
            t = torch.nn.functional.normalize(t.float(), dim=-1)
            feats.append(t.transpose(1, 2).reshape(t.shape[0], -1, g, g))  # (B, E, g, g)
        return torch.stack(feats)  # (L, B, E, g, g)

    def dense_features(self, image: np.ndarray, batch_size: int = 8) -> DenseFeatures:
        """Dense features of an HWC uint8 RGB image (see module docstring for the recipe)."""
        import torch

        h, w = image.shape[:2]
        rh, rw, ph, pw = self._layout(h, w)
        # (1, 3, H, W) in [0, 1]; from a copy, since the input may be a read-only array
        x = torch.as_tensor(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(rh, rw), mode="bicubic", align_corners=False, antialias=True)
        x = ((x.clamp(0, 1) - self.mean) / self.std)
        x = torch.nn.functional.pad(x, (0, pw - rw, 0, ph - rh))  # zero = mean colour after normalisation
        s, p = self.image_size, self.patch
        boxes = [(y, x0) for y in self._starts(ph, s, self.stride) for x0 in self._starts(pw, s, self.stride)]
        gh, gw, g = ph // p, pw // p, s // p
        acc: torch.Tensor | None = None
        count = torch.zeros(1, 1, gh, gw)
        dtype = next(self.model.parameters()).dtype
        with torch.inference_mode():
            for k in range(0, len(boxes), batch_size):
                chunk = boxes[k:k + batch_size]
                win = torch.stack([x[0, :, y:y + s, x0:x0 + s] for y, x0 in chunk])  # (B, 3, S, S)
                f = self._window_features(win.to(self.device, dtype)).cpu()  # (L, B, E, g, g)
                if acc is None:
                    acc = torch.zeros(f.shape[0], f.shape[2], gh, gw)
                for b, (y, x0) in enumerate(chunk):
                    acc[:, :, y // p:y // p + g, x0 // p:x0 // p + g] += f[:, b]
                    count[:, :, y // p:y // p + g, x0 // p:x0 // p + g] += 1
        assert acc is not None  # at least one window always exists
        feats = torch.nn.functional.normalize(acc / count, dim=1)  # (L, E, gh, gw)
        return DenseFeatures(feats, list(self.extract_layers), (h, w), (math.ceil(rh / p), math.ceil(rw / p)))

    def global_image_embedding(self, image: np.ndarray) -> "torch.Tensor":
        """(E,) L2-normalised CLIP image embedding of the whole image (resized to image_size)."""
        import torch

        x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
        x = torch.nn.functional.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                                            align_corners=False, antialias=True)
        x = (x.clamp(0, 1) - self.mean) / self.std
        with torch.inference_mode():
            emb = self.model.encode_image(x.to(self.device, next(self.model.parameters()).dtype)).float()
        return torch.nn.functional.normalize(emb, dim=-1)[0].cpu()
