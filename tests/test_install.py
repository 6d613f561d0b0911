"""What a new user's first commands meet: the import from any folder, and the nox launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ovseg.paths import REPO_ROOT


def test_import_works_from_the_folder_that_holds_a_clone_named_ovseg(tmp_path):
    # `git clone ... ovseg` then running Python next to it: the clone folder (no __init__.py at its top) must not
    # shadow the installed package as an empty namespace package.
    (tmp_path / "ovseg").mkdir()
    (tmp_path / "ovseg" / "README.md").write_text("a clone's top folder\n")
    out = subprocess.run([sys.executable, "-c", "import ovseg; from ovseg import OpenVocabSegmentationPipeline; "
                          "print(ovseg.__file__)"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()) == REPO_ROOT / "ovseg" / "__init__.py"


@pytest.mark.skipif(not (REPO_ROOT / ".nox" / "bootstrap").exists(), reason="the launcher's environment is not built here")
def test_nox_launcher_lists_sessions_from_any_folder_without_the_uv_notice(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV",)}
    out = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "nox.py"), "--list"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert "figures" in text and "tests" in text and "uv binary not found" not in text
