"""Evaluation runner: protocol, durable store, SIGKILL + resume, 2-process gloo, tables."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ovseg.errors import ConfigError, InputError
from ovseg.evaluate import EvalProtocol, load_protocol, run_evaluation, table_rows, write_tables

WORKER = Path(__file__).with_name("eval_worker.py")


def make_folder(root: Path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.txt").write_text("background\nred circle\nblue square\n")
    for i in range(n):
        img = np.full((64, 80, 3), 200, np.uint8)
        lab = np.zeros((64, 80), np.uint8)
        y, x = rng.integers(5, 30, 2)
        img[y:y + 20, x:x + 20] = (220, 40, 40)
        lab[y:y + 20, x:x + 20] = 1
        img[40:60, 50:75] = (40, 80, 220)
        lab[40:60, 50:75] = 2
        lab[0, :] = 255
        Image.fromarray(img).save(root / "images" / f"im{i:02d}.png")
        Image.fromarray(lab).save(root / "labels" / f"im{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data") / "ds")


def _run(root, out, method="ovseg", env=None, wait=True):
    cmd = [sys.executable, str(WORKER), str(root), str(out), method]
    e = dict(os.environ, **(env or {}))
    if wait:
        return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _metrics(out):
    m = json.loads((Path(out) / "metrics.json").read_text())
    return {k: m[k] for k in ("mIoU", "pixel_accuracy", "per_class_iou", "precision", "recall", "f1", "n_images")}


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    r = _run(folder, out)
    assert r.returncode == 0, r.stderr
    return out


def test_single_run_writes_metrics_protocol_and_tables(reference):
    m = json.loads((reference / "metrics.json").read_text())
    for key in ("mIoU", "per_class_iou", "pixel_accuracy", "precision", "recall", "f1", "n_images", "protocol_hash"):
        assert key in m
    assert m["n_images"] == 6 and set(m["per_class_iou"]) == {"background", "red circle", "blue square"}
    assert (reference / "protocol.yaml").read_text().startswith("dataset:")
    lines = (reference / "results.rank0.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["stem"] for line in lines)
    assert {p.name for p in reference.iterdir()} >= {"table.csv", "table.md", "table.tex"}


def test_sigkill_midway_then_resume_equals_uninterrupted(folder, reference, tmp_path):
    out = tmp_path / "killed"
    proc = _run(folder, out, wait=False)
    store = out / "results.rank0.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline:
        if store.exists() and len(store.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(store.read_text().splitlines())
    assert 2 <= n_before < 6 and not (out / "metrics.json").exists()
    with open(store, "a") as fh:  # simulate a line cut mid-write by the kill
        fh.write('{"stem": "im0')
    r = _run(folder, out)
    assert r.returncode == 0, r.stderr
    assert len(store.read_text().splitlines()) == 6  # nothing done twice, the cut line repaired
    assert _metrics(out) == _metrics(reference)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_equals_single_process(folder, reference, tmp_path):
    out = tmp_path / "dist"
    port = str(_free_port())
    procs = [_run(folder, out, wait=False, env={"RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}) for r in (0, 1)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert len((out / "results.rank0.jsonl").read_text().splitlines()) == 3
    assert len((out / "results.rank1.jsonl").read_text().splitlines()) == 3
    assert _metrics(out) == _metrics(reference)


def test_resume_refuses_a_different_protocol(folder, reference, tmp_path):
    import shutil

    from test_pipeline import tiny_components, tiny_config

    from ovseg.datasets import load_dataset
    from ovseg.pipeline import OpenVocabSegmentationPipeline

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    cfg = tiny_config()
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    with pytest.raises(InputError, match="same protocol to resume"):
        run_evaluation(load_dataset("folder", folder), pipe, EvalProtocol(method="maskclip"), out, progress=False)


def _folder_truth(root):
    """{image bytes: label (H, W) int64} of a make_folder dataset, read straight from its PNGs."""
    return {np.asarray(Image.open(p).convert("RGB")).tobytes(): np.asarray(Image.open(root / "labels" / p.name), np.int64)
            for p in sorted((root / "images").glob("*.png"))}


def _hand_metrics(pairs, n_classes=3, ignore=255):
    """Pixel accuracy and per-class IoU (None where a class is neither predicted nor present) of (pred, label)
    pairs, counted pixel by pixel with numpy."""
    right = valid = 0
    inter, union = np.zeros(n_classes), np.zeros(n_classes)
    for pred, lab in pairs:
        ok = lab != ignore
        right += (pred[ok] == lab[ok]).sum()
        valid += ok.sum()
        for c in range(n_classes):
            inter[c] += ((pred == c) & (lab == c) & ok).sum()
            union[c] += (((pred == c) | (lab == c)) & ok).sum()
    return right / valid, [inter[c] / union[c] if union[c] else None for c in range(n_classes)]


@pytest.mark.parametrize("method", ["dense", "maskclip", "sclip", "clearclip"])
def test_baselines_run_under_the_same_protocol(folder, tmp_path, method, monkeypatch):
    # each baseline's predictions (recorded as the runner makes them) scored by hand: the reported pixel accuracy
    # and IoUs must be those of what it predicted, against the labels read from the PNGs (row 0 ignored, 255)
    from test_pipeline import tiny_components, tiny_config

    import ovseg.evaluate as ev
    from ovseg.datasets import load_dataset
    from ovseg.pipeline import OpenVocabSegmentationPipeline

    truth, seen = _folder_truth(folder), []

    def spy(pipe, image, *args, **kw):
        pred = real(pipe, image, *args, **kw)
        seen.append((pred.copy(), truth[image.tobytes()]))
        return pred

    real = ev.predict_labels
    monkeypatch.setattr(ev, "predict_labels", spy)
    cfg = tiny_config()
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    res = run_evaluation(load_dataset("folder", folder), pipe, EvalProtocol(method=method, max_images=2,
                                                                             prob_threshold=0.5), tmp_path, progress=False)
    assert res["method"] == method and res["n_images"] == 2 and len(seen) == 2
    acc, ious = _hand_metrics(seen)
    assert res["pixel_accuracy"] == pytest.approx(acc, abs=1e-6)
    got = [res["per_class_iou"][n] for n in ("background", "red circle", "blue square")]
    assert got == [None if v is None else pytest.approx(v, abs=1e-6) for v in ious]


def test_runner_scores_constructed_predictions_with_hand_computed_values(folder, tmp_path, monkeypatch):
    # predictions whose scores are known by hand: the ground truth itself (ignored pixels predicted as background)
    # scores 1.0; all-background scores the background's share of the counted pixels: of 64 x 80 = 5120 px, row 0
    # (80 px) is ignored, the squares cover 20 x 20 + 20 x 25 = 900 px -> 4140 / 5040; IoU background 4140 / 5040,
    # the two squares 0 (present, never predicted)
    from test_pipeline import tiny_config

    import ovseg.evaluate as ev
    from ovseg.datasets import load_dataset

    truth = _folder_truth(folder)
    ds = load_dataset("folder", folder)
    pipe = SimpleNamespace(config=tiny_config())  # the stand-in predictions need no model
    runs = {"truth": lambda pipe, image, *a, **k: np.where(truth[image.tobytes()] == 255, 0, truth[image.tobytes()]),
            "background": lambda pipe, image, *a, **k: np.zeros(image.shape[:2], np.int64)}
    res = {}
    for name, predict in runs.items():
        monkeypatch.setattr(ev, "predict_labels", predict)
        res[name] = run_evaluation(ds, pipe, EvalProtocol(method="dense", max_images=3), tmp_path / name,
                                   progress=False)
    assert res["truth"]["pixel_accuracy"] == 1.0 and res["truth"]["mIoU"] == 1.0
    assert res["background"]["pixel_accuracy"] == pytest.approx(4140 / 5040, abs=1e-6)
    assert res["background"]["per_class_iou"] == {"background": pytest.approx(4140 / 5040, abs=1e-6),
                                                  "red circle": 0.0, "blue square": 0.0}
    assert res["background"]["mIoU"] == pytest.approx(4140 / 5040 / 3, abs=1e-6)


def test_protocol_yaml_and_tables(tmp_path):
    path = tmp_path / "eval.yaml"
    path.write_text("method: sclip\nprob_threshold: 0.3\npipeline:\n  clip: {templates: imagenet7}\n")
    protocol, cfg = load_protocol(path, profile="full")
    assert protocol.method == "sclip" and cfg.clip.templates == "imagenet7" and cfg.profile == "full"
    path.write_text("methd: sclip\n")
    with pytest.raises(ConfigError, match="unknown evaluation config key 'methd'"):
        load_protocol(path)
    with pytest.raises(ConfigError, match="protocol.method must be one of"):
        EvalProtocol(method="magic").validate()
    rows = table_rows([{"method": "ovseg", "profile": "mini", "dataset": "voc", "split": "val", "mIoU": 0.5,
                        "pixel_accuracy": 0.8, "mean_f1": 0.6, "n_images": 3, "protocol_hash": "abc",
                        "mIoU_novel": 0.25}])
    assert [r["split"] for r in rows if r["source"] == "measured"] == ["all", "novel"]
    assert any(r["method"].startswith("SCLIP") and r["mIoU"] == 59.1 for r in rows)
    paths = write_tables(rows, tmp_path, "t")
    assert "reported in the literature" in paths[1].read_text() and paths[2].read_text().startswith("\\begin{tabular}")


@pytest.mark.parametrize("name", ["voc", "coco-stuff", "ade20k"])
def test_runner_on_fake_trees_in_the_real_layouts(name, tmp_path):
    """The full-dataset path: real on-disk layouts (tiny fake trees), every class prompt, metrics and splits."""
    from test_datasets import _ade_tree, _coco_tree, _voc_tree
    from test_pipeline import tiny_components, tiny_config

    from ovseg.datasets import load_dataset
    from ovseg.pipeline import OpenVocabSegmentationPipeline

    root = {"voc": _voc_tree, "coco-stuff": _coco_tree, "ade20k": _ade_tree}[name](tmp_path / "data")
    ds = load_dataset(name, root)
    cfg = tiny_config()
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    res = run_evaluation(ds, pipe, EvalProtocol(method="maskclip"), tmp_path / "out", progress=False)
    assert res["dataset"] == name and res["n_images"] == len(ds)
    assert len(res["per_class_iou"]) == {"voc": 21, "coco-stuff": 171, "ade20k": 150}[name]
    if name == "coco-stuff":
        assert "mIoU_novel" in res and "mIoU_base" in res


def _referring_setup(tmp_path):
    from ovseg.datasets import load_dataset
    from ovseg.world import SceneConfig, write_dataset

    root = write_dataset(tmp_path / "mini", [11, 12, 13], SceneConfig(n_objects=(2, 3), split="all"))
    return load_dataset("mini", root)


class _GroundTruthPipe:
    """score(): one mask per ground-truth class (label == c), scored 1 for its own class name, 0 otherwise;
    ``swap`` ranks every class's mask last (the worst ranking)."""

    def __init__(self, dataset, swap=False, step=1):
        from ovseg.config import get_balanced_config

        self.dataset, self.swap, self.step = dataset, swap, step  # step 2: masks at half size (a working copy)
        self.config = get_balanced_config()

    def score(self, image, names):
        from ovseg.align import AlignmentScores
        from ovseg.utils import MaskSet

        sample = next(s for s in (self.dataset[i] for i in range(len(self.dataset))) if np.array_equal(s.image, image))
        cls = [self.dataset.class_names.index(n) for n in names]
        masks = np.stack([sample.label == c for c in cls])[:, ::self.step, ::self.step]  # (N, H/step, W/step), N = T
        n = len(cls)
        ms = MaskSet(masks, np.ones(n, np.float32), np.ones(n, np.float32), np.zeros((n, 4), np.int64),
                     masks.sum((1, 2)), np.zeros((n, 2), np.float32), np.zeros((n, 4), np.int64), source="ground-truth")
        final = np.eye(n, dtype=np.float32)
        if self.swap and n > 1:
            final = 1.0 - final
        return ms, AlignmentScores(final, np.zeros_like(final), final, 0.0)


def test_referring_evaluation_scores_top1_mask_iou(tmp_path):
    from ovseg.evaluate import referring_evaluation

    ds = _referring_setup(tmp_path)
    perfect = referring_evaluation(ds, _GroundTruthPipe(ds))
    assert perfect["mean_iou"] == 1.0 and perfect["hit_rate"] == 1.0 and perfect["n_images"] == 3
    n_prompts = sum(len({c for c in np.unique(ds[i].label) if c != 0}) for i in range(3))
    assert perfect["n_prompts"] == n_prompts
    worst = referring_evaluation(ds, _GroundTruthPipe(ds, swap=True))
    assert worst["mean_iou"] == 0.0  # another class's mask never overlaps this class's pixels
    assert set(worst["per_class"]) == set(perfect["per_class"])


def test_referring_masks_at_a_working_size_are_scored_at_the_label_size(tmp_path):
    """A pipeline whose masks are at half the image's size (a large image's working copy): each top-1 mask is
    enlarged to the label's size (nearest) before its IoU is taken; here the expected IoUs are computed by hand."""
    from ovseg.evaluate import referring_evaluation

    ds = _referring_setup(tmp_path)
    res = referring_evaluation(ds, _GroundTruthPipe(ds, step=2))
    ious = []
    for i in range(len(ds)):
        label = ds[i].label
        for c in (c for c in np.unique(label) if c != 0):
            gt = label == c
            back = np.repeat(np.repeat(gt[::2, ::2], 2, axis=0), 2, axis=1)[:gt.shape[0], :gt.shape[1]]
            ious.append((gt & back).sum() / (gt | back).sum())
    assert 0.5 < res["mean_iou"] < 1.0 and res["mean_iou"] == pytest.approx(np.mean(ious), abs=1e-4)


def test_protocol_names_the_mini_checkpoints_so_a_new_checkpoint_never_resumes_old_results():
    from ovseg.config import get_balanced_config
    from ovseg.evaluate import _weights_identity

    mini = _weights_identity(get_balanced_config())
    assert set(mini) == {"mini-sam2", "mini-clip"} and all(len(v) == 16 or v == "unpinned" for v in mini.values())
    assert _weights_identity(get_balanced_config(profile="full")) == {}  # named by the config's model ids
