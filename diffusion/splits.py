"""Deterministic member / heldout splits and the :class:`ForgetSpec` that says what to erase."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from .errors import UsageError


@dataclass(frozen=True)
class Splits:
    """Sample ids (indices into the dataset) of the training members and the i.i.d. heldout non-members.

    Both arrays are sorted int64 arrays; they are disjoint and stratified by class.
    """

    members: np.ndarray
    heldout: np.ndarray
    seed: int
    member_fraction: float

    def to_dict(self) -> dict:
        return {
            "seed": self.seed,
            "member_fraction": self.member_fraction,
            "num_members": int(len(self.members)),
            "num_heldout": int(len(self.heldout)),
            "members_sha256": hashlib.sha256(self.members.tobytes()).hexdigest(),
        }


def make_splits(labels: torch.Tensor | np.ndarray, seed: int, member_fraction: float = 0.5) -> Splits:
    """Split sample ids into members and heldout, stratified by label, reproducibly from ``seed``."""
    if not 0.0 < member_fraction < 1.0:
        raise UsageError(f"member_fraction must be in (0, 1); got {member_fraction}")
    labels = np.asarray(labels)
    ids = np.arange(len(labels))
    members, heldout = train_test_split(
        ids, train_size=member_fraction, stratify=labels, random_state=seed, shuffle=True
    )
    return Splits(np.sort(members).astype(np.int64), np.sort(heldout).astype(np.int64), seed, member_fraction)


@dataclass(frozen=True)
class ForgetSpec:
    """What a deletion request removes: whole classes, specific member samples, or both.

    The spec is immutable and has a stable :meth:`fingerprint` that every output records.

    Attributes:
        classes: class ids whose every member image is forgotten.
        sample_ids: ids (dataset indices) of individual member images to forget.
        label: a free-text description for reports (e.g. the ticket of the deletion request).
    """

    classes: tuple[int, ...] = ()
    sample_ids: tuple[int, ...] = ()
    label: str = ""
    _canonical: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(sorted({int(c) for c in self.classes})))
        object.__setattr__(self, "sample_ids", tuple(sorted({int(i) for i in self.sample_ids})))
        if not self.classes and not self.sample_ids:
            raise UsageError("the forget set is empty; give at least one class id or one sample id")
        payload = {"classes": list(self.classes), "sample_ids": list(self.sample_ids)}
        object.__setattr__(self, "_canonical", json.dumps(payload, sort_keys=True))

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of the classes and sample ids (the label does not count)."""
        return hashlib.sha256(self._canonical.encode()).hexdigest()

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("_canonical")
        data["classes"], data["sample_ids"] = list(self.classes), list(self.sample_ids)
        data["fingerprint"] = self.fingerprint()
        return data

    def describe(self) -> str:
        parts = []
        if self.classes:
            parts.append("class " + ", ".join(map(str, self.classes)))
        if self.sample_ids:
            parts.append(f"{len(self.sample_ids)} member sample(s)")
        return self.label or " + ".join(parts)

    def validate(self, labels: torch.Tensor | np.ndarray, splits: Splits, num_classes: int) -> None:
        """Raise :class:`UsageError` for a class id the data lacks, a non-member sample id, or every class."""
        for c in self.classes:
            if not 0 <= c < num_classes:
                raise UsageError(f"forget class {c} is out of range; expected a class id in 0..{num_classes - 1}")
        if len(self.classes) >= num_classes:
            raise UsageError(f"cannot forget every class ({num_classes}); at least one class must be retained")
        member_set = set(splits.members.tolist())
        for i in self.sample_ids:
            if not 0 <= i < len(labels):
                raise UsageError(f"forget sample id {i} is out of range; expected an id in 0..{len(labels) - 1}")
            if i not in member_set:
                raise UsageError(f"forget sample id {i} is not a training member; only members can be forgotten")

    def forget_ids(self, labels: torch.Tensor | np.ndarray, splits: Splits) -> np.ndarray:
        """Member ids in the forget set (sorted)."""
        labels = np.asarray(labels)
        in_class = np.isin(labels[splits.members], self.classes)
        chosen = set(splits.members[in_class].tolist()) | set(self.sample_ids)
        return np.array(sorted(chosen), dtype=np.int64)

    def retain_ids(self, labels: torch.Tensor | np.ndarray, splits: Splits) -> np.ndarray:
        """Member ids not in the forget set (sorted)."""
        return np.setdiff1d(splits.members, self.forget_ids(labels, splits))

    def heldout_ids(self, labels: torch.Tensor | np.ndarray, splits: Splits) -> np.ndarray:
        """Heldout non-members from the same classes as the forget set: the i.i.d. reference for attacks."""
        labels = np.asarray(labels)
        classes = np.unique(labels[self.forget_ids(labels, splits)])
        return splits.heldout[np.isin(labels[splits.heldout], classes)]


def read_sample_ids(path: str) -> tuple[int, ...]:
    """Sample ids from a text file: integers separated by commas, spaces or new lines (``#`` starts a comment)."""
    from pathlib import Path

    file = Path(path)
    if not file.is_file():
        raise UsageError(f"forget-ids file '{path}' not found; expected a text file of integer sample ids")
    tokens = []
    for line in file.read_text().splitlines():
        tokens += line.split("#", 1)[0].replace(",", " ").split()
    try:
        ids = tuple(int(token) for token in tokens)
    except ValueError as error:
        raise UsageError(f"forget-ids file '{path}' holds a non-integer value: {error}") from None
    if not ids:
        raise UsageError(f"forget-ids file '{path}' holds no sample ids")
    return ids
