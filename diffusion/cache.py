"""The local cache of trained models (reference, retrained references, judge), keyed by content.

A key hashes everything a cached artefact depends on (data fingerprint, member ids, recipe, parent model
fingerprint...), never a path: an edited data folder gets a new key instead of a stale model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

from .io import atomic_output_dir, cache_dir, to_jsonable
from .model import DiffusionModel

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

    Returns the model and whether it was built in this call.
    """
    if (directory / "erasediff.json").is_file():
        logger.info("reusing cached %s %s", what, directory)
        return DiffusionModel.load(directory), False
    model, record = build()
    with atomic_output_dir(directory, force=True) as tmp:
        model.save(tmp, record)
    return model, True
