"""Canaries: images of the data assigned to training at random, so that a deletion can be tested exactly.

``draw_canaries`` takes 2M images from the data's heldout pool (never trained on) and includes each in training
with probability 1/2, from a secret seed. The trainer gets the included ids (``included_ids.txt``); the
assignment itself is sealed (``sealed/assignment.json``), and the canary list (``canaries.json``) and every model
trained with it record only a SHA-256 commitment to it, so an unlearning method cannot tell which canaries were in.
A deletion request deletes the included canaries together with the user's own forget set, and the canary audit
(:mod:`audit.canary`) scores the deleted canaries against the never-included ones: Zhang, Das, Kamath, Tramer,
"Membership Inference Attacks Cannot Prove that a Model Was Trained On Your Data" (SaTML 2025); Steinke, Nasr,
Jagielski, "Privacy Auditing with One (1) Training Run" (NeurIPS 2023).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import ImageDataset
from .errors import UsageError
from .io import atomic_output_dir, read_text_file, write_json
from .seeding import derive_seed
from .splits import Splits, read_sample_ids

CANARIES_FILE = "canaries.json"
INCLUDED_FILE = "included_ids.txt"
INCLUDED_FILES_FILE = "included_files.txt"
SEALED_FILE = "sealed/assignment.json"
_MAX_BYTES = 50 * 2**20


def commitment(salt: str, included: np.ndarray) -> str:
    """SHA-256 of the salt and the sorted included ids: binds the assignment without revealing it."""
    text = salt + ":" + ",".join(str(int(i)) for i in np.sort(np.asarray(included)))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Canaries:
    """A canary set (``canaries.json``): the data it was drawn from, the canary ids (sorted) and the commitment to
    their assignment. Public: a model trained with it records the commitment."""

    data: str
    data_fingerprint: str
    split_seed: int
    member_fraction: float
    ids: np.ndarray
    commitment: str

    def to_dict(self) -> dict:
        return {"data": self.data, "data_fingerprint": self.data_fingerprint, "split_seed": self.split_seed,
                "member_fraction": self.member_fraction, "ids": self.ids.tolist(), "commitment": self.commitment}

    def record(self) -> dict:
        """What a model trained with these canaries records (never the assignment)."""
        return {"commitment": self.commitment, "num_canaries": int(self.ids.size)}

    def check_data(self, dataset: ImageDataset) -> None:
        if dataset.fingerprint() != self.data_fingerprint:
            raise UsageError(f"the canaries were drawn from data '{self.data}' (fingerprint "
                             f"{self.data_fingerprint[:12]}); the data given differs: give the same data")


@dataclass(frozen=True)
class SealedAssignment:
    """Which canaries were included in training (``included``, sorted), with the salt of the commitment."""

    salt: str
    included: np.ndarray

    def commitment(self) -> str:
        return commitment(self.salt, self.included)


def draw_canaries(data: str, dataset: ImageDataset, splits: Splits, count: int, seed: int,
                  chosen: np.ndarray | None = None) -> tuple[Canaries, SealedAssignment]:
    """``count`` canaries from the heldout pool of ``splits`` (or the user's ``chosen`` ids, whatever their side of
    the split: a canary trains exactly when it is included), each included with probability 1/2 (``seed``);
    ``data`` is how the data is named on the command line (``digits`` or a folder), ``dataset`` the data loaded."""
    rng = np.random.default_rng(derive_seed(seed, "canaries") % 2**32)
    if chosen is not None:
        ids, count = np.sort(np.asarray(chosen, dtype=np.int64)), len(chosen)
        if count < 4 or count >= len(splits.members) + len(splits.heldout):
            raise UsageError(f"the canary images must be at least 4 and leave other images to train on; got {count}")
    else:
        if count < 4 or count > len(splits.heldout):
            raise UsageError(f"--count must be between 4 and {len(splits.heldout)} (the heldout images of the data); "
                             f"got {count}")
        ids = np.sort(rng.choice(splits.heldout, size=count, replace=False)).astype(np.int64)
    included = ids[rng.random(count) < 0.5]
    if included.size in (0, count):
        raise UsageError(f"seed {seed} included {included.size} of {count} canaries; draw again with another seed")
    salt = hashlib.sha256(f"canary-salt:{seed}".encode()).hexdigest()
    sealed = SealedAssignment(salt, included)
    canaries = Canaries(data, dataset.fingerprint(), splits.seed, splits.member_fraction, ids,
                        sealed.commitment())
    return canaries, sealed


def write_canaries(folder: str | Path, canaries: Canaries, sealed: SealedAssignment, force: bool = False,
                   files: tuple[str, ...] | None = None) -> None:
    """The canary folder, written atomically: ``canaries.json``, ``included_ids.txt`` (for the trainer; with the
    data folder's ``files``, ``included_files.txt`` too, for a trainer outside this project) and
    ``sealed/assignment.json`` (for the auditor only)."""
    with atomic_output_dir(folder, force) as out:
        write_json(out / CANARIES_FILE, canaries.to_dict())
        (out / INCLUDED_FILE).write_text(" ".join(map(str, sealed.included.tolist())) + "\n")
        if files is not None:
            (out / INCLUDED_FILES_FILE).write_text("".join(files[i] + "\n" for i in sealed.included.tolist()))
        (out / SEALED_FILE).parent.mkdir()
        write_json(out / SEALED_FILE, {"salt": sealed.salt, "included": sealed.included.tolist()})


def read_canaries(folder: str | Path) -> Canaries:
    """``canaries.json`` of a canary folder; a :class:`UsageError` in one line when it is missing or malformed."""
    path = Path(folder) / CANARIES_FILE
    text = read_text_file(path, "canary file", _MAX_BYTES, f"the {CANARIES_FILE} of 'erasediff canaries make'")
    try:
        data = json.loads(text)
        ids = np.asarray(data["ids"], dtype=np.int64)
        canaries = Canaries(str(data["data"]), str(data["data_fingerprint"]), int(data["split_seed"]),
                            float(data["member_fraction"]), ids, str(data["commitment"]))
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path} is not a canary file ({type(error).__name__}: {error})") from None
    if ids.ndim != 1 or ids.size < 4 or np.unique(ids).size != ids.size:
        raise UsageError(f"{path}: expected at least 4 distinct canary ids")
    return canaries


def read_included(folder: str | Path, canaries: Canaries) -> np.ndarray:
    """The included canary ids (``included_ids.txt``, the trainer's list), checked to be canaries."""
    included = np.asarray(read_sample_ids(str(Path(folder) / INCLUDED_FILE)), dtype=np.int64)
    stray = np.setdiff1d(included, canaries.ids)
    if stray.size:
        raise UsageError(f"{INCLUDED_FILE} names ids that are not canaries: {stray[:5].tolist()}")
    return np.unique(included)


def read_sealed(folder: str | Path, canaries: Canaries) -> SealedAssignment:
    """The sealed assignment, checked against the canary file's commitment."""
    path = Path(folder) / SEALED_FILE
    text = read_text_file(path, "sealed canary assignment", _MAX_BYTES, "the sealed assignment of the canaries")
    try:
        data = json.loads(text)
        sealed = SealedAssignment(str(data["salt"]), np.sort(np.asarray(data["included"], dtype=np.int64)))
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"{path} is not a sealed assignment ({type(error).__name__}: {error})") from None
    if sealed.commitment() != canaries.commitment:
        raise UsageError(f"{path} does not match the commitment in {CANARIES_FILE}: the assignment was changed")
    return sealed


def check_model_commitment(metadata: dict, canaries: Canaries, where: str) -> None:
    """A model must record the commitment of these canaries (it was trained, or erased from a model trained, with
    them); else a :class:`UsageError` in one line."""
    recorded = (metadata.get("canaries") or {}).get("commitment")
    if recorded is None:
        raise UsageError(f"{where} records no canaries: train it with 'erasediff train --canaries'")
    if recorded != canaries.commitment:
        raise UsageError(f"{where} was trained with other canaries (commitment {recorded[:12]}...); the canary file "
                         f"given commits to {canaries.commitment[:12]}...")


def canary_split(folder: str | Path, dataset: ImageDataset, splits: Splits) -> tuple[Splits, Canaries, np.ndarray]:
    """(the split of a model trained with the canaries of ``folder``: its included canaries are members and no
    canary is heldout; the canaries; the included ids). A :class:`UsageError` when the canaries were drawn from
    other data or for another split."""
    canaries = read_canaries(folder)
    canaries.check_data(dataset)
    if (canaries.split_seed, canaries.member_fraction) != (splits.seed, splits.member_fraction):
        raise UsageError(f"the canaries were drawn for split seed {canaries.split_seed} and member fraction "
                         f"{canaries.member_fraction:g}; got {splits.seed} and {splits.member_fraction:g}")
    included = read_included(folder, canaries)
    return splits.with_canaries(included, canaries.ids), canaries, included
