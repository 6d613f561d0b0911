"""Shared fixtures. Random-weight models live only here and in tests/dummies.py."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
# tests never write the committed test-set access log (data/mini_world/TEST_LOG.jsonl, ovseg.testlog)
os.environ.setdefault("OVSEG_TEST_LOG", os.path.join(__import__("tempfile").mkdtemp(prefix="ovseg-testlog-"),
                                                     "TEST_LOG.jsonl"))
os.environ.setdefault("MPLBACKEND", "Agg")


def tiny_open_clip(seed: int = 0, image_size: int = 64, patch: int = 8, layers: int = 4, width: int = 32,
                   embed_dim: int = 32):
    """A randomly initialised ``open_clip.CLIP`` (ViT tower), with the real tokenizer."""
    import open_clip
    import torch
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = open_clip.CLIP(
        embed_dim=embed_dim,
        vision_cfg=CLIPVisionCfg(layers=layers, width=width, head_width=16, patch_size=patch, image_size=image_size),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=width, heads=2, layers=2),
    ).eval()
    return model, open_clip.get_tokenizer("ViT-B-32")


def tiny_dense_clip(seed: int = 0, **kwargs):
    from ovseg.features import DenseCLIP
    from ovseg.weights import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    model, tok = tiny_open_clip(seed)
    opts = dict(extract_layers=[1, 2, 3, 4], dense_path="maskclip", templates="imagenet7")
    opts.update(kwargs)
    return DenseCLIP(model, tok, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, **opts)


@pytest.fixture
def one_thread():
    """Run a test with one torch thread (the trainers' setting), restoring the previous count."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def scene() -> np.ndarray:
    """(96, 128, 3) uint8: grey background, a red disc on the left, a blue square on the right."""
    img = np.full((96, 128, 3), 200, np.uint8)
    yy, xx = np.mgrid[0:96, 0:128]
    img[(yy - 48) ** 2 + (xx - 32) ** 2 <= 20**2] = (220, 40, 40)
    img[28:68, 76:116] = (40, 80, 220)
    return img
