"""Repository-anchored paths (never the caller's working directory)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_ROOT", "DATA_DIR", "SAMPLES_DIR", "FIGURES_DIR"]

#: The repository root: the folder that holds the ``ovseg`` package (editable installs).
REPO_ROOT = Path(os.environ.get("OVSEG_ROOT", Path(__file__).resolve().parent.parent))
DATA_DIR = REPO_ROOT / "data"
SAMPLES_DIR = DATA_DIR / "samples"
FIGURES_DIR = REPO_ROOT / "figures"
