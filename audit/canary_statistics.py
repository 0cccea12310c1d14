"""The statistics of a canary audit: an exact randomisation test, a distribution-free bound on the attack's AUC, and
the one-run lower bound on epsilon.

Canaries are assigned to training at random (probability 1/2 each, from a secret seed); the included ones are
deleted with the user's forget set. On a model that kept nothing of the deleted canaries, their scores are
exchangeable with the never-included canaries' scores, whatever the model's seed, so the rank statistic's
randomisation distribution is the exact null (Zhang, Das, Kamath, Tramer, "Membership Inference Attacks Cannot
Prove that a Model Was Trained On Your Data", SaTML 2025), and the attacker's guesses bound epsilon from one run
(Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023, Theorem 3.1 with delta = 0).

Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy.optimize import brentq
from scipy.stats import binom, norm

from attacks.metrics import rowwise_aucs
from diffusion.params import Interval, checks_arguments

UNIT_OPEN = [Interval(Real, 0, 1, closed="neither")]
PERMUTATIONS = [Interval(Integral, 1, None)]


def _groups(scores: np.ndarray, is_deleted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    is_deleted = np.asarray(is_deleted, dtype=bool)
    if scores.shape != is_deleted.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and is_deleted {is_deleted.shape} must be (N,) alike")
    if is_deleted.all() or not is_deleted.any():
        raise ValueError("a canary test needs deleted and never-included canaries")
    if not np.isfinite(scores).all():
        raise ValueError("canary scores must be finite")
    return scores, is_deleted


@checks_arguments({"n_permutations": PERMUTATIONS})
def permutation_test(scores: np.ndarray, is_deleted: np.ndarray, *, n_permutations: int = 10_000,
                     seed: int = 0) -> tuple[float, float]:
    """(AUC of deleted vs never-included canaries, its one-sided randomisation p-value).

    The p-value is the share of random re-assignments (as many deleted as observed) whose AUC is at least the
    observed one, counting the observed assignment itself: (1 + #{AUC_perm >= AUC_obs}) / (1 + n_permutations),
    valid at every sample size (a Monte Carlo test is exact in the sense that P(p <= alpha) <= alpha under H0).
    ``scores`` (N,): higher = more member-like; ``is_deleted`` (N,) bool.
    """
    scores, is_deleted = _groups(scores, is_deleted)
    m = int(is_deleted.sum())
    observed = float(rowwise_aucs(scores[is_deleted][None, :], scores[~is_deleted][None, :])[0])
    rng = np.random.default_rng(seed)
    order = rng.permuted(np.tile(np.arange(scores.size), (n_permutations, 1)), axis=1)
    shuffled = scores[order]
    permuted = rowwise_aucs(shuffled[:, :m], shuffled[:, m:])
    p_value = (1.0 + float(np.sum(permuted >= observed - 1e-12))) / (1.0 + n_permutations)
    return observed, p_value


@checks_arguments({"confidence": UNIT_OPEN})
def auc_upper_bound(auc: float, num_deleted: int, num_unseen: int, confidence: float = 0.90) -> float:
    """A one-sided upper confidence bound on the attacker's true AUC (P(deleted scores above never-included)).

    Distribution-free: the Mann-Whitney estimate's variance is at most a (1 - a) / min(m, n) for a true AUC a
    (Birnbaum and Klose, "Bounds for the variance of the Mann-Whitney statistic", Ann. Math. Statist. 1957), so
    the bound is the largest a with (a - auc) <= z sqrt(a (1 - a) / min(m, n)), z the normal quantile at
    ``confidence``. It does not assume the canaries were deleted well: it bounds what an attacker sees.
    """
    n = min(num_deleted, num_unseen)
    if n < 1:
        raise ValueError("an AUC bound needs at least one canary in each group")
    z = float(norm.ppf(confidence))

    def gap(a: float) -> float:
        return (a - auc) - z * math.sqrt(a * (1.0 - a) / n)

    return 1.0 if gap(1.0 - 1e-12) <= 0 else float(brentq(gap, max(auc, 1e-12), 1.0 - 1e-12))


@dataclass(frozen=True)
class EpsilonBound:
    """The one-run lower bound on epsilon: ``epsilon`` at ``confidence`` from ``correct`` right guesses out of
    ``guesses`` (the top- and bottom-scored canaries guessed in and out), over ``num_canaries``."""

    epsilon: float
    guesses: int
    correct: int
    num_canaries: int
    confidence: float

    def to_dict(self) -> dict:
        return {"epsilon": self.epsilon, "guesses": self.guesses, "correct": self.correct,
                "num_canaries": self.num_canaries, "confidence": self.confidence}


@checks_arguments({"confidence": UNIT_OPEN, "guess_fraction": [Interval(Real, 0, 0.5, closed="right")]})
def epsilon_lower_bound(scores: np.ndarray, is_deleted: np.ndarray, *, guess_fraction: float = 0.1,
                        confidence: float = 0.95) -> EpsilonBound:
    """Steinke et al.'s bound from one run: guess "deleted" for the ``guess_fraction`` highest-scored canaries and
    "never included" for as many lowest-scored ones (a fraction fixed in advance, not tuned on the outcome).

    Under epsilon-DP with canaries included independently with probability 1/2, the number of correct guesses out
    of r is stochastically dominated by Binomial(r, e^eps / (1 + e^eps)); the bound is the largest epsilon whose
    tail P[Binomial >= correct] is at most 1 - ``confidence`` (0 when even epsilon = 0 explains the guesses).
    """
    scores, is_deleted = _groups(scores, is_deleted)
    k = max(1, min(scores.size // 2, round(guess_fraction * scores.size)))
    order = np.argsort(-scores, kind="stable")
    correct = int(is_deleted[order[:k]].sum() + (~is_deleted[order[-k:]]).sum())
    guesses = 2 * k
    beta = 1.0 - confidence

    def tail(epsilon: float) -> float:
        p = 1.0 / (1.0 + math.exp(-epsilon))
        return float(binom.sf(correct - 1, guesses, p))  # P[Binomial(guesses, p) >= correct]

    if tail(0.0) > beta:
        epsilon = 0.0
    elif correct == guesses and tail(50.0) <= beta:
        epsilon = 50.0
    else:
        epsilon = float(brentq(lambda e: tail(e) - beta, 0.0, 50.0))
    return EpsilonBound(epsilon, guesses, correct, int(scores.size), confidence)
