"""The local cache of trained models (reference, retrained references, judge), keyed by content.

A key hashes everything a cached artefact depends on (data fingerprint, member ids, recipe, parent model
fingerprint...), never a path: an edited data folder gets a new key instead of a stale model. Several processes
(or machines sharing the folder) may fill one cache at once: an entry is built under a lock file beside it, so a
second process that needs the same entry waits and reuses it instead of training it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from accelerate.utils import broadcast_object_list
from filelock import FileLock, Timeout

from .io import atomic_output_dir, cache_dir, to_jsonable
from .loading import load_model
from .model import DiffusionModel
from .training import process_state

logger = logging.getLogger(__name__)


def content_key(payload: object) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of ``payload``."""
    text = json.dumps(payload, sort_keys=True, default=to_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_entry(kind: str, payload: object) -> Path:
    """The cache folder of a ``kind`` of artefact ("reference", "retrained", "judges") for ``payload``."""
    return cache_dir() / kind / content_key(payload)


def load_or_build_model(
    directory: Path, build: Callable[[], tuple[DiffusionModel, dict]], what: str
) -> tuple[DiffusionModel, bool]:
    """The model cached in ``directory``, or ``build()``'s (model, record) saved there atomically first.

    Returns the model and whether it was built in this call. Within :func:`building`: another job that finds the
    entry being built waits for it, and the processes of one launch build it together.
    """
    with building(directory, what, lambda: (directory / "erasediff.json").is_file()) as needed:
        if not needed:
            logger.info("reusing cached %s %s", what, directory)
            return load_model(directory), False
        model, record = build()
        if process_state().is_main_process:
            with atomic_output_dir(directory, force=True) as tmp:
                model.save(tmp, record)
    return model, True


@contextmanager
def building(directory: Path, what: str, ready: Callable[[], bool]) -> Iterator[bool]:
    """Within the block: whether the cache entry ``directory`` must be built (False: ``ready()``, load it).

    Jobs that share the cache exclude each other with a lock file beside the entry (``.NAME.lock``, an OS lock
    from ``filelock``, released when its holder ends however it ends: a killed build never blocks the next); a
    job that has to wait says so once in the log. The processes of one Accelerate launch build an entry together
    (training is distributed): the main process holds the lock and decides, the others follow its decision, only
    the main process may write the entry, and all leave the block once it is written.
    """
    state = process_state()
    lock = None
    if state.is_main_process:
        directory.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(directory.parent / f".{directory.name}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            logger.info("waiting for another process building %s %s", what, directory)
            lock.acquire()
    try:
        needed = [not ready()] if state.is_main_process else [None]
        if state.num_processes > 1:
            broadcast_object_list(needed)
        yield needed[0]
        state.wait_for_everyone()
    finally:
        if lock is not None:
            lock.release()
