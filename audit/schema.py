"""The results document an audit writes (``results.json``), schema 2, described in one place.

Torch-free: ``erasediff report`` reads it. Model roles are ``original``, ``unlearned`` and ``reference_1`` ..
``reference_K`` (models retrained without the forget set). Decisions are ``PASS``, ``FAIL`` or ``INCONCLUSIVE``.
Schema 1 (one retrained model, fixed tolerances, pass/fail) is not read by this version.
"""

from __future__ import annotations

from typing import TypedDict

SCHEMA_VERSION = 2
ROLE_PATTERN = r"original|unlearned|reference_[1-9][0-9]*"


class ComparisonDoc(TypedDict, total=False):
    """One attack under one conditioning: the unlearned and the original model against the references.

    ``auc[scale][subject]`` (a :class:`audit.statistics.PairedDifference` as a dict) for scale ``raw`` and
    (K >= 2) ``calibrated``, subject ``unlearned`` / ``original``; ``scale`` is the one decisions use (None
    without references, then ``note`` says why).
    """

    scale: str | None
    auc: dict[str, dict[str, dict]]
    tpr_at_resolvable_fpr: dict
    decision: str
    power: bool
    samples_needed: int | None
    unlearned_forget_z: list[float]
    note: str


class ExposedImageDoc(TypedDict):
    """A forget image whose calibrated score under the unlearned model stands out."""

    sample_id: int
    label: int
    attack: str
    conditioning: str
    z: float
    p_value: float


class CalibrationDoc(TypedDict):
    """The images the attacks fitted their free choices on (never scored), and what each attack chose."""

    num_members: int
    num_nonmembers: int
    member_ids: list[int]
    nonmember_ids: list[int]
    fitted_on: str  # the model role the attacks were fitted against: "original"
    attacks: dict[str, dict]  # attack -> {"grid": [{param: value, "auc": float}], "chosen": {param: value}, ...}


class MembershipDoc(TypedDict):
    references: list[str]
    conditionings: list[str]  # "label", and "inverted" when classes are erased
    num_forget: int
    num_heldout: int
    inversion_image_ids: list[int]
    calibration: CalibrationDoc | None  # None: the attacks ran at their fixed paper defaults
    confidence: float
    margin: float
    attacks: dict[str, dict[str, ComparisonDoc]]  # attack -> conditioning -> comparison
    exposed_forget_images: list[ExposedImageDoc]


class PowerDoc(TypedDict):
    statement: str
    has_power: bool
    samples_needed: int | None


class ResultsDocument(TypedDict):
    """results.json. ``attacks[attack][role]`` holds attacks.metrics.membership_metrics under the label
    conditioning (ROC, AUC with its own interval, TPR at low FPR, tests); ``utility``, ``extraction`` and
    ``resurrection`` are keyed by role (``resurrection[role]`` holds ``regeneration``, ``inversion`` and
    ``relearning``: attacks.relearning.RelearningCurve.to_dict); ``images`` maps a key to a PNG file name in
    ``images/``."""

    schema_version: int
    verdict: str
    created: str
    config: dict
    forget_spec: dict
    data: dict
    environment: dict
    judge: dict
    models: dict[str, dict]
    unlearning: dict | None
    membership: MembershipDoc
    attacks: dict[str, dict[str, dict]]
    utility: dict[str, dict]
    extraction: dict[str, dict]
    resurrection: dict[str, dict]
    images: dict[str, str]
    checks: list[dict]  # audit.checks.Check as dicts
    power: PowerDoc
    timings: dict[str, float]
