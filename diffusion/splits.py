"""Deterministic member / heldout splits and the :class:`ForgetSpec` that says what to erase."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from .data import ImageDataset, LabeledImages, read_file_list
from .errors import UsageError
from .io import read_text_file
from .presets import DEFAULT_MEMBER_FRACTION


@dataclass(frozen=True)
class Splits:
    """Sample ids (indices into the dataset) of the training members and the i.i.d. heldout non-members.

    Both arrays are sorted int64 arrays and disjoint: drawn by :func:`make_splits` (stratified by class, from
    ``seed`` and ``member_fraction``) or declared by the user (:func:`declared_splits`: ``seed`` and
    ``member_fraction`` are None, and images of neither role are left out).
    """

    members: np.ndarray
    heldout: np.ndarray
    seed: int | None
    member_fraction: float | None

    @property
    def declared(self) -> bool:
        """Whether the user declared the roles (a model trained elsewhere) rather than the project drew them."""
        return self.seed is None

    def with_canaries(self, included: np.ndarray, canaries: np.ndarray) -> Splits:
        """The split of a model trained with canaries (:mod:`diffusion.canaries`): a canary is a member exactly
        when it is ``included``, and no canary is a heldout image (the never-included ones are kept for the canary
        test)."""
        included = np.asarray(included, dtype=np.int64)
        canaries = np.asarray(canaries, dtype=np.int64)
        members = np.union1d(np.setdiff1d(self.members, canaries), included).astype(np.int64)
        return Splits(members, np.setdiff1d(self.heldout, canaries).astype(np.int64), self.seed, self.member_fraction)

    def to_dict(self) -> dict:
        if self.declared:
            return {"declared": True, "num_members": len(self.members), "num_heldout": len(self.heldout),
                    "members_sha256": hashlib.sha256(self.members.tobytes()).hexdigest(),
                    "heldout_sha256": hashlib.sha256(self.heldout.tobytes()).hexdigest()}
        return {
            "seed": self.seed,
            "member_fraction": self.member_fraction,
            "num_members": len(self.members),
            "num_heldout": len(self.heldout),
            "members_sha256": hashlib.sha256(self.members.tobytes()).hexdigest(),
        }


def make_splits(
    labels: torch.Tensor | np.ndarray, seed: int, member_fraction: float = DEFAULT_MEMBER_FRACTION
) -> Splits:
    """Split sample ids into members and heldout, stratified by label, reproducibly from ``seed``.

    ``seed`` is an int in [0, 2**32 - 1]; every class needs enough images to appear on both sides.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        huge = isinstance(seed, int) and seed.bit_length() > 64  # never print thousands of digits
        shown = f"an int of {seed.bit_length()} bits" if huge else repr(seed)
        raise UsageError(f"the split seed must be an int in [0, 2**32 - 1]; got {shown}")
    if not 0.0 < member_fraction < 1.0:
        raise UsageError(f"member_fraction must be in (0, 1); got {member_fraction}")
    labels = np.asarray(labels)
    ids = np.arange(len(labels))
    try:
        members, heldout = train_test_split(
            ids, train_size=member_fraction, stratify=labels, random_state=seed, shuffle=True
        )
    except ValueError as error:
        raise UsageError(
            f"cannot split {len(labels)} images of {len(np.unique(labels))} classes with member_fraction "
            f"{member_fraction}: {str(error).strip().splitlines()[0]}"
        ) from None
    return Splits(np.sort(members).astype(np.int64), np.sort(heldout).astype(np.int64), seed, member_fraction)


def declared_splits(dataset: ImageDataset, members: str | None, heldout: str | None, data_root: str) -> Splits:
    """The roles a user declares for the images of the data folder ``data_root``: ``members`` (what the model was
    trained or fine-tuned on) and ``heldout`` (same distribution, never trained on), each a list of paths under the
    folder or a folder inside it (:func:`~diffusion.data.read_file_list`). A :class:`UsageError` when one is missing,
    and names a file of neither the data nor its role, a file given twice, and an image declared both member and
    heldout."""
    if not (members and heldout):
        given, missing = ("members", "heldout") if members else ("heldout", "members")
        raise UsageError(f"'{given}' is declared without '{missing}': declare both the images the model was "
                         "trained on and images of the same distribution it never saw")
    member_ids = dataset.ids_of_files(read_file_list(members, "the members", data_root), "the members")
    heldout_ids = dataset.ids_of_files(read_file_list(heldout, "the heldout images", data_root), "the heldout images")
    both = np.intersect1d(member_ids, heldout_ids)
    if len(both):
        raise UsageError(f"'{dataset.files[both[0]]}' is declared both a member and a heldout image "
                         f"({len(both)} image(s) in both); a heldout image is one the model never trained on")
    return Splits(np.sort(member_ids), np.sort(heldout_ids), None, None)


def member_split(dataset: ImageDataset, data_root: str, split_seed: int, member_fraction: float,
                 members: str | None = None, heldout: str | None = None) -> Splits:
    """The declared data roles (:func:`declared_splits`) when either is given, else the project's split drawn from
    ``split_seed`` and ``member_fraction`` (:func:`make_splits`)."""
    if members or heldout:
        return declared_splits(dataset, members, heldout, data_root)
    return make_splits(dataset.labels, split_seed, member_fraction)


def forget_file_ids(dataset: ImageDataset, splits: Splits, path: str, data_root: str) -> tuple[int, ...]:
    """The sample ids of the forget files ``path`` names (a list of paths under the data folder, or a folder inside
    it); a :class:`UsageError` for a file that is not a member."""
    ids = dataset.ids_of_files(read_file_list(path, "the forget files", data_root), "the forget files")
    outside = np.setdiff1d(ids, splits.members)
    if len(outside):
        raise UsageError(f"forget file '{dataset.files[outside[0]]}' is not among the members ({len(outside)} "
                         "such file(s)); only images the model was trained on can be forgotten")
    return tuple(sorted(ids.tolist()))


@dataclass(frozen=True)
class ForgetSpec:
    """What a deletion request removes: whole classes, specific member samples, or both.

    The spec is immutable and has a stable :meth:`fingerprint` that every output records.

    Attributes:
        classes: class ids whose every member image is forgotten.
        sample_ids: ids (dataset indices) of individual member images to forget.
        label: a free-text description for reports (e.g. the ticket of the deletion request).
        concept: for a text-to-image model, the prompts naming what is erased (its images are ``classes``'s).
        anchor: for a text-to-image model, the prompt the concept is mapped to ("" : the empty prompt).
    """

    classes: tuple[int, ...] = ()
    sample_ids: tuple[int, ...] = ()
    label: str = ""
    concept: tuple[str, ...] = ()
    anchor: str = ""
    _canonical: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(sorted({int(c) for c in self.classes})))
        object.__setattr__(self, "sample_ids", tuple(sorted({int(i) for i in self.sample_ids})))
        object.__setattr__(self, "concept", tuple(self.concept))
        if not self.classes and not self.sample_ids:
            raise UsageError("the forget set is empty; give at least one class id or one sample id")
        payload = {"classes": list(self.classes), "sample_ids": list(self.sample_ids)}
        if self.concept or self.anchor:  # image deletions keep the fingerprints they always had
            payload.update(concept=list(self.concept), anchor=self.anchor)
        object.__setattr__(self, "_canonical", json.dumps(payload, sort_keys=True))

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of the classes and sample ids (the label does not count)."""
        return hashlib.sha256(self._canonical.encode()).hexdigest()

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("_canonical")
        data["classes"], data["sample_ids"] = list(self.classes), list(self.sample_ids)
        data["concept"] = list(self.concept)
        data["fingerprint"] = self.fingerprint()
        return data

    def describe(self) -> str:
        parts = []
        if self.concept:  # a text model's concept names its class
            more = f" (+{len(self.concept) - 1} prompts)" if len(self.concept) > 1 else ""
            parts.append(f"concept '{self.concept[0]}'{more}")
        elif self.classes:
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


@dataclass(frozen=True, eq=False)
class ForgetTask:
    """What an unlearner is given: the forget set D_f, the remaining data D_r, and the class structure.

    Attributes:
        forget: member images to erase (images (N_f, C, H, W), labels, ids).
        retain: the remaining members D_r.
        forget_classes: classes erased entirely (empty for sample-level deletion).
        num_classes: number of class labels of the model.
        nonmembers: images the model never trained on, from the same distribution (a user's validation images),
            for methods that match the forget images to non-members; None when the user has none.
        anchor: for a text-to-image model (whose subsets' labels are caption token ids (N, L)), the token ids (L,)
            of the prompt the forget set is mapped to; None for a class-conditional model.
    """

    forget: LabeledImages
    retain: LabeledImages
    forget_classes: tuple[int, ...]
    num_classes: int
    nonmembers: LabeledImages | None = None
    anchor: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.forget) == 0:
            raise UsageError("the forget set is empty; give at least one member image to forget")
        if len(self.retain) == 0:
            raise UsageError("the remaining set is empty; at least one member image must be retained")
        if not self.retained_classes:
            raise UsageError(f"cannot forget every class ({self.num_classes}); at least one class must be retained")

    @classmethod
    def from_spec(cls, dataset: ImageDataset, splits: Splits, spec: ForgetSpec) -> ForgetTask:
        """The task for a deletion request ``spec`` on the training members of ``splits`` (validated first)."""
        spec.validate(dataset.labels, splits, dataset.num_classes)
        return cls(
            forget=dataset.select(spec.forget_ids(dataset.labels, splits)),
            retain=dataset.select(spec.retain_ids(dataset.labels, splits)),
            forget_classes=spec.classes,
            num_classes=dataset.num_classes,
        )

    @property
    def retained_classes(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.num_classes) if c not in self.forget_classes)

    def check_shape(self, image_shape: tuple[int, ...], what: str) -> None:
        """Raise :class:`UsageError` unless the task's images have the (C, H, W) ``image_shape`` a model takes;
        ``what`` names the job in the message."""
        shape = tuple(self.forget.images.shape[1:])
        if shape != tuple(image_shape):
            raise UsageError(f"{what}: the model takes images of shape {tuple(image_shape)} but the data's are "
                             f"{shape}")


def set_aside(preferred: np.ndarray, fallback: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` sorted ids drawn at random (from ``seed``) from ``preferred``, topped up from ``fallback`` (minus
    ``preferred``) when it has fewer; fewer than ``size`` only when both together have fewer. Used to keep a
    calibration set apart from the images an attack scores: ``preferred`` are ids nothing else uses."""
    rng = np.random.default_rng(seed)
    preferred = np.unique(np.asarray(preferred, dtype=np.int64))
    picked = rng.permutation(preferred)[:size]
    if len(picked) < size:
        rest = np.setdiff1d(np.asarray(fallback, dtype=np.int64), preferred)
        picked = np.r_[picked, rng.permutation(rest)[:size - len(picked)]]
    return np.sort(picked)


def calibration_ids(members: tuple[np.ndarray, np.ndarray], nonmembers: tuple[np.ndarray, np.ndarray], size: int,
                    seed: int, *, scored_share: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The ids of a calibration set: up to ``size`` members and ``size`` non-members, each drawn by :func:`set_aside`
    from its (unscored, scored) pair: ids nothing scores first, then at most ``scored_share`` of the scored ones."""

    def draw(unscored: np.ndarray, scored: np.ndarray) -> np.ndarray:
        return set_aside(unscored, scored, min(size, len(unscored) + math.floor(len(scored) * scored_share)), seed)

    return draw(*members), draw(*nonmembers)


def read_sample_ids(path: str) -> tuple[int, ...]:
    """Sample ids from a text file: integers separated by commas, spaces or new lines (``#`` starts a comment).

    The file is UTF-8 text of at most 10 MB; an id is a non-negative integer of at most 18 digits.
    """
    text = read_text_file(path, "forget-ids file", 10 * 2**20, "a text file of integer sample ids")
    ids = []
    for line in text.splitlines():
        for token in line.split("#", 1)[0].replace(",", " ").split():
            shown = repr(token if len(token) <= 20 else token[:20] + "...")
            digits = token[1:] if token[0] in "+-" else token
            if not (digits.isascii() and digits.isdigit()):
                raise UsageError(f"forget-ids file '{path}' holds a non-integer value {shown}; expected sample ids")
            if token[0] == "-":
                raise UsageError(f"forget-ids file '{path}' holds a negative sample id {shown}; ids are >= 0")
            if len(digits) > 18:
                raise UsageError(f"forget-ids file '{path}' holds a {len(digits)}-digit sample id {shown}; "
                                 "ids are dataset indices")
            ids.append(int(digits))
    if not ids:
        raise UsageError(f"forget-ids file '{path}' holds no sample ids")
    return tuple(ids)
