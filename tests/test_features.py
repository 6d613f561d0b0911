import numpy as np
import pytest
import torch

from conftest import tiny_dense_clip
from ovseg.errors import InputError
from ovseg.features import check_prompts, get_templates


def _normalised_input(dc, img):
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    return (x - dc.mean) / dc.std


def test_tokens_path_matches_open_clip_intermediates():
    dc = tiny_dense_clip(dense_path="tokens")
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    x = _normalised_input(dc, img)
    ours = dc._window_features(x)  # (L, 1, E, g, g)
    ref = dc.model.visual.forward_intermediates(x, indices=[0, 1, 2, 3], normalize_intermediates=True,
                                                intermediates_only=True, output_fmt="NLC")["image_intermediates"]
    for i, tokens in enumerate(ref):
        r = torch.nn.functional.normalize(tokens @ dc.model.visual.proj, dim=-1)  # (1, g*g, E)
        np.testing.assert_allclose(ours[i, 0].flatten(1).T.detach(), r[0].detach(), atol=1e-5)


def _last_block_inputs(path: str, seed: int):
    """A tiny DenseCLIP reading block 4 through ``path``, a normalised input, and the tokens entering block 4."""
    dc = tiny_dense_clip(dense_path=path, extract_layers=[4])
    x = _normalised_input(dc, np.random.default_rng(seed).integers(0, 255, (64, 64, 3), np.uint8))
    with torch.no_grad():
        tokens = dc._embed(x)
        for blk in dc.model.visual.transformer.resblocks[:3]:
            tokens = blk(tokens)
    return dc, x, tokens, dc.model.visual.transformer.resblocks[3]


def test_maskclip_value_path_equals_self_only_attention():
    """The value path is attention where every token attends only to itself."""
    dc, x, tokens, last = _last_block_inputs("maskclip", 1)
    v = dc.model.visual
    with torch.no_grad():
        n = tokens.shape[1]
        eye_only = torch.full((n, n), float("-inf"))
        eye_only.fill_diagonal_(0)
        y = last.ln_1(tokens)
        attn = last.attn(y, y, y, need_weights=False, attn_mask=eye_only)[0]
        ref = torch.nn.functional.normalize(v.ln_post(last.ls_1(attn))[:, 1:] @ v.proj, dim=-1)
        ours = dc._window_features(x)[0, 0].flatten(1).T
    np.testing.assert_allclose(ours, ref[0], atol=1e-5)


def test_dense_features_shapes_and_sliding_window():
    dc = tiny_dense_clip()
    small = np.random.default_rng(2).integers(0, 255, (64, 64, 3), np.uint8)
    f = dc.dense_features(small)
    assert f.per_layer.shape == (4, 32, 8, 8) and f.valid_grid == (8, 8)
    assert torch.allclose(f.per_layer.norm(dim=1), torch.ones(4, 8, 8), atol=1e-5)
    wide = np.random.default_rng(3).integers(0, 255, (64, 160, 3), np.uint8)
    fw = dc.dense_features(wide)
    assert fw.per_layer.shape[2:] == (8, 20)  # 64 x 160 px at patch 8
    sim = fw.similarity(dc.encode_text(["red circle", "blue square"]))
    assert sim.shape == (2, 64, 160) and sim.dtype == torch.float32
    assert float(sim.abs().max()) <= 1.0 + 1e-5
    # the left window of the wide image sees exactly the left 64 px: same features there
    left = dc.dense_features(np.ascontiguousarray(wide[:, :64]))
    assert torch.allclose(fw.per_layer[:, :, :, :2], left.per_layer[:, :, :, :2], atol=1e-4)


def test_deterministic():
    img = np.random.default_rng(4).integers(0, 255, (80, 96, 3), np.uint8)
    a = tiny_dense_clip(seed=0).dense_features(img).per_layer
    b = tiny_dense_clip(seed=0).dense_features(img).per_layer
    assert torch.equal(a, b)


def test_text_ensembling_and_prompt_rules():
    dc = tiny_dense_clip(templates="imagenet7")
    e = dc.encode_text(["red circle", "blue square"])
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    bare = dc.encode_text(["red circle"], templates=["{}"])
    assert not torch.allclose(bare[0], e[0])
    assert len(get_templates("imagenet80")) == 80 and len(get_templates("imagenet7")) == 7
    with pytest.raises(InputError, match="not empty or whitespace"):
        check_prompts("   ")
    with pytest.warns(UserWarning, match="truncated"):
        dc.encode_text(["word " * 100])


def test_layer_bounds_checked():
    with pytest.raises(InputError, match=r"block numbers in \[1, 4\]"):
        tiny_dense_clip(extract_layers=[6, 12])


def test_custom_template_list():
    dc = tiny_dense_clip(templates=["a {}.", "the {} in a scene"])
    e = dc.encode_text(["red circle"])
    manual = dc.encode_text(["red circle"], templates=["a {}.", "the {} in a scene"])
    assert dc.templates == ["a {}.", "the {} in a scene"] and torch.equal(e, manual)


@pytest.mark.parametrize("path", ["sclip", "clearclip"])
def test_training_free_baseline_attention(path):
    """ClearCLIP: q-q attention, no residual/FFN; SCLIP: (q-q + k-k) attention with residual."""
    dc, x, tokens, last = _last_block_inputs(path, 5)
    v = dc.model.visual
    with torch.no_grad():
        y = last.ln_1(tokens)
        d, h = last.attn.embed_dim, last.attn.num_heads
        q, k, val = torch.nn.functional.linear(y, last.attn.in_proj_weight, last.attn.in_proj_bias).split(d, -1)

        def split(t):
            return t.view(1, -1, h, d // h).transpose(1, 2)

        out = torch.nn.functional.scaled_dot_product_attention(split(q), split(q), split(val))
        if path == "sclip":
            out = out + torch.nn.functional.scaled_dot_product_attention(split(k), split(k), split(val))
        out = last.attn.out_proj(out.transpose(1, 2).reshape(1, -1, d))
        if path == "sclip":
            out = tokens + out
        ref = torch.nn.functional.normalize(v.ln_post(out)[:, 1:] @ v.proj, dim=-1)
        ours = dc._window_features(x)[0, 0].flatten(1).T
    np.testing.assert_allclose(ours, ref[0], atol=1e-5)
