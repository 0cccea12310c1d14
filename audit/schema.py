"""The results document an audit writes (``results.json``), schema 3, described in one place.

Torch-free: ``erasediff report`` reads it. Model roles are ``original``, ``unlearned`` and ``reference_1`` ..
``reference_K`` (models retrained without the forget set). Decisions are ``PASS``, ``FAIL`` or ``INCONCLUSIVE``.
Schema 3 decides membership on the mean over attacks per conditioning with the retrains' seed spread counted
(``membership.combined``, ``membership.seed_spread``, ``power.residual_leakage``); schemas 1 and 2 are not read.
"""

from __future__ import annotations

from typing import TypedDict

SCHEMA_VERSION = 3
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
    residual_fraction: dict | None
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
    seed_spread: dict  # audit.seed_spread.SeedPriors.describe(): the measured spread used, if any
    attacks: dict[str, dict[str, ComparisonDoc]]  # attack -> conditioning -> comparison
    combined: dict[str, dict]  # conditioning -> audit.membership.combine_attacks: the decision
    exposed_forget_images: list[ExposedImageDoc]


class PowerDoc(TypedDict):
    statement: str
    has_power: bool
    residual_leakage: dict[str, dict[str, dict | None]]  # conditioning -> attack or "mean" -> fraction
    would_decide: list[str]  # what would make each INCONCLUSIVE membership check decisive, in words


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
