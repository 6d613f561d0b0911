"""Entry point of the Docker image: the thesis code's verbs over ovseg's CLI.

``docker run IMAGE VERB ...`` (``scripts/docker-run.sh VERB ...`` adds the mounts, the caller's uid and the port)::

    segment IMAGE PROMPT [ovseg segment options]     ->  ovseg segment IMAGE --prompt PROMPT ...
    remove  IMAGE PROMPT [options]                   ->  ovseg remove IMAGE --prompt PROMPT ...
    replace IMAGE PROMPT EDIT [options]              ->  ovseg replace IMAGE --prompt PROMPT --edit EDIT ...
    style   IMAGE PROMPT EDIT [options]              ->  ovseg style IMAGE --prompt PROMPT --edit EDIT ...
    figures [NOTEBOOK ...]                           ->  regenerate figures into ./ovseg-out/figures
    lab     [jupyter lab options]                    ->  JupyterLab on port 8888 over ./ovseg-out/notebooks
    shell                                            ->  bash
    ovseg ARGS...                                    ->  any ovseg command (weights list, evaluate, benchmark, ...)

IMAGE may be a file, a folder, a quoted glob or a ``.txt`` list, as for the CLI; a PROMPT that starts with ``-``
is taken as an option (``segment photos/ --classes "a, b"``). The working folder ``/work`` must be mounted from
the host (``-v "$PWD:/work"``): everything a verb writes goes below it, so nothing is lost with the container.
``figures`` and ``lab`` run on a writable copy of the repository's small parts (``/tmp/ovseg-root``: figures,
notebooks and build are real folders, the code and the embedded models are links to the image's read-only copy),
so they work under any ``--user``.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError, OvsegError
from .paths import REPO_ROOT

__all__ = ["VERBS", "WORK", "mount_points", "check_work_mounted", "cli_argv", "main"]

#: The folder every verb writes below (the image's WORKDIR); must be a mount from the host.
WORK = Path("/work")
#: verb -> number of positionals after IMAGE that become options (PROMPT, then EDIT)
_EDIT_VERBS = {"segment": ("--prompt",), "remove": ("--prompt",), "replace": ("--prompt", "--edit"),
               "style": ("--prompt", "--edit")}
VERBS = (*_EDIT_VERBS, "figures", "lab", "shell", "ovseg", "help")
_MOUNT_FIX = ('run the container with the host folder mounted: docker run -v "$PWD:/work" --user "$(id -u):$(id -g)" '
              "IMAGE ...; scripts/docker-run.sh adds both")


def mount_points(mountinfo: str) -> set[str]:
    """Mount points listed in a ``/proc/self/mountinfo`` text (field 5; ``\\040``-style octal escapes decoded)."""
    points = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.add(_unescape(fields[4]))
    return points


def _unescape(field: str) -> str:
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def check_work_mounted(work: Path = WORK, mountinfo: str | None = None) -> None:
    """Raise :class:`InputError` unless ``work`` is a mount point (outputs written there reach the host)."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:  # no procfs: cannot tell, let the command run
            return
    if str(work) not in mount_points(mountinfo):
        raise InputError(f"the working folder {work} must be mounted from the host, or the outputs are lost with the "
                         "container", f"no mount at {work}", _MOUNT_FIX)


def _check_out_inside(args: Sequence[str], work: Path) -> None:
    """``--out DIR`` / ``--out=DIR`` must resolve below ``work`` (relative paths start there)."""
    for i, a in enumerate(args):
        value = a.split("=", 1)[1] if a.startswith("--out=") else (args[i + 1] if a == "--out" and i + 1 < len(args)
                                                                    else None)
        if value is None:
            continue
        path = Path(os.path.normpath(work / value))
        if not path.is_relative_to(work):
            raise InputError(f"--out must be inside the mounted working folder {work}, or the outputs are lost with "
                             "the container", repr(value), "give a relative path (it lands in the folder mounted at "
                             f"{work}, the current folder with scripts/docker-run.sh)")


def cli_argv(verb: str, args: Sequence[str]) -> list[str]:
    """The ``ovseg`` command line for an edit verb: ``IMAGE PROMPT [EDIT] rest`` -> ``IMAGE --prompt P [--edit E] rest``.

    A positional that starts with ``-`` ends the positionals (``segment photos/ --classes "a, b"`` passes through).
    """
    flags = _EDIT_VERBS[verb]
    if not args or args[0].startswith("-"):
        usage = " ".join(["IMAGE", *(f.lstrip("-").upper() for f in flags)])
        raise InputError(f"{verb} takes {usage} [ovseg {verb} options]", " ".join(args) or "nothing",
                         f'e.g. segment data/samples/shapes.png "red circle" (IMAGE is a path below {WORK})')
    out, rest = [verb, args[0]], list(args[1:])
    for flag in flags:
        if not rest or rest[0].startswith("-"):
            break
        out += [flag, rest.pop(0)]
    return out + rest


def _shadow_root(notebooks: Path | None = None) -> Path:
    """A writable repository root for regen / JupyterLab under any uid: real ``figures/`` (a copy), ``build/`` and
    ``notebooks/`` (a copy, or ``notebooks`` itself), links to the rest of the image's read-only copy."""
    root = Path("/tmp/ovseg-root")
    root.mkdir(exist_ok=True)
    for entry in REPO_ROOT.iterdir():
        if entry.name in ("figures", "notebooks", "build") or (root / entry.name).exists():
            continue
        (root / entry.name).symlink_to(entry)
    if not (root / "figures").exists():
        shutil.copytree(REPO_ROOT / "figures", root / "figures")
    (root / "build").mkdir(exist_ok=True)
    if notebooks is None:
        if not (root / "notebooks").exists():
            shutil.copytree(REPO_ROOT / "notebooks", root / "notebooks")
    elif not (root / "notebooks").exists():
        (root / "notebooks").symlink_to(notebooks)
    return root


def _figures(names: Sequence[str], work: Path) -> int:
    """Regenerate figures (all notebooks, or ``names``) and copy them to ``WORK/ovseg-out/figures``."""
    import subprocess

    dest = work / "ovseg-out" / "figures"
    if dest.is_symlink():  # never write through a link: it could point anywhere on the host
        raise InputError("ovseg-out/figures must be a folder, not a symbolic link", str(dest),
                         "remove the link, then run figures again")
    root = _shadow_root()
    env = {**os.environ, "OVSEG_ROOT": str(root), "OVSEG_TEST_LOG": str(root / "build" / "TEST_LOG.jsonl")}
    only = ["--only", *names] if names else []
    rc = subprocess.call([sys.executable, "-m", "ovseg.regen", "run", *only], env=env, cwd=root)
    if rc == 0:
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(root / "figures", dest)
        print(f"ovseg-docker: figures written to {dest} (on the host: ./ovseg-out/figures)")
    return rc


def _lab(args: Sequence[str], work: Path) -> int:
    """JupyterLab over ``WORK/ovseg-out/notebooks`` (seeded from the image once; your edits stay on the host)."""
    notebooks = work / "ovseg-out" / "notebooks"
    if not notebooks.exists():
        shutil.copytree(REPO_ROOT / "notebooks", notebooks)
    root = _shadow_root(notebooks)
    os.environ["OVSEG_ROOT"] = str(root)
    argv = ["jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser",
            f"--ServerApp.root_dir={root / 'notebooks'}", *args]
    if os.geteuid() == 0:  # run as root (docker-run.sh by root passes root's uid): the container is the sandbox
        argv.insert(2, "--allow-root")
    os.execvp(argv[0], argv)
    return 0  # pragma: no cover (exec does not return)


def main(argv: Sequence[str] | None = None, work: Path = WORK) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb, args = (argv[0], argv[1:]) if argv else ("help", [])
    try:
        if verb in ("help", "-h", "--help"):
            print(__doc__.split("\n\n", 1)[1].split("\n\nIMAGE")[0])
            return 0
        if verb == "shell":
            os.execvp("bash", ["bash", *args])
        if verb == "ovseg":
            os.execvp(sys.executable, [sys.executable, "-m", "ovseg", *args])
        if verb not in VERBS:
            raise InputError("the first argument must be a verb", repr(verb), f"one of: {', '.join(VERBS)}")
        check_work_mounted(work)
        if verb == "figures":
            return _figures(args, work)
        if verb == "lab":
            return _lab(args, work)
        _check_out_inside(args, work)
        command = cli_argv(verb, args)
        os.execvp(sys.executable, [sys.executable, "-m", "ovseg", *command])
    except OvsegError as err:
        print(f"ovseg-docker: error: {err}", file=sys.stderr)
        return err.exit_code
    return 0  # pragma: no cover (exec does not return)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
