"""The mini CLIP: a small ``open_clip.CLIP`` for the mini world, its trimmed tokenizer, save and load.

The model is open_clip's own :class:`open_clip.CLIP` (a ``VisionTransformer`` image tower and a
text ``Transformer``) built from a small config, so :class:`ovseg.features.DenseCLIP` reads it
unchanged. Two departures, both invisible to DenseCLIP:

* ``visual.conv1`` may be a small convolutional stem (3x3 convolutions with stride-2 steps that end
  in ``width`` channels at the patch stride; "early convolutions" give the inductive bias for
  shape). It still maps (B, 3, S, S) to (B, width, S / patch, S / patch).
* The token embedding is trimmed to the few CLIP BPE tokens the mini vocabulary uses. A remap
  table (stored in ``config.json``) maps CLIP BPE ids to the model's ids; any other token becomes
  ``<unk>``. Id 0 is padding and the end-of-text token has the highest id, as open_clip's
  ``argmax`` text pooling expects.

Files: ``folder/model.safetensors`` (weights, fp16 by default) and ``folder/config.json``
(architecture, stem, tokenizer remap, preprocessing and the inference settings ``extract_layers``,
``dense_path`` and ``templates``). Loading reads safetensors only (no pickle).

torch and open_clip are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputError

__all__ = ["MINI_WORDS", "DEFAULT_TEMPLATES", "MiniTokenizer", "build_tokenizer", "default_arch",
           "build_mini_clip", "save_mini_clip", "load_mini_clip", "FORMAT_VERSION"]

FORMAT_VERSION = 1

#: The prompt templates the mini CLIP's text side is trained with (and DenseCLIP uses at inference).
DEFAULT_TEMPLATES: list[str] = ["a {}.", "a photo of a {}.", "there is a {} in the scene."]

#: Words (and punctuation) of the mini vocabulary: the world's colours and shapes, the templates,
#: captions and referring prompts, and a few common prompt words. Everything else is ``<unk>``.
MINI_WORDS: tuple[str, ...] = (
    # colours and shapes of ovseg.world
    "red", "green", "blue", "yellow", "purple", "orange", "white", "black",
    "circle", "square", "triangle", "star", "ring", "cross",
    # plurals and generic nouns
    "circles", "squares", "triangles", "stars", "rings", "crosses", "shape", "shapes", "thing", "things",
    "object", "objects", "background", "scene", "image", "photo", "picture",
    # template / caption / referring words
    "a", "an", "the", "of", "there", "is", "are", "in", "on", "and", "with", "this", "that", "empty",
    "left", "right", "top", "bottom", "middle", "center", "small", "large", "big",
    ",", ".", "!",
)

PAD, UNK = "<pad>", "<unk>"
SOT, EOT = "<start_of_text>", "<end_of_text>"


class MiniTokenizer:
    """open_clip's ``SimpleTokenizer`` BPE with ids remapped onto a trimmed vocabulary.

    ``tokenizer(texts)`` -> (N, context_length) LongTensor, like open_clip's tokenizers (start,
    tokens, end, zero padding; too long prompts are truncated and keep their end token).
    ``encode(text)`` -> the remapped ids without start / end tokens.

    Args:
        clip_ids: CLIP BPE id of each model id (index = model id); -1 for the model's own ``<pad>``
            (id 0) and ``<unk>`` (id 1). The start / end tokens are the last two entries.
        context_length: sequence length of the text tower.
    """

    def __init__(self, clip_ids: Sequence[int], context_length: int = 32):
        from open_clip.tokenizer import SimpleTokenizer

        self._bpe = SimpleTokenizer(context_length=context_length)
        self.clip_ids = [int(i) for i in clip_ids]
        if len(self.clip_ids) < 4 or self.clip_ids[0] != -1 or self.clip_ids[1] != -1:
            raise InputError("mini tokenizer remap must start with <pad>, <unk> (-1, -1)", self.clip_ids[:4],
                             "rebuild it with ovseg.mini_clip.build_tokenizer")
        if self.clip_ids[-2:] != [self._bpe.sot_token_id, self._bpe.eot_token_id]:
            raise InputError("mini tokenizer remap must end with the start and end tokens", self.clip_ids[-2:],
                             "rebuild it with ovseg.mini_clip.build_tokenizer")
        self.context_length = int(context_length)
        self.vocab_size = len(self.clip_ids)
        self.pad_id, self.unk_id = 0, 1
        self.sot_id, self.eot_id = self.vocab_size - 2, self.vocab_size - 1
        self._to_model = {c: m for m, c in enumerate(self.clip_ids) if c >= 0}

    def encode(self, text: str) -> list[int]:
        """Model ids of ``text`` (lower-cased, CLIP BPE), without start / end tokens."""
        return [self._to_model.get(i, self.unk_id) for i in self._bpe.encode(text)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of model ids (``<unk>`` for unknown words; padding dropped)."""
        words = []
        for i in ids:
            i = int(i)
            if i == self.pad_id:
                continue
            if i == self.unk_id:
                words.append(UNK + " ")
            elif i == self.sot_id:
                words.append(SOT + " ")
            elif i == self.eot_id:
                words.append(EOT + " ")
            else:
                words.append(self._bpe.decoder[self.clip_ids[i]].replace("</w>", " "))
        return "".join(words).strip()

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None):
        import torch

        if isinstance(texts, str):
            texts = [texts]
        ctx = int(context_length or self.context_length)
        out = torch.zeros(len(texts), ctx, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_id, *self.encode(text)][: ctx - 1] + [self.eot_id]
            out[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def to_config(self) -> dict[str, Any]:
        return {"type": "clip_bpe_remap", "context_length": self.context_length, "clip_ids": list(self.clip_ids)}


def build_tokenizer(words: Sequence[str] = MINI_WORDS, context_length: int = 32) -> MiniTokenizer:
    """The trimmed tokenizer over the BPE tokens of ``words`` (sorted CLIP ids, then start / end)."""
    from open_clip.tokenizer import SimpleTokenizer

    bpe = SimpleTokenizer()
    ids = sorted({i for w in words for i in bpe.encode(w)})
    return MiniTokenizer([-1, -1, *ids, bpe.sot_token_id, bpe.eot_token_id], context_length)


def default_arch() -> dict[str, Any]:
    """The mini CLIP architecture (see the model card for the trained one)."""
    return {
        "embed_dim": 128,
        "vision": {"image_size": 128, "patch_size": 8, "width": 128, "layers": 6, "head_width": 32,
                   "mlp_ratio": 4.0},
        # convolutional stem replacing the patchify conv1: channel widths of the 3x3 convs; each
        # "stride" entry is 1 or 2 and their product must equal patch_size.
        "stem": {"channels": [32, 32, 64, 64, 128, 128], "strides": [2, 1, 2, 1, 2, 1], "norm": "group"},
        "text": {"width": 128, "heads": 4, "layers": 3},
    }


def _conv_stem(stem: dict[str, Any], width: int):
    """nn.Sequential: [3x3 conv (stride s) -> GroupNorm -> GELU] per stage, then a 1x1 conv to ``width``."""
    from torch import nn

    layers: list[nn.Module] = []
    c_in = 3
    for c, s in zip(stem["channels"], stem["strides"]):
        layers.append(nn.Conv2d(c_in, c, 3, stride=s, padding=1, bias=stem.get("norm") != "group"))
        if stem.get("norm") == "group":
            layers.append(nn.GroupNorm(min(8, c), c))
        layers.append(nn.GELU())
        c_in = c
    layers.append(nn.Conv2d(c_in, width, 1))
    return nn.Sequential(*layers)


def build_mini_clip(arch: dict[str, Any], vocab_size: int, context_length: int, seed: int | None = None):
    """A randomly initialised ``open_clip.CLIP`` of ``arch`` (:func:`default_arch`)."""
    import math

    import open_clip
    import torch
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    if seed is not None:
        torch.manual_seed(seed)
    v, t = arch["vision"], arch["text"]
    model = open_clip.CLIP(
        embed_dim=int(arch["embed_dim"]),
        vision_cfg=CLIPVisionCfg(layers=int(v["layers"]), width=int(v["width"]), head_width=int(v["head_width"]),
                                 mlp_ratio=float(v["mlp_ratio"]), patch_size=int(v["patch_size"]),
                                 image_size=int(v["image_size"])),
        text_cfg=CLIPTextCfg(context_length=int(context_length), vocab_size=int(vocab_size), width=int(t["width"]),
                             heads=int(t["heads"]), layers=int(t["layers"])),
    )
    stem = arch.get("stem")
    if stem:
        if math.prod(int(s) for s in stem["strides"]) != int(v["patch_size"]):
            raise InputError("the conv stem's strides must multiply to the patch size", stem["strides"],
                             f"use strides whose product is {v['patch_size']}")
        model.visual.conv1 = _conv_stem(stem, int(v["width"]))
    model.mini_arch = arch
    return model


def save_mini_clip(model: Any, tokenizer: MiniTokenizer, folder: str | Path, extra: dict[str, Any] | None = None,
                   arch: dict[str, Any] | None = None, dtype: str = "float16") -> Path:
    """Write ``folder/model.safetensors`` and ``folder/config.json`` (atomically; weights first).

    Args:
        model: the mini ``open_clip.CLIP``; its architecture is ``arch`` or ``model.mini_arch``.
        extra: more config keys; the inference settings ``extract_layers``, ``dense_path``,
            ``templates``, ``mean``, ``std`` default to the mini profile's when absent.
        dtype: ``"float16"`` (default, half the size) or ``"float32"`` for the stored weights.
    """
    import torch
    from safetensors.torch import save as st_save

    from .io import write_atomic, write_json_atomic

    arch = arch or getattr(model, "mini_arch", None)
    if arch is None:
        raise InputError("save_mini_clip needs the architecture dict", "model has no mini_arch",
                         "pass arch=... or build the model with ovseg.mini_clip.build_mini_clip")
    folder = Path(folder)
    tdtype = {"float16": torch.float16, "float32": torch.float32}[dtype]
    tensors = {k: v.detach().to("cpu", tdtype if v.is_floating_point() else v.dtype).contiguous()
               for k, v in model.state_dict().items()}
    depth = int(arch["vision"]["layers"])
    cfg: dict[str, Any] = {
        "format": "ovseg-mini-clip", "format_version": FORMAT_VERSION, "architecture": arch,
        "tokenizer": tokenizer.to_config(), "vocab_size": tokenizer.vocab_size,
        "context_length": tokenizer.context_length, "image_size": int(arch["vision"]["image_size"]),
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "extract_layers": [depth - 1, depth], "dense_path": "tokens", "templates": list(DEFAULT_TEMPLATES),
        "background_prompt": "background", "weights_dtype": dtype,
    }
    cfg.update(extra or {})
    data = st_save(tensors, metadata={"format": "ovseg-mini-clip"})
    write_atomic(folder / "model.safetensors", lambda fh: fh.write(data))
    write_json_atomic(folder / "config.json", cfg)
    return folder


def load_mini_clip(folder: str | Path, device: str = "cpu"):
    """Load a folder written by :func:`save_mini_clip`.

    Returns:
        (model, tokenizer, config): the ``open_clip.CLIP`` in eval mode, float32, on ``device``; the
        :class:`MiniTokenizer`; the ``config.json`` dict (``extract_layers``, ``dense_path``,
        ``templates``, ``mean``, ``std``, ``image_size``, ...).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path, w_path = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise InputError("a mini CLIP folder must contain config.json and model.safetensors", str(p),
                             "train it with `python -m ovseg.train.mini_clip` or restore data/models/mini-clip")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != "ovseg-mini-clip":
        raise InputError("config.json is not a mini CLIP config", cfg.get("format"), "point at data/models/mini-clip")
    tcfg = cfg["tokenizer"]
    tok = MiniTokenizer(tcfg["clip_ids"], int(tcfg["context_length"]))
    model = build_mini_clip(cfg["architecture"], tok.vocab_size, tok.context_length)
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(w_path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != "attn_mask"]
    if missing or unexpected:
        raise InputError("mini CLIP weights must match its config", f"missing {missing[:5]}, unexpected {unexpected[:5]}",
                         "re-export the model with save_mini_clip")
    model.mini_arch = cfg["architecture"]
    return model.to(device).eval(), tok, cfg
