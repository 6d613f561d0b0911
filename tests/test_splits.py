"""Issue #18: evaluation splits written down once, the test-set access log, and bootstrap intervals."""

import json
import re

import numpy as np
import pytest

from ovseg.paths import DATA_DIR
from ovseg.stats import Interval, bootstrap_confusion, bootstrap_mean, bootstrap_rate, format_interval
from ovseg.world import EVAL_SEED_OFFSET, EVAL_SPLITS, seed_range

# ---- splits ---------------------------------------------------------------------------------------------------

def test_split_ranges_are_disjoint_and_above_every_training_seed():
    ranges = sorted((r.start, r.start + r.size, f"{r.task}/{r.split}") for r in EVAL_SPLITS)
    for (_, a1, a), (b0, _, b) in zip(ranges, ranges[1:]):
        assert a1 <= b0, f"{a} overlaps {b}"
    assert all(r.seeds.start >= EVAL_SEED_OFFSET for r in EVAL_SPLITS)  # training draws seeds below it
    assert {(r.task, r.split) for r in EVAL_SPLITS} >= {(t, s) for t in ("scenes", "edits", "limitations")
                                                        for s in ("dev", "test")}


def test_the_data_readme_table_is_the_code_table():
    text = (DATA_DIR / "mini_world" / "README.md").read_text()
    rows = re.findall(r"^\| ([\w-]+) \| (\w+) \| ([\d,]+) … ([\d,]+) \|", text, flags=re.M)
    got = {(t, s, int(a.replace(",", "")), int(b.replace(",", ""))) for t, s, a, b in rows}
    assert got == {(r.task, r.split, r.start, r.start + r.size - 1) for r in EVAL_SPLITS}


def test_shipped_folders_hold_the_seeds_of_their_range():
    for split in ("dev", "test"):
        index = json.loads((DATA_DIR / "mini_world" / split / "index.json").read_text())
        seeds = [im["seed"] for im in index["images"]]
        assert seeds and all(s in seed_range("scenes", split).seeds for s in seeds), split
        assert len(seeds) == len(set(seeds))


def test_mini_splits_and_the_former_name():
    from ovseg.datasets import load_dataset
    from ovseg.errors import InputError

    assert load_dataset("mini").split == "dev"  # exploring never reads the test split
    assert load_dataset("mini", split="test").root == DATA_DIR / "mini_world" / "test"
    with pytest.raises(InputError, match=r"dev .* and test .*got split 'val' \(the former evaluation set"):
        load_dataset("mini", split="val")
    with pytest.raises(InputError, match="must be one of ovseg.world.EVAL_SPLITS"):
        seed_range("scenes", "train")


def test_edit_sets_come_from_their_split_and_base_only_means_no_novel_class():
    from ovseg.edit_eval import build_edit_set
    from ovseg.world import NOVEL_CLASSES

    dev = build_edit_set(6)
    assert all(c.seed in seed_range("edits", "dev").seeds for c in dev)
    assert [c.seed for c in build_edit_set(6, split="dev")] == [c.seed for c in dev]
    test = build_edit_set(6, split="test")
    assert all(c.seed in seed_range("edits", "test").seeds for c in test)
    base = build_edit_set(30, scene_offset=seed_range("edit-settings", "dev").start, novel=False)
    assert not any(c.novel_prompt or c.object_class in NOVEL_CLASSES or c.target in NOVEL_CLASSES for c in base)
    assert any(c.novel_prompt for c in build_edit_set(30))  # the default still alternates base / novel replacements


# ---- intervals ------------------------------------------------------------------------------------------------

def test_rate_interval_matches_the_binomial_normal_approximation():
    """For 400 cases at p = 0.8 the percentile bootstrap's half-width is close to 1.96 sqrt(p (1 - p) / n) = 0.039."""
    iv = bootstrap_rate([True] * 320 + [False] * 80)
    assert iv.value == 0.8 and iv.n == 400 and iv.unit == "cases"
    assert iv.lo < 0.8 < iv.hi and abs(iv.half_width - 1.96 * np.sqrt(0.8 * 0.2 / 400)) < 0.006
    assert bootstrap_rate([True] * 320 + [False] * 80) == iv  # seeded: the same interval every time
    assert bootstrap_rate([True] * 10) == Interval(1.0, 1.0, 1.0, 10, "cases")  # no spread, no width
    assert bootstrap_mean([]).n == 0 and format_interval(bootstrap_mean([])) == "-"


def test_mean_interval_of_a_normal_sample_matches_its_standard_error():
    v = np.random.default_rng(3).normal(0.5, 0.2, 500)
    iv = bootstrap_mean(v)
    assert iv.value == pytest.approx(v.mean())
    assert iv.half_width == pytest.approx(1.96 * v.std(ddof=1) / np.sqrt(len(v)), rel=0.12)
    assert format_interval(iv, 100, 1) == f"{100 * iv.value:.1f} [{100 * iv.lo:.1f}, {100 * iv.hi:.1f}]"


def test_confusion_bootstrap_resamples_images_and_sums_their_matrices():
    """Two kinds of images: half predict class 1 perfectly, half miss it entirely. The dataset-level IoU of class 1
    is then TP / (TP + FN) = 0.5 whatever the order, and a resample's value is the share of 'good' images drawn."""
    from ovseg.metrics import metrics_from_confusion

    good = np.array([[0, 0], [0, 10]])  # 10 pixels of class 1, all predicted 1
    bad = np.array([[0, 0], [10, 0]])  # 10 pixels of class 1, all predicted 0
    cms = np.stack([good] * 50 + [bad] * 50)
    iv = bootstrap_confusion(cms, lambda cm: metrics_from_confusion(cm).iou[1])
    assert iv.value == 0.5 and iv.n == 100 and iv.unit == "images"
    assert abs(iv.half_width - 1.96 * np.sqrt(0.25 / 100)) < 0.015  # binomial share of good images
    # a metric that does not depend on the resample has no width
    assert bootstrap_confusion(cms, lambda cm: 1.0).half_width == 0.0


def test_semantic_intervals_pair_novel_and_base_on_the_same_resample():
    from ovseg.evaluate import semantic_intervals

    rng = np.random.default_rng(0)
    cms = rng.integers(0, 20, size=(60, 3, 3))
    iv = semantic_intervals(cms, {"base": [1], "novel": [2]})
    assert set(iv) == {"mIoU", "pixel_accuracy", "mean_f1", "mIoU_base", "mIoU_novel", "novel_minus_base"}
    from ovseg.metrics import metrics_from_confusion

    m = metrics_from_confusion(cms.sum(0))
    assert iv["novel_minus_base"].value == pytest.approx(m.iou[2] - m.iou[1])
    assert iv["mIoU"].lo <= m.miou <= iv["mIoU"].hi


# ---- the test-set log -----------------------------------------------------------------------------------------

def test_log_appends_once_per_distinct_result(tmp_path):
    from ovseg import testlog

    log = tmp_path / "TEST_LOG.jsonl"
    head = {"mIoU": {"value": 0.79, "ci95": [0.76, 0.82], "n": 400, "unit": "images"}}
    assert testlog.record("semantic", {"mini-sam2": "a" * 16}, "p1", 400, head, path=log, command="ovseg evaluate")
    assert not testlog.record("semantic", {"mini-sam2": "a" * 16}, "p1", 400, head, path=log, command="again")
    assert testlog.record("semantic", {"mini-sam2": "b" * 16}, "p1", 400, head, path=log)  # another model
    lines = testlog.entries(log)
    assert len(lines) == 2 and lines[0]["command"] == "ovseg evaluate" and lines[0]["headline"] == head
    assert testlog.consultations({"mini-sam2": "a" * 16}, path=log) == {"semantic": 1}


def test_log_names_the_command_a_reader_would_run(tmp_path, monkeypatch):
    import sys
    import types

    from ovseg import testlog
    from ovseg.paths import REPO_ROOT

    head = {"r": {"value": 0.5, "ci95": [0.4, 0.6], "n": 100, "unit": "cases"}}

    def logged(argv, n):
        monkeypatch.setattr(sys, "argv", argv)
        testlog.record("t", {"m": "a" * 16}, "p", n, head, path=tmp_path / "log.jsonl")
        return testlog.entries(tmp_path / "log.jsonl")[-1]["command"]

    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    script = str(REPO_ROOT / "scripts" / "limitations_study.py")
    assert logged([script, "--split", "test"], 1) == "python scripts/limitations_study.py --split test"
    assert logged(["/venv/bin/ovseg", "evaluate", "--task", "edits"], 2) == "ovseg evaluate --task edits"
    assert logged([str(REPO_ROOT / "ovseg" / "__main__.py"), "evaluate"], 3) == "python -m ovseg evaluate"
    # inside a kernel started for a notebook, its argv (-f connection.json) says nothing: the notebook is named
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setenv("OVSEG_NOTEBOOK", 'notebooks/6_video.ipynb {"split": "test"}')
    assert logged(["/venv/lib/ipykernel_launcher.py", "-f", "/tmp/k.json"], 4) == \
        'notebook notebooks/6_video.ipynb {"split": "test"}'


def test_log_is_never_written_through_a_symlink(tmp_path):
    from ovseg import testlog

    target = tmp_path / "elsewhere.txt"
    target.write_text("keep\n")
    (tmp_path / "TEST_LOG.jsonl").symlink_to(target)
    from ovseg.errors import InputError

    with pytest.raises(InputError, match="symbolic link"):
        testlog.record("semantic", {}, "p", 1, {}, path=tmp_path / "TEST_LOG.jsonl")
    assert target.read_text() == "keep\n"


def test_tests_never_write_the_committed_log():
    from ovseg import testlog

    assert testlog.log_path() != DATA_DIR / "mini_world" / "TEST_LOG.jsonl"


def test_every_logged_line_is_well_formed():
    """The committed log: each line names its models, protocol, n and headline intervals."""
    from ovseg import testlog

    for e in testlog.entries(DATA_DIR / "mini_world" / "TEST_LOG.jsonl"):
        assert e["split"].endswith("/test") and e["models"] and e["protocol"] and e["n"] > 0
        for v in e["headline"].values():
            if isinstance(v, dict):
                assert set(v) == {"value", "ci95", "n", "unit"}


# ---- evaluate: --split, --task masks, logging ----------------------------------------------------------------

def test_mask_recall_on_dev_matches_a_hand_count_and_logs_nothing(tmp_path, monkeypatch, capsys):
    from ovseg import OpenVocabSegmentationPipeline, testlog
    from ovseg.cli import main
    from ovseg.datasets import load_dataset
    from ovseg.experiments.masks import load_eval_scene

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))
    assert main(["evaluate", "--dataset", "mini", "--split", "dev", "--task", "masks", "--max-images", "3",
                 "--out", str(tmp_path / "m")]) == 0
    assert "SAM 2 object recall at IoU >= 0.5" in capsys.readouterr().out
    res = json.loads((tmp_path / "m" / "masks.json").read_text())
    # by hand: for every visible object, the best IoU of any candidate mask
    pipe, ds, best = OpenVocabSegmentationPipeline(), load_dataset("mini", split="dev"), []
    for i in range(3):
        scene = load_eval_scene(ds, i)
        pred = pipe.generate_masks(scene.image).masks.reshape(-1, 128 * 128)
        for g in scene.instance_masks.reshape(len(scene.instance_masks), -1):
            if g.any():
                best.append(max(((p & g).sum() / (p | g).sum() for p in pred), default=0.0))
    assert res["n_objects"] == len(best) and res["split"] == "dev"
    assert res["recall"] == pytest.approx(np.mean(np.array(best) >= 0.5), abs=1e-4)
    assert res["ci95"]["recall"]["n"] == len(best)
    assert testlog.entries(log) == []  # dev is never logged


def test_an_evaluation_on_the_test_split_is_logged_once(tmp_path, monkeypatch):
    from ovseg import testlog
    from ovseg.cli import main

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))
    args = ["evaluate", "--dataset", "mini", "--task", "masks", "--max-images", "1"]  # --split test: the default
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    (line,) = testlog.entries(log)
    res = json.loads((tmp_path / "a" / "masks.json").read_text())
    assert line["task"] == "masks" and line["split"] == "scenes/test" and line["n"] == 1
    assert set(line["models"]) == {"mini-sam2"} and line["headline"] == res["ci95"]
    assert main(args + ["--out", str(tmp_path / "b")]) == 0  # the same result again: nothing new to log
    assert len(testlog.entries(log)) == 1


def test_a_layer_ablation_on_the_test_split_is_logged_under_a_task_of_its_own(tmp_path, monkeypatch):
    """A run reading other blocks than the CLIP's own (clip.extract_layers set) is not the model's headline: its line
    says which blocks, so the model card (which quotes "semantic") never quotes an ablation."""
    from ovseg import OpenVocabSegmentationPipeline, testlog
    from ovseg.config import apply_overrides, get_balanced_config
    from ovseg.datasets import load_dataset
    from ovseg.evaluate import EvalProtocol, run_evaluation

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))
    ds = load_dataset("mini", split="test")
    last = apply_overrides(get_balanced_config("mini"), ["clip.extract_layers=[6]"])
    for k, cfg in enumerate((last, get_balanced_config("mini"))):
        run_evaluation(ds, OpenVocabSegmentationPipeline(cfg), EvalProtocol(method="dense", max_images=1),
                       tmp_path / str(k))
    a, b = testlog.entries(log)
    assert (a["task"], b["task"]) == ("semantic:dense@blocks6", "semantic:dense")
    assert a["models"] == b["models"] and a["protocol"] != b["protocol"]


def test_the_readme_quotes_the_logged_test_numbers():
    """README's table of test numbers is exactly what `python -m ovseg.testlog` prints from the committed log for the
    shipped models: every reported test number (value, interval, n) is a logged one."""
    from ovseg import testlog
    from ovseg.paths import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split("<!-- test-log:begin -->")[1].split("<!-- test-log:end -->")[0].strip()
    table = testlog.quoted_table(testlog.shipped_models(), DATA_DIR / "mini_world" / "TEST_LOG.jsonl")
    assert block == table and table.count("\n") >= 4  # a header, a rule and logged rows


def test_notebook_experiments_log_the_test_split_of_the_mini_profile_only(tmp_path, monkeypatch):
    from ovseg import testlog
    from ovseg.config import get_balanced_config

    log = tmp_path / "log.jsonl"
    monkeypatch.setenv("OVSEG_TEST_LOG", str(log))
    head = {"x": testlog.interval(0.5, 0.4, 0.6, 10, "objects")}
    cfg = get_balanced_config()
    assert not testlog.record_experiment("t", cfg, 10, head, {}, "scenes/dev")
    assert not testlog.record_experiment("t", cfg.replace(profile="full"), 10, head, {}, "scenes/test")
    assert testlog.record_experiment("t", cfg, 10, head, {"k": 1}, "scenes/test")
    assert testlog.record_experiment("t", cfg, 10, head, {"k": 2}, "scenes/test")  # another protocol: a new line
    assert not testlog.record_experiment("t", cfg, 10, head, {"k": 2}, "scenes/test")
    a, b = testlog.entries(log)
    assert a["headline"] == {"x": {"value": 0.5, "ci95": [0.4, 0.6], "n": 10, "unit": "objects"}}
    assert a["protocol"] != b["protocol"] and set(a["models"]) == {"mini-sam2", "mini-clip"}


def test_model_cards_quote_the_log_for_exactly_their_weights():
    from ovseg import testlog
    from ovseg.paths import REPO_ROOT
    from ovseg.weights import REGISTRY

    log = DATA_DIR / "mini_world" / "TEST_LOG.jsonl"
    for name in testlog.CARD_TASKS:
        folder = REPO_ROOT / REGISTRY[name].local_dir
        card = (folder / "MODEL_CARD.md").read_text()
        assert testlog.card_section(name, folder, log) in card, f"{name}: run python -m ovseg.testlog --cards"


def test_a_fresh_export_has_no_test_numbers_and_the_section_is_replaced(tmp_path):
    import shutil

    from ovseg import testlog
    from ovseg.paths import REPO_ROOT
    from ovseg.weights import REGISTRY

    src = REPO_ROOT / REGISTRY["mini-sam2"].local_dir
    folder = tmp_path / "m"
    folder.mkdir()
    for f in REGISTRY["mini-sam2"].files:
        shutil.copyfile(src / f, folder / f)
    log = DATA_DIR / "mini_world" / "TEST_LOG.jsonl"
    (folder / "MODEL_CARD.md").write_text("# card\n\nintro\n")
    # unpinned copy of the shipped files: the same weights, identified by their files' sums -> no logged line
    # matches (the log names the pinned identity), so the card says how to evaluate instead of quoting numbers
    testlog.write_card_section("mini-sam2", folder, log)
    text = (folder / "MODEL_CARD.md").read_text()
    assert text.startswith("# card\n\nintro\n\n" + testlog.CARD_HEADING) and "not evaluated on the test split" in text
    shutil.copyfile(src / "SHA256SUMS", folder / "SHA256SUMS")  # pinned like the shipped folder: its lines match
    (folder / "MODEL_CARD.md").write_text(text + "\n## Later section\n\nkept\n")
    testlog.write_card_section("mini-sam2", folder, log)
    text2 = (folder / "MODEL_CARD.md").read_text()
    assert text2.count(testlog.CARD_HEADING) == 1 and "0.951 [0.938, 0.964]" in text2
    assert text2.endswith("## Later section\n\nkept\n") and "not evaluated" not in text2
