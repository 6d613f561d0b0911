import json

import numpy as np
from matplotlib.figure import Figure

from ovseg import report


def _fig():
    fig = Figure(figsize=(2, 2))
    ax = fig.subplots()
    ax.plot(np.arange(5), np.arange(5) ** 2)
    ax.set_title("squares")
    return fig


def test_save_figure_is_stable_and_recorded(tmp_path):
    report.set_context("notebooks/x.ipynb", {"n_images": 3}, "mini")
    a = report.save_figure(_fig(), "sq", cell="plot", root=tmp_path)
    first = [p.read_bytes() for p in a]
    b = report.save_figure(_fig(), "sq", cell="plot", root=tmp_path)
    assert [p.read_bytes() for p in b] == first  # no timestamps: identical bytes
    man = json.loads((tmp_path / "MANIFEST.json").read_text())["files"]
    assert set(man) == {"sq.png", "sq.pdf"}
    rec = man["sq.png"]
    assert rec["notebook"] == "notebooks/x.ipynb" and rec["cell"] == "plot" and rec["parameters"] == {"n_images": 3}
    assert rec["profile"] == "mini" and "torch" in rec["versions"] and len(rec["sha256"]) == 64


def test_save_table_three_formats(tmp_path):
    rows = [{"method": "ovseg", "mIoU": 0.51234, "note": "a_b"}, {"method": "maskclip", "mIoU": None, "note": "50%"}]
    paths = report.save_table(rows, "t", cell="table", root=tmp_path, digits=2)
    csv, md, tex = (p.read_text() for p in paths)
    assert csv.splitlines() == ["method,mIoU,note", "ovseg,0.51,a_b", "maskclip,,50%"]
    assert md.splitlines()[2] == "| ovseg | 0.51 | a_b |"
    assert "a\\_b" in tex and "50\\%" in tex
    assert set(json.loads((tmp_path / "MANIFEST.json").read_text())["files"]) == {"t.csv", "t.md", "t.tex"}
