"""The audit configuration: one strictly validated structure, read from YAML (``safe_load``) or CLI flags.

A misspelled key is an error that names it and lists the allowed keys; every CLI flag maps to a key here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from diffusion.errors import UsageError


@dataclass
class Thresholds:
    """Tolerances of the audit's checks (see audit/checks.py for what each one gates)."""

    mia_auc_tolerance: float = 0.1
    mia_tpr_tolerance: float = 0.1
    extraction_margin: int = 0
    forgotten_accuracy_tolerance: float = 0.1
    resurrection_tolerance: float = 0.15
    retained_accuracy_drop: float = 0.03
    retained_fd_ratio: float = 1.3


@dataclass
class AuditConfig:
    """Everything an audit run depends on. ``None`` model paths mean: use or build the built-in default.

    Attributes:
        model: the original model (diffusers folder or hub id); None = the built-in reference (cached).
        unlearned: an unlearned model to audit; None = run ``method`` now.
        retrained: a retrained-without-forget reference; None with ``retrain`` = train one now (cached).
    """

    model: str | None = None
    unlearned: str | None = None
    retrained: str | None = None
    retrain: bool = True
    method: str = "erasediff"
    method_params: dict = field(default_factory=dict)
    forget_classes: list[int] = field(default_factory=lambda: [0])
    forget_ids: str | None = None
    forget_label: str = ""
    data: str = "digits"
    split_seed: int = 0
    member_fraction: float = 0.5
    seed: int = 0
    attacks: list[str] = field(default_factory=lambda: ["loss", "secmi", "pia", "pian"])
    extraction_samples_per_class: int = 100
    resurrection: bool = True
    eval_samples_per_class: int = 50
    eval_steps: int = 50
    thresholds: Thresholds = field(default_factory=Thresholds)
    out: str = "erasediff-out/audit"
    force: bool = False
    quiet: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(name: str, value: Any, annotation: Any) -> Any:
    """Return ``value`` if it fits ``annotation`` (ints accepted for floats), else raise UsageError."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is list:
        if not isinstance(value, list):
            raise UsageError(f"config key '{name}' must be a list; got {value!r}")
        return [_check_type(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if args and type(None) in args:  # Optional[X]
        return None if value is None else _check_type(name, value, next(a for a in args if a is not type(None)))
    expected = {int: int, float: (int, float), bool: bool, str: str, dict: dict}.get(annotation, annotation)
    if annotation in (int, float) and isinstance(value, bool) or not isinstance(value, expected):
        raise UsageError(f"config key '{name}' must be {getattr(annotation, '__name__', annotation)}; got {value!r}")
    return float(value) if annotation is float else value


def _build(cls, data: dict, prefix: str = ""):
    hints = get_type_hints(cls)
    allowed = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in allowed:
            raise UsageError(f"unknown config key '{prefix}{key}'; allowed keys: {', '.join(allowed)}")
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, dict):
                raise UsageError(f"config key '{prefix}{key}' must be a mapping; got {value!r}")
            kwargs[key] = _build(hints[key], value, f"{prefix}{key}.")
        else:
            kwargs[key] = _check_type(prefix + key, value, hints[key])
    return cls(**kwargs)


def config_from_dict(data: dict) -> AuditConfig:
    """Validate a plain mapping into an :class:`AuditConfig` (UsageError on unknown keys or bad types)."""
    config = _build(AuditConfig, data)
    if not config.forget_classes and not config.forget_ids:
        raise UsageError("the forget set is empty; set forget_classes or forget_ids")
    if config.unlearned is None and not config.method:
        raise UsageError("give either 'unlearned' (a model to audit) or 'method' (an unlearning method to run)")
    for name in ("extraction_samples_per_class", "eval_samples_per_class", "eval_steps"):
        if getattr(config, name) < 1:
            raise UsageError(f"config key '{name}' must be a positive integer; got {getattr(config, name)}")
    return config


def load_config(path: str | Path | None, overrides: dict | None = None) -> AuditConfig:
    """Read a YAML file (if given), apply CLI ``overrides`` (keys as in the file), validate."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"config file '{path}' not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise UsageError(f"config file '{path}' is not valid YAML: {str(error).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise UsageError(f"config file '{path}' must hold a mapping of keys; got {type(data).__name__}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return config_from_dict(data)
