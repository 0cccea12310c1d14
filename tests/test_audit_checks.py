"""The three-valued verdict on known answers, from synthetic attack scores run through the real comparison.

Scores follow the shape real ones have: every image has its own difficulty, shared by every model (some digits
always denoise well), plus model noise; a model trained on the forget images scores them higher.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from audit.checks import evaluate_checks, proportion_difference, verdict
from audit.config import Thresholds
from audit.membership import compare, membership_from_scores
from reports.results import verdict_of

N_FORGET, N_HELDOUT = 200, 200
IS_MEMBER = np.r_[np.ones(N_FORGET, bool), np.zeros(N_HELDOUT, bool)]


def scores(references: int = 3, *, leak: float = 1.0, unlearned_leak: float = 0.0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=N_FORGET + N_HELDOUT)

    def model(member_shift: float) -> np.ndarray:
        return difficulty + 0.3 * rng.normal(size=difficulty.size) + member_shift * IS_MEMBER

    roles = {"original": model(leak), "unlearned": model(unlearned_leak)}
    return roles | {f"reference_{k + 1}": model(0.0) for k in range(references)}


def document(model_scores: dict, *, forgotten=(0.02, [0.02, 0.04]), fd=(3.0, 3.2), thresholds=None,
             second_attack: dict | None = None) -> dict:
    """A results document from synthetic scores: attack ``loss`` (and ``other``, scoring ``second_attack``)
    under the label, decided by the real membership rule."""
    references = [r for r in model_scores if r.startswith("reference")]
    scores_by_attack = {"loss": {"label": model_scores}}
    if second_attack is not None:
        scores_by_attack["other"] = {"label": second_attack}
    comparisons, combined, _ = membership_from_scores(scores_by_attack, IS_MEMBER, references,
                                                      thresholds or Thresholds(), seed=0)
    utility = {role: {"samples_per_class": 100, "per_class_accuracy": dict.fromkeys(range(10), 1.0),
                      "forgotten_accuracy": 0.99, "retained_accuracy": 0.97, "retained_fd": fd[0]}
               for role in model_scores}
    utility["unlearned"].update(retained_fd=fd[1])
    rng = np.random.default_rng(1)
    for role, rate in zip(["unlearned", *references], [forgotten[0], *forgotten[1]]):
        correct = (rng.random(200) < rate).astype(int)  # 0/1 judgments of 200 samples from shared noises
        utility[role].update(forgotten_accuracy=float(correct.mean()), forgotten_correct=correct.tolist())
    return {"membership": {"references": references, "attacks": comparisons, "combined": combined},
            "forget_spec": {"classes": [0]}, "utility": utility}


def decisions(doc: dict, thresholds=None) -> dict[str, str]:
    return {c.name: c.decision for c in evaluate_checks(doc, thresholds or Thresholds())}


def test_a_model_like_the_references_passes_when_the_audit_has_power():
    result = decisions(document(scores()))
    assert result["audit_power"] == "PASS" and result["membership[label]"] == "PASS"
    assert verdict_of(list(result.values())) == "PASS", result


def test_a_noop_fails_and_so_does_an_over_erased_model():
    assert decisions(document(scores(unlearned_leak=1.0)))["membership[label]"] == "FAIL"
    # forget images pushed far below the heldout ones leak membership too: the check is two-sided
    assert decisions(document(scores(unlearned_leak=-1.0)))["membership[label]"] == "FAIL"


def test_without_power_nothing_passes():
    result = decisions(document(scores(leak=0.0)))
    assert result["audit_power"] == "INCONCLUSIVE"
    checks = evaluate_checks(document(scores(leak=0.0)), Thresholds())
    assert verdict(checks) == "INCONCLUSIVE"


def test_a_difference_at_the_margin_is_inconclusive_not_a_coin_toss():
    combined = document(scores(unlearned_leak=0.45))["membership"]["combined"]["label"]
    difference = combined["unlearned"]
    assert difference["low"] < 0.1 < difference["high"]  # the interval straddles the margin
    assert combined["decision"] == "INCONCLUSIVE"
    assert decisions(document(scores(unlearned_leak=0.15)))["membership[label]"] == "PASS"


def test_the_residual_guard_keeps_a_weakly_leaking_noop_out_on_a_wide_margin():
    """On a margin wide enough to hold the original itself, a no-op's interval lies inside: the guard (at most half
    of the original's difference left) turns that PASS into INCONCLUSIVE; a model like the references still
    PASSes."""
    wide = Thresholds(mia_auc_margin=0.45)
    noop = document(scores(leak=0.6, unlearned_leak=0.6), thresholds=wide)
    combined = noop["membership"]["combined"]["label"]
    assert combined["unlearned"]["high"] < 0.45 and not combined["residual_guard"]
    assert decisions(noop, wide)["membership[label]"] == "INCONCLUSIVE"
    assert decisions(document(scores(leak=0.6), thresholds=wide), wide)["membership[label]"] == "PASS"


def test_one_attack_decisively_outside_vetoes_a_passing_mean():
    like_references = scores()
    leaking = scores(unlearned_leak=1.5, seed=1)
    doc = document(like_references, second_attack={**like_references, "unlearned": -leaking["unlearned"]},
                   thresholds=Thresholds(mia_auc_margin=0.3))
    combined = doc["membership"]["combined"]["label"]
    assert combined["vetoes"] == ["other"] and combined["decision"] == "FAIL"


def test_no_reference_is_inconclusive():
    checks = evaluate_checks(document(scores(references=0)), Thresholds())
    assert {c.name: c.decision for c in checks}["membership[label]"] == "INCONCLUSIVE"
    assert verdict(checks) == "INCONCLUSIVE"


def test_generation_and_utility_checks_are_three_valued():
    assert decisions(document(scores(), forgotten=(0.02, [0.02, 0.04, 0.03])))["forgotten_generation"] == "PASS"
    assert decisions(document(scores(), forgotten=(0.6, [0.02, 0.04, 0.03])))["forgotten_generation"] == "FAIL"
    assert decisions(document(scores(), forgotten=(0.14, [0.02, 0.04, 0.03])))["forgotten_generation"] == \
        "INCONCLUSIVE"
    assert decisions(document(scores(), fd=(3.0, 5.0)))["retained_fd"] == "FAIL"


def test_a_generation_check_states_the_smallest_difference_it_would_fail():
    for forgotten, decision in (((0.14, [0.02, 0.04, 0.03]), "INCONCLUSIVE"), ((0.6, [0.02, 0.04, 0.03]), "FAIL")):
        check = next(c for c in evaluate_checks(document(scores(), forgotten=forgotten), Thresholds())
                     if c.name == "forgotten_generation")
        stated = float(re.search(r"FAILs a difference above ([+-][0-9.]+)", check.detail).group(1))
        assert check.decision == decision
        assert (check.estimate > stated) == (decision == "FAIL")
        assert stated == pytest.approx(Thresholds().forgotten_accuracy_margin + check.estimate - check.interval[0],
                                       abs=1e-3)


def test_retained_fd_is_limited_by_the_worse_of_the_original_and_the_retrains():
    doc = document(scores(), fd=(3.0, 5.0))  # original and references at 3.0: limit 3.9
    assert decisions(doc)["retained_fd"] == "FAIL"
    references = doc["membership"]["references"]
    for role, fd in zip(references, [4.0, 5.0, 4.5]):  # retrains worse than the original: their mean, 4.5 x 1.3
        doc["utility"][role]["retained_fd"] = fd
    assert decisions(doc)["retained_fd"] == "PASS"
    doc["utility"]["unlearned"]["retained_fd"] = 5.9
    assert decisions(doc)["retained_fd"] == "FAIL"


def test_proportion_difference_keeps_a_width_at_zero():
    estimate, low, high = proportion_difference(0.0, 50, 0.0, 100, 0.9)
    assert estimate == 0.0 and low < 0 < high


@pytest.mark.parametrize("given, expected", [
    (["PASS", "PASS"], "PASS"), (["PASS", "INCONCLUSIVE"], "INCONCLUSIVE"), (["INCONCLUSIVE", "FAIL"], "FAIL"),
    ([], "INCONCLUSIVE"),
])
def test_the_verdict_rule(given, expected):
    assert verdict_of(given) == expected


def test_calibrated_scores_are_reported_beside_the_raw_decision():
    """Both scales are reported; decisions stay on raw paired scores (calibration is not shown to be stronger
    once the seeds are counted, and at K = 2 the calibrated references mirror each other)."""
    model_scores = scores(references=2, leak=0.3)
    comparison, z, boots = compare(model_scores, IS_MEMBER, ["reference_1", "reference_2"], Thresholds(), seed=0)
    assert comparison["scale"] == "raw" and set(comparison["auc"]) == {"raw", "calibrated"}
    assert set(z) == set(model_scores) and set(boots) == {"unlearned", "original"}
