"""How well a score separates members from non-members: ROC, AUC with a bootstrap interval, TPR at low FPR,
a threshold calibrated on one split and evaluated on another, and two-sample tests.

Reporting follows Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022: the whole ROC
(on log axes) and the TPR at a fixed low FPR, with the FPR actually reached, matter more than the AUC.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve

from diffusion.errors import UsageError


def _as_scores(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if len(array) == 0:
        raise UsageError(f"The '{name}' parameter of membership_metrics must hold at least one score. Got none.")
    if not np.isfinite(array).all():
        raise UsageError(f"The '{name}' parameter of membership_metrics must be finite. Got NaN or inf.")
    return array


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> tuple[float, float]:
    """The highest TPR on the ROC with FPR <= ``target``, and the FPR at that point (the one actually reached)."""
    allowed = np.flatnonzero(fpr <= target)
    best = allowed[np.argmax(tpr[allowed])]
    return float(tpr[best]), float(fpr[best])


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
    members = member_scores[rng.integers(0, m, (n_bootstrap, m))]
    nonmembers = nonmember_scores[rng.integers(0, n, (n_bootstrap, n))]
    ranks = stats.rankdata(np.concatenate([members, nonmembers], 1), axis=1)
    aucs = (ranks[:, :m].sum(1) - m * (m + 1) / 2) / (m * n)  # Mann-Whitney U / (m n), ties counted half
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
    if not 0 < confidence < 1:
        raise UsageError(f"The 'confidence' parameter of membership_metrics must be in (0, 1). Got {confidence}.")
    if not 0 < calibration_fraction < 1:
        raise UsageError(
            f"The 'calibration_fraction' parameter of membership_metrics must be in (0, 1). Got {calibration_fraction}."
        )
    labels = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    scores = np.r_[members, nonmembers]
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    threshold, balanced_accuracy = best_threshold(members, nonmembers)
    result = {
        "num_members": len(members),
        "num_nonmembers": len(nonmembers),
        "auc": float(roc_auc_score(labels, scores)),
        "auc_ci": bootstrap_auc(members, nonmembers, seed=seed, n_bootstrap=n_bootstrap, confidence=confidence),
        "auc_ci_level": confidence,
    }
    for target in target_fprs:
        key = f"{target * 100:g}pct_fpr"
        result[f"tpr_at_{key}"], result[f"fpr_at_{key}"] = tpr_at_fpr(fpr, tpr, target)
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
