"""Small stand-ins for the heavy models, shared by the tests.

Every function builds its object from scratch (random weights, fixed seed) so that tests run
offline, on CPU, in seconds. Each function is self-contained: add new ones in their own section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# ---- SAM 2 (ovseg.masks) ------------------------------------------------------------------

def tiny_sam2_model(image_size: int = 128, seed: int = 0, *, config: str | Path = "configs/sam2.1/sam2.1_hiera_t.yaml",
                    checkpoint: str | Path | None = None) -> Any:
    """A randomly initialised, tiny SAM 2 (``SAM2Base``) built through sam2's real config system.

    Starts from ``config`` (sam2's ``configs/sam2.1/sam2.1_hiera_t.yaml``, or a local copy of it)
    and shrinks it with hydra overrides via :func:`ovseg.masks.build_sam2_model`: a 4-stage Hiera
    with 1, 1, 2, 1 blocks (global attention in the third stage's second block) and 16/32/64/128
    channels, a 32-channel FPN neck (= SAM decoder width), a 1-layer memory attention and a
    16-channel memory encoder: about 0.9 M parameters, ~0.1 s per 128 px image encode on CPU.
    ``image_size`` must be a multiple of 32 (the deepest Hiera stage has stride 32).

    Random init gives mask logits of magnitude < 1, so every stability score is 0; the output
    layers of the mask hypernetworks are multiplied by 20 so that stability scores spread over
    [0, 0.8] and ``mask_threshold`` > 0 yields localized masks, as with trained weights.
    With ``checkpoint`` the weights come from that file instead (no scaling). Same ``seed`` ->
    identical weights. CPU, eval mode.
    """
    import torch

    from ovseg.masks import build_sam2_model

    if image_size % 32:
        raise ValueError(f"tiny_sam2_model: image_size must be a multiple of 32, got {image_size}")
    feat = image_size // 16  # side of the stride-16 feature map (RoPE grid of the memory attention)
    d, mem = 32, 16  # hidden (neck / SAM decoder) width, memory width
    trunk = "++model.image_encoder.trunk"
    mattn = "++model.memory_attention"
    menc = "++model.memory_encoder"
    overrides = [
        f"++model.image_size={image_size}",
        f"{trunk}.embed_dim=16",
        f"{trunk}.num_heads=1",
        # Hiera: a global-attention block must not be a stage's first (q-pooling) block.
        f"{trunk}.stages=[1,1,2,1]",
        f"{trunk}.global_att_blocks=[3]",
        f"{trunk}.window_spec=[4,4,2,1]",
        f"{trunk}.window_pos_embed_bkg_spatial_size=[4,4]",
        f"++model.image_encoder.neck.d_model={d}",
        f"++model.image_encoder.neck.position_encoding.num_pos_feats={d}",
        "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
        f"{mattn}.d_model={d}",
        f"{mattn}.num_layers=1",
        f"{mattn}.layer.d_model={d}",
        f"{mattn}.layer.dim_feedforward={2 * d}",
        f"{mattn}.layer.self_attention.embedding_dim={d}",
        f"{mattn}.layer.self_attention.feat_sizes=[{feat},{feat}]",
        f"{mattn}.layer.cross_attention.embedding_dim={d}",
        f"{mattn}.layer.cross_attention.feat_sizes=[{feat},{feat}]",
        f"{mattn}.layer.cross_attention.kv_in_dim={mem}",
        f"{menc}.out_dim={mem}",
        f"{menc}.in_dim={d}",
        f"{menc}.position_encoding.num_pos_feats={mem}",
        f"{menc}.mask_downsampler.embed_dim={d}",
        f"{menc}.fuser.layer.dim={d}",
        f"{menc}.fuser.num_layers=1",
        "++model.num_maskmem=2",
    ]
    torch.manual_seed(seed)
    model = build_sam2_model(str(config), checkpoint=checkpoint, device="cpu", overrides=overrides)
    if checkpoint is None:
        with torch.no_grad():
            for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
                mlp.layers[-1].weight.mul_(20.0)
    return model


# ---- Stable Diffusion inpainting (ovseg.inpaint) ----------------------------------------

#: Token ids of the tiny CLIP tokenizer's special tokens (pad = eos, as in CLIP).
TINY_CLIP_BOS_ID = 0
TINY_CLIP_EOS_ID = 1


def tiny_clip_tokenizer(tmp_dir):
    """A CLIP BPE tokenizer built offline: byte-level characters, no merges.

    Writes ``vocab.json`` and ``merges.txt`` into ``tmp_dir`` and loads them with
    ``transformers.CLIPTokenizer``. The vocabulary holds ``<|startoftext|>`` (0), ``<|endoftext|>``
    (1, also pad and unk), the 256 byte-level symbols and each symbol + ``"</w>"`` (end of word):
    514 tokens, so any prompt tokenizes (one token per byte, the last byte of a word with
    ``</w>``). ``model_max_length`` is 77, CLIP's context length.
    """
    import json
    from pathlib import Path

    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": TINY_CLIP_BOS_ID, "<|endoftext|>": TINY_CLIP_EOS_ID}
    symbols = sorted(ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        for sym in symbols:
            vocab[sym + suffix] = len(vocab)
    (tmp_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tmp_dir / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(str(tmp_dir), model_max_length=77)


def get_dummy_inpaint_components(sample_size: int = 16):
    """diffusers-style tiny components of a ``StableDiffusionInpaintPipeline`` (seeded, CPU, fp32).

    UNet: 9 input channels (4 latent + 1 mask + 4 masked-image latent), blocks (32, 64), one layer
    per block, cross-attention dim 32, ``sample_size`` latent pixels. VAE: blocks (32, 64), i.e.
    ``vae_scale_factor`` 2, so the pipeline's native resolution is ``2 * sample_size`` px (32 px by
    default). Text encoder: CLIP, hidden 32, 2 layers, 4 heads, vocabulary of
    :func:`tiny_clip_tokenizer`. Scheduler: DDIM. No safety checker / feature extractor.

    Returns:
        dict of keyword arguments for ``StableDiffusionInpaintPipeline(**components)``.
    """
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=sample_size,
        in_channels=9,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        sample_size=2 * sample_size,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_clip_tokenizer(tmp)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=TINY_CLIP_BOS_ID,
            eos_token_id=TINY_CLIP_EOS_ID,
            pad_token_id=TINY_CLIP_EOS_ID,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=tokenizer.model_max_length,
        )
    )
    return {
        "unet": unet,
        "scheduler": scheduler,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "safety_checker": None,
        "feature_extractor": None,
    }
