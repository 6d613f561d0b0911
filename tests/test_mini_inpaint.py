"""The mini inpainting model's text encoder: a CLIPTextModel converted from the mini CLIP's text tower."""

import torch

from ovseg.mini_clip import build_mini_clip, build_tokenizer
from ovseg.mini_inpaint import text_encoder_from_mini_clip

ARCH = {"embed_dim": 32,
        "vision": {"image_size": 64, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16, "mlp_ratio": 2.0},
        "text": {"width": 32, "heads": 2, "layers": 2}}


def _open_clip_hidden(model, ids):
    """open_clip's text transformer output (before pooling / projection): (N, ctx, D)."""
    x = model.token_embedding(ids) + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    return model.ln_final(x)


def test_converted_text_encoder_reproduces_the_mini_clip(tmp_path):
    torch.manual_seed(0)
    tok = build_tokenizer(context_length=16)
    model = build_mini_clip(ARCH, tok.vocab_size, 16, seed=0).eval()
    hf, hf_tok = text_encoder_from_mini_clip(model, tok, tmp_path / "tok")
    prompts = ["a red star.", "a photo of a blue cross in the scene.", "a zebra-striped thing"]  # last: unknown word
    mini_ids = tok(prompts)  # (3, 16): start, tokens, end, zero padding
    enc = hf_tok(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref = _open_clip_hidden(model, mini_ids)
        out = hf(enc.input_ids).last_hidden_state
    for row in range(len(prompts)):
        n = int((mini_ids[row] != 0).sum())  # up to and including the end token (causal: padding never leaks back)
        torch.testing.assert_close(out[row, :n], ref[row, :n], atol=1e-5, rtol=1e-5)
    assert hf_tok.model_max_length == 16 and hf.config.eos_token_id == hf_tok.eos_token_id
