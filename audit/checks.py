"""The audit's checks and verdict: the unlearned model measured against the retrained reference.

A model retrained without the forget set is the right target, not "AUC 0.5": an unlearned model whose forget
loss is pushed far above the non-members' leaks membership too (Carlini et al., "Membership Inference Attacks
From First Principles", IEEE S&P 2022, on comparing against a retrained reference). So the privacy checks are
two-sided around the retrained model's numbers; the utility checks compare with the original model.
Without a retrained reference, the privacy targets fall back to chance (AUC 0.5, TPR = FPR, no extraction).

This module must not import torch: ``erasediff report`` re-checks verdicts with :func:`verdict_of`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import Thresholds


@dataclass(frozen=True)
class Check:
    """One pass/fail line of the verdict."""

    name: str
    description: str
    value: float | None
    target: float | None
    limit: str
    passed: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def _within(name: str, description: str, value: float, target: float, tolerance: float, unit: str = "") -> Check:
    gap = value - target
    passed = abs(gap) <= tolerance
    detail = (f"{value:.3f}{unit} vs target {target:.3f}{unit}: off by {gap:+.3f} "
              f"({'within' if passed else 'outside'} +/-{tolerance:g})")
    return Check(name, description, value, target, f"|value - target| <= {tolerance:g}", passed, detail)


def _at_most(name: str, description: str, value: float, limit: float, limit_text: str) -> Check:
    passed = value <= limit + 1e-12
    detail = f"{value:.3f} vs limit {limit:.3f}: {'passes' if passed else f'exceeds by {value - limit:.3f}'}"
    return Check(name, description, value, limit, limit_text, passed, detail)


def _at_least(name: str, description: str, value: float, limit: float, limit_text: str) -> Check:
    passed = value >= limit - 1e-12
    detail = f"{value:.3f} vs limit {limit:.3f}: {'passes' if passed else f'short by {limit - value:.3f}'}"
    return Check(name, description, value, limit, limit_text, passed, detail)


def evaluate_checks(results: dict, thresholds: Thresholds) -> list[Check]:
    """Every check of the audit from a results document (its ``attacks``, ``extraction``, ``resurrection``
    and ``utility`` sections, each keyed by model role: original, unlearned, retrained)."""
    has_reference = "retrained" in results["utility"]
    reference = "retrained" if has_reference else None
    checks: list[Check] = []
    target_name = "retrained model" if reference else "chance level"
    for attack, per_model in results["attacks"].items():
        unlearned = per_model["unlearned"]
        auc_target = per_model[reference]["auc"] if reference else 0.5
        tpr_target = per_model[reference]["tpr_at_1pct_fpr"] if reference else unlearned["fpr_at_1pct_fpr"]
        checks.append(_within(
            f"mia_auc[{attack}]",
            f"{attack} membership AUC (forget vs heldout) matches the {target_name}",
            unlearned["auc"], auc_target, thresholds.mia_auc_tolerance))
        checks.append(_within(
            f"mia_tpr[{attack}]",
            f"{attack} TPR at 1% FPR matches the {target_name}",
            unlearned["tpr_at_1pct_fpr"], tpr_target, thresholds.mia_tpr_tolerance))
    if results.get("extraction"):
        extracted = results["extraction"]["unlearned"]["num_forget_extracted"]
        limit = (results["extraction"][reference]["num_forget_extracted"] if reference else 0)
        limit += thresholds.extraction_margin
        checks.append(_at_most(
            "extraction", "forget images regenerated (extracted) no more often than by the retrained model",
            extracted, limit, f"<= {'retrained' if reference else '0'} + {thresholds.extraction_margin}"))
    utility = results["utility"]
    if utility["unlearned"].get("forgotten_accuracy") is not None:
        target = utility[reference]["forgotten_accuracy"] if reference else 0.0
        tol = thresholds.forgotten_accuracy_tolerance
        checks.append(_at_most(
            "forgotten_generation", "the forgotten class is generated no more often than by the retrained model",
            utility["unlearned"]["forgotten_accuracy"], target + tol,
            f"<= {'retrained' if reference else '0'} + {tol:g}"))
    if results.get("resurrection") and "unlearned" in results["resurrection"]:
        inversion = results["resurrection"]["unlearned"]["inversion"]["judge_accuracy"]
        target = results["resurrection"][reference]["inversion"]["judge_accuracy"] if reference else 0.0
        tol = thresholds.resurrection_tolerance
        checks.append(_at_most(
            "resurrection", "a newly learned class embedding brings the erased class back no more than for the "
            "retrained model", inversion, target + tol, f"<= {'retrained' if reference else '0'} + {tol:g}"))
    original = utility["original"]
    drop = thresholds.retained_accuracy_drop
    checks.append(_at_least(
        "retained_accuracy", "retained classes are still generated correctly",
        utility["unlearned"]["retained_accuracy"], original["retained_accuracy"] - drop, f">= original - {drop:g}"))
    ratio = thresholds.retained_fd_ratio
    checks.append(_at_most(
        "retained_fd", "retained-class image quality (Frechet distance in judge features) kept",
        utility["unlearned"]["retained_fd"], original["retained_fd"] * ratio, f"<= original x {ratio:g}"))
    return checks


def verdict_of(passed: list[bool]) -> str:
    """The verdict rule, on the pass flags alone (reports re-check a results.json with it): PASS when there is
    at least one check and every check passes, FAIL otherwise."""
    return "PASS" if passed and all(passed) else "FAIL"


def verdict(checks: list[Check]) -> str:
    """PASS when every check passes, FAIL otherwise (see :func:`verdict_of`)."""
    return verdict_of([c.passed for c in checks])
