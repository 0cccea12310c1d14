"""The canary audit's statistics on known answers: the randomisation test's level and power, the AUC bound's
coverage, the one-run epsilon bound."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from audit.canary_statistics import auc_upper_bound, epsilon_lower_bound, permutation_test


def _canaries(rng: np.random.Generator, m: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """2m canaries, half deleted at random; deleted ones score ``shift`` higher (0: nothing remains)."""
    is_deleted = rng.permutation(np.r_[np.ones(m, bool), np.zeros(m, bool)])
    return rng.normal(size=2 * m) + shift * is_deleted, is_deleted


def test_the_randomisation_test_holds_its_level_and_finds_a_leak():
    rng = np.random.default_rng(0)
    null = [permutation_test(*_canaries(rng, 30, 0.0), n_permutations=200, seed=i)[1] for i in range(300)]
    assert np.mean(np.array(null) <= 0.05) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)  # level, within 2 SE
    assert np.mean(np.array(null) <= 0.5) == pytest.approx(0.5, abs=0.1)  # and not a test that never rejects
    leaking = [permutation_test(*_canaries(rng, 30, 1.0), n_permutations=200, seed=i)[1] for i in range(50)]
    assert np.mean(np.array(leaking) <= 0.05) >= 0.9


def test_the_permutation_test_is_repeatable_and_counts_the_observed_assignment():
    scores, is_deleted = _canaries(np.random.default_rng(1), 20, 0.3)
    assert permutation_test(scores, is_deleted, seed=3) == permutation_test(scores, is_deleted, seed=3)
    separated = np.r_[np.ones(5), np.zeros(5)]
    auc, p = permutation_test(separated, separated.astype(bool), n_permutations=99)
    assert auc == 1.0 and p >= 1 / 100
    with pytest.raises(ValueError, match="deleted and never-included"):
        permutation_test(np.zeros(4), np.ones(4, bool))


def test_the_auc_bound_covers_the_true_auc():
    """Known answer: normal scores shifted by d have AUC Phi(d / sqrt 2); the 90% upper bound covers it."""
    rng = np.random.default_rng(2)
    shift, m = 0.4, 50
    truth = norm.cdf(shift / np.sqrt(2))
    from attacks.metrics import auc

    covered = 0
    for _ in range(200):
        scores, is_deleted = _canaries(rng, m, shift)
        observed = auc(scores[is_deleted], scores[~is_deleted])
        bound = auc_upper_bound(observed, m, m, 0.9)
        assert observed <= bound <= 1.0
        covered += truth <= bound
    assert covered / 200 >= 0.88
    assert auc_upper_bound(0.5, 100, 100) < auc_upper_bound(0.5, 25, 25) < 0.7


def test_the_epsilon_bound_is_zero_without_a_leak_and_grows_with_one():
    rng = np.random.default_rng(3)
    none = [epsilon_lower_bound(*_canaries(rng, 100, 0.0)).epsilon for _ in range(40)]
    assert np.mean(np.array(none) == 0.0) >= 0.9
    weak = epsilon_lower_bound(*_canaries(rng, 100, 1.0))
    strong = epsilon_lower_bound(*_canaries(rng, 100, 4.0))
    assert 0.0 < weak.epsilon < strong.epsilon and strong.correct <= strong.guesses == 40
