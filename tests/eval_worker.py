"""Subprocess entry for the evaluation tests: ``python tests/eval_worker.py DATA_ROOT OUT_DIR [METHOD]``.

Builds the tiny random-weight pipeline of tests/test_pipeline.py (tests only) and runs
``ovseg.evaluate.run_evaluation`` on a folder dataset; honours torchrun-style RANK / WORLD_SIZE.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

torch.set_num_threads(1)

from test_pipeline import tiny_components, tiny_config  # noqa: E402

from ovseg.datasets import load_dataset  # noqa: E402
from ovseg.evaluate import EvalProtocol, run_evaluation  # noqa: E402
from ovseg.pipeline import OpenVocabSegmentationPipeline  # noqa: E402


def main() -> None:
    root, out = sys.argv[1], sys.argv[2]
    method = sys.argv[3] if len(sys.argv) > 3 else "ovseg"
    cfg = tiny_config()
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    run_evaluation(load_dataset("folder", root), pipe, EvalProtocol(method=method, background_names=["background"]),
                   out, progress=False)


if __name__ == "__main__":
    main()
