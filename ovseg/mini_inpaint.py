"""The mini inpainting model (issue #4), part 1: its text encoder, converted from the mini CLIP.

A diffusers ``StableDiffusionInpaintPipeline`` needs a ``transformers.CLIPTextModel`` and a
``CLIPTokenizer``. The mini profile reuses the mini CLIP's text tower (open_clip's text
``Transformer``) by converting its weights into a ``CLIPTextModel`` of the same shape, and builds
the tokenizer offline from open_clip's bundled BPE vocabulary (:mod:`ovseg.tokenizer`).

The mini CLIP trimmed its token embedding to the ids its vocabulary uses (``MiniTokenizer``); the
converted model has the full 49,408-row CLIP embedding again so that the standard tokenizer works:
rows of ids in the mini vocabulary get their trained embedding, every other row the ``<unk>``
embedding (an unknown word reads as unknown, as in the mini CLIP). Start, end and padding map to
the mini CLIP's start and end embeddings (HF's CLIP tokenizer pads with the end token).
For prompts inside the mini vocabulary the converted encoder reproduces the mini CLIP's text
hidden states exactly (tested).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["text_encoder_from_mini_clip"]


def text_encoder_from_mini_clip(model: Any, tokenizer: Any, tokenizer_dir: str | Path) -> tuple[Any, Any]:
    """(``CLIPTextModel``, ``CLIPTokenizer``) equivalent to a mini CLIP's text tower.

    Args:
        model: the mini ``open_clip.CLIP`` (:func:`ovseg.mini_clip.load_mini_clip`).
        tokenizer: its :class:`~ovseg.mini_clip.MiniTokenizer`.
        tokenizer_dir: folder for the tokenizer's ``vocab.json`` / ``merges.txt`` (written if absent).
    """
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tokenizer import clip_tokenizer

    # 1. the HF model of the same shape; the full CLIP vocabulary, the mini context length
    blocks = model.transformer.resblocks
    width = model.token_embedding.weight.shape[1]
    hf_tok = clip_tokenizer(tokenizer_dir, model_max_length=tokenizer.context_length)
    cfg = CLIPTextConfig(vocab_size=len(hf_tok), hidden_size=width, intermediate_size=blocks[0].mlp.c_fc.out_features,
                         num_hidden_layers=len(blocks), num_attention_heads=blocks[0].attn.num_heads,
                         max_position_embeddings=tokenizer.context_length, hidden_act="gelu", layer_norm_eps=1e-5,
                         bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
                         pad_token_id=hf_tok.pad_token_id, projection_dim=width)
    hf = CLIPTextModel(cfg).eval()
    # 2. weights: embeddings (re-expanded vocabulary), blocks, final norm
    # transformers 4 prefixes the keys with "text_model.", transformers 5 does not
    tm = "text_model." if any(k.startswith("text_model.") for k in hf.state_dict()) else ""
    src = model.token_embedding.weight.detach()  # (V_mini, D)
    table = src[tokenizer.unk_id].repeat(len(hf_tok), 1)  # (49408, D): unknown by default
    for mini_id, clip_id in enumerate(tokenizer.clip_ids):
        if clip_id >= 0:
            table[clip_id] = src[mini_id]
    sd: dict[str, torch.Tensor] = {
        tm + "embeddings.token_embedding.weight": table,
        tm + "embeddings.position_embedding.weight": model.positional_embedding.detach(),
        tm + "final_layer_norm.weight": model.ln_final.weight.detach(),
        tm + "final_layer_norm.bias": model.ln_final.bias.detach(),
    }
    for i, blk in enumerate(blocks):
        p = f"{tm}encoder.layers.{i}."
        q, k, v = blk.attn.in_proj_weight.detach().chunk(3)
        qb, kb, vb = blk.attn.in_proj_bias.detach().chunk(3)
        sd.update({
            p + "self_attn.q_proj.weight": q, p + "self_attn.q_proj.bias": qb,
            p + "self_attn.k_proj.weight": k, p + "self_attn.k_proj.bias": kb,
            p + "self_attn.v_proj.weight": v, p + "self_attn.v_proj.bias": vb,
            p + "self_attn.out_proj.weight": blk.attn.out_proj.weight.detach(),
            p + "self_attn.out_proj.bias": blk.attn.out_proj.bias.detach(),
            p + "layer_norm1.weight": blk.ln_1.weight.detach(), p + "layer_norm1.bias": blk.ln_1.bias.detach(),
            p + "layer_norm2.weight": blk.ln_2.weight.detach(), p + "layer_norm2.bias": blk.ln_2.bias.detach(),
            p + "mlp.fc1.weight": blk.mlp.c_fc.weight.detach(), p + "mlp.fc1.bias": blk.mlp.c_fc.bias.detach(),
            p + "mlp.fc2.weight": blk.mlp.c_proj.weight.detach(), p + "mlp.fc2.bias": blk.mlp.c_proj.bias.detach(),
        })
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:  # an open_clip / transformers layout change: fail loudly, never half-convert
        raise RuntimeError(f"mini CLIP -> CLIPTextModel conversion incomplete: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")
    return hf, hf_tok
