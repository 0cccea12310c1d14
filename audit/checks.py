"""The audit's checks and its three-valued verdict: the unlearned model against K models retrained without the
forget set.

Models retrained without the forget set are the right target, not "AUC 0.5": which images fell in the sets moves
the retrained AUC, and an unlearned model whose forget loss is pushed far above the non-members' leaks membership
too (Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022; Hayes et al., "Inexact
Unlearning Needs More Careful Evaluations to Avoid a False Sense of Privacy", 2024). Each check is an equivalence
test (TOST, Schuirmann 1987): PASS when the interval of the difference lies within the margin, FAIL when it lies
outside, INCONCLUSIVE otherwise. The audit also checks its own power: if the attacks cannot tell the ORIGINAL model
from the references, no PASS is possible. Utility checks compare with the original model.

The checks and the verdict rule (:func:`reports.results.verdict_of`) are records of the results document.
"""

from __future__ import annotations

import math

from scipy.stats import norm

from reports.results import FAIL, INCONCLUSIVE, PASS, Check, verdict_of

from .config import Thresholds
from .generation_checks import at_most_decision, interval_text, paired_generation_check, signed
from .probes import PROBES
from .statistics import RESIDUAL_GUARD


def proportion_difference(p_subject: float, n_subject: int, p_reference: float, n_reference: int,
                          confidence: float) -> tuple[float, float, float]:
    """p_subject - p_reference with a Wald interval on Agresti-Caffo adjusted proportions (one success and one
    failure added to each group, so that 0/n and n/n keep a width): (estimate, low, high)."""
    adjusted = [((p * n + 1) / (n + 2), n + 2) for p, n in ((p_subject, n_subject), (p_reference, n_reference))]
    error = math.sqrt(sum(p * (1 - p) / n for p, n in adjusted))
    z = norm.ppf((1 + confidence) / 2)
    centre = adjusted[0][0] - adjusted[1][0]
    return p_subject - p_reference, centre - z * error, centre + z * error


def _membership_checks(membership: dict, thresholds: Thresholds) -> list[Check]:
    """One check per conditioning (the mean over attacks, with vetoes: :func:`audit.membership.combine_attacks`),
    and the audit's power."""
    checks = []
    margin, confidence = thresholds.mia_auc_margin, thresholds.confidence
    attacks = ", ".join(membership["attacks"])
    target = ("the retrained references'" if membership["references"]
              else "chance, 0.5 (no retrained reference: forget images scored as the heldout ones are)")
    compared = "the references" if membership["references"] else "chance"
    for conditioning, combined in membership["combined"].items():
        name = f"membership[{conditioning}]"
        description = (f"membership AUC (forget vs heldout) under the {conditioning} conditioning, averaged over the "
                       f"attacks ({attacks}), matches {target}; no attack decisively differs")
        rule = (f"mean interval within +/-{margin:g}, no attack's interval outside it, at most "
                f"{RESIDUAL_GUARD:.0%} of the original's difference left")
        if "unlearned" not in combined:
            checks.append(Check(name, description, INCONCLUSIVE, None, None, rule, combined["note"]))
            continue
        diff, original = combined["unlearned"], combined["original"]
        detail = (f"mean AUC difference {signed(diff['estimate'])} "
                  f"{interval_text(diff['low'], diff['high'], confidence)} (images and seeds; seed spread from "
                  f"{diff['seed_source']}), margin +/-{margin:g}; original {signed(original['estimate'])}")
        if combined["vetoes"]:
            detail += f"; decisively outside the margin: {', '.join(combined['vetoes'])}"
        if not combined["residual_guard"]:
            detail += f"; more than {RESIDUAL_GUARD:.0%} of the original's difference remains, so no PASS"
        checks.append(Check(name, description, combined["decision"], diff["estimate"], [diff["low"], diff["high"]],
                            rule, detail))
    powered = [c for c, combined in membership["combined"].items() if combined["power"]]
    detail = (f"the attacks separate the original model from {compared} under: " + ", ".join(powered) if powered
              else f"no attack separates the original model from {compared} on the forget set: a PASS would mean "
              "nothing, so none is given")
    checks.append(Check("audit_power", "the attacks can see the leak the erasure must remove (the original model "
                        "fails the membership check)", PASS if powered else INCONCLUSIVE, None, None,
                        "the original fails the membership rule under at least one conditioning", detail))
    return checks


def _forgotten_generation_check(results: dict, thresholds: Thresholds) -> list[Check]:
    check = paired_generation_check(
        "forgotten_generation", "the erased class, asked for by its own condition, is generated no more often than "
        "by the references", results, thresholds.forgotten_accuracy_margin, thresholds.confidence)
    return [] if check is None else [check, *_forgotten_per_class_check(results, thresholds)]


def _forgotten_per_class_check(results: dict, thresholds: Thresholds) -> list[Check]:
    """With several erased classes (one request, or erasures in sequence), each on its own: no class comes back
    while the mean over them stays low. Every class's interval at the Bonferroni-adjusted confidence
    1 - (1 - confidence) / m, so the family of m classes keeps the audit's error rates; PASS when every class
    PASSes, FAIL when one FAILs, else INCONCLUSIVE."""
    classes = results["forget_spec"]["classes"]
    per_class = results["utility"]["unlearned"].get("forgotten_samples_per_class")
    if len(classes) < 2 or not per_class:
        return []
    roles = ("unlearned", *results["membership"]["references"])
    confidence = 1 - (1 - thresholds.confidence) / len(classes)
    decided = {}
    for k, c in enumerate(classes):  # forgotten_correct holds the erased classes in order, per_class each
        values = {role: {"forgotten_generation": results["utility"][role]["forgotten_correct"][
                      k * per_class:(k + 1) * per_class]} for role in roles}
        decided[c] = paired_generation_check("forgotten_generation", "", results,
                                             thresholds.forgotten_accuracy_margin, confidence, values)
    if any(check is None for check in decided.values()):
        return []
    decisions = {check.decision for check in decided.values()}
    decision = FAIL if FAIL in decisions else PASS if decisions == {PASS} else INCONCLUSIVE
    worst = max(decided, key=lambda c: decided[c].interval[1])
    listed = "; ".join(f"class {c}: {signed(check.estimate)} {interval_text(*check.interval, confidence)} "
                       f"{check.decision}" for c, check in decided.items())
    return [Check("forgotten_per_class", "each erased class on its own is generated no more often than by the "
                  "references", decision, decided[worst].estimate, decided[worst].interval,
                  f"every class's interval at most +{thresholds.forgotten_accuracy_margin:g} at {confidence:.1%} "
                  f"(Bonferroni over {len(classes)} classes)", listed)]


def evaluate_checks(results: dict, thresholds: Thresholds) -> list[Check]:
    """Every check of the audit from a results document: its ``membership`` comparisons, its ``utility`` section and
    every probe's section (audit/probes/), keyed by model role (original, unlearned, reference_1..K)."""
    confidence = thresholds.confidence
    checks = _membership_checks(results["membership"], thresholds)
    utility = results["utility"]
    checks += _forgotten_generation_check(results, thresholds)
    for name in PROBES:  # each registered probe's own checks (audit/probes/)
        checks += PROBES.make(name).checks(results, thresholds)
    original, unlearned = utility["original"], utility["unlearned"]
    n = unlearned["samples_per_class"] * (len(unlearned["per_class_accuracy"]) - len(results["forget_spec"]["classes"]))
    estimate, low, high = proportion_difference(original["retained_accuracy"], n, unlearned["retained_accuracy"], n,
                                                confidence)
    drop = thresholds.retained_accuracy_drop
    checks.append(Check(
        "retained_accuracy", "retained classes are still generated correctly (accuracy drop from the original)",
        at_most_decision(low, high, drop), estimate, [low, high], f"drop at most {drop:g}",
        f"original {original['retained_accuracy']:.3f}, unlearned {unlearned['retained_accuracy']:.3f}: drop "
        f"{signed(estimate)} {interval_text(low, high, confidence)}, limit {drop:g}"))
    checks.append(_retained_fd_check(utility, results["membership"]["references"], thresholds.retained_fd_ratio))
    return checks


def _retained_fd_check(utility: dict, references: list[str], ratio: float) -> Check:
    """The unlearned model's retained-class Frechet distance at most ``ratio`` times the larger of the original's
    and the references' mean: the quality of a model retrained without the forget set is what an erasure may cost
    (why: benchmarks/results/defaults.md)."""
    original, unlearned = utility["original"]["retained_fd"], utility["unlearned"]["retained_fd"]
    retrained = [utility[role]["retained_fd"] for role in references]
    baseline = max(original, sum(retrained) / len(retrained)) if retrained else original
    source = "original" if baseline == original else f"references' mean ({len(retrained)})"
    limit = baseline * ratio
    return Check("retained_fd", "retained-class image quality (Frechet distance in judge features) kept",
                 PASS if unlearned <= limit else FAIL, unlearned, None,
                 f"<= max(original, references' mean) x {ratio:g}",
                 f"{unlearned:.3f} vs limit {limit:.3f} = {ratio:g} x {baseline:.3f} ({source}; original "
                 f"{original:.3f}) (a point estimate: the Frechet distance has no per-sample interval)")


def verdict(checks: list[Check]) -> str:
    """The audit's verdict from its checks (see :func:`verdict_of`)."""
    return verdict_of([c.decision for c in checks])
