"""Matplotlib figures of an audit, drawn with the object API (no pyplot state) and returned as inline SVG."""

from __future__ import annotations

import colorsys
import io
import re
from dataclasses import dataclass

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from .results import AttackMetrics, Resurrection, Utility

DECISION_COLORS = {"PASS": "#229954", "FAIL": "#c0392b", "INCONCLUSIVE": "#d68910"}
_REFERENCE = re.compile(r"reference_([1-9][0-9]*)")


class _RoleColors(dict):
    """Role -> colour: red for the original, blue for the unlearned model, and for ``reference_k`` (any k) a
    shade of green, its lightness and hue (olive to teal) stepped by golden-ratio fractions so that neighbouring
    references differ."""

    def __missing__(self, role: str) -> str:
        match = _REFERENCE.fullmatch(role)
        if match is None:
            raise KeyError(role)
        step = int(match[1]) - 1
        hue, lightness = 0.28 + 0.16 * (step * 0.381966 % 1), 0.18 + 0.47 * (step * 0.618034 % 1)
        return to_hex(colorsys.hls_to_rgb(hue, lightness, 0.62))


ROLE_COLORS = _RoleColors(original="#c0392b", unlearned="#2471a3")


def _is_reference(role: str) -> bool:
    return _REFERENCE.fullmatch(role) is not None


def to_svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element (XML header and metadata dropped) that scales to the page width."""
    buffer = io.StringIO()
    with rc_context({"svg.hashsalt": "erasediff"}):  # stable element ids: the same results give the same page
        figure.savefig(buffer, format="svg", bbox_inches="tight")
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)  # creator links and a date: not needed
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 style="max-width:100%;height:auto"', svg,
                  count=1)


@dataclass(frozen=True)
class ForestRow:
    """One line of a forest plot: an estimate and its interval (None for a check without one)."""

    label: str
    estimate: float | None
    interval: list[float] | None
    color: str


def forest_figure(rows: list[ForestRow], margin: float, xlabel: str) -> str:
    """Each row's estimate and interval against the shaded equivalence band [-margin, +margin], first row on top."""
    figure = Figure(figsize=(6.4, 0.5 + 0.34 * len(rows)))
    ax = figure.add_subplot()
    ax.axvspan(-margin, margin, color="#d5f5e3", zorder=0)
    ax.axvline(0, color="#7f8c8d", linewidth=0.8, zorder=1)
    for y, row in enumerate(reversed(rows)):
        if row.interval is not None:
            ax.plot(row.interval, [y, y], color=row.color, linewidth=2.2, solid_capstyle="butt", zorder=2)
        if row.estimate is not None:
            ax.plot([row.estimate], [y], "o", color=row.color, markersize=5, zorder=3)
        else:
            ax.text(0, y, "no interval", ha="center", va="center", fontsize=7, color="#566573")
    widest = max([margin * 1.6] + [abs(v) * 1.1 for row in rows for v in (row.interval or [])])
    ax.set_xlim(-widest, widest)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_yticks(range(len(rows)), [row.label for row in reversed(rows)], fontsize=8)
    for tick in ax.get_yticklabels():
        tick.set_parse_math(False)  # labels come from results.json: "$" is no markup
    ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(f"{xlabel}; shaded: the equivalence margin +/-{margin:g}", fontsize=8)
    return to_svg(figure)


def roc_figure(per_model: dict[str, AttackMetrics], attack: str) -> str:
    """ROC curves of one attack for each model on log-log axes, with the chance diagonal."""
    figure = Figure(figsize=(4.2, 4.4))
    ax = figure.add_subplot()
    floor = 1e-3
    for role, metrics in per_model.items():
        fpr = np.maximum(np.asarray(metrics.roc.fpr, dtype=float), floor)
        tpr = np.maximum(np.asarray(metrics.roc.tpr, dtype=float), floor)
        ax.plot(fpr, tpr, color=ROLE_COLORS[role], linewidth=1.0 if _is_reference(role) else 1.6,
                label=f"{role} (AUC {metrics.auc:.2f})")
    ax.plot([floor, 1], [floor, 1], color="grey", linestyle=":", label="chance")
    ax.set(xscale="log", yscale="log", xlim=(floor, 1), ylim=(floor, 1.05),
           xlabel="false positive rate", ylabel="true positive rate", title=f"{attack}: ROC (log axes)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return to_svg(figure)


def score_histograms(scores: dict[str, dict[str, np.ndarray]], attack: str) -> str:
    """For each model, histograms of the attack score on the forget set and on the heldout non-members (three
    models a row)."""
    roles = list(scores)
    columns = min(3, len(roles))
    rows = -(-len(roles) // columns)
    figure = Figure(figsize=(2.3 * columns, 2.1 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(roles):]:
        ax.set_visible(False)
    for ax, role in zip(axes, roles):
        forget, heldout = scores[role]["forget"], scores[role]["heldout"]
        both = np.concatenate([forget, heldout])
        bins = np.linspace(both.min(), both.max(), 25) if both.size and both.min() < both.max() else 10
        ax.hist(heldout, bins=bins, alpha=0.6, color="#7f8c8d", label="heldout")
        ax.hist(forget, bins=bins, alpha=0.6, color=ROLE_COLORS[role], label="forget")
        ax.set_title(role, fontsize=9)
        ax.locator_params(axis="x", nbins=3)
        ax.tick_params(labelsize=7)
        ax.xaxis.get_offset_text().set_fontsize(7)
        ax.legend(fontsize=6)
    figure.supxlabel(f"{attack} score under the class label (higher = more member-like)", fontsize=8)
    figure.tight_layout()
    return to_svg(figure)


def curves_figure(curves: dict[str, list[float]]) -> str:
    """One small panel per logged quantity of the unlearning run (losses, lambda, cosine ...)."""
    names = [name for name, values in curves.items() if values]
    columns = min(3, max(1, len(names)))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(3.3 * columns, 2.3 * rows))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        ax.plot(np.arange(1, len(curves[name]) + 1), curves[name], color="#2471a3", linewidth=1)
        ax.set_title(name, fontsize=9, parse_math=False)  # a name from results.json: "$" is no markup
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    figure.tight_layout()
    return to_svg(figure)


def relearning_figure(resurrection: dict[str, Resurrection]) -> str:
    """Judge accuracy on the erased class(es) against fine-tuning steps, one line per model (the relearning
    probe of each model's resurrection record)."""
    figure = Figure(figsize=(4.8, 2.8))
    ax = figure.add_subplot()
    for role, probes in resurrection.items():
        curve = probes.relearning
        ax.plot(curve.checkpoints, curve.judge_accuracy, marker="o", markersize=3, linewidth=1.2,
                color=ROLE_COLORS[role], label=role)
    ax.set(ylim=(-0.02, 1.02))
    ax.set_xlabel("fine-tuning steps on held-out images of the erased class", fontsize=8)
    ax.set_ylabel("judge accuracy, erased class", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    return to_svg(figure)


def per_class_accuracy_figure(utility: dict[str, Utility], forgotten: list[int]) -> str:
    """Grouped bars: the judge's accuracy on generated samples of each class, for each model (class ids are the
    string keys of the results document)."""
    roles = list(utility)
    classes = sorted(int(c) for c in utility[roles[0]].per_class_accuracy)
    width = 0.8 / len(roles)
    figure = Figure(figsize=(7.5, 2.8))
    ax = figure.add_subplot()
    for k, role in enumerate(roles):
        values = [utility[role].per_class_accuracy[str(c)] for c in classes]
        ax.bar(np.arange(len(classes)) + (k - (len(roles) - 1) / 2) * width, values, width,
               color=ROLE_COLORS[role], label=role)
    ax.set_xticks(np.arange(len(classes)), [f"{c}{' (forgotten)' if c in forgotten else ''}" for c in classes],
                  fontsize=7)
    ax.set(ylim=(0, 1.05))
    ax.set_ylabel("judge accuracy", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7, ncol=len(roles), loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return to_svg(figure)
