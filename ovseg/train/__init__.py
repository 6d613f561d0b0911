"""Training of the mini-profile models on the mini world (``python -m ovseg.train.<model>``).

Nothing here is imported by ``import ovseg``; each trainer imports torch lazily.

Training states are read only by :func:`load_state`: ``torch.load(weights_only=True)``, so a crafted
``state.pt`` cannot run code on ``--resume``.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

__all__ = ["load_state", "numpy_rng_to_tensors", "numpy_rng_from_tensors", "run_main"]


def run_main(main: Any) -> int:
    """``python -m ovseg.train.<model>``: the trainer's ``main()`` with ovseg's one-line errors (as ``ovseg train``)."""
    import sys

    from ..errors import OvsegError

    try:
        return int(main() or 0)
    except OvsegError as err:
        print(f"ovseg: error: {err}", file=sys.stderr)
        return err.exit_code


def _numpy_array_globals() -> list[Any]:
    """The globals a pickled numpy array needs (older mini-clip states stored numpy's RNG state as an array):
    array reconstruction and dtypes only -- no callable that could run code."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)), type(np.dtype(np.float64))]


def load_state(source: str | Path | IO[bytes], what: str | None = None) -> dict[str, Any]:
    """Read a training state with ``torch.load(weights_only=True)`` (tensors, plain Python values, numpy arrays).

    Args:
        source: a path or a binary file object.
        what: the name shown in errors (default: the path).

    Raises:
        InputError: one line when the file holds anything else (e.g. a pickled callable: nothing in it is run),
            or is truncated / not a torch file.
    """
    import pickle

    import torch

    from ..errors import InputError, refused_global

    name = what or str(source)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        name_of = refused_global(err)
        detail = f"it names {name_of}, which is not data" if name_of else ""
        raise InputError("a training state may hold only tensors and plain values (it is loaded with "
                         "weights_only=True; nothing in it is executed)", f"{name}: {detail or 'a pickled object'}",
                         "use a state.pt written by `ovseg train`, or start a new --out folder") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InputError("a training state must be a complete torch file", f"{name}: {str(err).splitlines()[0][:200]}",
                         "the file looks truncated or corrupt; start a new --out folder") from None
    if not isinstance(state, dict):
        raise InputError("a training state must be a dict", f"{name}: {type(state).__name__}",
                         "use a state.pt written by `ovseg train`")
    return state


def numpy_rng_to_tensors(state: tuple) -> dict[str, Any]:
    """numpy's legacy global RNG state (``np.random.get_state()``) as tensors and plain values."""
    import torch

    name, keys, pos, has_gauss, cached = state
    return {"name": str(name), "keys": torch.from_numpy(keys.astype("int64")), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def numpy_rng_from_tensors(stored: Any) -> tuple:
    """Inverse of :func:`numpy_rng_to_tensors`; a stored numpy state tuple (older states) passes through."""
    import numpy as np

    if isinstance(stored, dict):
        return (stored["name"], stored["keys"].numpy().astype(np.uint32), stored["pos"], stored["has_gauss"],
                stored["cached_gaussian"])
    return tuple(stored)
