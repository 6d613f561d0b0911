"""Headless notebook execution that cannot hang: cell timeouts, stall detection, one retry, progress.

:func:`execute_notebook` runs one notebook with papermill (parameters injected, executed copy
written as it goes) through :class:`GuardedClient`, an nbclient client that adds three things to
papermill's own:

* **a cell timeout** (nbclient's ``timeout``): a cell that runs longer fails the notebook;
* **a stall watchdog**: a thread that, while the client waits for a cell, watches the kernel. When
  the kernel has sent no output for that cell and its process tree has used (almost) no CPU for
  ``stall`` seconds, the client is waiting for a reply that will not come (lost kernel messages are a
  known nbclient / ipywidgets failure: the kernel reports the cell finished, papermill waits forever).
  The watchdog then kills the kernel, so the client returns at once, and :func:`execute_notebook`
  reports a :class:`NotebookStall`; the caller retries in a fresh kernel;
* **a bounded wait after the last cell**: papermill asks the kernel for ``language_info`` with no
  time limit once all cells ran (papermill issue #711 hangs exactly there); here that wait is bounded
  and only the executed copy's metadata depends on it.

Progress: ``progress`` is called before each code cell with ``(i, n, title)`` (1-based among code
cells; the title is the nearest Markdown heading above, else the cell's first comment), and every
``heartbeat`` seconds of a long cell with ``still=True``.

The kernel talks to the client over IPC sockets in a private temporary folder (not TCP), so it
prints no transport warning and listens on no port.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NotebookStall", "NotebookTimeout", "NotebookFailed", "execute_notebook", "cell_titles", "GuardedClient"]


@dataclass
class _Failure(Exception):
    """Where a notebook stopped: ``cell`` is 1-based among code cells, ``title`` its heading."""

    notebook: str
    cell: int
    n_cells: int
    title: str
    detail: str

    def __str__(self) -> str:
        return f"{self.notebook}: cell {self.cell}/{self.n_cells} ({self.title}): {self.detail}"


class NotebookStall(_Failure):
    """The client waited for a cell while the kernel sat idle for ``stall`` seconds (the kernel was killed)."""


class NotebookTimeout(_Failure):
    """A cell ran longer than the notebook's cell timeout."""


class NotebookFailed(_Failure):
    """A cell raised an exception (or the kernel died on its own)."""


def cell_titles(cells: list[dict[str, Any]]) -> dict[int, str]:
    """Title of each code cell, by cell index: the nearest Markdown heading above it, else its first comment
    line, else its first line."""
    titles, heading = {}, ""
    for k, cell in enumerate(cells):
        src = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "markdown":
            m = re.search(r"^#+\s*(.+)$", src, flags=re.M)
            if m:
                heading = m.group(1).strip()
        elif cell.get("cell_type") == "code":
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags:
                titles[k] = "injected parameters"
                continue
            if "parameters" in tags:
                titles[k] = "parameters"
                continue
            lines = [ln.strip() for ln in src.splitlines() if ln.strip()]
            comment = next((ln.lstrip("# ").strip() for ln in lines if ln.startswith("#") and "NBVAL" not in ln), "")
            titles[k] = heading or comment or (lines[0] if lines else "empty")
    return {k: (t if len(t) <= 60 else t[:57] + "...") for k, t in titles.items()}


def _tree_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its descendants (None when it is gone)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)
        except psutil.Error:
            continue
    return total


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [*proc.children(recursive=True), proc]
    except psutil.Error:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def _client_class() -> type:
    """Build the client class lazily: papermill / nbclient are optional (the ``notebooks`` extra)."""
    from nbclient.util import ensure_async, run_sync
    from papermill.clientwrap import PapermillNotebookClient

    class _GuardedClient(PapermillNotebookClient):
        """papermill's client with a stall watchdog, progress hooks and a bounded final ``kernel_info`` wait.

        Set ``stall_seconds`` (float), ``progress`` (callable ``(i, n, title)``) and ``cpu_floor`` (CPU
        seconds per ``stall_seconds`` below which the kernel counts as idle) as attributes before executing.
        """

        stall_seconds: float = 60.0
        cpu_floor: float = 1.0
        heartbeat: float = 60.0  # seconds between "still running" progress calls during a long cell
        progress: Callable[..., None] | None = None
        kernel_log: Any = None  # an open file for the kernel process's stderr (None: inherit ours)

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.stalled: dict[str, Any] | None = None
            self.current: int | None = None  # index of the code cell being executed
            self.idle_seen = False  # the kernel reported the current cell finished (iopub status idle)
            self._last_output = self._started = time.monotonic()
            self._titles = cell_titles(self.nb.cells)
            self._code = [k for k, c in enumerate(self.nb.cells) if c.get("cell_type") == "code"]
            self.on_cell_start = self._cell_start
            self.on_cell_executed = self._cell_executed
            self.on_cell_error = self._cell_error
            self.failed: int | None = None  # index of the cell that raised
            self._stop = threading.Event()

        # ---- hooks (run in the client's event loop) --------------------------------------------
        def _cell_start(self, cell: Any, cell_index: int) -> None:
            self.idle_seen = False
            self._last_output = self._started = time.monotonic()
            self.current = cell_index if cell_index in self._code else None  # Markdown cells run nothing
            if self.progress is not None and cell_index in self._code:
                self.progress(self._code.index(cell_index) + 1, len(self._code), self._titles.get(cell_index, ""))

        def _cell_executed(self, cell: Any, cell_index: int, execute_reply: Any = None) -> None:
            self.current = None

        def _cell_error(self, cell: Any, cell_index: int, execute_reply: Any = None) -> None:
            self.failed = cell_index

        def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
            self._last_output = time.monotonic()
            if msg.get("msg_type") == "status" and msg.get("content", {}).get("execution_state") == "idle":
                self.idle_seen = True
            return super().process_message(msg, cell, cell_index)

        def where(self, cell_index: int | None) -> tuple[int, int, str]:
            """(1-based code cell number, code cell count, title) of a cell index."""
            if cell_index is None or cell_index not in self._code:
                return len(self._code), len(self._code), "after the last cell"
            return self._code.index(cell_index) + 1, len(self._code), self._titles.get(cell_index, "")

        # ---- watchdog (its own thread) ---------------------------------------------------------
        def _kernel_pid(self) -> int | None:
            prov = getattr(self.km, "provisioner", None)
            proc = getattr(prov, "process", None) or getattr(self.km, "kernel", None)
            return getattr(proc, "pid", None)

        def _watch(self) -> None:
            step = max(0.2, min(2.0, self.stall_seconds / 10, self.heartbeat / 4))
            window: list[tuple[float, float]] = []  # (time, kernel tree CPU seconds) while a cell is pending
            beat: tuple[int | None, float] = (None, 0.0)  # (cell, time of its last "still running" call)
            while not self._stop.wait(step):
                pid, current = self._kernel_pid(), self.current
                if current is None or pid is None:
                    window.clear()
                    continue
                if self.progress is not None and current in self._code:
                    last = beat[1] if beat[0] == current else self._started
                    if time.monotonic() - last >= self.heartbeat:
                        beat = (current, time.monotonic())
                        i, n, title = self.where(current)
                        self.progress(i, n, title, still=True)
                cpu = _tree_cpu_seconds(pid)
                if cpu is None:
                    continue
                now = time.monotonic()
                window.append((now, cpu))
                window = [w for w in window if now - w[0] <= self.stall_seconds]
                quiet = now - self._last_output
                if (quiet >= self.stall_seconds and now - window[0][0] >= 0.9 * self.stall_seconds
                        and cpu - window[0][1] < self.cpu_floor):
                    self.stalled = {"cell_index": self.current, "quiet_s": round(quiet, 1), "idle_seen": self.idle_seen}
                    _kill_tree(pid)
                    return

        def papermill_execute_cells(self) -> None:
            watcher = threading.Thread(target=self._watch, name="ovseg-stall-watchdog", daemon=True)
            watcher.start()
            try:
                super().papermill_execute_cells()
            finally:
                self._stop.set()
                watcher.join(timeout=5)

        # ---- the final kernel_info, bounded ----------------------------------------------------
        async def _async_language_info(self, wait: float) -> dict[str, Any]:
            from queue import Empty

            msg_id = self.kc.kernel_info()
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await ensure_async(self.kc.shell_channel.get_msg(timeout=left))
                except Empty:
                    break
                if msg.get("parent_header", {}).get("msg_id") == msg_id:
                    return msg["content"].get("language_info", {"name": "python"})
            return {"name": "python"}

        language_info = run_sync(_async_language_info)

        def execute(self, **kwargs: Any) -> Any:
            # papermill's execute(), except that the wait for kernel_info after the last cell is bounded and the
            # kernel's own stderr (its log, not the cells' output) goes to kernel_log
            self.reset_execution_trackers()
            if self.kernel_log is not None:
                kwargs.setdefault("stderr", self.kernel_log)
            # cleanup_kc: nbclient shuts down only kernels of managers it created itself; ours (IPC) must go too
            with self.setup_kernel(cleanup_kc=True, **kwargs):
                self.papermill_execute_cells()
                self.nb.metadata["language_info"] = self.language_info(min(self.stall_seconds, 30.0))
                self.set_widgets_metadata()
            return self.nb

    return _GuardedClient


_CLIENT: type | None = None


def GuardedClient() -> type:  # noqa: N802 - a class, built on first use
    """The papermill client class with the watchdog (built lazily; papermill is optional)."""
    global _CLIENT
    if _CLIENT is None:
        _CLIENT = _client_class()
    return _CLIENT


def _register_engine() -> str:
    """Register the ``ovseg-guarded`` papermill engine (idempotent) and return its name."""
    from papermill.engines import NBClientEngine, papermill_engines

    name = "ovseg-guarded"
    if name in papermill_engines._engines:
        return name

    class _Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False, stdout_file: Any = None,
                                     stderr_file: Any = None, start_timeout: int = 60, execution_timeout: Any = None,
                                     stall_seconds: float = 60.0, progress: Any = None, holder: Any = None,
                                     km: Any = None, kernel_log: Any = None, heartbeat: float = 60.0,
                                     **kwargs: Any) -> Any:
            client = GuardedClient()(nb_man, km=km, timeout=execution_timeout, startup_timeout=start_timeout,
                                     kernel_name=kernel_name, log=_quiet_logger(), log_output=log_output,
                                     stdout_file=stdout_file, stderr_file=stderr_file)
            client.stall_seconds = float(stall_seconds)
            client.progress = progress
            client.kernel_log = kernel_log
            client.heartbeat = float(heartbeat)
            if holder is not None:
                holder.append(client)
            return client.execute()

    papermill_engines.register(name, _Engine)
    return name


def _quiet_logger() -> logging.Logger:
    """nbclient's logger for these runs: silent (its timeout / dead-kernel lines would repeat, less clearly, what
    :func:`execute_notebook` raises)."""
    log = logging.getLogger("ovseg.nbrun.client")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False
    return log


def _kernel_manager(kernel_name: str, sockets: Path) -> Any:
    """A kernel manager on IPC sockets in ``sockets`` (a private folder): no TCP port, no transport warning."""
    from jupyter_client.manager import AsyncKernelManager  # nbclient's own choice: its event loop must not block

    km = AsyncKernelManager(kernel_name=kernel_name, transport="ipc")
    km.ip = str(sockets / "k")
    km.connection_file = str(sockets / "connection.json")
    return km


def execute_notebook(notebook: Path, dest: Path, parameters: dict[str, Any], cwd: Path, timeout: float | None,
                     stall: float, progress: Callable[..., None] | None = None,
                     kernel_name: str = "python3", kernel_log: Path | None = None, heartbeat: float = 60.0) -> None:
    """Execute ``notebook`` into ``dest`` with papermill, under a cell timeout and the stall watchdog.

    Args:
        notebook, dest: source notebook and executed copy (written as cells run).
        parameters: papermill parameters (injected after the ``parameters`` cell).
        cwd: the kernel's working directory.
        timeout: seconds one cell may run (``None``: no limit).
        stall: seconds of an idle kernel (no output, CPU below 1 s) while a cell is pending before the kernel
            is killed.
        progress: called ``(i, n, title)`` before each code cell and ``(i, n, title, still=True)`` every minute of a
            long one.
        kernel_log: file for the kernel process's own stderr (default: ``dest`` with ``.kernel.log``).
        heartbeat: seconds between "still running" progress calls during one cell.

    Raises:
        NotebookStall, NotebookTimeout, NotebookFailed: where and why it stopped.
    """
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    engine = _register_engine()
    holder: list[Any] = []
    sockets = Path(tempfile.mkdtemp(prefix="ovseg-kernel-"))
    name = Path(notebook).stem
    kernel_log = Path(kernel_log or Path(dest).with_suffix(".kernel.log"))
    kernel_log.parent.mkdir(parents=True, exist_ok=True)
    # the kernel inherits this: a test-set log line it writes names the notebook and its parameters (ovseg.testlog)
    before = os.environ.get("OVSEG_NOTEBOOK")
    shown = {k: v for k, v in parameters.items() if k != "out_dir"}
    os.environ["OVSEG_NOTEBOOK"] = f"notebooks/{Path(notebook).name}" + (f" {json.dumps(shown, default=str)}" if shown else "")
    try:
        os.chmod(sockets, 0o700)
        with open(kernel_log, "w") as log_fh:
            pm.execute_notebook(str(notebook), str(dest), parameters=parameters, kernel_name=kernel_name,
                                cwd=str(cwd), progress_bar=False, log_output=False, engine_name=engine,
                                execution_timeout=int(timeout) if timeout else None, stall_seconds=stall,
                                progress=progress, holder=holder, km=_kernel_manager(kernel_name, sockets),
                                kernel_log=log_fh, heartbeat=heartbeat)
    except pm.PapermillExecutionError as exc:
        client = holder[0] if holder else None
        i, n, title = client.where(client.failed) if client else (exc.exec_count, 0, "")
        raise NotebookFailed(name, i, n, title, f"{exc.ename}: {_first_line(exc.evalue)}") from None
    except CellTimeoutError:
        client = holder[0]
        i, n, title = client.where(client.current)
        raise NotebookTimeout(name, i, n, title, f"a cell may run at most {timeout:.0f} s") from None
    except DeadKernelError:
        client = holder[0] if holder else None
        if client is not None and client.stalled is not None:
            i, n, title = client.where(client.stalled["cell_index"])
            what = ("the kernel reported the cell finished but its reply never arrived"
                    if client.stalled["idle_seen"] else "the kernel sent nothing and used no CPU")
            raise NotebookStall(name, i, n, title, f"{what} for {client.stalled['quiet_s']:.0f} s") from None
        i, n, title = client.where(client.current) if client else (0, 0, "")
        raise NotebookFailed(name, i, n, title, f"the kernel died (out of memory? see {kernel_log})") from None
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        if before is None:
            os.environ.pop("OVSEG_NOTEBOOK", None)
        else:
            os.environ["OVSEG_NOTEBOOK"] = before


def _first_line(text: str) -> str:
    line = (str(text).strip().splitlines() or [""])[0]
    return line if len(line) <= 200 else line[:197] + "..."
