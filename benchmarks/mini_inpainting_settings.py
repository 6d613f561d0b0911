"""How the mini profile's inpainting inference settings were chosen (run: python benchmarks/mini_inpainting_settings.py).

Edit success of the shipped mini inpainting model on a *development* edit set (world scenes at
``scene_offset=4_000_000``, disjoint from the reported set at 2_000_000) for a grid of guidance scale,
negative prompt, mask dilation / blur and the replace region (silhouette or bounding box). The mini text
encoder knows only the world's words, so the full profile's negative prompt ("blurry, distorted, ...") is a
string of unknown tokens to it; and the thesis's 5 px dilation / 8 px blur were chosen for 512 px images, the
mini model works at 128 px.
Prints one JSON line per setting. The grid's best by mean success is then scored again on a larger development
set (``--final-edits``; its first scenes are the grid's), next to the same setting at the thesis's guidance 7.5:
the thesis value is kept unless the grid's guidance beats it there. The winner is printed as "best".
"""

from __future__ import annotations

import argparse
import itertools
import json


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--edits", type=int, default=36)
    p.add_argument("--final-edits", type=int, default=90, help="development edits for the final comparison")
    args = p.parse_args()

    from ovseg import OpenVocabSegmentationPipeline, get_balanced_config
    from ovseg.config import InpaintingConfig
    from ovseg.edit_eval import build_edit_set, evaluate_edits

    cases = build_edit_set(args.edits, scene_offset=4_000_000)
    base = OpenVocabSegmentationPipeline(get_balanced_config())
    results = []
    keys = ("success_remove", "success_replace_base", "success_replace_novel", "success_style")

    def score(cfg, edit_cases):
        pipe = OpenVocabSegmentationPipeline(cfg, mask_generator=base.mask_generator, clip=base.clip)
        s = evaluate_edits(pipe, edit_cases, realism=False)
        return {k: s[k] for k in keys} | {"mean_success": round(sum(s[k] or 0.0 for k in keys) / len(keys), 4)}

    def config(row):
        return get_balanced_config().replace(**{"inpainting.guidance_scale": row["guidance"],
                                                "inpainting.negative_prompt": row["negative_prompt"],
                                                "inpainting.mask_dilation": row["dilation"], "inpainting.mask_blur": row["blur"],
                                                "inpainting.replace_region": row["replace_region"]})

    grid = itertools.product((3.0, 7.5), ("", InpaintingConfig().negative_prompt), ((5, 8.0), (3, 2.0)), ("mask", "box"))
    for guidance, negative, (dilation, blur), region in grid:
        row = {"guidance": guidance, "negative_prompt": negative, "dilation": dilation, "blur": blur, "replace_region": region}
        row |= score(config(row), cases)
        results.append(row)
        print(json.dumps(row), flush=True)
    winner = max(results, key=lambda r: r["mean_success"])  # first of equals, in grid order
    final_cases = build_edit_set(args.final_edits, scene_offset=4_000_000)
    final = []
    for guidance in (7.5, winner["guidance"]) if winner["guidance"] != 7.5 else (7.5,):
        again = {k: winner[k] for k in ("negative_prompt", "dilation", "blur", "replace_region")} | {"guidance": guidance}
        again |= score(config(again), final_cases)
        final.append(again)
        print("final:", json.dumps(again), flush=True)
    print("best:", json.dumps(max(final, key=lambda r: r["mean_success"])))  # ties: the thesis's 7.5 (listed first)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
