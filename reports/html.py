"""Render an audit's ``results.json`` (and the score CSVs and images beside it) into one self-contained HTML file.

No torch is needed: the report only reads the results document. Autoescape is on, so user text (forget-spec
labels, paths, class names) cannot inject markup. The document is checked before anything is drawn: its
schema version (audit.schema; schema 2 only), the sections the page needs, a three-valued verdict that follows
from its checks' decisions, and file names that stay inside the run's ``images/`` and ``scores/`` folders.
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
from audit.schema import ROLE_PATTERN, SCHEMA_VERSION
from audit.statistics import FAIL, INCONCLUSIVE, PASS
from diffusion.errors import UsageError
from diffusion.params import cut_text, short_repr

from . import figures

IMAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\.png")
CLASS_KEY = re.compile(r"0|[1-9][0-9]{0,8}")
ROLE = re.compile(ROLE_PATTERN)
REFERENCE = re.compile(r"reference_[1-9][0-9]*")
DECISIONS = (PASS, FAIL, INCONCLUSIVE)
LABEL = "label"  # the conditioning the per-model metrics and the score histograms are under
_NONE = type(None)
_NUMBER = (int, float)
_SECTIONS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "verdict": str, "created": str, "config": dict, "forget_spec": dict, "data": dict,
    "environment": dict, "judge": dict, "models": dict, "unlearning": (dict, _NONE), "membership": dict,
    "attacks": dict, "utility": dict, "extraction": dict, "resurrection": dict, "images": dict, "checks": list,
    "power": dict, "timings": dict,
}
_CHECK_FIELDS: dict[str, type | tuple[type, ...]] = {
    f.name: {"estimate": (*_NUMBER, _NONE), "interval": (list, _NONE)}.get(f.name, str) for f in fields(Check)
}
_MEMBERSHIP_FIELDS: dict[str, type | tuple[type, ...]] = {
    "references": list, "conditionings": list, "num_forget": int, "num_heldout": int, "confidence": _NUMBER,
    "margin": _NUMBER, "attacks": dict, "combined": dict, "seed_spread": dict, "exposed_forget_images": list,
}
_COMPARISON_FIELDS: dict[str, type | tuple[type, ...]] = {"scale": (str, _NONE), "decision": str, "power": bool}
_DIFFERENCE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "estimate": _NUMBER, "low": _NUMBER, "high": _NUMBER, "subject_value": _NUMBER, "reference_values": list,
    "reference_spread": _NUMBER,
}
_EXPOSED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "sample_id": int, "label": int, "attack": str, "conditioning": str, "z": _NUMBER, "p_value": _NUMBER,
}
_POWER_FIELDS: dict[str, type | tuple[type, ...]] = {
    "statement": str, "has_power": bool, "residual_leakage": dict, "would_decide": list,
}
_COMBINED_FIELDS: dict[str, type | tuple[type, ...]] = {"decision": str, "power": bool, "vetoes": list}
_PROMPT_ROW_FIELDS: dict[str, type | tuple[type, ...]] = {
    "source": str, "prompt": str, "judge_accuracy": _NUMBER, "same_for_every_model": bool, "image": str,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def _signed(value: Any, digits: int = 3) -> str:
    return f"{value:+.{digits}f}" if _is_number(value) else "n/a"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape(default=True),
                      undefined=ChainableUndefined)
    env.filters["num"] = lambda v, digits=3: f"{v:.{digits}f}" if _is_number(v) else "n/a"
    env.filters["signed"] = _signed
    env.filters["pct"] = lambda v: f"{100 * v:.1f}%" if _is_number(v) else "n/a"
    env.filters["sig"] = lambda v: f"{v:.2g}" if _is_number(v) else "n/a"
    return env


def _require(ok: bool, source: str, problem: str) -> None:
    if not ok:
        raise UsageError(f"'{source}' {cut_text(problem, 240)}")


def _check_type(value: Any, kind: type | tuple[type, ...], where: str, source: str) -> None:
    """``value`` (the results key ``where``) is of ``kind``; a number is never a bool, nor an int a bool."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    names = " or ".join("null" if k is _NONE else k.__name__ for k in kinds)
    _require(ok, source, f"key '{where}' must be {names}; got {short_repr(value)}")


def _check_fields(mapping: Any, kinds: dict[str, type | tuple[type, ...]], where: str, source: str) -> None:
    """``mapping`` (the results key ``where``) is a mapping holding each key of ``kinds`` with a value of its kind."""
    _check_type(mapping, dict, where, source)
    for key, kind in kinds.items():
        _require(key in mapping, source, f"key '{where}' lacks '{key}'")
        _check_type(mapping[key], kind, f"{where}.{key}", source)


def _check_decision(value: str, where: str, source: str) -> None:
    _require(value in DECISIONS, source, f"key '{where}' must be one of {', '.join(DECISIONS)}; got "
                                         f"{short_repr(value)}")


def _check_roles(section: dict, where: str, source: str, required: tuple[str, ...] = ()) -> None:
    """A per-model section: keys are model roles (``required`` ones present), each value a mapping."""
    for role in required:
        _require(role in section, source, f"key '{where}' lacks the model '{role}'")
    for role, value in section.items():
        _require(bool(ROLE.fullmatch(role)), source, f"key '{where}' has the model {short_repr(role)}; expected "
                                                     "original, unlearned or reference_1, reference_2, ...")
        _check_type(value, dict, f"{where}.{role}", source)


def _check_numbers(values: Any, where: str, source: str) -> None:
    _check_type(values, list, where, source)
    _require(all(_is_number(v) for v in values), source, f"key '{where}' must be a list of numbers")


def _check_attack_name(attack: str, where: str, source: str) -> None:
    _require(bool(ATTACK_NAME.fullmatch(attack)), source, f"key '{where}' has the attack {short_repr(attack)}; an "
                                                          "attack name is letters, digits, '_' or '-'")


def _check_checks(checks: list, source: str) -> None:
    for i, check in enumerate(checks):
        _check_fields(check, _CHECK_FIELDS, f"checks[{i}]", source)
        _check_decision(check["decision"], f"checks[{i}].decision", source)
        interval = check["interval"]
        if interval is not None:
            _check_numbers(interval, f"checks[{i}].interval", source)
            _require(len(interval) == 2, source, f"key 'checks[{i}].interval' must be [low, high]")


def _check_comparison(comparison: Any, where: str, source: str) -> None:
    """One attack under one conditioning: a decision, and when it has a scale, the paired differences of the
    unlearned and the original model at that scale (and at any other one reported)."""
    _check_fields(comparison, _COMPARISON_FIELDS, where, source)
    _check_decision(comparison["decision"], f"{where}.decision", source)
    if comparison["scale"] is None:
        _check_type(comparison.get("note"), str, f"{where}.note", source)
        return
    auc = comparison.get("auc")
    _check_type(auc, dict, f"{where}.auc", source)
    _require(comparison["scale"] in auc, source, f"key '{where}.auc' lacks its scale {short_repr(comparison['scale'])}")
    for scale, subjects in auc.items():
        _check_type(subjects, dict, f"{where}.auc.{scale}", source)
        for subject in ("unlearned", "original"):
            _check_fields(subjects.get(subject), _DIFFERENCE_FIELDS, f"{where}.auc.{scale}.{subject}", source)
            _check_numbers(subjects[subject]["reference_values"],
                           f"{where}.auc.{scale}.{subject}.reference_values", source)


def _check_membership(results: dict, source: str) -> None:
    """The comparisons with the references: the same attacks as the per-model metrics, each under the listed
    conditionings, and the most exposed forget images."""
    membership = results["membership"]
    _check_fields(membership, _MEMBERSHIP_FIELDS, "membership", source)
    _require(all(isinstance(r, str) and REFERENCE.fullmatch(r) for r in membership["references"]), source,
             "key 'membership.references' must list reference roles (reference_1, reference_2, ...)")
    _require(all(isinstance(c, str) for c in membership["conditionings"]), source,
             "key 'membership.conditionings' must list conditioning names")
    _require(set(membership["attacks"]) == set(results["attacks"]), source,
             "key 'membership.attacks' names other attacks than the key 'attacks'")
    for attack, per_conditioning in membership["attacks"].items():
        _check_type(per_conditioning, dict, f"membership.attacks.{attack}", source)
        _require(set(per_conditioning) <= set(membership["conditionings"]), source,
                 f"key 'membership.attacks.{attack}' has a conditioning not in 'membership.conditionings'")
        for conditioning, comparison in per_conditioning.items():
            _check_comparison(comparison, f"membership.attacks.{attack}.{conditioning}", source)
    _require(set(membership["combined"]) == set(membership["conditionings"]), source,
             "key 'membership.combined' must hold one decision per conditioning in 'membership.conditionings'")
    for conditioning, combined in membership["combined"].items():
        where = f"membership.combined.{conditioning}"
        _check_fields(combined, _COMBINED_FIELDS, where, source)
        _check_decision(combined["decision"], f"{where}.decision", source)
        if "unlearned" in combined:
            for subject in ("unlearned", "original"):
                _check_fields(combined[subject], _DIFFERENCE_FIELDS, f"{where}.{subject}", source)
        else:
            _check_type(combined.get("note"), str, f"{where}.note", source)
    for i, row in enumerate(membership["exposed_forget_images"]):
        _check_fields(row, _EXPOSED_FIELDS, f"membership.exposed_forget_images[{i}]", source)
    calibration = membership.get("calibration")
    if calibration is not None:
        _check_type(calibration, dict, "membership.calibration", source)
        _check_type(calibration.get("attacks"), dict, "membership.calibration.attacks", source)
        for attack, fitted in calibration["attacks"].items():
            _check_type(fitted, dict, f"membership.calibration.attacks.{attack}", source)
            _check_type(fitted.get("grid"), list, f"membership.calibration.attacks.{attack}.grid", source)
            _require(all(isinstance(row, dict) and _is_number(row.get("auc")) for row in fitted["grid"]), source,
                     f"key 'membership.calibration.attacks.{attack}.grid' must list candidates with an 'auc'")


def _check_sections(results: dict, source: str) -> None:
    """The parts of the document the page and its figures are built from, each of the right shape."""
    for key, kind in _SECTIONS.items():
        _require(key in results, source, f"lacks the key '{key}'")
        _check_type(results[key], kind, key, source)
    _check_checks(results["checks"], source)
    _require(bool(results["attacks"]), source, "key 'attacks' holds no membership attack")
    for attack, per_model in results["attacks"].items():
        _check_attack_name(attack, "attacks", source)
        _check_type(per_model, dict, f"attacks.{attack}", source)
        _check_roles(per_model, f"attacks.{attack}", source, ("unlearned",))
        for role, metrics in per_model.items():
            _check_type(metrics.get("auc"), _NUMBER, f"attacks.{attack}.{role}.auc", source)
            _check_type(metrics.get("roc"), dict, f"attacks.{attack}.{role}.roc", source)
            for axis in ("fpr", "tpr"):
                _check_numbers(metrics["roc"].get(axis), f"attacks.{attack}.{role}.roc.{axis}", source)
    _check_membership(results, source)
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
    for role, probes in results["resurrection"].items():
        curve = probes.get("relearning")
        _check_type(curve, dict, f"resurrection.{role}.relearning", source)
        for axis in ("checkpoints", "judge_accuracy"):
            _check_numbers(curve.get(axis), f"resurrection.{role}.relearning.{axis}", source)
    _check_prompt_grids(results["resurrection"], source)
    _check_fields(results["power"], _POWER_FIELDS, "power", source)
    _check_type(results["environment"].get("packages"), dict, "environment.packages", source)
    _check_numbers(results["forget_spec"].get("classes"), "forget_spec.classes", source)
    curves = (results["unlearning"] or {}).get("curves") or {}
    _check_type(curves, dict, "unlearning.curves", source)
    for name, values in curves.items():
        _check_numbers(values, f"unlearning.curves.{short_repr(name)}", source)


def _check_prompt_grids(resurrection: dict, source: str) -> None:
    """A text model's prompt -> samples rows: the same number of rows for every model, each with its fields."""
    grids = {role: probes["prompt_grid"] for role, probes in resurrection.items() if "prompt_grid" in probes}
    lengths = set()
    for role, grid in grids.items():
        _check_type(grid, list, f"resurrection.{role}.prompt_grid", source)
        for i, row in enumerate(grid):
            _check_fields(row, _PROMPT_ROW_FIELDS, f"resurrection.{role}.prompt_grid[{i}]", source)
        lengths.add(len(grid))
    _require(len(lengths) <= 1 and (not grids or len(grids) == len(resurrection)), source,
             "key 'resurrection.*.prompt_grid' must hold the same rows for every model")


def _check_version(version: Any, source: str) -> None:
    _require(version is not None, source, "is not an erasediff results document (no schema_version)")
    exact = type(version) is int
    _require(not (exact and version == 1), source, "is a schema 1 results document (erasediff before the "
             f"three-valued verdict); this erasediff renders schema {SCHEMA_VERSION} only: re-run the audit")
    _require(not (exact and version == 2), source, "is a schema 2 results document (erasediff before the verdict "
             f"counted the retrains' seeds); this erasediff renders schema {SCHEMA_VERSION} only: re-run the audit")
    _require(exact and version == SCHEMA_VERSION, source,
             f"has schema_version {short_repr(version)}; this erasediff renders schema {SCHEMA_VERSION} only")


def check_results(results: Any, source: str) -> None:
    """Refuse (UsageError, one line) a results document this renderer cannot show faithfully: another schema
    version, a missing or malformed section, or a verdict that does not follow from its checks."""
    _require(isinstance(results, dict), source, "is not an erasediff results document (not a JSON object)")
    _check_version(results.get("schema_version"), source)
    _check_sections(results, source)
    checks = results["checks"]
    expected = verdict_of([c["decision"] for c in checks])
    failed, inconclusive = (", ".join(c["name"] for c in checks if c["decision"] == d) or "none"
                            for d in (FAIL, INCONCLUSIVE))
    _require(results["verdict"] == expected, source,
             f"says verdict {short_repr(results['verdict'])} but its checks give {expected} "
             f"({len(checks)} checks; failed: {cut_text(failed, 60)}; inconclusive: {cut_text(inconclusive, 60)})")


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
    """``scores/<attack>.csv`` -> {model role: {"forget": scores, "heldout": scores}} under the class label (the
    conditioning the per-model metrics are under); every row is checked, the other conditionings' are not kept."""
    grouped: dict = defaultdict(lambda: defaultdict(list))
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                score = float(row["score"])
                if (not ROLE.fullmatch(row["model"] or "") or row["split"] not in ("forget", "heldout")
                        or not row["conditioning"] or not math.isfinite(score)):
                    raise ValueError(f"line {reader.line_num} has an unknown model or split, no conditioning, or a "
                                     "score that is not a finite number")
                if row["conditioning"] == LABEL:
                    grouped[row["model"]][row["split"]].append(score)
    except (KeyError, ValueError, TypeError, csv.Error) as error:
        problem = f"no column {error}" if isinstance(error, KeyError) else str(error)[:120]
        raise UsageError(f"score file '{path}' is not an erasediff score table: {problem}") from None
    if not grouped:
        raise UsageError(f"score file '{path}' has no rows under the conditioning '{LABEL}'")
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


def _checks_forest(results: dict) -> str | None:
    """The membership checks (one row per conditioning) against the AUC margin; None when there is none."""
    names = {f"membership[{c}]": c for c in results["membership"]["combined"]}
    rows = [figures.ForestRow(names[c["name"]], c["estimate"], c["interval"], figures.DECISION_COLORS[c["decision"]])
            for c in results["checks"] if c["name"] in names]
    return figures.forest_figure(rows, results["membership"]["margin"], "AUC difference, unlearned - references' "
                                 "mean") if rows else None


def _attack_forest(per_conditioning: dict, margin: float) -> str | None:
    """One attack: the unlearned and the original model against the references under each conditioning, at the
    scale the decision uses; None when no conditioning had references to compare with."""
    rows = [figures.ForestRow(f"{subject} ({conditioning})", d["estimate"], [d["low"], d["high"]],
                              figures.ROLE_COLORS[subject])
            for conditioning, comparison in per_conditioning.items() if comparison["scale"] is not None
            for subject, d in comparison["auc"][comparison["scale"]].items() if subject in ("unlearned", "original")]
    return figures.forest_figure(rows, margin, "AUC difference from the references' mean") if rows else None


def render_report(results: dict, folder: Path, source: str = "results.json") -> str:
    """The report HTML for ``results``; score CSVs and images are read from ``folder``. ``source`` names the
    document in error messages (UsageError when it is malformed or names files outside ``folder``)."""
    folder = Path(folder)
    check_results(results, source)
    images = _image_uris(results["images"], folder, source)
    membership = results["membership"]
    attack_figures = {
        attack: {"roc": figures.roc_figure(results["attacks"][attack], attack), "hist": _histograms(folder, attack),
                 "forest": _attack_forest(per_conditioning, membership["margin"])}
        for attack, per_conditioning in membership["attacks"].items()
    }
    curves = {name: values for name, values in ((results["unlearning"] or {}).get("curves") or {}).items() if values}
    checks = results["checks"]
    try:
        return _environment().get_template("report.html.j2").render(
            r=results,
            roles=list(results["utility"]),
            checks=checks,
            by_decision={d: [c for c in checks if c["decision"] == d] for d in DECISIONS},
            checks_svg=_checks_forest(results),
            attack_figures=attack_figures,
            curves_svg=figures.curves_figure(curves) if curves else None,
            accuracy_svg=figures.per_class_accuracy_figure(results["utility"], results["forget_spec"]["classes"]),
            relearning_svg=(figures.relearning_figure(results["resurrection"]) if results["resurrection"] else None),
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
