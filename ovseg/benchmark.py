"""Timing tools (``ovseg benchmark``, ``benchmarks/``). They measure speed, never quality.

* :func:`align_benchmark`: 3.2.3 alignment of 200 masks x 4 layers x 10 prompts at 336 x 336
  against a per-mask Python loop doing the same maths and against one bare float32 product
  (200 x 336*336) @ (336*336 x 10), the cost of touching every pixel of every mask once.
* :func:`stage_benchmark`: per-stage wall time of the pipeline (model load, masks, features,
  alignment, inpainting). With ``random_init=True`` it builds the *full-size* thesis models
  (SAM 2.1 Hiera-L, CLIP ViT-L-14-336, an SD-2-sized inpainting UNet) with random weights:
  a timing tool only: its masks, scores and images are meaningless and are not saved.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["align_benchmark", "stage_benchmark", "random_full_components"]


def _median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def synthetic_masks(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size) bool random ellipses of varied size (a stand-in for SAM 2 output)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = rng.uniform(0, size, (2, n, 1, 1))
    ry, rx = rng.uniform(size * 0.03, size * 0.4, (2, n, 1, 1))
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def align_benchmark(n_masks: int = 200, n_layers: int = 4, n_prompts: int = 10, size: int = 336, embed_dim: int = 768,
                    patch: int = 14, repeats: int = 7, loop_repeats: int = 2, seed: int = 0) -> dict[str, Any]:
    """Median milliseconds of ovseg's alignment, the per-mask loop and the bare matmul."""
    import torch

    from .align import score_masks, score_masks_loop
    from .config import AlignmentConfig
    from .features import DenseFeatures
    from .utils import MaskSet

    torch.manual_seed(seed)
    g = size // patch
    feats = DenseFeatures(torch.nn.functional.normalize(torch.randn(n_layers, embed_dim, g, g), dim=1),
                          list(range(1, n_layers + 1)), (size, size), (g, g))
    text = torch.nn.functional.normalize(torch.randn(n_prompts, embed_dim), dim=1)
    masks = MaskSet.from_masks(synthetic_masks(n_masks, size, seed), source="synthetic")
    a = AlignmentConfig()
    shape = (size, size)
    # Masks are computed once per image and their pixel weights cached (MaskSet.score_weights);
    # alignment is what runs for every new prompt / alpha: fusion, similarity, scoring.
    weights = masks.score_weights(shape, a.boundary_width, a.boundary_min_weight)

    def ours():
        return score_masks(weights, feats.similarity(text, size=shape), a.background_weight)

    def loop():
        return score_masks_loop(weights, feats.similarity(text, size=shape), a.background_weight)

    dense = torch.rand(n_masks, size * size)
    # The bare product in both memory layouts of the right-hand side; the faster one is the
    # baseline (BLAS prefers the column-major (P, T) operand, i.e. a transposed (T, P) tensor).
    rhs_row = torch.rand(size * size, n_prompts)
    rhs_col = torch.rand(n_prompts, size * size).T
    res_ours, res_loop = ours(), loop()
    matmul_row = _median_ms(lambda: dense @ rhs_row, repeats)
    matmul_col = _median_ms(lambda: dense @ rhs_col, repeats)
    return {
        "align_ms": _median_ms(ours, repeats),
        "loop_ms": _median_ms(loop, loop_repeats, warmup=0),
        "matmul_ms": min(matmul_row, matmul_col),
        "matmul_row_major_ms": matmul_row,
        "matmul_col_major_ms": matmul_col,
        "max_abs_diff": float(np.abs(res_ours.final - res_loop.final).max()),
        "n_masks": n_masks, "n_layers": n_layers, "n_prompts": n_prompts, "size": size,
        "threads": torch.get_num_threads(),
    }


def random_full_components(device: str = "cpu", tmp_dir: str | None = None) -> dict[str, Any]:
    """Full-size thesis architectures with RANDOM weights (timing only)."""
    import tempfile

    import open_clip
    import torch

    from .masks import build_sam2_model
    from .tokenizer import clip_tokenizer

    torch.manual_seed(0)
    sam = build_sam2_model("configs/sam2.1/sam2.1_hiera_l.yaml", None, device)
    clip = open_clip.create_model("ViT-L-14-336", pretrained=None, device=device, force_quick_gelu=True)
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    # Stable Diffusion 2 inpainting's published architecture (865M-parameter UNet, 9 input channels).
    unet = UNet2DConditionModel(sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
                                attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
                                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
                        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                                        num_hidden_layers=23, projection_dim=512, hidden_act="gelu", vocab_size=49408,
                                        max_position_embeddings=77))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                          clip_sample=False, set_alpha_to_one=False)
    tok = clip_tokenizer(tmp_dir or tempfile.mkdtemp(prefix="ovseg-tok-"))
    pipe = StableDiffusionInpaintPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return {"sam2": sam, "clip": clip, "inpaint": pipe.to(device)}


def stage_benchmark(image: Any = None, prompt: str = "red circle", profile: str = "mini", config: Any = "balanced",
                    device: str = "cpu", random_init: bool = False, steps: int | None = None,
                    points_per_side: int | None = None) -> dict[str, Any]:
    """Per-stage seconds for one image through the whole pipeline (first call, then a new prompt)."""
    import torch

    from .config import load_config
    from .errors import WeightsError
    from .features import DenseCLIP
    from .inpaint import Inpainter
    from .io import load_image
    from .masks import MaskGenerator
    from .paths import SAMPLES_DIR
    from .pipeline import OpenVocabSegmentationPipeline
    from .weights import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    cfg = load_config(config, profile="full" if random_init else profile)
    if steps is not None:
        cfg = cfg.replace(**{"inpainting.num_inference_steps": steps})
    if points_per_side is not None:
        cfg = cfg.replace(**{"sam2.points_per_side": points_per_side})
    if image is None:
        samples = sorted(SAMPLES_DIR.glob("*.png"))
        image = samples[0] if samples else np.full((512, 512, 3), 127, np.uint8)
    arr = load_image(image)
    timings: dict[str, float] = {}
    if random_init:
        start = time.perf_counter()
        comp = random_full_components(device)
        timings["load_models(random)"] = time.perf_counter() - start
        import open_clip

        pipe = OpenVocabSegmentationPipeline(
            cfg, device=device,
            mask_generator=MaskGenerator(comp["sam2"], cfg.sam2),
            clip=DenseCLIP(comp["clip"], open_clip.get_tokenizer("ViT-L-14-336"), OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
                           cfg.clip.extract_layers, cfg.clip.dense_path, cfg.clip.templates, cfg.clip.image_size,
                           cfg.clip.window_stride, cfg.clip.sliding_window, cfg.clip.max_windows_per_side,
                           cfg.clip.layer_weights, device),
            inpainter=Inpainter(comp["inpaint"], cfg.inpainting))
        # Random weights rarely pass the thesis thresholds; keep every mask so later stages have work.
        pipe.config.alignment.similarity_threshold = -1.0
        pipe.mask_generator.update_config(cfg.replace(**{"sam2.pred_iou_thresh": 0.0,
                                                          "sam2.stability_score_thresh": 0.0}).sam2)
    else:
        pipe = OpenVocabSegmentationPipeline(cfg, device=device)
    with torch.inference_mode():
        result = pipe.segment(arr, prompt)
        timings.update({k: v for k, v in pipe.timings.items()})
        start = time.perf_counter()
        # cached masks + features: text + alignment only ("the ..." is a new prompt in the mini vocabulary too)
        pipe.segment(arr, "the " + prompt)
        timings["new_prompt(cached)"] = time.perf_counter() - start
        if result.segmentation_masks:
            best = result.segmentation_masks[0].mask
            key, op = "inpainting", "replace"
            try:
                inpainter = pipe.inpainter
                timings["load_inpainting"] = pipe.timings.get("load_inpainting", 0.0)
            except WeightsError:  # no diffusion model for this profile yet: time the classical remove instead
                inpainter = Inpainter(None, cfg.replace(**{"inpainting.method": "classical"}).inpainting)
                key, op = "inpainting(classical)", "remove"
            start = time.perf_counter()
            inpainter.edit(arr, best, op, edit_prompt="a blue square" if op == "replace" else None, seed=0)
            timings[key] = time.perf_counter() - start
    return {"timings_s": timings, "profile": cfg.profile, "random_init": random_init, "device": device,
            "image_size": list(arr.shape[:2]), "num_masks": result.num_candidates,
            "steps": cfg.inpainting.num_inference_steps, "points_per_side": cfg.sam2.points_per_side,
            "note": "RANDOM WEIGHTS: timing only, results meaningless" if random_init else ""}


def mini_throughput_benchmark(n_images: int = 20, config: Any = "balanced") -> dict[str, Any]:
    """Issue #3 targets on the mini profile: model load seconds (SAM 2 + CLIP, weights checked) and
    per-image seconds of ``segment`` end to end on the shipped evaluation scenes (after one warm-up image).

    Call it in a fresh process for an honest load time (torch's first-use costs are included).
    """
    import torch

    from .datasets import load_dataset
    from .pipeline import OpenVocabSegmentationPipeline

    dataset = load_dataset("mini")
    start = time.perf_counter()
    pipe = OpenVocabSegmentationPipeline(config)
    pipe.mask_generator, pipe.clip  # noqa: B018 - load both now
    load_s = time.perf_counter() - start
    per_image = []
    with torch.inference_mode():
        for i in range(n_images + 1):
            sample = dataset[i]
            names = [dataset.class_names[c] for c in np.unique(sample.label) if 0 < c < 255] or ["red circle"]
            t0 = time.perf_counter()
            pipe.segment(sample.image, names[0], top_k=1)
            if i:  # the first image warms up the kernels
                per_image.append(time.perf_counter() - t0)
    return {"load_s": round(load_s, 3), "per_image_median_s": round(float(np.median(per_image)), 3),
            "per_image_max_s": round(float(np.max(per_image)), 3), "n_images": n_images,
            "image_size": list(sample.image.shape[:2]), "config": pipe.config.name, "threads": torch.get_num_threads()}


def explorer_benchmark(image: Any = None, prompt: str = "red circle", repeats: int = 9) -> dict[str, Any]:
    """Milliseconds of one explorer slider change (re-filter + re-score, no model run), mini profile."""
    from .explorer import Explorer
    from .paths import SAMPLES_DIR
    from .pipeline import OpenVocabSegmentationPipeline

    ex = Explorer(OpenVocabSegmentationPipeline())
    start = time.perf_counter()
    ex.set_image(image if image is not None else SAMPLES_DIR / "world_1.png")
    first_s = time.perf_counter() - start
    ex.score(prompt)  # text embedding cached, as after the first keystroke
    settings = iter(np.linspace(0.3, 0.8, repeats + 1).tolist() * 2)

    def slider_change():
        t = next(settings)
        return ex.score(prompt, masks=ex.filter(t, 0.5), alpha=0.3, top_k=5)

    return {"set_image_s": round(first_s, 3), "rescore_ms": _median_ms(slider_change, repeats, warmup=1),
            "pool_masks": len(ex.pool)}
