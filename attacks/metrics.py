"""How well a score separates members from non-members: ROC, AUC with a bootstrap interval, TPR at low FPR,
a threshold calibrated on one split and evaluated on another, and two-sample tests.

Reporting follows Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022: the whole ROC
(on log axes) and the TPR at a fixed low FPR, with the FPR actually reached, matter more than the AUC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
from scipy import stats
from sklearn.metrics import roc_curve

from diffusion.errors import UsageError
from diffusion.params import Interval, checks_arguments


def _as_scores(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if len(array) == 0:
        raise UsageError(f"The '{name}' parameter of membership_metrics must hold at least one score. Got none.")
    if not np.isfinite(array).all():
        raise UsageError(f"The '{name}' parameter of membership_metrics must be finite. Got NaN or inf.")
    return array


def rowwise_aucs(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row: members (B, m) against non-members (B, n); ties count half (mid-ranks)."""
    members = np.asarray(members, dtype=np.float64)
    nonmembers = np.asarray(nonmembers, dtype=np.float64)
    m, n = members.shape[1], nonmembers.shape[1]
    if m == 0 or n == 0:
        raise ValueError(f"AUC needs at least one member and one non-member, got {m} and {n}")
    ranks = stats.rankdata(np.concatenate([members, nonmembers], axis=1), axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)


def rowwise_auc_log_odds(members: np.ndarray, nonmembers: np.ndarray) -> np.ndarray:
    """log(AUC / (1 - AUC)) of each row (B,): the log odds that a member outscores a non-member.

    Unlike the AUC it has no ceiling: near a perfect ranking a model that halves the attack's mistakes still moves
    it by log 2. The AUC is held half a pair away from 0 and 1 (1 / (2 m n)) so that a perfect ranking stays finite.
    """
    pairs = np.shape(members)[1] * np.shape(nonmembers)[1]
    aucs = np.clip(rowwise_aucs(members, nonmembers), 0.5 / pairs, 1.0 - 0.5 / pairs)
    return np.log(aucs) - np.log1p(-aucs)


def auc(member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray) -> float:
    """Mann-Whitney AUC: P(member score > non-member score) + 0.5 P(tie) (equal to sklearn's ``roc_auc_score``)."""
    return float(rowwise_aucs(np.asarray(member_scores)[None, :], np.asarray(nonmember_scores)[None, :])[0])


def resolvable_fpr(num_nonmembers: int, target: float) -> float:
    """The lowest false-positive rate at or above ``target`` that ``num_nonmembers`` heldout samples can resolve.

    With n non-members the smallest non-zero FPR is one false positive, 1/n, so a requested FPR below 1/n is raised
    to 1/n: max(target, 1 / num_nonmembers). (FPR 0 is not measurable: it would need infinitely many non-members.)
    """
    if num_nonmembers < 1:
        raise ValueError(f"num_nonmembers must be >= 1, got {num_nonmembers}")
    return max(float(target), 1.0 / num_nonmembers)


def rowwise_tprs_at_fpr(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> tuple[np.ndarray, np.ndarray]:
    """TPR at ``fpr`` and the FPR actually reached, for each row of members (B, m) / non-members (B, n).

    The one tie rule of the project (the highest point of sklearn's ROC with FPR <= ``fpr``): a threshold admits at
    most floor(fpr * n) non-members, so it sits just above the (floor(fpr * n) + 1)-th largest non-member score, and
    members tied with that score are not detected. With n = 89 and fpr = 1/89 exactly one non-member may be above.
    The FPR reached is that of the same TPR at the highest threshold giving it (at the lowest detected member).
    """
    members = np.asarray(members, dtype=np.float64)
    nonmembers = np.asarray(nonmembers, dtype=np.float64)
    n = nonmembers.shape[1]
    if members.shape[1] == 0 or n == 0:
        raise ValueError("TPR needs at least one member and one non-member")
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    allowed = math.floor(fpr * n + 1e-9)  # the tolerance keeps fpr = 1/n from rounding down to none allowed
    if allowed >= n:
        thresholds = np.full((members.shape[0], 1), -np.inf)
    else:
        thresholds = np.partition(nonmembers, n - 1 - allowed, axis=1)[:, n - 1 - allowed, None]
    detected = members > thresholds
    lowest_detected = np.where(detected, members, np.inf).min(axis=1, keepdims=True)
    return detected.mean(axis=1), (nonmembers >= lowest_detected).mean(axis=1)


def tpr_at_fpr(member_scores: Sequence[float] | np.ndarray, nonmember_scores: Sequence[float] | np.ndarray,
               fpr: float) -> tuple[float, float]:
    """(TPR, FPR reached) at the highest ROC point with FPR <= ``fpr``: see :func:`rowwise_tprs_at_fpr`."""
    tprs, reached = rowwise_tprs_at_fpr(np.asarray(member_scores)[None, :], np.asarray(nonmember_scores)[None, :],
                                        fpr)
    return float(tprs[0]), float(reached[0])


def tpr_key(fpr: float) -> str:
    """The results' key of the TPR at ``fpr`` (``tpr_at_1pct_fpr`` for 0.01; ``fpr_at_...`` holds the FPR reached)."""
    return f"tpr_at_{fpr * 100:g}pct_fpr"


def best_threshold(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> tuple[float, float]:
    """The threshold (predict member when score >= it) with the best balanced accuracy, and that accuracy."""
    labels = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    fpr, tpr, thresholds = roc_curve(labels, np.r_[member_scores, nonmember_scores], drop_intermediate=False)
    balanced = (tpr + 1 - fpr) / 2
    best = int(np.argmax(balanced))
    return float(thresholds[best]), float(balanced[best])


def bootstrap_auc(
    member_scores: np.ndarray, nonmember_scores: np.ndarray, *, seed: int, n_bootstrap: int, confidence: float
) -> list[float]:
    """Percentile interval of the AUC over ``n_bootstrap`` resamples of members and non-members (each its own)."""
    rng = np.random.default_rng(seed)
    m, n = len(member_scores), len(nonmember_scores)
    aucs = rowwise_aucs(member_scores[rng.integers(0, m, (n_bootstrap, m))],
                        nonmember_scores[rng.integers(0, n, (n_bootstrap, n))])
    tail = (1 - confidence) / 2 * 100
    return [float(np.percentile(aucs, tail)), float(np.percentile(aucs, 100 - tail))]


def calibrated_threshold(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    *,
    seed: int,
    calibration_fraction: float,
    target_fpr: float,
) -> dict:
    """Fit thresholds on a calibration part of each set and measure TPR / FPR at them on the rest.

    Two thresholds are fitted: the best balanced accuracy, and the (1 - target_fpr) quantile of the calibration
    non-members' scores (a threshold aiming at ``target_fpr``).
    """
    rng = np.random.default_rng(seed + 1)

    def halves(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = rng.permutation(len(scores))
        cut = round(len(scores) * calibration_fraction)
        return scores[order[:cut]], scores[order[cut:]]

    cal_members, eval_members = halves(member_scores)
    cal_nonmembers, eval_nonmembers = halves(nonmember_scores)
    result = {
        "calibration_fraction": calibration_fraction,
        "num_calibration": [len(cal_members), len(cal_nonmembers)],
        "num_evaluation": [len(eval_members), len(eval_nonmembers)],
    }
    if min(len(cal_members), len(cal_nonmembers), len(eval_members), len(eval_nonmembers)) == 0:
        result["note"] = "too few samples to split into calibration and evaluation parts"
        return result
    thresholds = {
        "best_balanced_accuracy": best_threshold(cal_members, cal_nonmembers)[0],
        f"fpr_{target_fpr:g}": float(np.quantile(cal_nonmembers, 1 - target_fpr, method="higher")),
    }
    for rule, threshold in thresholds.items():
        tpr = float((eval_members >= threshold).mean())
        fpr = float((eval_nonmembers >= threshold).mean())
        result[rule] = {"threshold": threshold, "tpr": tpr, "fpr": fpr, "balanced_accuracy": (tpr + 1 - fpr) / 2}
    return result


@checks_arguments({"confidence": [Interval(Real, 0, 1, closed="neither")], "n_bootstrap": [Interval(Integral, 2, None)],
                   "calibration_fraction": [Interval(Real, 0, 1, closed="neither")]})
def membership_metrics(
    member_scores: Sequence[float] | np.ndarray,
    nonmember_scores: Sequence[float] | np.ndarray,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    calibration_fraction: float = 0.5,
    target_fprs: Sequence[float] = (0.01, 0.001),
) -> dict:
    """Every number that says how far member scores stand above non-member scores; JSON-ready.

    Args:
        member_scores: (M,) scores of samples known to be training members (higher = more member-like).
        nonmember_scores: (N,) scores of samples known not to be.
        seed: seed of the bootstrap and of the calibration / evaluation split.
        n_bootstrap: resamples for the AUC interval.
        confidence: level of the AUC interval.
        calibration_fraction: share of each set used to fit thresholds; the rest evaluates them.
        target_fprs: FPRs at which the TPR is read off the ROC (keys ``tpr_at_1pct_fpr``, ``tpr_at_0.1pct_fpr``).

    Returns:
        auc, auc_ci [low, high], tpr_at_<x>pct_fpr and fpr_at_<x>pct_fpr (the FPR actually reached, never above the
        target), balanced_accuracy (best threshold) with that threshold, roc {fpr, tpr} (all points),
        mann_whitney and ks {statistic, pvalue}, calibrated (thresholds fitted on a calibration part, TPR / FPR on
        the evaluation part), and the sample counts.
    """
    members = _as_scores(member_scores, "member_scores")
    nonmembers = _as_scores(nonmember_scores, "nonmember_scores")
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    scores = np.r_[members, nonmembers]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    threshold, balanced_accuracy = best_threshold(members, nonmembers)
    result = {
        "num_members": len(members),
        "num_nonmembers": len(nonmembers),
        "auc": auc(members, nonmembers),
        "auc_ci": bootstrap_auc(members, nonmembers, seed=seed, n_bootstrap=n_bootstrap, confidence=confidence),
        "auc_ci_level": confidence,
    }
    for target in target_fprs:
        key = tpr_key(target)
        result[key], result[key.replace("tpr_at_", "fpr_at_", 1)] = tpr_at_fpr(members, nonmembers, target)
    mann_whitney = stats.mannwhitneyu(members, nonmembers, alternative="two-sided")
    ks = stats.ks_2samp(members, nonmembers)
    result.update(
        balanced_accuracy=balanced_accuracy,
        best_threshold=threshold,
        mann_whitney={"statistic": float(mann_whitney.statistic), "pvalue": float(mann_whitney.pvalue)},
        ks={"statistic": float(ks.statistic), "pvalue": float(ks.pvalue)},
        calibrated=calibrated_threshold(
            members, nonmembers, seed=seed, calibration_fraction=calibration_fraction, target_fpr=target_fprs[0]
        ),
        roc={"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    )
    return result
