"""Render an audit's ``results.json`` (and the score CSVs and images beside it) into one self-contained HTML file.

No torch is needed: the report only reads the results document. Autoescape is on, so user text (forget-spec
labels, paths, class names) cannot inject markup.
"""

from __future__ import annotations

import base64
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from . import figures


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("reports", "templates"), autoescape=select_autoescape(default=True))
    env.filters["num"] = lambda v, digits=3: "n/a" if v is None else f"{v:.{digits}f}"
    env.filters["pct"] = lambda v: "n/a" if v is None else f"{100 * v:.1f}%"
    return env


def _read_scores(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``scores/<attack>.csv`` -> {model role: {"forget": scores, "heldout": scores}}."""
    grouped: dict = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            grouped[row["model"]][row["split"]].append(float(row["score"]))
    return {role: {split: np.asarray(v) for split, v in splits.items()} for role, splits in grouped.items()}


def _data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_report(results: dict, folder: Path) -> str:
    """The report HTML for ``results``; score CSVs and images are read from ``folder``."""
    folder = Path(folder)
    attack_figures = {}
    for attack, per_model in results["attacks"].items():
        csv_path = folder / "scores" / f"{attack}.csv"
        attack_figures[attack] = {
            "roc": figures.roc_figure(per_model, attack),
            "hist": figures.score_histograms(_read_scores(csv_path), attack) if csv_path.is_file() else None,
        }
    unlearning = results.get("unlearning") or {}
    images = {key: _data_uri(folder / "images" / name) for key, name in results.get("images", {}).items()}
    checks = results["checks"]
    return _environment().get_template("report.html.j2").render(
        r=results,
        roles=list(results["utility"]),
        checks=checks,
        failed=[c for c in checks if not c["passed"]],
        attack_figures=attack_figures,
        curves_svg=figures.curves_figure(unlearning["curves"]) if unlearning.get("curves") else None,
        accuracy_svg=figures.per_class_accuracy_figure(results["utility"], results["forget_spec"]["classes"]),
        images=images,
        config_text=json.dumps(results["config"], indent=2),
    )


def write_report(results_path: str | Path, out_path: str | Path | None = None) -> Path:
    """Render ``results.json`` to ``report.html`` beside it (or ``out_path``), atomically."""
    results_path = Path(results_path)
    results = json.loads(results_path.read_text())
    out_path = Path(out_path) if out_path else results_path.with_name("report.html")
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(render_report(results, results_path.parent), encoding="utf-8")
    tmp.replace(out_path)
    return out_path
