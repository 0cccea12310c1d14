import json

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from attacks.metrics import auc, membership_metrics, resolvable_fpr, rowwise_aucs, tpr_at_fpr
from diffusion.errors import UsageError


def test_perfect_separation():
    m = membership_metrics([3.0, 4.0], [1.0, 2.0], n_bootstrap=50)
    assert m["auc"] == 1.0 and m["auc_ci"] == [1.0, 1.0]
    assert m["tpr_at_1pct_fpr"] == 1.0 and m["fpr_at_1pct_fpr"] == 0.0
    assert m["balanced_accuracy"] == 1.0 and m["best_threshold"] == 3.0
    assert m["ks"]["statistic"] == 1.0
    json.dumps(m)


def test_hand_computed_auc_with_ties():
    # pairs (member, non-member): (1,2) lose, (1,4) lose, (3,2) win, (3,4) lose -> 1/4
    assert membership_metrics([1.0, 3.0], [2.0, 4.0], n_bootstrap=10)["auc"] == 0.25
    # every pair tied -> 1/2
    assert membership_metrics([1.0, 1.0], [1.0, 1.0], n_bootstrap=10)["auc"] == 0.5
    # one tie out of four pairs: (2,1) win, (2,2) half, (0,1) lose, (0,2) lose -> 1.5 / 4
    assert membership_metrics([2.0, 0.0], [1.0, 2.0], n_bootstrap=10)["auc"] == 0.375


def test_tpr_at_low_fpr_reports_the_fpr_reached():
    nonmembers = np.arange(100.0)  # 0..99
    members = np.array([200.0, 99.5, 50.5])
    m = membership_metrics(members, nonmembers, n_bootstrap=10)
    # 2 of 3 members score above every non-member; the third needs FPR 49/100
    assert m["tpr_at_1pct_fpr"] == pytest.approx(2 / 3) and m["fpr_at_1pct_fpr"] == 0.0
    assert m["tpr_at_0.1pct_fpr"] == pytest.approx(2 / 3) and m["fpr_at_0.1pct_fpr"] == 0.0
    # with 10 non-members the smallest non-zero FPR is 0.1: at 1% only FPR 0 is allowed
    assert tpr_at_fpr(np.array([0.5, 0.95, 2.0]), np.linspace(0.0, 0.9, 10), 0.01) == (pytest.approx(2 / 3), 0.0)
    roc = m["roc"]
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0 and len(roc["fpr"]) == len(roc["tpr"])


def test_tests_match_scipy_and_bootstrap_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 1, 200), rng.normal(0, 1, 300)
    m = membership_metrics(a, b, seed=3, n_bootstrap=300)
    assert m["mann_whitney"]["pvalue"] == pytest.approx(stats.mannwhitneyu(a, b).pvalue)
    assert m["mann_whitney"]["statistic"] / (200 * 300) == pytest.approx(m["auc"])
    assert m["ks"]["statistic"] == pytest.approx(stats.ks_2samp(a, b).statistic)
    low, high = m["auc_ci"]
    assert low < m["auc"] < high and 0.55 < low and high < 0.75
    assert membership_metrics(a, b, seed=3, n_bootstrap=300)["auc_ci"] == m["auc_ci"]
    assert membership_metrics(a, b, seed=4, n_bootstrap=300)["auc_ci"] != m["auc_ci"]


def test_calibrated_threshold_is_evaluated_on_the_other_half():
    members, nonmembers = np.arange(100.0, 140.0), np.arange(0.0, 40.0)
    calibrated = membership_metrics(members, nonmembers, n_bootstrap=10)["calibrated"]
    assert calibrated["num_calibration"] == [20, 20] and calibrated["num_evaluation"] == [20, 20]
    best = calibrated["best_balanced_accuracy"]
    assert best["tpr"] == 1.0 and best["fpr"] == 0.0 and 40 <= best["threshold"] <= 140
    # overlapping scores: the held-out FPR differs from the calibration target but stays a real rate
    rng = np.random.default_rng(1)
    calibrated = membership_metrics(rng.normal(1, 1, 400), rng.normal(0, 1, 400), n_bootstrap=10)["calibrated"]
    at_fpr = calibrated["fpr_0.01"]
    assert 0 <= at_fpr["fpr"] <= 0.05 and 0 < at_fpr["tpr"] < 0.5


def test_bad_input():
    with pytest.raises(UsageError, match=r"'member_scores'.*at least one"):
        membership_metrics([], [1.0])
    with pytest.raises(UsageError, match=r"'nonmember_scores'.*finite"):
        membership_metrics([1.0], [float("nan")])
    with pytest.raises(UsageError, match="'calibration_fraction'"):
        membership_metrics([1.0], [0.0], calibration_fraction=1.5)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    members, nonmembers = rng.integers(0, 6, 70).astype(float), rng.integers(0, 5, 55).astype(float)
    expected = roc_auc_score(np.r_[np.ones(70), np.zeros(55)], np.r_[members, nonmembers])
    assert auc(members, nonmembers) == pytest.approx(expected, abs=1e-12)
    assert auc([1.0, 1.0], [1.0]) == 0.5


def test_rowwise_aucs_equals_auc_per_row():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.integers(0, 10, (7, 30)).astype(float), rng.normal(4, 3, (7, 40)).round()
    rows = rowwise_aucs(members, nonmembers)
    assert rows.shape == (7,)
    np.testing.assert_allclose(rows, [auc(m, n) for m, n in zip(members, nonmembers)], atol=1e-12)


def test_tpr_at_fpr_and_resolvable_fpr_by_hand():
    nonmembers = np.arange(89.0)  # 0 .. 88
    members = np.array([87.5, 88.0, 88.5, 100.0, 10.0])
    # fpr = 1/89 lets exactly one non-member (88) above the threshold 87: four members are strictly above it.
    assert tpr_at_fpr(members, nonmembers, 1 / 89) == (pytest.approx(4 / 5), pytest.approx(1 / 89))
    # fpr = 0: threshold 88; the member tied with it does not count (conservative).
    assert tpr_at_fpr(members, nonmembers, 0.0) == (pytest.approx(2 / 5), 0.0)
    assert tpr_at_fpr(members, nonmembers, 1.0)[0] == 1.0
    assert resolvable_fpr(89, 0.001) == pytest.approx(1 / 89)
    assert resolvable_fpr(89, 0.05) == 0.05


def test_tpr_at_fpr_is_the_best_point_of_sklearns_roc_with_ties():
    """One tie rule: the TPR (and the lowest FPR reaching it) of sklearn's ROC, read off the scores directly."""
    rng = np.random.default_rng(3)
    for trial in range(200):
        m, n = rng.integers(1, 30, 2)
        members, nonmembers = rng.integers(0, 8, m).astype(float), rng.integers(0, 8, n).astype(float)
        target = float(rng.choice([0.0, 0.01, 1 / n, 0.1, 0.5, 1.0]))
        fpr, tpr, _ = roc_curve(np.r_[np.ones(m), np.zeros(n)], np.r_[members, nonmembers], drop_intermediate=False)
        allowed = np.flatnonzero(fpr <= target + 1e-12)
        best = allowed[np.argmax(tpr[allowed])]
        assert tpr_at_fpr(members, nonmembers, target) == (pytest.approx(tpr[best]), pytest.approx(fpr[best])), trial
