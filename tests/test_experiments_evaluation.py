"""Chapter 5 evaluation experiments: store keys, reuse, tables and figures from constructed results."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ovseg.evaluate import EvalProtocol
from ovseg.experiments import evaluation as E
from ovseg.metrics import metrics_from_confusion


def _result(cm, names, splits, method="ovseg", n=4):
    m = metrics_from_confusion(np.asarray(cm))
    return {"dataset": "toy", "split": "val", "method": method, "profile": "mini", "n_images": n, "protocol_hash": "abc",
            **m.to_dict(names, splits)}


NAMES = ["background", "red circle", "blue square", "red star"]
SPLITS = {"base": [1, 2], "novel": [3]}
# rows = ground truth, columns = prediction
CM = [[90, 0, 10, 0],   # background: 10 px predicted as blue square
      [0, 30, 0, 10],   # red circle: 30 right, 10 as red star
      [0, 0, 0, 0],     # blue square: absent from the ground truth (only predicted)
      [0, 0, 0, 0]]     # red star: absent from the ground truth (only predicted)


class ToyDataset:
    """The attributes of a SegDataset the experiments read; 4 images."""

    name, split, class_names, splits, root = "toy", "val", NAMES, SPLITS, Path("/nonexistent/toy")

    def __len__(self):
        return 4


@pytest.fixture
def toy_dataset():
    return ToyDataset()


def test_summary_rows_in_percent():
    rows = E.summary_rows({"ovseg": _result(CM, NAMES, SPLITS), "dense": _result(np.eye(4) * 5, NAMES, SPLITS, "dense")})
    r = rows[0]
    # IoU: background 90/100, red circle 30/40, blue square 0/10, red star 0/10 -> mean 0.4125
    assert r["mIoU"] == 41.2 or r["mIoU"] == 41.3
    assert r["mIoU_base"] == 37.5 and r["mIoU_novel"] == 0.0
    assert r["pixel_acc"] == pytest.approx(100 * 120 / 140, abs=0.05)
    # precision: bg 1, circle 1, square 0, star 0 -> 50; recall defined for bg (0.9), circle (0.75) -> 82.5
    assert r["precision"] == 50.0 and r["recall"] == 82.5
    assert r["method"] == E.METHOD_LABELS["ovseg"] and r["images"] == 4
    assert rows[1]["mIoU"] == 100.0
    lines = E.summary_lines(rows)
    assert "novel   0.0" in lines[0] and len(lines) == 2


def test_summary_lines_show_undefined_as_dash():
    r = _result(CM, NAMES, {"base": [1], "novel": []})
    assert r["mIoU_novel"] is None
    assert "novel     -" in E.summary_lines(E.summary_rows({"ovseg": r}))[0]


def test_per_class_rows_mark_classes_only_predicted(toy_dataset):
    res = {"ovseg": _result(CM, NAMES, SPLITS), "dense": _result(np.diag([5, 5, 0, 0]), NAMES, SPLITS, "dense")}
    rows = E.per_class_rows(res, toy_dataset)
    by = {r["class"]: r for r in rows}
    assert [r["class"] for r in rows] == ["blue square", "red circle", "red star", "background"]  # base, novel, rest
    assert by["red circle"]["IoU_ovseg"] == 75.0 and by["red circle"]["in_gt"] and by["red circle"]["split"] == "base"
    assert by["blue square"]["IoU_ovseg"] == 0.0 and not by["blue square"]["in_gt"]
    assert by["blue square"]["IoU_dense"] is None  # neither predicted nor present for dense
    assert by["background"]["split"] == "-"


def test_figures(toy_dataset):
    from matplotlib.figure import Figure

    res = {"ovseg": _result(CM, NAMES, SPLITS), "dense": _result(np.diag([5, 5, 0, 0]), NAMES, SPLITS, "dense")}
    fig = E.per_class_figure(res, toy_dataset)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["red circle"]  # only classes in the ground truth
    assert [round(p.get_height(), 3) for p in ax.patches] == [75.0]
    assert "2 classes only predicted" in ax.get_title()
    fig = E.method_figure(res)
    assert len(fig.axes[0].patches) == 6  # 2 methods x (all, base, novel)


def test_store_dir_keys_everything_that_changes_predictions(toy_dataset, monkeypatch):
    from ovseg.config import get_balanced_config, get_fast_config

    monkeypatch.setattr(E, "model_fingerprint", lambda cfg: "w1")
    cfg = get_balanced_config("mini")
    p = EvalProtocol(method="ovseg", max_images=2)
    a = E.store_dir("root", toy_dataset, p, cfg)
    assert a == E.store_dir("root", toy_dataset, dataclasses.replace(p), cfg)
    assert a.parent == Path("root") and a.name.startswith("toy-ovseg-2-")
    others = [E.store_dir("root", toy_dataset, dataclasses.replace(p, max_images=3), cfg),
              E.store_dir("root", toy_dataset, dataclasses.replace(p, method="dense"), cfg),
              E.store_dir("root", toy_dataset, dataclasses.replace(p, prob_threshold=0.2), cfg),
              E.store_dir("root", toy_dataset, p, get_fast_config("mini"))]
    monkeypatch.setattr(E, "model_fingerprint", lambda cfg: "w2")  # a new checkpoint
    others.append(E.store_dir("root", toy_dataset, p, cfg))
    assert len({a, *others}) == 6
    # more images requested than the dataset has -> named by what is evaluated
    assert E.store_dir("r", toy_dataset, dataclasses.replace(p, max_images=None), cfg).name.startswith("toy-ovseg-4-")


def test_model_fingerprint_tracks_the_weights():
    from ovseg.config import get_balanced_config

    mini = E.model_fingerprint(get_balanced_config("mini"))
    assert len(mini) == 12 and mini == E.model_fingerprint(get_balanced_config("mini"))
    full = get_balanced_config("full")
    assert E.model_fingerprint(full) != E.model_fingerprint(full.replace(**{"clip.pretrained": "laion2b_s32b_b82k"}))


def test_evaluate_methods_reuses_its_store(tmp_path):
    from test_evaluate import make_folder
    from test_pipeline import tiny_config

    from conftest import tiny_dense_clip
    from dummies import tiny_sam2_model
    from ovseg.datasets import load_dataset
    from ovseg.masks import MaskGenerator
    from ovseg.pipeline import OpenVocabSegmentationPipeline

    ds = load_dataset("folder", make_folder(tmp_path / "ds", n=3))
    cfg = tiny_config()
    pipe = OpenVocabSegmentationPipeline(cfg, mask_generator=MaskGenerator(tiny_sam2_model(128), cfg.sam2),
                                         clip=tiny_dense_clip())
    first = E.evaluate_methods(ds, pipe, ["ovseg", "sclip"], 2, tmp_path / "eval")
    stores = sorted((tmp_path / "eval").iterdir())
    assert [s.name.split("-")[:3] for s in stores] == [["folder", "ovseg", "2"], ["folder", "sclip", "2"]]
    assert all(r["n_images"] == 2 for r in first.values()) and first["sclip"]["method"] == "sclip"
    lines = {s: (s / "results.rank0.jsonl").read_text() for s in stores}
    assert all(len(t.splitlines()) == 2 for t in lines.values())

    class Boom:  # a rerun must not predict again: every image comes from the store
        def __getattr__(self, name):
            raise AssertionError("recomputed")

    pipe2 = OpenVocabSegmentationPipeline(cfg, mask_generator=Boom(), clip=Boom())
    again = E.evaluate_methods(ds, pipe2, ["ovseg", "sclip"], 2, tmp_path / "eval")
    assert again == first
    assert {s: (s / "results.rank0.jsonl").read_text() for s in stores} == lines
    rows = E.summary_rows(again)
    assert rows == E.summary_rows(first)


# The thesis's published mIoU (%), transcribed by hand from the seed README's "Evaluation Metrics" section
# (/work/shared/seeds/, not from ovseg.evaluate.REPORTED): PASCAL VOC 58.4, COCO-Stuff 35.9, ADE20K 33.2, and
# "zero-shot performance on COCO-Open": base classes 45.2, novel classes 32.4 (ovseg files those two under
# COCO-Stuff's base / novel split).
THESIS_README = {("voc", "all"): 58.4, ("coco-stuff", "all"): 35.9, ("ade20k", "all"): 33.2,
                 ("coco-stuff", "base"): 45.2, ("coco-stuff", "novel"): 32.4}


def test_benchmarks_report_missing_datasets(tmp_path):
    found, missing = E.benchmark_datasets(("voc", "mini"), roots={"voc": str(tmp_path / "no-voc")})
    assert list(found) == ["mini"] and len(found["mini"]) == 200
    assert "voc" in missing and "no-voc" in missing["voc"]


def test_benchmark_rows_carry_the_thesis_readme_numbers_and_hand_computed_measurements(tmp_path):
    # measured rows: hand-computed from a 2-class confusion [[3, 1], [0, 4]]: IoU 3/4 and 4/5, mean 77.5 %;
    # pixel accuracy 7/8 = 87.5 %
    names = ["background", "thing"]
    results = []
    for d in ("voc", "coco-stuff", "ade20k"):
        res = _result([[3, 1], [0, 4]], names, {}, n=3)
        res["dataset"] = d
        results.append(res)
    rows = E.benchmark_rows(results)
    measured = [r for r in rows if r["source"] == "measured"]
    assert [(r["dataset"], r["split"], r["mIoU"], r["pixel_acc"], r["images"]) for r in measured] == [
        (d, "all", 77.5, 87.5, 3) for d in ("voc", "coco-stuff", "ade20k")]
    assert rows[:3] == measured  # measured rows first
    thesis = {(r["dataset"], r["split"]): r["mIoU"] for r in rows if r["method"] == "thesis (reported)"}
    assert thesis == THESIS_README  # every published number, each in its own dataset / split row
    # ... in the written table too: the CSV's mIoU column of the thesis rows
    import csv

    from ovseg.evaluate import write_tables

    paths = write_tables(rows, tmp_path, "bench")
    assert paths[0].suffix == ".csv"
    with open(paths[0], newline="") as fh:
        table = list(csv.DictReader(fh))
    assert {(r["dataset"], r["split"]): float(r["mIoU"]) for r in table if r["method"] == "thesis (reported)"} \
        == THESIS_README
    # only the evaluated datasets' published rows: a VOC-only run shows the thesis's VOC number alone
    voc = E.benchmark_rows(results[:1])
    assert {(r["dataset"], r["split"]): r["mIoU"] for r in voc if r["method"] == "thesis (reported)"} == {
        ("voc", "all"): 58.4}
    assert all(r["dataset"] == "voc" for r in voc)


def test_summary_rows_carry_intervals_model_labels_and_say_when_a_difference_is_noise():
    from ovseg.config import get_balanced_config
    from ovseg.experiments import evaluation as E

    def iv(v, lo, hi):
        return {"value": v, "ci95": [lo, hi], "n": 200, "unit": "images"}

    r = {"mIoU": 0.793, "mIoU_base": 0.788, "mIoU_novel": 0.793, "mean_precision": 0.9, "mean_recall": 0.9,
         "mean_f1": 0.88, "pixel_accuracy": 0.978, "n_images": 200, "split": "test",
         "ci95": {"mIoU": iv(0.793, 0.757, 0.813), "mIoU_base": iv(0.788, 0.748, 0.81),
                  "mIoU_novel": iv(0.793, 0.754, 0.827), "novel_minus_base": iv(0.0056, -0.0317, 0.0517)}}
    rows = E.summary_rows({"ovseg": r, "maskclip": dict(r, ci95={**r["ci95"], "novel_minus_base": iv(-0.2, -0.3, -0.1)})},
                          get_balanced_config())
    assert rows[0]["mIoU_ci95"] == "[75.7, 81.3]" and rows[0]["diff_ci95"] == "[-3.2, 5.2]" and rows[0]["images"] == 200
    assert "not like-for-like" not in rows[0]["model"] and "not like-for-like" in rows[1]["model"]
    assert "inside the noise" in E.noise_sentence(rows[0])  # +0.6 [-3.2, 5.2] contains 0
    assert E.noise_sentence(rows[1]).endswith("novel lower")
    full = E.summary_rows({"maskclip": r}, get_balanced_config(profile="full"))[0]["model"]
    assert full == "ViT-L-14-336 openai"


def test_method_model_grid_rows_blocks_and_one_sam2_run_per_image(tmp_path):
    """The method x model table of issue #22 on the shipped mini CLIPs: which rows, which blocks each reads, the
    default CLIP's rows keep the base config (so they share evaluate_methods' stores), SAM 2 runs once per image
    for all ovseg rows, and the left-out ("dense", "last") row of the value-path CLIP is the MaskCLIP row."""
    import torch

    from ovseg.config import get_balanced_config
    from ovseg.datasets import load_dataset
    from ovseg.errors import InputError
    from ovseg.evaluate import _prompts, predict_labels

    base = get_balanced_config("mini")
    grid = E.method_model_grid(["mini-clip", "mini-clip-contrastive"])
    assert [e.key for e in grid] == [
        "mini-clip|ovseg|own", "mini-clip|ovseg|last", "mini-clip|dense|own", "mini-clip|dense|last",
        "mini-clip|maskclip|last", "mini-clip|sclip|last", "mini-clip|clearclip|last",
        "mini-clip-contrastive|ovseg|own", "mini-clip-contrastive|ovseg|last", "mini-clip-contrastive|dense|own",
        "mini-clip-contrastive|maskclip|last", "mini-clip-contrastive|sclip|last", "mini-clip-contrastive|clearclip|last"]
    by = {e.key: e for e in grid}
    assert by["mini-clip|ovseg|own"].pipe.config.to_dict() == base.to_dict()  # the stores of evaluate_methods
    blocks = {k: (e.pipe.clip.dense_path, e.pipe.clip.extract_layers) for k, e in by.items()}
    assert blocks["mini-clip|ovseg|own"] == ("tokens", [5, 6]) and blocks["mini-clip|ovseg|last"] == ("tokens", [6])
    assert blocks["mini-clip-contrastive|ovseg|own"] == ("maskclip", [2, 4, 6, 8])
    assert blocks["mini-clip-contrastive|ovseg|last"] == ("maskclip", [8])
    assert by["mini-clip-contrastive|ovseg|last"].pipe.config.clip.extract_layers == [8]  # the store key says so
    assert E.features_label(by["mini-clip-contrastive|ovseg|own"].pipe.clip, "ovseg") == \
        "value path, blocks 2+4+6+8 of 8 fused"
    assert E.features_label(by["mini-clip|sclip|last"].pipe.clip, "sclip") == "SCLIP attention, block 6 of 6"
    assert by["mini-clip|ovseg|own"].pipe.clip.model is by["mini-clip|ovseg|last"].pipe.clip.model  # shared weights

    ds = load_dataset("mini", split="dev")
    shared = grid[0].pipe.mask_generator
    calls = []
    real = shared._generator.generate
    shared._generator.generate = lambda image: calls.append(1) or real(image)
    ovseg_rows = [e for e in grid if e.method == "ovseg"]
    res = E.evaluate_grid(ds, ovseg_rows, 2, tmp_path / "eval")
    assert len(calls) == 2 and shared.hits == 6  # 4 ovseg rows x 2 images, SAM 2 ran for 2
    assert len({r["protocol_hash"] for r in res.values()}) == 4  # four distinct stores / protocols
    assert len(list((tmp_path / "eval").iterdir())) == 4

    # the row left out: MaskCLIP on the contrastive CLIP (its baseline clip) and the value path at block 8 alone
    # (the pipeline config's layer override) predict the same labels
    prompts, owner = _prompts(ds, EvalProtocol())
    sample = ds[0]
    with torch.inference_mode():
        a = predict_labels(by["mini-clip-contrastive|maskclip|last"].pipe, sample.image, prompts, owner,
                           EvalProtocol(method="maskclip"), ds.background_index)
        b = predict_labels(by["mini-clip-contrastive|ovseg|last"].pipe, sample.image, prompts, owner,
                           EvalProtocol(method="dense"), ds.background_index)
    assert np.array_equal(a, b)

    with pytest.raises(InputError, match="every model must be a mini CLIP of the weights registry; got "
                                         r"\['ViT-B-16'\]; fix: use one of: mini-clip"):
        E.method_model_grid(["ViT-B-16"])
    with pytest.raises(InputError, match=r"methods must be among ovseg, dense, maskclip, sclip, clearclip; got \['x'\]"):
        E.method_model_grid(["mini-clip"], methods=["x"])


def test_grid_pivot_and_figure_from_constructed_rows():
    from matplotlib.figure import Figure

    def row(method, clip, v, ci, layers="own"):
        return {"method": method, "clip": clip, "mIoU": v, "mIoU_ci95": ci, "mIoU_base": v, "base_ci95": ci,
                "mIoU_novel": None, "novel_ci95": None, "layers": layers, "images": 200, "split": "test"}

    rows = [row("ovseg, blocks fused", "a", 81.0, "[78.2, 82.6]"), row("MaskCLIP", "a", 23.1, "[21.2, 24.0]"),
            row("ovseg, blocks fused", "b", 2.5, "[1.0, 4.2]")]
    assert E.grid_pivot(rows) == [{"method": "ovseg, blocks fused", "a": "81.0 [78.2, 82.6]", "b": "2.5 [1.0, 4.2]"},
                                  {"method": "MaskCLIP", "a": "23.1 [21.2, 24.0]", "b": "-"}]
    assert E.grid_pivot(rows, "mIoU_novel")[0] == {"method": "ovseg, blocks fused", "a": "-", "b": "-"}
    fig = E.grid_figure(rows)
    assert isinstance(fig, Figure)
    heights = sorted(round(p.get_height(), 1) for p in fig.axes[0].patches if np.isfinite(p.get_height()))
    assert heights == [2.5, 23.1, 81.0]
