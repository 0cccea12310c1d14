"""Atomic output folders, JSON writing and the local cache."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import UsageError


def cache_dir() -> Path:
    """Where trained reference models and the judge are cached: ``$ERASEDIFF_CACHE`` or ~/.cache/erasediff."""
    root = os.environ.get("ERASEDIFF_CACHE") or Path.home() / ".cache" / "erasediff"
    return Path(root)


def check_output_dir(path: str | Path, force: bool) -> Path:
    """Fail early (before any work) when ``path`` exists and ``force`` is not set."""
    path = Path(path)
    if path.exists() and not force:
        raise UsageError(f"output folder '{path}' already exists; choose another --out or pass --force")
    if path.exists() and not path.is_dir():
        raise UsageError(f"output path '{path}' exists and is not a folder")
    return path


@contextmanager
def atomic_output_dir(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` and rename it to ``path`` only when the block succeeds.

    On any error the temporary folder (and any parent folder made for it) is removed and ``path`` is left as
    it was.
    """
    path = check_output_dir(path, force)
    created_parents = [p for p in reversed(path.absolute().parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            backup = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(backup)
            tmp.rename(path)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(created_parents):  # leave no empty folder behind either
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise


def to_jsonable(value):
    """``json.dumps`` default: numpy scalars and arrays, tuples, sets and paths."""
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (tuple, set, np.ndarray)):
        return list(value.tolist() if isinstance(value, np.ndarray) else value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=to_jsonable, allow_nan=True))
    tmp.replace(path)
