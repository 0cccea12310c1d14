"""audit.statistics on synthetic scores: paired bootstrap, LiRA calibration, TOST decisions and power."""

from __future__ import annotations

import time
from itertools import pairwise

import numpy as np
import pytest

from attacks.metrics import auc, rowwise_aucs, tpr_at_fpr
from audit.statistics import (
    SeedSpread,
    calibrate,
    decide,
    has_power,
    leakage,
    mean_bootstrap,
    paired_bootstrap,
    paired_difference,
    pooled_seed_spread,
    residual_fraction,
    seed_aware_difference,
    what_would_decide,
)
from reports.results import PairedDifference, verdict_of


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


def _diff(estimate: float, low: float, high: float, num_members: int = 100, seed_variance: float = 0.0,
          seed_dof: float = 10.0, references: int = 2) -> PairedDifference:
    """A difference whose interval is symmetric about ``estimate`` unless low/high say otherwise; the bootstrap
    standard error is whatever the seed variance leaves of the total."""
    total = (high - low) / 3.29
    seed_term = seed_variance * (1 + 1 / references)
    return PairedDifference(metric="auc", estimate=estimate, low=low, high=high, confidence=0.9,
                            standard_error=total, subject_value=0.5 + estimate, reference_values=[0.5] * references,
                            reference_spread=0.0, num_members=num_members, num_nonmembers=num_members,
                            n_bootstrap=1000, bootstrap_low=low, bootstrap_high=high,
                            bootstrap_standard_error=float(np.sqrt(max(total**2 - seed_term, 0.0))),
                            seed_variance=seed_variance, seed_dof=seed_dof, seed_source="test")


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
    assert first.to_json()["reference_values"] == first.reference_values

    fpr = 1 / 90
    tpr = paired_difference(scores, is_member, "subject", references, metric=f"tpr@{fpr}", n_bootstrap=300)
    direct_tpr = tpr_at_fpr(scores["subject"][members], scores["subject"][nonmembers], fpr)[0] - np.mean(
        [tpr_at_fpr(scores[r][members], scores[r][nonmembers], fpr)[0] for r in references])
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
        return rowwise_aucs(scores[name][m], scores[name][n])

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


def test_decide_and_the_verdict_rule():
    margin = 0.05
    assert decide(_diff(0.0, -0.03, 0.04), margin) == "PASS"
    assert decide(_diff(0.0, -0.05, 0.05), margin) == "PASS"  # edges inclusive
    assert decide(_diff(0.2, 0.1, 0.3), margin) == "FAIL"
    assert decide(_diff(-0.2, -0.3, -0.06), margin) == "FAIL"
    assert decide(_diff(-0.1, -0.2, -0.05), margin) == "INCONCLUSIVE"  # touching -margin is not outside
    assert decide(_diff(0.04, -0.01, 0.09), margin) == "INCONCLUSIVE"

    assert verdict_of(["PASS", "PASS"]) == "PASS"
    assert verdict_of(["PASS", "INCONCLUSIVE"]) == "INCONCLUSIVE"
    assert verdict_of(["INCONCLUSIVE", "FAIL", "PASS"]) == "FAIL"
    assert verdict_of([]) == "INCONCLUSIVE"
    with pytest.raises(ValueError):
        verdict_of(["MAYBE"])


def test_has_power():
    assert has_power(_diff(0.3, 0.2, 0.4), 0.05)
    assert not has_power(_diff(0.06, 0.01, 0.11), 0.05)
    assert not has_power(_diff(0.0, -0.02, 0.02), 0.05)


def test_no_pass_without_any_estimate_of_the_seed_spread():
    assert decide(_diff(0.0, -0.03, 0.04, seed_dof=0), 0.05) == "INCONCLUSIVE"
    assert decide(_diff(0.2, 0.1, 0.3, seed_dof=0), 0.05) == "FAIL"


def test_what_would_decide_by_hand():
    # images only (no seed spread): half-width 1.645 * 0.06 / 1.645 = 0.06, room 0.03 -> 4x the images
    diff = _diff(0.02, -0.04, 0.08, num_members=100)
    diff = PairedDifference(**{**diff.to_json(), "standard_error": 0.06 / 1.645,
                                "bootstrap_standard_error": 0.06 / 1.645})
    would = what_would_decide(diff, 0.05, max_forget=1000)
    assert 400 <= would["forget_images"] <= 401 and would["references"] is None and would["outcome"] == "PASS"
    assert what_would_decide(diff, 0.05, max_forget=300)["forget_images"] is None  # the data cannot hold it
    assert what_would_decide(_diff(0.05, 0.0, 0.1), 0.05, max_forget=100)["outcome"] is None
    # seed-dominated: more references shrink the (1 + 1/K) factor, more images shrink everything
    seeded = _diff(0.0, -0.06, 0.06, seed_variance=0.03**2, references=2)
    would = what_would_decide(seeded, 0.055, max_forget=100)
    assert would["forget_images"] is None and would["references"] is not None and would["references"] > 2


def _retrain_world(seed: int, num_models: int, seed_sd: float, num: int = 60):
    """Fixed images (difficulty drawn once); each retrain adds its own per-image noise AND a per-image
    seed effect that is shared by no other model: the spread the bootstrap over images cannot see."""
    rng = np.random.default_rng(seed)
    is_member = np.r_[np.ones(num, bool), np.zeros(num, bool)]
    difficulty = rng.normal(0.0, 1.0, is_member.size)
    models = {f"m{k}": difficulty + rng.normal(0.0, seed_sd, is_member.size) for k in range(num_models)}
    return models, is_member


def test_seed_aware_interval_covers_a_retrain_where_the_bootstrap_alone_does_not():
    """Known answer measured, not assumed: on fixed images, a fresh retrain against K = 3 references; the nominal
    90% interval must contain 0 about 90% of the time. Images-only intervals undercover."""
    covered, covered_images_only, runs = 0, 0, 60
    for world in range(runs):
        models, is_member = _retrain_world(world, 4, seed_sd=1.0)
        boot = paired_bootstrap(models, is_member, "m0", ["m1", "m2", "m3"], n_bootstrap=300, seed=world)
        diff = seed_aware_difference(boot, 0.9)
        covered += diff.low <= 0.0 <= diff.high
        covered_images_only += diff.bootstrap_low <= 0.0 <= diff.bootstrap_high
    assert covered / runs >= 0.83, covered
    assert covered_images_only / runs < covered / runs


def test_seed_aware_interval_takes_the_larger_variance_not_their_sum():
    """The between-retrain variance on fixed images already holds the scatter the bootstrap sees: the interval's
    variance is the larger of the two terms (adding them counted the images twice and cost power)."""
    from scipy.stats import norm
    from scipy.stats import t as student_t

    models, is_member = _retrain_world(3, 3, seed_sd=1.0)
    boot = paired_bootstrap(models, is_member, "m0", ["m1", "m2"], n_bootstrap=300, seed=3)
    boot_variance = float(np.var(boot.differences, ddof=1))
    wide = seed_aware_difference(boot, 0.9, SeedSpread(10 * boot_variance, 12, "measured"))
    pooled = pooled_seed_spread(boot.reference_values, SeedSpread(10 * boot_variance, 12, "measured"))
    assert wide.high - wide.estimate == pytest.approx(student_t.ppf(0.95, pooled.dof) * np.sqrt(pooled.variance * 1.5))
    narrow = seed_aware_difference(boot, 0.9, SeedSpread(0.01 * boot_variance, 1000, "measured"))
    assert narrow.high - narrow.estimate == pytest.approx(norm.ppf(0.95) * np.sqrt(boot_variance))
    assert narrow.seed_dof > 0  # the seed spread is known (a PASS is possible), only smaller than the images' part


def test_seed_aware_interval_never_narrows_as_the_images_scatter_more():
    """With the seed spread estimated from 2 references (1 degree of freedom, t quantile 6.3), a subject whose
    bootstrap variance just passes the seed term must not drop to the normal quantile (which gave the EraseDiff text
    audit an interval 2.8x narrower than the exact retrain's, on the same references)."""
    from dataclasses import replace

    models, is_member = _retrain_world(5, 3, seed_sd=1.0)
    boot = paired_bootstrap(models, is_member, "m0", ["m1", "m2"], n_bootstrap=300, seed=5)
    seed_term = pooled_seed_spread(boot.reference_values, None).variance * 1.5
    halves = []
    for ratio in (0.5, 0.9, 1.1, 2.0, 50.0):  # bootstrap variance / seed term
        spread = boot.differences.mean() + (boot.differences - boot.differences.mean()) * np.sqrt(
            ratio * seed_term / np.var(boot.differences, ddof=1))
        diff = seed_aware_difference(replace(boot, differences=spread), 0.9)
        halves.append(diff.high - diff.estimate)
    assert all(b >= a - 1e-12 for a, b in pairwise(halves)), halves
    assert halves[2] == pytest.approx(halves[0])  # the seed term's t interval still holds just past the switch


def test_pooled_seed_spread_uses_and_checks_the_prior():
    prior = SeedSpread(0.01**2, 10, "shipped")
    pooled = pooled_seed_spread([0.50, 0.51], prior)
    assert pooled.dof == 11 and "pooled" in pooled.source
    assert pooled.variance == pytest.approx((10 * 0.01**2 + np.var([0.50, 0.51], ddof=1)) / 11)
    dropped = pooled_seed_spread([0.40, 0.60], prior)  # far more spread than the prior allows
    assert dropped.dof == 1 and "not used" in dropped.source
    assert pooled_seed_spread([0.5], None).dof == 0
    assert pooled_seed_spread([0.5], prior).dof == 10


def test_mean_bootstrap_averages_replicates_and_refuses_mismatches():
    scores, is_member, references = _difficulty_models(seed=9, num_references=2)
    a = paired_bootstrap(scores, is_member, "subject", references, n_bootstrap=50, seed=1)
    b = paired_bootstrap({k: -v for k, v in scores.items()}, is_member, "subject", references, n_bootstrap=50, seed=1)
    mean = mean_bootstrap([a, b])
    np.testing.assert_allclose(mean.differences, (a.differences + b.differences) / 2)
    assert mean.estimate == pytest.approx((a.estimate + b.estimate) / 2)
    other = paired_bootstrap(scores, is_member, "subject", references, n_bootstrap=60, seed=1)
    with pytest.raises(ValueError, match="differ"):
        mean_bootstrap([a, other])


def test_residual_fraction():
    share = residual_fraction(_diff(0.1, 0.05, 0.15), _diff(0.4, 0.3, 0.5))
    assert share["estimate"] == pytest.approx(0.25) and share["low"] == pytest.approx(0.125)
    assert residual_fraction(_diff(0.1, 0.05, 0.15), _diff(0.02, -0.05, 0.09)) is None
