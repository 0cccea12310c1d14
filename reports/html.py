"""Render an audit's ``results.json`` (and the score CSVs and images beside it) into one self-contained HTML file.

No torch is needed: the report reads only the results document, built into its typed tree
(:class:`reports.results.AuditResults`, which refuses another schema version, a missing or malformed key, or a
verdict that does not follow from its checks) before anything is drawn. Autoescape is on, so user text
(forget-spec labels, paths, class names) cannot inject markup, and file names must stay inside the run's
``images/`` and ``scores/`` folders.
"""

from __future__ import annotations

import base64
import csv
import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import ChainableUndefined, Environment, PackageLoader, UndefinedError, select_autoescape

from diffusion.errors import UsageError
from diffusion.params import cut_text, short_repr

from . import figures
from .results import DECISIONS, ROLE, AuditResults, Comparison, DocumentError, is_number

LABEL = "label"  # the conditioning the per-model metrics and the score histograms are under


def _signed(value: Any, digits: int = 3) -> str:
    return f"{value:+.{digits}f}" if is_number(value) else "n/a"


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape(default=True),
                      undefined=ChainableUndefined)
    env.filters["num"] = lambda v, digits=3: f"{v:.{digits}f}" if is_number(v) else "n/a"
    env.filters["signed"] = _signed
    env.filters["pct"] = lambda v: f"{100 * v:.1f}%" if is_number(v) else "n/a"
    env.filters["sig"] = lambda v: f"{v:.2g}" if is_number(v) else "n/a"
    return env


def _require(ok: bool, source: str, problem: str) -> None:
    if not ok:
        raise UsageError(f"'{source}' {cut_text(problem, 240)}")


def parse_results(document: Any, source: str) -> AuditResults:
    """The typed results of a parsed ``results.json``, or a one-line :class:`UsageError` naming ``source`` and what
    is wrong (another schema version, a missing or malformed key, a verdict that does not follow from its checks)."""
    _require(isinstance(document, dict), source, "is not an erasediff results document (not a JSON object)")
    try:
        return AuditResults.from_json(document)
    except DocumentError as error:
        raise UsageError(f"'{source}' {cut_text(str(error), 240)}") from None


def _inside(folder: Path, name: str) -> Path | None:
    """``folder/name`` when it resolves (symbolic links followed) to a regular file directly in ``folder``."""
    path = Path(os.path.realpath(folder / name))
    return path if path.parent == Path(os.path.realpath(folder)) and path.is_file() else None


def _image_uris(images: dict[str, str], folder: Path, source: str) -> dict[str, str]:
    """Each image of the results (a plain .png name, checked by the results tree) in ``folder/images`` as a
    ``data:`` URI."""
    uris = {}
    for key, name in images.items():
        path = _inside(folder / "images", name)
        _require(path is not None, source, f"key '{f'images.{key}'[:80]}' names '{name}', which is not a regular file "
                                           f"in {folder / 'images'}")
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


def _checks_forest(results: AuditResults) -> str | None:
    """The membership checks (one row per conditioning) against the AUC margin; None when there is none."""
    names = {f"membership[{c}]": c for c in results.membership.combined}
    rows = [figures.ForestRow(names[c.name], c.estimate, c.interval, figures.DECISION_COLORS[c.decision])
            for c in results.checks if c.name in names]
    return figures.forest_figure(rows, results.membership.margin, "AUC difference, unlearned - references' "
                                 "mean") if rows else None


def _attack_forest(per_conditioning: dict[str, Comparison], margin: float) -> str | None:
    """One attack: the unlearned and the original model against the references under each conditioning, at the
    scale the decision uses; None when no conditioning had references to compare with."""
    rows = [figures.ForestRow(f"{subject} ({conditioning})", d.estimate, [d.low, d.high],
                              figures.ROLE_COLORS[subject])
            for conditioning, comparison in per_conditioning.items() if comparison.scale is not None
            for subject, d in comparison.auc[comparison.scale].items() if subject in ("unlearned", "original")]
    return figures.forest_figure(rows, margin, "AUC difference from the references' mean") if rows else None


def render_report(document: Any, folder: Path, source: str = "results.json") -> str:
    """The report HTML for a parsed ``results.json`` (built into :class:`AuditResults` first); score CSVs and images
    are read from ``folder``. ``source`` names the document in error messages (UsageError when it is malformed or
    names files outside ``folder``)."""
    folder = Path(folder)
    results = parse_results(document, source)
    images = _image_uris(results.images, folder, source)
    membership = results.membership
    attack_figures = {
        attack: {"roc": figures.roc_figure(results.attacks[attack], attack), "hist": _histograms(folder, attack),
                 "forest": _attack_forest(per_conditioning, membership.margin)}
        for attack, per_conditioning in membership.attacks.items()
    }
    curves = {name: values for name, values in ((results.unlearning and results.unlearning.curves) or {}).items()
              if values}
    checks = [check.to_json() for check in results.checks]
    try:
        return _environment().get_template("report.html.j2").render(
            r=results.to_json(),
            roles=list(results.utility),
            checks=checks,
            by_decision={d: [c for c in checks if c["decision"] == d] for d in DECISIONS},
            checks_svg=_checks_forest(results),
            attack_figures=attack_figures,
            curves_svg=figures.curves_figure(curves) if curves else None,
            accuracy_svg=figures.per_class_accuracy_figure(results.utility, results.forget_spec.classes),
            relearning_svg=figures.relearning_figure(results.resurrection) if results.resurrection else None,
            images=images,
            config_text=json.dumps(results.config, indent=2),
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


def write_canary_report(results_path: str | Path) -> Path:
    """Render a canary audit's ``canary_results.json`` to ``report.html`` beside it, atomically (every value
    escaped: paths and names are the user's)."""
    results_path = Path(results_path)
    results = json.loads(results_path.read_text(encoding="utf-8"))
    out_path = results_path.with_name("report.html")
    try:
        html = _environment().get_template("canary.html.j2").render(r=results)
    except (UndefinedError, TypeError, KeyError) as error:
        raise UsageError(f"'{results_path}' is not a canary audit's results: {short_repr(str(error))}") from None
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out_path)
    return out_path

