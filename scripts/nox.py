#!/usr/bin/env python3
"""Run the project's nox sessions without installing anything into your Python.

    python3 scripts/nox.py -s figures          # the main job (mini profile): regenerate figures/
    python3 scripts/nox.py -s lint tests       # the tests (what CI runs)

The first call creates a private virtual environment, ``.nox/bootstrap`` (standard library ``venv``), and
installs nox there; every later call reuses it. Your interpreter's site-packages are never touched (a plain
``pip install nox`` may upgrade packages such as ``packaging`` in it). The sessions themselves build the
project environment ``.nox/ovseg-env`` (see noxfile.py). Arguments are passed to nox unchanged; it always
runs in the repository root, whatever the current directory. nox's "uv binary not found." line is dropped
(the sessions do not use uv).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOT = ROOT / ".nox" / "bootstrap"
NOX = "nox>=2024.4,<2028"

# Runs inside the bootstrap environment: nox's main with its one irrelevant info line filtered out.
SHIM = """
import logging, sys
from nox.logger import logger  # nox's own logger class; the uv check logs when nox's CLI is imported, below
class _NoUvNotice(logging.Filter):
    def filter(self, record):
        return "uv binary not found" not in record.getMessage()
logger.addFilter(_NoUvNotice())
sys.argv[0] = "nox"
from nox.__main__ import main
main()
"""


def _python() -> Path:
    return BOOT / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_bootstrap() -> Path:
    """Create ``.nox/bootstrap`` with nox (once; again when the pinned range changes). Returns its python."""
    stamp = BOOT / ".ovseg-nox"
    if stamp.is_file() and stamp.read_text() == NOX and _python().exists():
        return _python()
    print(f"scripts/nox.py: installing {NOX} into {BOOT.relative_to(ROOT)} (once; your Python is not changed)",
          file=sys.stderr)
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(BOOT)
    except (subprocess.CalledProcessError, OSError) as err:
        print(f"scripts/nox.py: error: creating {BOOT} with the venv module must succeed; got {err}; fix: install "
              "Python's venv support with pip (Debian / Ubuntu: apt install python3-venv), then rerun", file=sys.stderr)
        raise SystemExit(2) from None
    subprocess.run([str(_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", NOX], check=True)
    stamp.write_text(NOX)
    return _python()


def main() -> int:
    python = ensure_bootstrap()
    os.chdir(ROOT)
    return subprocess.call([str(python), "-c", SHIM, *sys.argv[1:]])


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except subprocess.CalledProcessError as err:
        print(f"scripts/nox.py: error: installing nox must succeed; got exit {err.returncode} from {err.cmd[0]} -m pip; "
              f"fix: check that PyPI is reachable, then rerun (or remove {BOOT} to start over)", file=sys.stderr)
        raise SystemExit(2) from None
