"""audit.statistics on synthetic scores: AUC/TPR, paired bootstrap, LiRA calibration, TOST decisions and power."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from audit.statistics import (
    PairedDifference,
    auc,
    bootstrap_aucs,
    calibrate,
    combine,
    decide,
    has_power,
    leakage,
    paired_difference,
    resolvable_fpr,
    samples_needed,
    tpr_at_fpr,
)


def _difficulty_models(seed: int, num_members: int = 90, num_nonmembers: int = 90, num_references: int = 4,
                       difficulty_sd: float = 2.0, noise_sd: float = 0.3, subject_shift: float = 0.0):
    """Scores = per-sample difficulty (shared by all models) + per-model noise; the subject adds a member shift."""
    rng = np.random.default_rng(seed)
    is_member = np.r_[np.ones(num_members, bool), np.zeros(num_nonmembers, bool)]
    difficulty = rng.normal(0.0, difficulty_sd, is_member.size)

    def model() -> np.ndarray:
        return difficulty + rng.normal(0.0, noise_sd, is_member.size)

    scores = {f"reference_{k}": model() for k in range(num_references)}
    scores["fresh"] = model()
    scores["subject"] = model() + subject_shift * is_member
    return scores, is_member, [f"reference_{k}" for k in range(num_references)]


def _diff(estimate: float, low: float, high: float, num_members: int = 100) -> PairedDifference:
    return PairedDifference(metric="auc", estimate=estimate, low=low, high=high, confidence=0.9,
                            standard_error=(high - low) / 3.29, subject_value=0.5 + estimate, reference_values=[0.5],
                            reference_spread=0.0, num_members=num_members, num_nonmembers=num_members,
                            n_bootstrap=1000)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.integers(0, 6, 70).astype(float), rng.integers(0, 5, 55).astype(float)
    expected = roc_auc_score(np.r_[np.ones(70), np.zeros(55)], np.r_[members, nonmembers])
    assert auc(members, nonmembers) == pytest.approx(expected, abs=1e-12)
    assert auc([1.0, 1.0], [1.0]) == 0.5


def test_bootstrap_aucs_equals_auc_per_row():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.integers(0, 10, (7, 30)).astype(float), rng.normal(4, 3, (7, 40)).round()
    rows = bootstrap_aucs(members, nonmembers)
    assert rows.shape == (7,)
    np.testing.assert_allclose(rows, [auc(m, n) for m, n in zip(members, nonmembers)], atol=1e-12)


def test_tpr_at_fpr_and_resolvable_fpr_by_hand():
    nonmembers = np.arange(89.0)  # 0 .. 88
    members = np.array([87.5, 88.0, 88.5, 100.0, 10.0])
    # fpr = 1/89 lets exactly one non-member (88) above the threshold 87: four members are strictly above it.
    assert tpr_at_fpr(members, nonmembers, 1 / 89) == pytest.approx(4 / 5)
    # fpr = 0: threshold 88; the member tied with it does not count (conservative).
    assert tpr_at_fpr(members, nonmembers, 0.0) == pytest.approx(2 / 5)
    assert tpr_at_fpr(members, nonmembers, 1.0) == 1.0
    assert resolvable_fpr(89, 0.001) == pytest.approx(1 / 89)
    assert resolvable_fpr(89, 0.05) == 0.05


def test_paired_difference_deterministic_and_consistent():
    scores, is_member, references = _difficulty_models(seed=2, subject_shift=0.5)
    first = paired_difference(scores, is_member, "subject", references, n_bootstrap=300, seed=7)
    assert first == paired_difference(scores, is_member, "subject", references, n_bootstrap=300, seed=7)
    assert first != paired_difference(scores, is_member, "subject", references, n_bootstrap=300, seed=8)

    members, nonmembers = is_member, ~is_member
    direct = auc(scores["subject"][members], scores["subject"][nonmembers]) - np.mean(
        [auc(scores[r][members], scores[r][nonmembers]) for r in references])
    assert first.estimate == pytest.approx(direct, abs=1e-12)
    assert first.low <= first.estimate <= first.high
    assert first.standard_error > 0 and first.reference_spread > 0
    assert (first.num_members, first.num_nonmembers, first.n_bootstrap) == (90, 90, 300)
    assert first.to_dict()["reference_values"] == first.reference_values

    fpr = 1 / 90
    tpr = paired_difference(scores, is_member, "subject", references, metric=f"tpr@{fpr}", n_bootstrap=300)
    direct_tpr = tpr_at_fpr(scores["subject"][members], scores["subject"][nonmembers], fpr) - np.mean(
        [tpr_at_fpr(scores[r][members], scores[r][nonmembers], fpr) for r in references])
    assert tpr.estimate == pytest.approx(direct_tpr, abs=1e-12)
    assert tpr.low <= tpr.estimate <= tpr.high
    with pytest.raises(ValueError, match="metric"):
        paired_difference(scores, is_member, "subject", references, metric="precision")


def test_paired_interval_narrower_than_unpaired_under_shared_difficulty():
    scores, is_member, references = _difficulty_models(seed=3, difficulty_sd=1.0, noise_sd=0.1, subject_shift=0.05)
    paired = paired_difference(scores, is_member, "subject", references, n_bootstrap=1000, seed=0)

    # Unpaired: every model gets its own, independent resamples.
    rng = np.random.default_rng(0)
    member_idx, nonmember_idx = np.flatnonzero(is_member), np.flatnonzero(~is_member)

    def independent_aucs(name: str) -> np.ndarray:
        m = member_idx[rng.integers(0, member_idx.size, (1000, member_idx.size))]
        n = nonmember_idx[rng.integers(0, nonmember_idx.size, (1000, nonmember_idx.size))]
        return bootstrap_aucs(scores[name][m], scores[name][n])

    unpaired = independent_aucs("subject") - np.mean([independent_aucs(r) for r in references], axis=0)
    unpaired_low, unpaired_high = np.quantile(unpaired, [0.05, 0.95])
    assert paired.high - paired.low < 0.5 * (unpaired_high - unpaired_low)


def test_paired_difference_is_fast():
    scores, is_member, references = _difficulty_models(seed=4, num_references=5)
    del scores["fresh"]
    start = time.perf_counter()
    paired_difference(scores, is_member, "subject", references, n_bootstrap=1000)
    assert time.perf_counter() - start < 3.0  # ~0.1 s alone; generous for a busy shared machine


def test_calibration_removes_difficulty_and_gains_power():
    scores, is_member, references = _difficulty_models(seed=5, num_members=100, num_nonmembers=100,
                                                       subject_shift=0.3)
    z = calibrate(scores, references)
    assert set(z) == set(scores)
    members, nonmembers = is_member, ~is_member

    fresh_auc = auc(z["fresh"][members], z["fresh"][nonmembers])
    assert abs(fresh_auc - 0.5) < 0.1
    assert abs(z["fresh"].mean()) < 0.25 and 0.75 < z["fresh"].std() < 1.25

    raw_auc = auc(scores["subject"][members], scores["subject"][nonmembers])
    calibrated_auc = auc(z["subject"][members], z["subject"][nonmembers])
    assert calibrated_auc > raw_auc + 0.1 and calibrated_auc > 0.65

    for name in references:  # leave-one-out: a reference looks like any retrained model
        assert abs(z[name].mean()) < 0.2 and 0.85 < z[name].std() < 1.15  # without leave-one-out: ~0.77

    per_example = calibrate(scores, references, per_example_variance_min_refs=2)
    assert all(np.isfinite(v).all() for v in per_example.values())
    assert abs(auc(per_example["fresh"][members], per_example["fresh"][nonmembers]) - 0.5) < 0.1


def test_calibrate_needs_two_references():
    scores, _, references = _difficulty_models(seed=6, num_references=2)
    with pytest.raises(ValueError, match="K=1"):
        calibrate(scores, references[:1])
    two = calibrate(scores, references)  # K = 2: references centred on each other, pooled sigma
    np.testing.assert_allclose(two["reference_0"], -two["reference_1"])


def test_leakage_is_one_sided_normal_p_value():
    np.testing.assert_allclose(leakage(np.array([0.0, 1.6448536269514722, -np.inf])), [0.5, 0.05, 1.0])


def test_decide_and_combine():
    margin = 0.05
    assert decide(_diff(0.0, -0.03, 0.04), margin) == "PASS"
    assert decide(_diff(0.0, -0.05, 0.05), margin) == "PASS"  # edges inclusive
    assert decide(_diff(0.2, 0.1, 0.3), margin) == "FAIL"
    assert decide(_diff(-0.2, -0.3, -0.06), margin) == "FAIL"
    assert decide(_diff(-0.1, -0.2, -0.05), margin) == "INCONCLUSIVE"  # touching -margin is not outside
    assert decide(_diff(0.04, -0.01, 0.09), margin) == "INCONCLUSIVE"

    assert combine(["PASS", "PASS"]) == "PASS"
    assert combine(["PASS", "INCONCLUSIVE"]) == "INCONCLUSIVE"
    assert combine(["INCONCLUSIVE", "FAIL", "PASS"]) == "FAIL"
    assert combine([]) == "INCONCLUSIVE"
    with pytest.raises(ValueError):
        combine(["MAYBE"])


def test_has_power():
    assert has_power(_diff(0.3, 0.2, 0.4), 0.05)
    assert not has_power(_diff(0.06, 0.01, 0.11), 0.05)
    assert not has_power(_diff(0.0, -0.02, 0.02), 0.05)


def test_samples_needed_by_hand():
    # Half-width 0.06, room margin - |estimate| = 0.03: n = 100 * (0.06 / 0.03)^2 = 400 makes it PASS.
    assert samples_needed(_diff(0.02, -0.04, 0.08), 0.05) == 400
    # |estimate| > margin: FAIL once the half-width 0.08 falls strictly below 0.05: n > 100 * 1.6^2 = 256.
    assert samples_needed(_diff(0.10, 0.02, 0.18), 0.05) == 257
    # The larger side of an asymmetric interval counts: max(0.01, 0.03) = 0.03 < 0.05 already decisive.
    assert samples_needed(_diff(0.0, -0.01, 0.03), 0.05) == 100
    assert samples_needed(_diff(0.05, 0.0, 0.1), 0.05) is None
