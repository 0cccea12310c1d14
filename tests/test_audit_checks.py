"""The three-valued verdict on known answers, from synthetic attack scores run through the real comparison.

Scores follow the shape real ones have: every image has its own difficulty, shared by every model (some digits
always denoise well), plus model noise; a model trained on the forget images scores them higher.
"""

from __future__ import annotations

import numpy as np
import pytest

from audit.checks import evaluate_checks, proportion_difference, verdict, verdict_of
from audit.config import Thresholds
from audit.membership import compare

N_FORGET, N_HELDOUT = 200, 200
IS_MEMBER = np.r_[np.ones(N_FORGET, bool), np.zeros(N_HELDOUT, bool)]


def scores(references: int = 3, *, leak: float = 1.0, unlearned_leak: float = 0.0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=N_FORGET + N_HELDOUT)

    def model(member_shift: float) -> np.ndarray:
        return difficulty + 0.3 * rng.normal(size=difficulty.size) + member_shift * IS_MEMBER

    roles = {"original": model(leak), "unlearned": model(unlearned_leak)}
    return roles | {f"reference_{k + 1}": model(0.0) for k in range(references)}


def document(model_scores: dict, *, forgotten=(0.02, [0.02, 0.04]), fd=(3.0, 3.2)) -> dict:
    references = [r for r in model_scores if r.startswith("reference")]
    comparison, _ = compare(model_scores, IS_MEMBER, references, Thresholds(), seed=0, calibrated_decisions=False)
    utility = {role: {"samples_per_class": 100, "per_class_accuracy": dict.fromkeys(range(10), 1.0),
                      "forgotten_accuracy": 0.99, "retained_accuracy": 0.97, "retained_fd": fd[0]}
               for role in model_scores}
    utility["unlearned"].update(forgotten_accuracy=forgotten[0], retained_fd=fd[1])
    for role, value in zip(references, forgotten[1]):
        utility[role]["forgotten_accuracy"] = value
    return {"membership": {"references": references, "attacks": {"loss": {"label": comparison}}},
            "forget_spec": {"classes": [0]}, "utility": utility}


def decisions(doc: dict) -> dict[str, str]:
    return {c.name: c.decision for c in evaluate_checks(doc, Thresholds())}


def test_a_model_like_the_references_passes_when_the_audit_has_power():
    result = decisions(document(scores()))
    assert result["audit_power"] == "PASS" and result["mia_auc[loss]"] == "PASS"
    assert verdict_of(list(result.values())) == "PASS", result


def test_a_noop_fails_and_so_does_an_over_erased_model():
    assert decisions(document(scores(unlearned_leak=1.0)))["mia_auc[loss]"] == "FAIL"
    # forget images pushed far below the heldout ones leak membership too: the check is two-sided
    assert decisions(document(scores(unlearned_leak=-1.0)))["mia_auc[loss]"] == "FAIL"


def test_without_power_nothing_passes():
    result = decisions(document(scores(leak=0.0)))
    assert result["audit_power"] == "INCONCLUSIVE"
    assert result["mia_auc[loss]"] == "PASS"  # the unlearned model matches, but that certifies nothing
    checks = evaluate_checks(document(scores(leak=0.0)), Thresholds())
    assert verdict(checks) == "INCONCLUSIVE"


def test_a_difference_at_the_margin_is_inconclusive_not_a_coin_toss():
    comparison = document(scores(unlearned_leak=0.45))["membership"]["attacks"]["loss"]["label"]
    difference = comparison["auc"]["raw"]["unlearned"]
    assert difference["low"] < 0.1 < difference["high"]  # the interval straddles the margin
    assert comparison["decision"] == "INCONCLUSIVE"
    assert decisions(document(scores(unlearned_leak=0.3)))["mia_auc[loss]"] == "PASS"


def test_no_reference_is_inconclusive():
    checks = evaluate_checks(document(scores(references=0)), Thresholds())
    assert {c.name: c.decision for c in checks}["mia_auc[loss]"] == "INCONCLUSIVE"
    assert verdict(checks) == "INCONCLUSIVE"


def test_generation_and_utility_checks_are_three_valued():
    assert decisions(document(scores(), forgotten=(0.6, [0.02, 0.04, 0.03])))["forgotten_generation"] == "FAIL"
    assert decisions(document(scores(), forgotten=(0.12, [0.02, 0.04, 0.03])))["forgotten_generation"] == \
        "INCONCLUSIVE"
    assert decisions(document(scores(), fd=(3.0, 5.0)))["retained_fd"] == "FAIL"


def test_proportion_difference_keeps_a_width_at_zero():
    estimate, low, high = proportion_difference(0.0, 50, 0.0, 100, 0.9)
    assert estimate == 0.0 and low < 0 < high


@pytest.mark.parametrize("given, expected", [
    (["PASS", "PASS"], "PASS"), (["PASS", "INCONCLUSIVE"], "INCONCLUSIVE"), (["INCONCLUSIVE", "FAIL"], "FAIL"),
    ([], "INCONCLUSIVE"),
])
def test_the_verdict_rule(given, expected):
    assert verdict_of(given) == expected


def test_calibrated_decisions_remove_shared_difficulty():
    """Where the references share the original's per-image difficulty (a deletion of member images), deciding on
    per-example calibrated scores separates the original from the references with more power than raw scores."""
    model_scores = scores(references=2, leak=0.3)
    references = ["reference_1", "reference_2"]
    raw, _ = compare(model_scores, IS_MEMBER, references, Thresholds(), seed=0, calibrated_decisions=False)
    calibrated, z = compare(model_scores, IS_MEMBER, references, Thresholds(), seed=0, calibrated_decisions=True)
    assert raw["scale"] == "raw" and calibrated["scale"] == "calibrated" and set(z) == set(model_scores)

    def separation(comparison: dict, scale: str) -> float:
        original = comparison["auc"][scale]["original"]
        return original["estimate"] / original["standard_error"]

    # seeds 0-5: calibrated 7.1-10.3 against raw 5.5-8.5 (the paired bootstrap already cancels much difficulty)
    assert separation(calibrated, "calibrated") > 1.1 * separation(raw, "raw")
    assert calibrated["auc"]["raw"] == raw["auc"]["raw"]  # both scales are reported either way
