"""The results document an audit writes (``results.json``, schema 3): one typed tree that owns its keys.

:class:`AuditResults` is a tree of dataclasses; :meth:`Record.from_json` builds it from a parsed JSON document and
refuses, in one line naming the key, a missing key, a value of the wrong type, an unknown key where the audit owns
the section, a decision that is not PASS / FAIL / INCONCLUSIVE, a model role or attack name of the wrong form, or a
verdict that does not follow from the checks. :meth:`Record.to_json` writes the same document back. The audit builds
the tree before writing (so what it writes parses), and the report renders only a tree it built.

Sections the audit's decisions are made of (checks, membership comparisons and their paired differences, the
power statement) are closed: every key is a field here. Records a producer below the audit owns (an attack's
metrics and cost, the utility, extraction and resurrection probes' records, the environment) are open: the keys the
checks and the report read are typed fields, and further keys are kept as they are.

Model roles are ``original``, ``unlearned`` and ``reference_1`` .. ``reference_K`` (models retrained without the
forget set). Torch-free: ``erasediff report`` reads it.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Self

from diffusion.errors import UsageError
from diffusion.params import cut_text, short_repr

SCHEMA_VERSION = 3
PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
DECISIONS = (PASS, FAIL, INCONCLUSIVE)
ROLE = re.compile(r"original|unlearned|reference_[1-9][0-9]*")
REFERENCE = re.compile(r"reference_[1-9][0-9]*")
ATTACK_NAME = re.compile(r"[A-Za-z0-9_-]+")  # attack names become file names: scores/<attack>.csv
CLASS_KEY = re.compile(r"0|[1-9][0-9]{0,8}")
IMAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.png")  # a plain file name in the run's images/ folder
Json = Any  # a JSON value kept as it is


@dataclass(frozen=True)
class Keys:
    """``Annotated[dict[str, X], Keys(...)]``: every key of the mapping matches ``pattern`` (checked before values),
    else "has the ``what`` <key>; ``hint``"."""

    pattern: re.Pattern
    what: str
    hint: str


MODEL_KEYS = Keys(ROLE, "model", "expected original, unlearned or reference_1, reference_2, ...")
ATTACK_KEYS = Keys(ATTACK_NAME, "attack", "an attack name is letters, digits, '_' or '-'")


class _Absent:
    """The value of an optional field whose key the document does not hold (written back as no key at all)."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()
OPTIONAL = {"optional": True}  # field metadata: the key may be absent (then the field is ABSENT)


def verdict_of(decisions: Sequence[str]) -> str:
    """The verdict rule on decisions alone: FAIL if any fails, INCONCLUSIVE if any is inconclusive (or there is
    none), else PASS."""
    for decision in decisions:
        if decision not in DECISIONS:
            raise ValueError(f"unknown decision {decision!r}: expected one of {', '.join(DECISIONS)}")
    if FAIL in decisions:
        return FAIL
    if INCONCLUSIVE in decisions or not decisions:
        return INCONCLUSIVE
    return PASS


class DocumentError(UsageError):
    """A results document that does not parse: the message names the key (``where``) and what was expected."""


def _fail(where: str, problem: str) -> typing.NoReturn:
    """Raise the one-line error: ``problem`` of the key ``where`` ("" for the document itself)."""
    raise DocumentError(f"key '{cut_text(where, 80)}' {cut_text(problem, 200)}" if where else cut_text(problem, 200))


def is_number(value: Any) -> bool:
    """A JSON number: an int or a float, never a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _type_name(kind: Any) -> str:
    """How a message names the annotation ``kind`` (the JSON types: dict, list, str, int, bool, numbers)."""
    if isinstance(kind, type) and issubclass(kind, Record):
        return "dict"
    origin = typing.get_origin(kind)
    if origin is list:
        return "a list of numbers" if typing.get_args(kind)[0] is float else "list"
    if origin is dict:
        return "dict"
    return {float: "int or float"}.get(kind, getattr(kind, "__name__", str(kind)))


def _parse(kind: Any, value: Any, where: str) -> Any:
    """``value`` (at key ``where``) checked against the annotation ``kind`` and built into it."""
    if kind is Any:
        return value
    if typing.get_origin(kind) is typing.Annotated:
        kind, keys = typing.get_args(kind)
        for key in value if isinstance(value, dict) else ():
            if not keys.pattern.fullmatch(key):
                _fail(where, f"has the {keys.what} {short_repr(key)}; {keys.hint}")
    nullable = False
    if typing.get_origin(kind) in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        (kind,) = [option for option in options if option is not type(None)]
        nullable = True
    expected = _type_name(kind) + (" or null" if nullable else "")
    origin = typing.get_origin(kind)
    if isinstance(kind, type) and issubclass(kind, Record):
        if not isinstance(value, dict):
            _fail(where, f"must be {expected}; got {short_repr(value)}")
        return kind.from_json(value, where)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list) or (item is float and not all(is_number(v) for v in value)):
            _fail(where, f"must be {expected}; got {short_repr(value)}")
        return [_parse(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(kind)
        if not isinstance(value, dict):
            _fail(where, f"must be {expected}; got {short_repr(value)}")
        return {k: _parse(item, v, f"{where}.{k}") for k, v in value.items()}
    if kind is float:
        if not is_number(value):
            _fail(where, f"must be {expected}; got {short_repr(value)}")
        return value
    if kind in (int, str, bool) and type(value) is not kind:
        _fail(where, f"must be {expected}; got {short_repr(value)}")
    return value


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


class Record:
    """A node of the results tree: a dataclass whose fields are the keys of one JSON object.

    ``OPEN`` records keep keys they do not declare (in ``extra``); closed ones refuse them. A field with
    ``metadata=OPTIONAL`` may be absent from the document: it is then :data:`ABSENT` (falsy) and written back as no
    key. Subclasses add rules across fields in :meth:`validate`.
    """

    OPEN: ClassVar[bool] = False

    @classmethod
    def from_json(cls, value: Any, where: str = "") -> Self:
        if not isinstance(value, dict):
            _fail(where, f"must be dict; got {short_repr(value)}")
        hints = typing.get_type_hints(cls, include_extras=True)
        values, declared = {}, set()
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            key = f.metadata.get("key", f.name)
            declared.add(key)
            here = f"{where}.{key}" if where else key
            if key not in value:
                if f.metadata.get("optional"):
                    values[f.name] = ABSENT
                    continue
                _fail(where, f"lacks '{key}'" if where else f"lacks the key '{key}'")
            values[f.name] = _parse(hints[f.name], value[key], here)
        unknown = [k for k in value if k not in declared]
        if unknown and not cls.OPEN:
            _fail(f"{where}.{unknown[0]}" if where else unknown[0], "is not a key of this section")
        if cls.OPEN:
            values["extra"] = {k: value[k] for k in unknown}
        record = cls(**values)
        record.validate(where)
        return record

    def to_json(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update(value)
            elif value is not ABSENT:
                out[f.metadata.get("key", f.name)] = _dump(value)
        return out

    def validate(self, where: str) -> None:
        """Rules across fields (decisions, roles, lengths); a one-line :class:`DocumentError` when broken."""


def _check_decision(decision: str, where: str) -> None:
    if decision not in DECISIONS:
        _fail(where, f"must be one of {', '.join(DECISIONS)}; got {short_repr(decision)}")


def _check_roles(section: dict, where: str, required: Sequence[str]) -> None:
    for role in required:
        if role not in section:
            _fail(where, f"lacks the model '{role}'")


@dataclass
class Check(Record):
    """One line of the verdict.

    Attributes:
        decision: PASS, FAIL or INCONCLUSIVE.
        estimate: the measured difference (or value) the decision is about.
        interval: [low, high] of ``estimate`` at the audit's confidence; None for a point check.
        rule: the decision rule in words.
    """

    name: str
    description: str
    decision: str
    estimate: float | None
    interval: list[float] | None
    rule: str
    detail: str

    def validate(self, where: str) -> None:
        _check_decision(self.decision, f"{where}.decision")
        if self.interval is not None and len(self.interval) != 2:
            _fail(f"{where}.interval", "must be [low, high]")


@dataclass
class PairedDifference(Record):
    """A subject model's metric minus the mean of the retrained references', with an interval that counts both the
    images (paired bootstrap) and the retrains' seeds.

    ``low``/``high``: estimate -/+ q sqrt(max(bootstrap_se^2, seed_variance (1 + 1/K))), q the Student-t quantile
    at ``confidence`` on ``seed_dof`` degrees of freedom when the seed term is the larger, else the normal one; see
    :func:`audit.statistics.seed_aware_difference`. ``bootstrap_low``/``bootstrap_high``
    are the percentile interval of the images alone (the models held fixed). ``standard_error`` is the total,
    ``bootstrap_standard_error`` the images' part. ``reference_spread`` is the SD of the references' own values
    (0.0 with one reference). ``seed_dof`` 0 means the seed spread is unknown (one reference and no shipped
    measurement): then the interval holds the images only and no PASS is given.
    """

    metric: str
    estimate: float
    low: float
    high: float
    confidence: float
    standard_error: float
    subject_value: float
    reference_values: list[float]
    reference_spread: float
    num_members: int
    num_nonmembers: int
    n_bootstrap: int
    bootstrap_low: float
    bootstrap_high: float
    bootstrap_standard_error: float
    seed_variance: float
    seed_dof: float
    seed_source: str


@dataclass
class ResidualFraction(Record):
    """The share of the original's signal left in the unlearned model, (unlearned - refs) / (original - refs)."""

    estimate: float
    low: float
    high: float
    confidence: float
    note: str | None = field(default=ABSENT, metadata=OPTIONAL)


@dataclass
class TprDifference(Record):
    """The unlearned model's TPR at the lowest FPR the heldout images resolve, against the references'."""

    fpr: float
    unlearned: PairedDifference


@dataclass
class Comparison(Record):
    """One attack under one conditioning: the unlearned and the original model against the references.

    ``auc[scale][subject]`` for scale ``raw`` and (K >= 2) ``calibrated``, subject ``unlearned`` / ``original``;
    ``scale`` is the one decisions use (None without references, then ``note`` says why).
    """

    scale: str | None
    decision: str
    power: bool
    auc: dict[str, dict[str, PairedDifference]] | None = field(default=ABSENT, metadata=OPTIONAL)
    tpr_at_resolvable_fpr: TprDifference | None = field(default=ABSENT, metadata=OPTIONAL)
    residual_fraction: ResidualFraction | None = field(default=ABSENT, metadata=OPTIONAL)
    unlearned_forget_z: list[float] | None = field(default=ABSENT, metadata=OPTIONAL)
    note: str | None = field(default=ABSENT, metadata=OPTIONAL)

    def validate(self, where: str) -> None:
        _check_decision(self.decision, f"{where}.decision")
        if self.scale is None:
            if not isinstance(self.note, str):
                _fail(f"{where}.note", "must be str (why there is no comparison)")
            return
        if not self.auc or self.scale not in self.auc:
            _fail(f"{where}.auc", f"lacks its scale {short_repr(self.scale)}")
        for scale, subjects in self.auc.items():
            for subject in ("unlearned", "original"):
                if subject not in subjects:
                    _fail(f"{where}.auc.{scale}", f"lacks '{subject}'")


@dataclass
class Combined(Record):
    """The membership decision under one conditioning: the mean over attacks, vetoes, the residual guard
    (:func:`audit.membership.combine_attacks`); without references, only a decision and a ``note``."""

    decision: str
    power: bool
    vetoes: list[str]
    attacks: list[str] | None = field(default=ABSENT, metadata=OPTIONAL)
    unlearned: PairedDifference | None = field(default=ABSENT, metadata=OPTIONAL)
    original: PairedDifference | None = field(default=ABSENT, metadata=OPTIONAL)
    residual_guard: bool | None = field(default=ABSENT, metadata=OPTIONAL)
    residual_fraction: ResidualFraction | None = field(default=ABSENT, metadata=OPTIONAL)
    note: str | None = field(default=ABSENT, metadata=OPTIONAL)

    def validate(self, where: str) -> None:
        _check_decision(self.decision, f"{where}.decision")
        if not self.unlearned:
            if not self.note:
                _fail(where, "lacks 'unlearned' (or a 'note' saying why there is no comparison)")
        elif not self.original or self.residual_guard is ABSENT:
            _fail(where, "lacks 'original' or 'residual_guard'")


@dataclass
class ExposedImage(Record):
    """A forget image whose calibrated score under the unlearned model stands out."""

    sample_id: int
    label: int
    attack: str
    conditioning: str
    z: float
    p_value: float


@dataclass
class FittedAttack(Record):
    """What one attack chose on the calibration images: ``grid`` of candidates with their AUC, ``chosen``."""

    OPEN = True
    grid: list[dict[str, Any]]
    extra: dict[str, Json] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        if not all(is_number(row.get("auc")) for row in self.grid):
            _fail(f"{where}.grid", "must list candidates with an 'auc'")


@dataclass
class Calibration(Record):
    """The images the attacks fitted their free choices on (never scored), and what each attack chose."""

    num_members: int
    num_nonmembers: int
    member_ids: list[int]
    nonmember_ids: list[int]
    fitted_on: str  # the model role the attacks were fitted against: "original"
    attacks: dict[str, FittedAttack]


@dataclass
class SeedSpreadRecord(Record):
    """The measured seed spread an audit used (:meth:`audit.seed_spread.SeedPriors.describe`)."""

    dof: int
    source: str
    scale: float
    variances: dict[str, dict[str, float]]
    dofs: dict[str, int] | None = field(default=ABSENT, metadata=OPTIONAL)  # per conditioning, where not ``dof``
    sources: dict[str, str] | None = field(default=ABSENT, metadata=OPTIONAL)  # per conditioning, where not ``source``
    scales: dict[str, float] | None = field(default=ABSENT, metadata=OPTIONAL)  # per conditioning, where not ``scale``


@dataclass
class Membership(Record):
    """Every attack against the references under every conditioning, and the decision per conditioning."""

    references: list[str]
    conditionings: list[str]  # "label", and "inverted" when classes are erased
    num_forget: int
    num_heldout: int
    confidence: float
    margin: float
    seed_spread: SeedSpreadRecord
    attacks: Annotated[dict[str, dict[str, Comparison]], ATTACK_KEYS]  # attack -> conditioning -> comparison
    combined: dict[str, Combined]  # conditioning -> decision
    exposed_forget_images: list[ExposedImage]
    inversion_image_ids: list[int]
    calibration: Calibration | None  # None: the attacks ran at their fixed paper defaults

    def validate(self, where: str) -> None:
        for role in self.references:
            if not REFERENCE.fullmatch(role):
                _fail(f"{where}.references", "must list reference roles (reference_1, reference_2, ...)")
        for attack, per_conditioning in self.attacks.items():
            if not set(per_conditioning) <= set(self.conditionings):
                _fail(f"{where}.attacks.{attack}", f"has a conditioning not in '{where}.conditionings'")
        if set(self.combined) != set(self.conditionings):
            _fail(f"{where}.combined", f"must hold one decision per conditioning in '{where}.conditionings'")


@dataclass
class Roc(Record):
    fpr: list[float]
    tpr: list[float]


@dataclass
class AttackMetrics(Record):
    """One attack on one model under the label (:func:`attacks.metrics.membership_metrics`, plus ``cost``)."""

    OPEN = True
    auc: float
    roc: Roc
    extra: dict[str, Json] = field(default_factory=dict)


@dataclass
class Utility(Record):
    """Generation quality of one model (:func:`diffusion.quality.evaluate_generation`)."""

    OPEN = True
    per_class_accuracy: dict[str, float]
    extra: dict[str, Json] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        for key in self.per_class_accuracy:
            if not CLASS_KEY.fullmatch(key):
                _fail(f"{where}.per_class_accuracy", "must map class ids to numbers")


@dataclass
class RelearningRecord(Record):
    """The relearning probe on one model (:meth:`attacks.relearning.RelearningCurve.to_dict`)."""

    OPEN = True
    checkpoints: list[float]
    judge_accuracy: list[float]
    extra: dict[str, Json] = field(default_factory=dict)


@dataclass
class PromptRow(Record):
    """A text model's prompt and the first images it gives (one row of the report's prompt -> samples grid)."""

    source: str
    prompt: str
    judge_accuracy: float
    same_for_every_model: bool
    image: str


@dataclass
class ResurrectionAttack(Record):
    """One resurrection attack on one model (:func:`attacks.regeneration.judge_generated` and the attack's
    settings): how often the judge saw the erased class, and its 0/1 verdict per image (paired across models)."""

    OPEN = True
    judge_accuracy: float
    per_image_correct: list[float]
    extra: dict[str, Json] = field(default_factory=dict)


@dataclass
class WorstCase(Record):
    """Image by image the worst of a model's prompt and embedding attacks (``attacks``): its judge accuracy."""

    attacks: list[str]
    judge_accuracy: float
    num_images: int


@dataclass
class Resurrection(Record):
    """The resurrection probes on one model: regeneration, inversion and relearning (and for a text model an
    adversarial prompt, the prompt grid, and when run Ring-A-Bell, P4D, the noise trajectory and the worst case over
    the prompt and embedding attacks); each a producer's record."""

    OPEN = True
    relearning: RelearningRecord
    prompt_grid: list[PromptRow] | None = field(default=ABSENT, metadata=OPTIONAL)
    ring_a_bell: ResurrectionAttack | None = field(default=ABSENT, metadata=OPTIONAL)
    p4d: ResurrectionAttack | None = field(default=ABSENT, metadata=OPTIONAL)
    noise_trajectory: ResurrectionAttack | None = field(default=ABSENT, metadata=OPTIONAL)
    worst_case: WorstCase | None = field(default=ABSENT, metadata=OPTIONAL)
    extra: dict[str, Json] = field(default_factory=dict)


@dataclass
class Power(Record):
    """What the audit can certify, in words, with the residual leakage and what would decide."""

    statement: str
    has_power: bool
    residual_leakage: dict[str, dict[str, ResidualFraction | None]]  # conditioning -> attack or "mean" -> share
    would_decide: list[str]
    without_references: str | None = field(default=ABSENT, metadata=OPTIONAL)  # why no reference (chance instead)


@dataclass
class Environment(Record):
    OPEN = True
    packages: dict[str, Json]
    extra: dict[str, Json] = field(default_factory=dict)


@dataclass
class ForgetSpecRecord(Record):
    OPEN = True
    classes: list[int]
    extra: dict[str, Json] = field(default_factory=dict)


@dataclass
class Unlearning(Record):
    OPEN = True
    curves: dict[str, list[float]] | None = field(default=ABSENT, metadata=OPTIONAL)
    extra: dict[str, Json] = field(default_factory=dict)


@dataclass
class AuditResults(Record):
    """results.json. ``attacks[attack][role]``: every membership metric of one model under the label;
    ``utility``, ``extraction``, ``resurrection`` and ``models`` are keyed by role, and so is the section of a probe
    another package adds (kept in ``extra``); ``images`` maps a key to a PNG file name in ``images/``; ``verdict``
    follows from ``checks`` (:func:`verdict_of`)."""

    schema_version: int
    verdict: str
    created: str
    config: dict[str, Json]
    forget_spec: ForgetSpecRecord
    data: dict[str, Json]
    environment: Environment
    judge: dict[str, Json]
    models: Annotated[dict[str, dict[str, Json]], MODEL_KEYS]
    unlearning: Unlearning | None
    membership: Membership
    attacks: Annotated[dict[str, Annotated[dict[str, AttackMetrics], MODEL_KEYS]], ATTACK_KEYS]
    utility: Annotated[dict[str, Utility], MODEL_KEYS]
    extraction: Annotated[dict[str, dict[str, Json]], MODEL_KEYS]
    resurrection: Annotated[dict[str, Resurrection], MODEL_KEYS]
    images: dict[str, Json]
    checks: list[Check]
    power: Power
    timings: dict[str, float]
    extra: dict[str, Json] = field(default_factory=dict)  # a plug-in probe's section: model role -> its record
    # the stress probes' sections, keyed by role ({} when switched off; absent from documents written before them)
    exposure: Annotated[dict[str, dict[str, Json]], MODEL_KEYS] | None = field(default=ABSENT, metadata=OPTIONAL)
    finetuned_membership: Annotated[dict[str, dict[str, Json]], MODEL_KEYS] | None = field(default=ABSENT,
                                                                                         metadata=OPTIONAL)
    side_effects: Annotated[dict[str, dict[str, Json]], MODEL_KEYS] | None = field(default=ABSENT, metadata=OPTIONAL)

    OPEN = True

    @classmethod
    def from_json(cls, value: Any, where: str = "") -> Self:
        """Refuse another schema version first (one line saying which), then parse every section."""
        version = value.get("schema_version") if isinstance(value, dict) else None
        if version is None:
            raise DocumentError("is not an erasediff results document (no schema_version)")
        exact = type(version) is int
        if exact and version == 1:
            raise DocumentError("is a schema 1 results document (erasediff before the three-valued verdict); this "
                                f"erasediff reads schema {SCHEMA_VERSION} only: re-run the audit")
        if exact and version == 2:
            raise DocumentError("is a schema 2 results document (erasediff before the verdict counted the retrains' "
                                f"seeds); this erasediff reads schema {SCHEMA_VERSION} only: re-run the audit")
        if not (exact and version == SCHEMA_VERSION):
            raise DocumentError(f"has schema_version {short_repr(version)}; this erasediff reads schema "
                                f"{SCHEMA_VERSION} only")
        return super().from_json(value, where)

    def validate(self, where: str) -> None:
        for key, section in self.extra.items():  # only a probe's section may be a key the tree does not declare
            if not isinstance(section, dict) or not all(ROLE.fullmatch(r) and isinstance(v, dict)
                                                         for r, v in section.items()):
                _fail(key, "is not a key of the results document, nor a probe's section (model role -> record)")
        _check_decision(self.verdict, "verdict")
        if not self.attacks:
            _fail("attacks", "holds no membership attack")
        for attack, per_model in self.attacks.items():
            _check_roles(per_model, f"attacks.{attack}", ("unlearned",))
        if set(self.membership.attacks) != set(self.attacks):
            _fail("membership.attacks", "names other attacks than the key 'attacks'")
        for key, name in self.images.items():
            if not (isinstance(name, str) and IMAGE_NAME.fullmatch(name) and ".." not in name):
                _fail(f"images.{key}", f"must be a plain .png file name; got {short_repr(name)}")
        _check_roles(self.utility, "utility", ("original", "unlearned"))
        classes = None
        for role, utility in self.utility.items():
            if classes not in (None, set(utility.per_class_accuracy)):
                _fail(f"utility.{role}.per_class_accuracy", "has other classes than the other models")
            classes = set(utility.per_class_accuracy)
        grids = {role: probes.prompt_grid for role, probes in self.resurrection.items() if probes.prompt_grid}
        if len({len(grid) for grid in grids.values()}) > 1 or (grids and len(grids) != len(self.resurrection)):
            _fail("resurrection.*.prompt_grid", "must hold the same rows for every model")
        expected = verdict_of([c.decision for c in self.checks])
        if self.verdict != expected:
            failed, inconclusive = (", ".join(c.name for c in self.checks if c.decision == d) or "none"
                                    for d in (FAIL, INCONCLUSIVE))
            raise DocumentError(
                f"says verdict {short_repr(self.verdict)} but its checks give {expected} ({len(self.checks)} checks; "
                f"failed: {cut_text(failed, 60)}; inconclusive: {cut_text(inconclusive, 60)})")
