"""The audit configuration: one strictly validated structure, read from YAML (``safe_load``) or CLI flags.

A misspelled key is an error that names it and lists the allowed keys; every CLI flag maps to a key here.
A config file is read with bounds: its size, its nesting, and what its YAML aliases expand to; error messages
quote values cut short.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from diffusion.errors import UsageError
from diffusion.io import read_text_file
from diffusion.params import Interval, cut_text, short_repr
from diffusion.presets import DEFAULT_MEMBER_FRACTION, RECIPE_PRESETS
from reports.results import ATTACK_NAME

MAX_CONFIG_BYTES = 1_000_000  # also the bound on the text its aliases may expand to
MAX_CONFIG_VALUES = 10_000
MAX_CONFIG_DEPTH = 50
MAX_FD_RATIO = 10  # a retained-class Frechet distance 10x the original's is noise: a larger limit never fails
MAX_INT_DIGITS = 40  # no setting needs a longer integer; Python refuses to convert more than 4300 digits
PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*|0x[0-9a-fA-F]+)")  # the integers YAML 1.1 and 1.2 read alike


@dataclass
class Thresholds:
    """Equivalence margins and the confidence of the audit's checks (audit/checks.py says what each gates).

    A check PASSes when the ``confidence`` interval of (unlearned - references) lies inside its margin, FAILs when
    it lies outside, and is INCONCLUSIVE otherwise; 0.90 is two one-sided tests at 5% each (TOST). Margins are
    finite and > 0, and small enough that a check can fail: AUC margins below 0.5, rate margins below 1.
    ``class_mia_auc_margin`` 0.15 when whole classes or a concept are erased: the smallest margin at which exact
    retrains certify on the default class tasks (45 forget images, K = 2; at 0.1 none did, at 0.25 EraseDiff's
    membership passed too; benchmarks/results/controls.txt). ``mia_auc_margin`` 0.1 (member images deleted): an
    attacker whose AUC is within 0.1 of a retrained model's gains at most ~0.07 in
    balanced accuracy over someone who never saw the erased data. ``relearning_margin`` bounds the relearning
    curve's mean judge accuracy above the references' as ``resurrection_margin`` bounds the inverted embedding's
    (0.2: retrains of one class differ by up to 0.14 among themselves there; why: benchmarks/results/defaults.md).
    ``retained_class_drop`` bounds each retained class's accuracy drop from the original on its own (and, for a
    text model, how much less often than the references a retained class is drawn when the prompt also names the
    erased concept): one damaged neighbour must not hide in the mean (audit/probes/side_effects.py).
    ``exposure_odds_ratio`` bounds how much more exposed to membership inference the retained members may be than in
    the references: the odds that an attack ranks a retained member above a heldout image may at most triple
    (one-sided; audit/probes/exposure.py says why odds, not the AUC, whose top is too close for member images). 3 is
    the smallest whole factor at which an exact retrain certifies 9 times in 10 at K = 2 under the measured seed
    spread (sd 0.27 in log odds between retrains on fixed images): at 2 a retrain's own seed alone keeps it under
    that rate for any K (benchmarks/results/stress.txt has the rates measured over reference sets at 2, 2.5, 3, 4).
    ``retained_fd_ratio`` is >= 1 (below 1 even the unchanged original model would fail); it multiplies the larger
    of the original's and the references' mean Frechet distance (a retrain's quality is what an erasure may cost).
    """

    confidence: float = 0.90
    mia_auc_margin: float = 0.1
    class_mia_auc_margin: float = 0.15
    mia_tpr_margin: float = 0.1
    extraction_margin: int = 0
    forgotten_accuracy_margin: float = 0.1
    resurrection_margin: float = 0.2
    relearning_margin: float = 0.15
    retained_accuracy_drop: float = 0.03
    retained_class_drop: float = 0.1
    exposure_odds_ratio: float = 3.0
    retained_fd_ratio: float = 1.3

    def for_task(self, classes_erased: bool) -> Thresholds:
        """The thresholds an audit decides with: erasing whole classes (or a concept), the membership margin is
        ``class_mia_auc_margin``; deleting member images, ``mia_auc_margin``."""
        return dataclasses.replace(self, mia_auc_margin=self.class_mia_auc_margin) if classes_erased else self


@dataclass
class AuditConfig:
    """Everything an audit run depends on. ``None`` model paths mean: use or build the built-in default.

    Attributes:
        model: the original model (diffusers folder or hf://owner/name); None = the built-in reference (cached).
        unlearned: an unlearned model to audit; None = run ``method`` now.
        unverified_references: the user vouches that ``retrained`` models which record nothing (trained elsewhere)
            were retrained without the forget set; without it they are refused, and with it the verdict says so.
        retrained: models retrained without the forget set (folders); empty with ``retrain`` = train
            ``retrain_references`` of them now, each with its own seed (cached by content).
        retrain_references: K, the number of references trained when none is given (use 4-8 on a GPU; why 2:
            benchmarks/results/defaults.md). 0: no reference (where none can be made, e.g. a pretrained model); the
            audit then compares membership with chance and says in its verdict what that does not prove.
        preset: the recipe of the built-in reference model and of the references retrained by the audit
            (diffusion.training.RECIPE_PRESETS): ``default`` (2000 steps) or ``thorough`` (6000 steps: a
            reference that remembers, membership AUC ~1.0, three times the training time).
        members, heldout: the data roles of a model this project did not train, declared by file (each a list of
            image paths under the ``data`` folder, or a folder inside it): the images the original was trained or
            fine-tuned on, and images of the same distribution it never saw. Given, they replace the split drawn
            from ``split_seed``; a model that records no split needs them (a split is never invented for it).
        forget_files: the forget set by file (a list of member image paths under ``data``, or a folder inside it).
        recipe: a YAML file saying how the original was trained, for a model trained elsewhere
            (:mod:`diffusion.recipe`): from scratch, or fine-tuned from a base; the references are trained with it.
        canaries: a canary folder (``erasediff canaries make``) the original was trained with: its included
            canaries are members and join the forget set, no canary is scored as heldout, and the canary test
            (audit/probes/canary.py) runs on every model beside the references.
        forget_concept: prompts naming a concept to erase from a text-to-image model (then ``forget_classes`` is
            not given; the built-in model, when ``model`` is None, is the text model of the digits). anchor: the
            prompt the concept is mapped to (None: the empty prompt).
        attacks: membership attacks: the four papers' attacks and SimA by default (``secmi_nn`` is left out; why:
            benchmarks/results/defaults.md).
        calibration_images: up to this many retained members and heldout non-members, never scored, on which
            every attack fits its free choices against the original model before scoring (0: the attacks' fixed
            paper defaults).
        resurrection, exposure_images, finetuned_membership, side_effects: the stress probes' switches (the README's
            "Stress tests" says what each costs and why): resurrection routes; the retained members' exposure, scored
            on up to ``exposure_images`` retained members and as many heldout images (0: off); membership re-run
            after fine-tuning every model (off by default: with the measured seed spread, its route on retained
            data certifies an exact retrain only 72% of the time at K = 2, benchmarks/results/stress.txt); side
            effects per retained class.
        eval_samples_per_class: samples judged per retained class (generation quality, relearning's curve).
        forgotten_samples_per_class: samples judged per erased class by the probes whose checks compare rates with
            the references (forgotten generation, embedding / concept inversion, adversarial prompt): at 50 an
            exact retrain's rate scatters as much as the margin (why 200: benchmarks/results/defaults.md).
        threads: CPU threads of torch's operators (None: torch's default, one per core); recorded in the results'
            environment block (benchmarks/results/threads.txt).
    """

    model: str | None = None
    unlearned: str | None = None
    retrained: list[str] = field(default_factory=list)
    unverified_references: bool = False
    retrain: bool = True
    retrain_references: int = 2
    preset: str = "default"
    method: str = "erasediff"
    method_params: dict = field(default_factory=dict)
    forget_classes: list[int] = field(default_factory=lambda: [0])
    forget_ids: str | None = None
    forget_files: str | None = None
    members: str | None = None
    heldout: str | None = None
    recipe: str | None = None
    canaries: str | None = None
    forget_concept: list[str] = field(default_factory=list)
    anchor: str | None = None
    forget_label: str = ""
    data: str = "digits"
    split_seed: int = 0
    member_fraction: float = DEFAULT_MEMBER_FRACTION
    allow_other_data: bool = False
    seed: int = 0
    attacks: list[str] = field(default_factory=lambda: ["loss", "secmi", "pia", "pian", "sima"])
    calibration_images: int = 100
    extraction_samples_per_class: int = 100
    resurrection: bool = True
    exposure_images: int = 200
    finetuned_membership: bool = False
    side_effects: bool = True
    eval_samples_per_class: int = 50
    forgotten_samples_per_class: int = 200
    eval_steps: int = 50
    thresholds: Thresholds = field(default_factory=Thresholds)
    out: str = "erasediff-out/audit"
    force: bool = False
    quiet: bool = False
    threads: int | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def input_paths(self, config_file: str | Path | None = None) -> dict[str, str | Path | None]:
        """The paths an audit reads (its output must lie outside them): models, data folder, forget ids, config."""
        from diffusion.data import data_folder  # torch-heavy; config and checks stay importable without it

        references = {f"retrained model {k + 1}": path for k, path in enumerate(self.retrained)}
        return {"original model": self.model, "unlearned model": self.unlearned, **references,
                "data folder": data_folder(self.data), "forget-ids file": self.forget_ids,
                "forget files": self.forget_files, "members": self.members, "heldout images": self.heldout,
                "recipe file": self.recipe,
                "canary folder": self.canaries, "config file": config_file}


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` if it fits ``annotation`` (ints accepted for floats), else raise UsageError."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        if not isinstance(value, list):
            raise UsageError(f"config key '{name}' must be a list; got {short_repr(value)}")
        return [_check_type(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if args and type(None) in args:  # Optional[X]
        return None if value is None else _check_type(name, value, next(a for a in args if a is not type(None)))
    expected = {int: int, float: (int, float), bool: bool, str: str, dict: dict}.get(annotation, annotation)
    type_name = getattr(annotation, "__name__", annotation)
    if (annotation in (int, float) and isinstance(value, bool)) or not isinstance(value, expected):
        raise UsageError(f"config key '{name}' must be {type_name}; got {short_repr(value)}")
    if annotation is not float:
        return value
    try:
        return float(value)
    except OverflowError:
        raise UsageError(f"config key '{name}' must be a float; got {short_repr(value)}") from None


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    """An instance of the dataclass ``cls`` from ``data``, every key known and every value of its type."""
    hints = get_type_hints(cls)
    allowed = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in allowed:
            name = cut_text(prefix + (key if isinstance(key, str) else short_repr(key)))
            raise UsageError(f"unknown config key '{name}'; allowed keys: {', '.join(allowed)}")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise UsageError(f"config key '{prefix}{key}' must be a mapping; got {short_repr(value)}")
            kwargs[key] = _build(hints[key], value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(prefix + key, value, hints[key])
    return cls(**kwargs)


_COUNT = ("a positive integer", Interval(Integral, 1, 2**31, closed="left"), "")
_AUC_MARGIN = ("a margin", Interval(Real, 0, 0.5, closed="neither"),
               " (0 can never pass; 0.5 or more lets any model match chance)")
_RATE_MARGIN = ("a margin", Interval(Real, 0, 1, closed="neither"), " (0 can never pass, 1 or more can never fail)")
# config key -> (what it is, its interval, why, in words); a list's items are checked one by one, None is allowed
_LIMITS: dict[str, tuple[str, Interval, str]] = {
    "forget_classes": ("a class id", Interval(Integral, 0, 2**31, closed="left"), ""),
    "split_seed": ("an integer", Interval(Integral, 0, 2**32, closed="left"), ""),
    "member_fraction": ("a fraction", Interval(Real, 0, 1, closed="neither"), ""),
    "seed": ("an integer", Interval(Integral, 0, 2**63, closed="left"), ""),
    "extraction_samples_per_class": _COUNT,
    "eval_samples_per_class": _COUNT,
    "forgotten_samples_per_class": _COUNT,
    "eval_steps": _COUNT,
    "retrain_references": ("a number of references", Interval(Integral, 0, 64),
                           " (0: no reference; membership is compared with chance)"),
    "threads": ("a number of CPU threads", Interval(Integral, 1, 1024), ""),
    "calibration_images": ("a number of images", Interval(Integral, 0, 2**31, closed="left"),
                           " (0: the attacks' fixed paper defaults)"),
    "exposure_images": ("a number of images", Interval(Integral, 0, 2**31, closed="left"),
                        " (0: the retained members' exposure is not probed)"),
    "thresholds.confidence": ("a confidence level", Interval(Real, 0.5, 1, closed="left"), ""),
    "thresholds.mia_auc_margin": _AUC_MARGIN,
    "thresholds.class_mia_auc_margin": _AUC_MARGIN,
    "thresholds.mia_tpr_margin": _RATE_MARGIN,
    "thresholds.extraction_margin": ("a number of images", Interval(Integral, 0, 2**31, closed="left"), ""),
    "thresholds.forgotten_accuracy_margin": _RATE_MARGIN,
    "thresholds.resurrection_margin": _RATE_MARGIN,
    "thresholds.relearning_margin": _RATE_MARGIN,
    "thresholds.retained_accuracy_drop": _RATE_MARGIN,
    "thresholds.retained_class_drop": _RATE_MARGIN,
    "thresholds.exposure_odds_ratio": ("an odds ratio", Interval(Real, 1, 1e6, closed="neither"),
                                       " (at 1 a retrain's own spread fails it)"),
    "thresholds.retained_fd_ratio": ("a ratio", Interval(Real, 1, MAX_FD_RATIO),
                                     " (below 1 even the original model fails; beyond it the check can never fail)"),
}


def _check_limits(config: AuditConfig) -> None:
    """Every numeric setting within its interval (NaN and infinities are in none); list items one by one."""
    for key, (what, interval, why) in _LIMITS.items():
        owner, _, name = key.rpartition(".")
        value = getattr(config.thresholds if owner else config, name)
        items = {f"{key}[{i}]": v for i, v in enumerate(value)} if isinstance(value, list) else {key: value}
        for where, item in items.items():
            if item is not None and not interval.is_satisfied_by(item):
                raise UsageError(f"config key '{where}' must be {what} in {interval.bounds()}{why}; got "
                                 f"{short_repr(item)}")
    margin, samples = config.thresholds.extraction_margin, config.extraction_samples_per_class
    if margin >= samples:
        raise UsageError(f"config key 'thresholds.extraction_margin' must be below extraction_samples_per_class "
                         f"({samples}): a margin of every generated sample can never fail; got {margin}")


def _check_roles(config: AuditConfig) -> None:
    """Images named by file need an image folder; a recipe belongs to a given model; canaries need the project's
    own split."""
    by_file = {"members": config.members, "heldout": config.heldout, "forget_files": config.forget_files}
    named = [key for key, value in by_file.items() if value]
    if named and config.data == "digits":
        raise UsageError(f"config key '{named[0]}' names images by file, but the data is the bundled digits (no "
                         "files); give the image folder the files are in as 'data', or use forget_ids")
    if config.recipe and not config.model:
        raise UsageError("'recipe' says how a given original model was trained; give the model ('model') too")
    if config.members and config.canaries:
        raise UsageError("canaries are placed in the project's own split; they cannot be combined with declared "
                         "members")


def _check_attacks(attacks: list[str]) -> None:
    """At least one membership attack, each named once and usable as a file name."""
    if not attacks:
        raise UsageError("an audit needs at least one membership attack; list some under 'attacks' "
                         f"(e.g. {', '.join(AuditConfig().attacks)})")
    for i, name in enumerate(attacks):
        if not ATTACK_NAME.fullmatch(name):
            raise UsageError(f"config key 'attacks[{i}]' must be an attack name (letters, digits, '_', '-'); "
                             f"got {short_repr(name)}")
        if name in attacks[:i]:
            raise UsageError(f"config key 'attacks' names '{name}' twice")


def config_from_dict(data: dict) -> AuditConfig:
    """Validate a plain mapping into an :class:`AuditConfig` (UsageError on unknown keys, bad types or values)."""
    config = _build(AuditConfig, data)
    if config.forget_concept:
        if data.get("forget_classes"):
            raise UsageError("give forget_concept (a text-to-image model) or forget_classes (a class-conditional "
                             "one), not both")
        config.forget_classes = []
        if "attacks" not in data:  # (image, caption) pairs: CLiD joins the battery
            config.attacks = [*config.attacks, "clid"]
    elif config.anchor is not None:
        raise UsageError("anchor is the prompt a concept is mapped to; it needs forget_concept")
    if not (config.forget_classes or config.forget_ids or config.forget_files or config.forget_concept
            or config.canaries):
        raise UsageError("the forget set is empty; set forget_classes, forget_ids, forget_files, forget_concept or "
                         "canaries")
    _check_roles(config)
    if config.unlearned is None and not config.method:
        raise UsageError("give either 'unlearned' (a model to audit) or 'method' (an unlearning method to run)")
    _check_limits(config)
    _check_attacks(config.attacks)
    if config.preset not in RECIPE_PRESETS:
        raise UsageError(f"config key 'preset' must be one of: {', '.join(RECIPE_PRESETS)}; got "
                         f"{short_repr(config.preset)}")
    return config


class _Refused(Exception):
    """A config file beyond a bound; the message completes "config file '<path>' ..."."""


class _BoundedLoader(yaml.SafeLoader):
    """``safe_load``'s loader, refusing documents nested deeper than MAX_CONFIG_DEPTH while composing them."""

    depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        self.depth += 1
        try:
            if self.depth > MAX_CONFIG_DEPTH:
                raise _Refused(f"nests deeper than {MAX_CONFIG_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _measure(node: yaml.Node, key: str, depth: int, memo: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, characters of text) that ``node`` stands for once its aliases are expanded.

    Memoised per node, so an alias bomb costs its size in the file, not its expansion; a recursive alias
    nests without end and is refused as too deep. Integers too long for any setting are refused by key.
    """
    if depth > MAX_CONFIG_DEPTH:
        raise _Refused(f"nests deeper than {MAX_CONFIG_DEPTH} levels")
    if id(node) not in memo:
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:int" and len(node.value) > MAX_INT_DIGITS:
                raise _Refused(f"sets config key '{key}' to an integer of {len(node.value)} characters "
                               f"(no setting needs more than {MAX_INT_DIGITS})")
            if node.tag == "tag:yaml.org,2002:int" and not PLAIN_INT.fullmatch(node.value):
                where = f"config key '{key}'" if key else "a value"
                raise _Refused(f"sets {where} to {cut_text(node.value, 40)}, an integer YAML 1.1 and 1.2 "
                               "read differently (octal, sexagesimal, '_' or binary); write it in plain decimal "
                               "digits without a leading zero, or as 0x...")
            memo[id(node)] = (1, len(node.value))
        else:
            children = [(child, f"{key}[{i}]") for i, child in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                children, seen = [], {}
                for name, value in node.value:
                    if isinstance(name, yaml.ScalarNode):
                        if name.value in seen:
                            raise _Refused(f"gives the key '{cut_text(name.value, 40)}' twice (lines "
                                           f"{seen[name.value]} and {name.start_mark.line + 1}): say it once")
                        seen[name.value] = name.start_mark.line + 1
                    label = cut_text(name.value, 40) if isinstance(name, yaml.ScalarNode) else "?"
                    children += [(name, key), (value, f"{key}.{label}" if key else label)]
            sizes = [_measure(child, where, depth + 1, memo) for child, where in children]
            memo[id(node)] = (1 + sum(v for v, _ in sizes), sum(c for _, c in sizes))
    return memo[id(node)]


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One short line out of a PyYAML error: the problem and where it is."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        return cut_text(error.problem + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""), 200)
    return cut_text(str(error).splitlines()[0], 200)


def _load_bounded(text: str) -> Any:
    """``yaml.safe_load(text)``, refusing documents beyond the bounds above before constructing anything."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        values, characters = _measure(node, "", 1, {})
        if values > MAX_CONFIG_VALUES:
            raise _Refused(f"expands to more than {MAX_CONFIG_VALUES} values (YAML aliases?)")
        if characters > MAX_CONFIG_BYTES:
            raise _Refused(f"expands to more than {MAX_CONFIG_BYTES} characters of text (YAML aliases?)")
        return loader.construct_document(node)
    finally:
        loader.dispose()


# YAML 1.1 reads 1e-5 (no dot) as a string; a learning rate written so is a number
_BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                                     list("-+0123456789."))


def read_yaml_value(text: str) -> Any:
    """One YAML value (e.g. a ``--param`` value) read as the config file reads it; a :class:`yaml.YAMLError` if
    malformed."""
    try:
        return _load_bounded(text)
    except _Refused as error:
        raise yaml.YAMLError(str(error)) from None


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path`` (None if empty), read with ``safe_load``'s loader within the bounds above."""
    text = read_text_file(path, "config file", MAX_CONFIG_BYTES, "a YAML mapping of settings (a few lines)")
    try:
        return _load_bounded(text)
    except _Refused as error:
        raise UsageError(f"config file '{path}' {error}") from None
    except yaml.YAMLError as error:
        raise UsageError(f"config file '{path}' is not valid YAML: {_yaml_problem(error)}") from None


def load_config(path: str | Path | None, overrides: dict | None = None) -> AuditConfig:
    """Read a YAML file (if given), apply CLI ``overrides`` (keys as in the file), validate."""
    data: dict = {}
    if path is not None:
        data = read_yaml(Path(path)) or {}
        if not isinstance(data, dict):
            raise UsageError(f"config file '{path}' must hold a mapping of keys; got {type(data).__name__}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(data)
