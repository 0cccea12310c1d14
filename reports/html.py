"""Render an audit's ``results.json`` (and the score CSVs and images beside it) into one self-contained HTML file.

No torch is needed: the report only reads the results document. Autoescape is on, so user text (forget-spec
labels, paths, class names) cannot inject markup. The document is checked before anything is drawn: its
schema version, the sections the page needs, a verdict that follows from its checks, and file names that
stay inside the run's ``images/`` and ``scores/`` folders.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import ChainableUndefined, Environment, PackageLoader, UndefinedError, select_autoescape

from audit.checks import Check, verdict_of
from audit.config import ATTACK_NAME
from diffusion.errors import UsageError
from diffusion.params import short_repr

from . import figures

SCHEMA_VERSION = 1  # the results.json layout this renderer reads; audit.run writes the same (a test checks)
IMAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.png")
CLASS_KEY = re.compile(r"0|[1-9][0-9]{0,8}")
ROLES = ("original", "unlearned", "retrained")
_NUMBER = (int, float)
_SECTIONS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "verdict": str, "created": str, "config": dict, "forget_spec": dict, "data": dict,
    "environment": dict, "judge": dict, "models": dict, "unlearning": (dict, type(None)), "attacks": dict,
    "utility": dict, "extraction": dict, "resurrection": dict, "images": dict, "checks": list, "timings": dict,
}
_CHECK_FIELDS: dict[str, type | tuple[type, ...]] = {
    f.name: {"passed": bool, "value": (*_NUMBER, type(None)), "target": (*_NUMBER, type(None))}.get(f.name, str)
    for f in fields(Check)
}


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER)


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape(default=True),
                      undefined=ChainableUndefined)
    env.filters["num"] = lambda v, digits=3: f"{v:.{digits}f}" if _is_number(v) else "n/a"
    env.filters["pct"] = lambda v: f"{100 * v:.1f}%" if _is_number(v) else "n/a"
    env.filters["sig"] = lambda v: f"{v:.2g}" if _is_number(v) else "n/a"
    return env


def _require(ok: bool, source: str, problem: str) -> None:
    if not ok:
        raise UsageError(f"'{source}' {problem}")


def _check_type(value: Any, kind: type | tuple[type, ...], where: str, source: str) -> None:
    """``value`` (the results key ``where``) is of ``kind``; a number is never a bool."""
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind in (int, _NUMBER))
    names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
    _require(ok, source, f"key '{where}' must be {names}; got {short_repr(value)}")


def _check_roles(section: dict, where: str, source: str, required: tuple[str, ...] = ()) -> None:
    """A per-model section: keys among ROLES (``required`` ones present), each value a mapping."""
    for role in required:
        _require(role in section, source, f"key '{where}' lacks the model '{role}'")
    for role, value in section.items():
        _require(role in ROLES, source, f"key '{where}' has the model {short_repr(role)}; expected one of "
                                        f"{', '.join(ROLES)}")
        _check_type(value, dict, f"{where}.{role}", source)


def _check_numbers(values: Any, where: str, source: str) -> None:
    _check_type(values, list, where, source)
    _require(all(_is_number(v) for v in values), source, f"key '{where}' must be a list of numbers")


def _check_sections(results: dict, source: str) -> None:
    """The parts of the document the page and its figures are built from, each of the right shape."""
    for key, kind in _SECTIONS.items():
        _require(key in results, source, f"lacks the key '{key}'")
        _check_type(results[key], kind, key, source)
    for i, check in enumerate(results["checks"]):
        _check_type(check, dict, f"checks[{i}]", source)
        for key, kind in _CHECK_FIELDS.items():
            _require(key in check, source, f"key 'checks[{i}]' lacks '{key}'")
            _check_type(check[key], kind, f"checks[{i}].{key}", source)
    _require(bool(results["attacks"]), source, "key 'attacks' holds no membership attack")
    for attack, per_model in results["attacks"].items():
        plain = isinstance(attack, str) and ATTACK_NAME.fullmatch(attack)
        _require(bool(plain), source, f"key 'attacks' has the attack {short_repr(attack)}; an attack name is "
                                      "letters, digits, '_' or '-'")
        _check_type(per_model, dict, f"attacks.{attack}", source)
        _check_roles(per_model, f"attacks.{attack}", source, ("unlearned",))
        for role, metrics in per_model.items():
            _check_type(metrics.get("auc"), _NUMBER, f"attacks.{attack}.{role}.auc", source)
            _check_type(metrics.get("roc"), dict, f"attacks.{attack}.{role}.roc", source)
            for axis in ("fpr", "tpr"):
                _check_numbers(metrics["roc"].get(axis), f"attacks.{attack}.{role}.roc.{axis}", source)
    _check_roles(results["utility"], "utility", source, ("original", "unlearned"))
    classes = None
    for role, utility in results["utility"].items():
        accuracy = utility.get("per_class_accuracy")
        _check_type(accuracy, dict, f"utility.{role}.per_class_accuracy", source)
        _require(all(isinstance(c, str) and CLASS_KEY.fullmatch(c) and _is_number(v) for c, v in accuracy.items()),
                 source,
                 f"key 'utility.{role}.per_class_accuracy' must map class ids to numbers")
        _require(classes in (None, set(accuracy)), source, f"key 'utility.{role}.per_class_accuracy' has other "
                                                           "classes than the other models")
        classes = set(accuracy)
    for section in ("models", "extraction", "resurrection"):
        _check_roles(results[section], section, source)
    _check_type(results["environment"].get("packages"), dict, "environment.packages", source)
    _check_numbers(results["forget_spec"].get("classes"), "forget_spec.classes", source)
    curves = (results["unlearning"] or {}).get("curves") or {}
    _check_type(curves, dict, "unlearning.curves", source)
    for name, values in curves.items():
        _check_numbers(values, f"unlearning.curves.{short_repr(name)}", source)


def check_results(results: Any, source: str) -> None:
    """Refuse (UsageError, one line) a results document this renderer cannot show faithfully: another schema
    version, a missing or malformed section, or a verdict that does not follow from its checks."""
    _require(isinstance(results, dict), source, "is not an erasediff results document (not a JSON object)")
    version = results.get("schema_version")
    _require(version is not None, source, "is not an erasediff results document (no schema_version)")
    _require(type(version) is int and version == SCHEMA_VERSION, source,
             f"has schema_version {short_repr(version)}; this erasediff reads version {SCHEMA_VERSION}")
    _check_sections(results, source)
    checks = results["checks"]
    expected = verdict_of([c["passed"] for c in checks])
    failed = ", ".join(c["name"] for c in checks if not c["passed"]) or "none"
    _require(results["verdict"] == expected, source,
             f"says verdict {short_repr(results['verdict'])} but its checks give {expected} "
             f"({len(checks)} checks, failed: {failed[:80]})")


def _inside(folder: Path, name: str) -> Path | None:
    """``folder/name`` when it resolves (symbolic links followed) to a regular file directly in ``folder``."""
    path = Path(os.path.realpath(folder / name))
    return path if path.parent == Path(os.path.realpath(folder)) and path.is_file() else None


def _image_uris(images: dict, folder: Path, source: str) -> dict[str, str]:
    """Each image of the results (a plain .png name in ``folder/images``) as a ``data:`` URI."""
    uris = {}
    for key, name in images.items():
        where = f"images.{key}"[:80]
        plain = isinstance(name, str) and IMAGE_NAME.fullmatch(name) and ".." not in name
        _require(bool(plain), source, f"key '{where}' must be a plain .png file name; got {short_repr(name)}")
        path = _inside(folder / "images", name)
        _require(path is not None, source, f"key '{where}' names '{name}', which is not a regular file in "
                                           f"{folder / 'images'}")
        uris[key] = "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return uris


def _read_scores(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``scores/<attack>.csv`` -> {model role: {"forget": scores, "heldout": scores}}."""
    grouped: dict = defaultdict(lambda: defaultdict(list))
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                score = float(row["score"])
                if row["model"] not in ROLES or row["split"] not in ("forget", "heldout") or not math.isfinite(score):
                    raise ValueError(f"line {reader.line_num} has an unknown model or split, or a score that is not "
                                     "a finite number")
                grouped[row["model"]][row["split"]].append(score)
    except (KeyError, ValueError, TypeError, csv.Error) as error:
        problem = f"no column {error}" if isinstance(error, KeyError) else str(error)[:120]
        raise UsageError(f"score file '{path}' is not an erasediff score table: {problem}") from None
    for role, splits in grouped.items():
        if len(splits) < 2:
            raise UsageError(f"score file '{path}' lacks forget or heldout rows for the model '{role}'")
    return {role: {split: np.asarray(v) for split, v in splits.items()} for role, splits in grouped.items()}


def _histograms(folder: Path, attack: str) -> str | None:
    """The score histograms of ``attack`` from ``folder/scores/<attack>.csv``; None when there is no such file."""
    path = folder / "scores" / f"{attack}.csv"
    if not os.path.lexists(path):
        return None
    if _inside(folder / "scores", path.name) is None:
        raise UsageError(f"score file '{path}' is not a regular file in {folder / 'scores'}")
    return figures.score_histograms(_read_scores(path), attack)


def render_report(results: dict, folder: Path, source: str = "results.json") -> str:
    """The report HTML for ``results``; score CSVs and images are read from ``folder``. ``source`` names the
    document in error messages (UsageError when it is malformed or names files outside ``folder``)."""
    folder = Path(folder)
    check_results(results, source)
    images = _image_uris(results["images"], folder, source)
    attack_figures = {attack: {"roc": figures.roc_figure(per_model, attack), "hist": _histograms(folder, attack)}
                      for attack, per_model in results["attacks"].items()}
    curves = {name: values for name, values in ((results["unlearning"] or {}).get("curves") or {}).items() if values}
    checks = results["checks"]
    try:
        return _environment().get_template("report.html.j2").render(
            r=results,
            roles=list(results["utility"]),
            checks=checks,
            failed=[c for c in checks if not c["passed"]],
            attack_figures=attack_figures,
            curves_svg=figures.curves_figure(curves) if curves else None,
            accuracy_svg=figures.per_class_accuracy_figure(results["utility"], results["forget_spec"]["classes"]),
            images=images,
            config_text=json.dumps(results["config"], indent=2),
        )
    except UndefinedError as error:
        raise UsageError(f"'{source}' lacks a value the report shows: {short_repr(str(error))}") from None


def write_report(results_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Render ``results.json`` to ``report.html`` beside it (or ``out_path``), atomically."""
    results_path = Path(results_path)
    results = json.loads(results_path.read_text(encoding="utf-8"))
    out_path = Path(out_path) if out_path else results_path.with_name("report.html")
    html = render_report(results, results_path.parent, str(results_path))
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out_path)
    return out_path
