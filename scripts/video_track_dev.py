"""Choose the text-prompted tracking settings on the mini-world video **dev** clips (issue #21).

Run: ``python scripts/video_track_dev.py [--clips 6] [--model data/models/mini-sam2-video] [--only K:refresh ...]``

Each setting (keyframe interval K, refresh on / off, the IoU above which a detection is a tracked object, the
fraction of a detection inside a track that makes it a part of that track) runs
:func:`ovseg.experiments.video.compare_tracking` on the
first ``--clips`` dev clips (every visible class of a clip is a prompt) and prints J&F, late objects found and id
switches with their 95% bootstrap intervals, and the seconds per frame of the whole text-prompted segmentation. The
JSON lands in ``build/video_track_dev.json`` (merged over runs, so settings can run in separate processes).

Criterion, fixed before the run: the default is the setting of highest dev J&F among those that keep a 48-frame
clip within the issue's 20 s (seconds per frame <= 0.4); among settings whose J&F intervals overlap the best one's,
the one with the larger late-found rate, then the larger K (cheaper). The test split is not read here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GRID = ("8:on", "4:on", "4:off", "2:on", "4:on:0.3:1.0", "4:on:0.1")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=6, help="dev clips (default 6)")
    ap.add_argument("--model", default=None, help="video SAM 2 folder (default: the registry's, via the pipeline)")
    ap.add_argument("--only", nargs="*", default=list(GRID),
                    help=f"settings K:on|off[:IoU threshold[:part threshold[:reid|noreid]]] (default {' '.join(GRID)})")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "build" / "video_track_dev.json"))
    args = ap.parse_args()

    import torch

    from ovseg.config import get_balanced_config
    from ovseg.experiments.video import TrackSetting, compare_tracking, tracking_rows
    from ovseg.io import write_json_atomic
    from ovseg.pipeline import OpenVocabSegmentationPipeline
    from ovseg.video import build_sam2_video_predictor_from

    torch.set_num_threads(args.threads)
    pipe = OpenVocabSegmentationPipeline(config=get_balanced_config(profile="mini"))
    predictor = build_sam2_video_predictor_from(args.model) if args.model else None
    out = Path(args.out)
    done = json.loads(out.read_text()) if out.is_file() else {}
    for spec in args.only:
        k, refresh, *rest = spec.split(":")
        setting = TrackSetting(int(k), refresh != "off", float(rest[0]) if rest else 0.3,  # the grid's base IoU
                               float(rest[1]) if len(rest) > 1 else 0.5, len(rest) > 2 and rest[2] == "reid")
        summary = compare_tracking(pipe, [setting], args.clips, predictor=predictor)[0]
        summary.pop("per_clip", None)
        done[f"{setting.label} | {args.clips} clips | {args.model or 'registry'}"] = summary
        write_json_atomic(out, done)
        print(json.dumps(tracking_rows([summary])[0]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
