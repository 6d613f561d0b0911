"""Figure regeneration: drift comparison, manifest checks, notebook hygiene (ovseg.regen)."""

import json

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ovseg import regen, report


def _fig(offset: float = 0.0) -> Figure:
    fig = Figure(figsize=(2, 2))
    ax = fig.subplots()
    ax.plot(np.arange(5), np.arange(5) ** 2 + offset)
    return fig


def _outputs(root, value: float, offset: float = 0.0, notebook: str = "notebooks/x.ipynb"):
    report.set_context(notebook, {"n": 1}, "mini")
    report.save_table([{"method": "ovseg", "mIoU": value}], "t", cell="table", root=root, digits=4)
    report.save_figure(_fig(offset), "f", cell="plot", root=root)


def test_compare_outputs_within_and_beyond_tolerance(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _outputs(a, 0.5)
    _outputs(b, 0.5 + regen.TOLERANCE["table_atol"] / 2)  # inside the table tolerance, same figure
    _outputs(c, 0.6, offset=8.0)  # a different number and a different curve
    assert regen.compare_outputs(a, b) == []
    drift = regen.compare_outputs(a, c)
    assert any("t.csv" in d and "0.5000 vs 0.6000" in d for d in drift)
    assert any(d.startswith("f.png") for d in drift)


def _csv(path, rows):
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    return path


def test_compare_tables_allows_a_rounding_flip_of_the_last_printed_digit_not_more(tmp_path):
    # a value on a rounding boundary (6.65 printed with one decimal) flips on float noise: one unit is drift-free;
    # two units, another count or other text are drift
    ref = _csv(tmp_path / "a.csv", [["method", "P", "P_ci95", "n", "rate"], ["x", "6.7", '"[3.4, 4.3]"', "200", "0.500"]])
    flip = _csv(tmp_path / "b.csv", [["method", "P", "P_ci95", "n", "rate"], ["x", "6.6", '"[3.5, 4.3]"', "200", "0.502"]])
    assert regen.compare_tables(ref, flip) == []
    for cells, col in ((["x", "6.5", '"[3.4, 4.3]"', "200", "0.500"], 1),  # two units off
                       (["x", "6.7", '"[3.4, 4.5]"', "200", "0.500"], 2),  # an interval end two units off
                       (["x", "6.7", '"[3.4, 4.3]"', "201", "0.500"], 3),  # a count: exact
                       (["x", "6.7", '"[3.4, 4.3]"', "200", "0.503"], 4),  # beyond table_atol on a 3-decimal rate
                       (["y", "6.7", '"[3.4, 4.3]"', "200", "0.500"], 0)):  # text
        other = _csv(tmp_path / "c.csv", [["method", "P", "P_ci95", "n", "rate"], cells])
        drift = regen.compare_tables(ref, other)
        assert len(drift) == 1 and f"row 1 col {col}:" in drift[0], (cells, drift)


def test_compare_reports_missing_and_new_outputs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _outputs(a, 0.5)
    _outputs(b, 0.5)
    report.save_table([{"k": 1}], "extra", root=b)
    (b / "t.csv").unlink()
    manifest = json.loads((b / "MANIFEST.json").read_text())
    del manifest["files"]["t.csv"]
    (b / "MANIFEST.json").write_text(json.dumps(manifest))
    drift = regen.compare_outputs(a, b)
    assert "t.csv: no longer produced" in drift and "extra.csv: new output, not in the reference" in drift
    # restricted to another notebook's outputs there is nothing to compare on the reference side
    assert all("new output" in d for d in regen.compare_outputs(a, b, notebooks={"notebooks/other.ipynb"}))


def test_compare_images_tolerates_antialiasing_not_content(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    near = img.copy()
    near[0, 0] = 255 - near[0, 0]  # one pixel of 2000 changed: 0.05% < 0.5%
    Image.fromarray(near).save(tmp_path / "b.png")
    far = img.copy()
    far[:10] = 0  # a quarter of the image
    Image.fromarray(far).save(tmp_path / "c.png")
    assert regen.compare_images(tmp_path / "a.png", tmp_path / "b.png") == []
    assert regen.compare_images(tmp_path / "a.png", tmp_path / "c.png")
    Image.fromarray(img[:, :40]).save(tmp_path / "d.png")
    assert "size" in regen.compare_images(tmp_path / "a.png", tmp_path / "d.png")[0]


def test_check_manifest_finds_unlisted_changed_and_handmade_files(tmp_path):
    _outputs(tmp_path, 0.5)
    assert regen.check_manifest(tmp_path) == []
    (tmp_path / "handmade.png").write_bytes(b"x")
    (tmp_path / "t.md").write_text("edited by hand\n")
    _outputs(tmp_path / "sub", 0.5, notebook=None)
    problems = regen.check_manifest(tmp_path)
    assert "handmade.png: not in the manifest" in problems
    assert "t.md: sha256 differs from the manifest" in problems
    assert any(p.startswith("sub/") for p in problems)  # sub/ has its own manifest: its files are unlisted here
    assert regen.check_manifest(tmp_path / "sub") and all("not produced by a notebook" in p
                                                          for p in regen.check_manifest(tmp_path / "sub"))


def _nb(cells):
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                         "language_info": {"name": "python", "version": "3.11.9"},
                                         "widgets": {"state": "big blob"}},
            "nbformat": 4, "nbformat_minor": 5}


def test_clean_notebook_keeps_only_checked_text_outputs():
    checked = {"cell_type": "code", "id": "a", "execution_count": 3, "metadata": {"tags": ["x"], "collapsed": True},
               "source": "# NBVAL_CHECK_OUTPUT\nprint(1)",
               "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"},
                           {"output_type": "display_data", "data": {"image/png": "AAAA", "text/plain": "<Figure>"},
                            "metadata": {}}]}
    plain = {"cell_type": "code", "id": "b", "execution_count": 4, "metadata": {}, "source": "fig",
             "outputs": [{"output_type": "display_data", "data": {"image/png": "AAAA"}, "metadata": {}}]}
    clean = regen.clean_notebook(_nb([checked, plain]))
    assert clean["metadata"] == {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                 "language_info": {"name": "python"}}
    a, b = clean["cells"]
    assert a["execution_count"] == 1 and a["metadata"] == {"tags": ["x"]}  # nbval needs a count on checked cells
    assert a["outputs"][0]["text"] == "1\n" and a["outputs"][1]["data"] == {"text/plain": "<Figure>"}
    assert b["outputs"] == [] and b["execution_count"] is None


def test_committed_notebooks_are_clean_and_parameterised():
    notebooks = regen.list_notebooks()
    assert notebooks, "no notebooks in notebooks/"
    for nb in notebooks:
        assert regen.is_clean(nb), f"{nb.name} is not clean: run python -m ovseg.regen clean"
        cells = json.loads(nb.read_text())["cells"]
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters'"
        src = "".join(params[0]["source"])
        assert 'profile = "mini"' in src and "out_dir = " in src, nb.name
        assert f'notebook_setup("notebooks/{nb.name}"' in "".join("".join(c["source"]) for c in cells), nb.name
        checked = [c for c in cells if "NBVAL_CHECK_OUTPUT" in "".join(c["source"])]
        assert checked, f"{nb.name}: no cell marked # NBVAL_CHECK_OUTPUT"
        assert all(c["outputs"] for c in checked), f"{nb.name}: checked cells need stored outputs (python -m ovseg.regen bless)"


def test_figure_parameters_name_existing_notebooks():
    import yaml

    table = yaml.safe_load((regen.NOTEBOOKS_DIR / "figures.yaml").read_text())
    stems = {nb.stem for nb in regen.list_notebooks()}
    assert set(table) == {"defaults", "notebooks"} and set(table["notebooks"]) == stems
    with pytest.raises(regen.InputError, match="must match a notebook"):
        regen.list_notebooks(["no-such-notebook"])
    # every notebook runs under a finite cell timeout and stall limit
    for nb in regen.list_notebooks():
        spec = regen.run_spec(nb)
        assert 0 < spec.stall < spec.timeout <= 4 * 3600, nb.stem
    assert regen.figure_parameters(regen.list_notebooks(["5_evaluation"])[0]) == table["notebooks"]["5_evaluation"]["parameters"]


@pytest.mark.parametrize("text, match", [
    ("defaults: {timeout: 10}\nexplorer: {}\n", "two sections"),
    ("notebooks:\n  explorer: {n_images: 3}\n", "may only set"),
    ("notebooks:\n  explorer: {timeout: -5}\n", "positive number of seconds"),
])
def test_bad_figures_yaml_is_refused_before_anything_runs(tmp_path, monkeypatch, text, match):
    (tmp_path / "figures.yaml").write_text(text)
    (tmp_path / "explorer.ipynb").write_text(json.dumps(_nb([])))
    monkeypatch.setattr(regen, "NOTEBOOKS_DIR", tmp_path)
    with pytest.raises(regen.InputError, match=match):
        regen.regenerate(["explorer"], figures_dir=tmp_path / "figures", log=lambda *_: None)
    assert not list(tmp_path.glob(".figures-*")) and not (tmp_path / "figures").exists()


def test_committed_figures_match_their_manifest():
    if not (regen.FIGURES_DIR / "MANIFEST.json").exists():
        pytest.skip("figures/ has not been generated in this checkout")
    assert regen.check_manifest(regen.FIGURES_DIR) == []


def test_regenerated_alignment_outputs_match_the_committed_ones(tmp_path):
    """The drift check on one notebook (all of them: `nox -s figures_check`): regenerate 3.2.3's tables and
    figures with its figures.yaml parameters and compare with figures/ within regen.TOLERANCE."""
    if not (regen.FIGURES_DIR / "MANIFEST.json").exists():
        pytest.skip("figures/ has not been generated in this checkout")
    nb = regen.list_notebooks(["3.2.3_alignment"])
    regen.run_notebooks(nb, tmp_path / "figures", build_dir=tmp_path / "executed", log=lambda *_: None)
    assert regen.compare_outputs(regen.FIGURES_DIR, tmp_path / "figures", {"notebooks/3.2.3_alignment.ipynb"}) == []
