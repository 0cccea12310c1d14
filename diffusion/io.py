"""Atomic output folders and files, JSON writing and the local cache.

Every output a command writes is checked before any work (:func:`check_output_dir`, :func:`check_output_file`):
it must not be, contain or lie inside one of the command's inputs or the cache, must not be a symbolic link,
is not replaced without ``force``, and its folder must be writable. Temporaries carry the writer's PID, so a
later run can remove those a killed run left behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import UsageError

Inputs = Mapping[str, str | Path | None]


def read_text_file(path: str | Path, what: str, max_bytes: int, expected: str) -> str:
    """The UTF-8 text of the regular file ``path``, read through one bound: what every file the project reads
    (configs, id, prompt and caption files, records, results documents) goes through.

    A :class:`UsageError` in one line names the file as ``what`` and says what was ``expected`` when it is
    missing, not a regular file (a folder, a FIFO that would block, a device such as /dev/zero, followed links
    included), larger than ``max_bytes``, or not UTF-8 (a byte-order mark is dropped).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise UsageError(f"{what} '{path}' not found; expected {expected}") from None
    except OSError as error:
        raise UsageError(f"cannot read {what} '{path}': {error.strerror or error}") from None
    if not stat.S_ISREG(mode):
        raise UsageError(f"{what} '{path}' is not a regular file; expected {expected}")
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as error:
        raise UsageError(f"cannot read {what} '{path}': {error.strerror or error}") from None
    if len(data) > max_bytes:
        raise UsageError(f"{what} '{path}' is larger than {max_bytes:,} bytes; expected {expected}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(f"{what} '{path}' is not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
                         f"{error.start})") from None


def cache_dir() -> Path:
    """Where trained reference models and the judge are cached: ``$ERASEDIFF_CACHE`` or ~/.cache/erasediff."""
    root = os.environ.get("ERASEDIFF_CACHE") or Path.home() / ".cache" / "erasediff"
    return Path(root)


def _check_outside(path: Path, kind: str, option: str, inputs: Inputs) -> None:
    """Refuse an output that is, contains or lies inside an existing input or the cache (real paths compared)."""
    real = Path(os.path.realpath(path))
    given = [(name, Path(p), "every input") for name, p in inputs.items() if p is not None and Path(p).exists()]
    for name, other, outside in [*given, ("cache folder", cache_dir(), "the cache folder")]:
        resolved = Path(os.path.realpath(other))
        relation = ("is" if real == resolved else "contains" if real in resolved.parents
                    else "lies inside" if resolved in real.parents else None)
        if relation:
            raise UsageError(f"{kind} '{path}' {relation} the {name} '{other}'; choose an {option} outside {outside}")


def _check_writable(path: Path, kind: str) -> None:
    """Refuse a symbolic link, or a path whose nearest existing parent folder cannot take a new file."""
    if path.is_symlink():
        raise UsageError(f"{kind} '{path}' is a symbolic link; give the real path '{os.path.realpath(path)}'")
    parent = next(p for p in path.absolute().parents if p.exists() or p.is_symlink())
    if not parent.is_dir():
        raise UsageError(f"cannot write {kind} '{path}': '{parent}' is not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".erasediff-probe.", dir=parent)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        raise UsageError(f"cannot write {kind} '{path}': '{parent}' is not writable ({error.strerror})") from None


def check_output_dir(path: str | Path, force: bool, inputs: Inputs | None = None) -> Path:
    """Fail early (before any work) unless ``path`` can become the output folder.

    ``inputs`` names the command's input paths, e.g. ``{"input model": path}`` (None values and missing paths
    are skipped); with it the cache folder is protected too. ``inputs=None`` is for the package's own writes
    into the cache. A symbolic link is refused rather than followed, so ``force`` never replaces a link's target.
    """
    path = Path(path)
    if inputs is not None:
        _check_outside(path, "output folder", "--out", inputs)
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        raise UsageError(f"output folder '{path}' is the current folder or holds it; replacing it would pull the "
                         "ground from under this command: choose a new folder for --out")
    if path.exists() and not force:
        raise UsageError(f"output folder '{path}' already exists; choose another --out or pass --force")
    if path.exists() and not path.is_dir():
        raise UsageError(f"output path '{path}' exists and is not a folder")
    _check_writable(path, "output folder")
    return path


def check_output_file(path: str | Path, force: bool, inputs: Inputs, option: str = "--out") -> Path:
    """Fail early unless ``path`` can become an output file (``option`` names its flag in messages).

    The same rules as :func:`check_output_dir` for one file; its folder must already exist.
    """
    path = Path(path)
    _check_outside(path, "output file", option, inputs)
    if path.is_dir():
        raise UsageError(f"{option} '{path}' is a folder; give a file name")
    if path.exists() and not force:
        raise UsageError(f"output file '{path}' already exists; choose another {option} or pass --force")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"the folder of {option} '{path}' does not exist")
    _check_writable(path, "output file")
    return path


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries of ``path`` (``.NAME.PID.XXXXXXXX.tmp`` / ``.old``) whose writer is dead."""
    if not path.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]{{8}}\.(?:tmp|old)")
    for entry in path.parent.iterdir():
        if (match := pattern.fullmatch(entry.name)) and not _alive(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _umask() -> int:
    """This process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output_dir(path: str | Path, force: bool = False, inputs: Inputs | None = None) -> Iterator[Path]:
    """Yield a temporary folder beside ``path`` and rename it to ``path`` only when the block succeeds.

    ``path`` is checked first (:func:`check_output_dir`) and temporaries that dead runs left for it are
    removed. On any error (an interrupt too) the temporary folder and any parent folder made for it are
    removed and ``path`` is left as it was.
    """
    path = check_output_dir(path, force, inputs)
    remove_stale_temporaries(path)
    created_parents = [p for p in reversed(path.absolute().parents) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would hide a shared cache or a filed report from colleagues
    try:
        yield tmp
        if path.exists():
            backup = tmp.with_suffix(".old")
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


def as_json(data):
    """``data`` as JSON reads it back: numpy values made plain (:func:`to_jsonable`), tuples made lists, and
    mapping keys made strings (e.g. class ids)."""
    return json.loads(json.dumps(data, default=to_jsonable, allow_nan=True))


def write_json(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=to_jsonable, allow_nan=True))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
