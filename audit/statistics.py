"""Statistics for the audit's verdict: AUC / TPR at low FPR, a paired bootstrap, LiRA calibration, TOST decisions.

The unlearned model is compared with K models retrained without the forget set, on the SAME samples scored by the
same membership-inference attack (U-LiRA: Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid
a False Sense of Privacy", 2024). Scores are per-example calibrated against the retrained references as in the
offline LiRA of Carlini et al., "Membership Inference Attacks From First Principles" (IEEE S&P 2022). The verdict is
an equivalence test: two one-sided tests at level alpha (TOST, Schuirmann 1987) are equivalent to asking whether the
(1 - 2 alpha) confidence interval of the difference lies inside [-margin, +margin]; the default ``confidence=0.90``
therefore is a TOST at alpha = 0.05.

This module must not import torch: ``erasediff report`` imports it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm, rankdata

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"


def bootstrap_aucs(scores_2d_members: np.ndarray, scores_2d_nonmembers: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC of each row: members (B, m) against non-members (B, n); ties count half (mid-ranks)."""
    members = np.asarray(scores_2d_members, dtype=np.float64)
    nonmembers = np.asarray(scores_2d_nonmembers, dtype=np.float64)
    m, n = members.shape[1], nonmembers.shape[1]
    if m == 0 or n == 0:
        raise ValueError(f"AUC needs at least one member and one non-member, got {m} and {n}")
    ranks = rankdata(np.concatenate([members, nonmembers], axis=1), axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """Mann-Whitney AUC: P(member score > non-member score) + 0.5 P(tie)."""
    return float(bootstrap_aucs(np.asarray(member_scores)[None, :], np.asarray(nonmember_scores)[None, :])[0])


def resolvable_fpr(num_nonmembers: int, target: float) -> float:
    """The lowest false-positive rate at or above ``target`` that ``num_nonmembers`` heldout samples can resolve.

    With n non-members the smallest non-zero FPR is one false positive, 1/n, so a requested FPR below 1/n is raised
    to 1/n: max(target, 1 / num_nonmembers). (FPR 0 is not measurable: it would need infinitely many non-members.)
    """
    if num_nonmembers < 1:
        raise ValueError(f"num_nonmembers must be >= 1, got {num_nonmembers}")
    return max(float(target), 1.0 / num_nonmembers)


def _allowed_false_positives(fpr: float, num_nonmembers: int) -> int:
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    # The tolerance keeps fpr = 1/n from rounding down to zero allowed false positives.
    return math.floor(fpr * num_nonmembers + 1e-9)


def _bootstrap_tprs(members: np.ndarray, nonmembers: np.ndarray, fpr: float) -> np.ndarray:
    """TPR at ``fpr`` for each row of members (B, m) / non-members (B, n); see :func:`tpr_at_fpr`."""
    n = nonmembers.shape[1]
    if members.shape[1] == 0 or n == 0:
        raise ValueError("TPR needs at least one member and one non-member")
    allowed = _allowed_false_positives(fpr, n)
    if allowed >= n:
        return np.ones(members.shape[0])
    # The (allowed+1)-th largest non-member score: at most `allowed` non-members lie strictly above it.
    thresholds = np.partition(nonmembers, n - 1 - allowed, axis=1)[:, n - 1 - allowed]
    return (members > thresholds[:, None]).mean(axis=1)


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float) -> float:
    """True-positive rate at the threshold that lets at most floor(fpr * n) non-members strictly above it.

    The threshold is the (floor(fpr * n) + 1)-th largest non-member score; members tied with it do not count as
    detected (ties resolved conservatively). With n = 89 and fpr = 1/89 exactly one non-member may be above.
    """
    members = np.asarray(member_scores, dtype=np.float64)[None, :]
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64)[None, :]
    return float(_bootstrap_tprs(members, nonmembers, fpr)[0])


def _metric_function(metric: str):
    if metric == "auc":
        return bootstrap_aucs
    if metric.startswith("tpr@"):
        try:
            fpr = float(metric[4:])
        except ValueError:
            raise ValueError(f"bad metric {metric!r}: expected 'tpr@<fpr>', e.g. 'tpr@0.01'") from None
        _allowed_false_positives(fpr, 1)
        return lambda members, nonmembers: _bootstrap_tprs(members, nonmembers, fpr)
    raise ValueError(f"unknown metric {metric!r}: expected 'auc' or 'tpr@<fpr>'")


@dataclass(frozen=True)
class PairedDifference:
    """A subject model's metric minus the mean of the retrained references' metric, with a paired-bootstrap interval.

    ``low``/``high`` form the percentile interval at ``confidence``; ``standard_error`` is the bootstrap SD of the
    difference; ``reference_spread`` is the SD of the references' own values (0.0 with one reference).
    """

    metric: str
    estimate: float
    low: float
    high: float
    confidence: float
    standard_error: float
    subject_value: float
    reference_values: list[float]
    reference_spread: float
    num_members: int
    num_nonmembers: int
    n_bootstrap: int

    def to_dict(self) -> dict:
        return asdict(self)


def _as_scores(scores: Mapping[str, np.ndarray], name: str, size: int) -> np.ndarray:
    if name not in scores:
        raise KeyError(f"no scores for model {name!r}; have {sorted(scores)}")
    values = np.asarray(scores[name], dtype=np.float64)
    if values.shape != (size,):
        raise ValueError(f"scores of {name!r} have shape {values.shape}, expected ({size},)")
    return values


def paired_difference(
    scores: Mapping[str, np.ndarray],
    is_member: np.ndarray,
    subject: str,
    references: Sequence[str],
    *,
    metric: str = "auc",
    confidence: float = 0.90,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> PairedDifference:
    """Subject's ``metric`` minus the references' mean, with a paired percentile-bootstrap interval.

    Every resample draws member and non-member indices separately, with replacement, and uses the SAME indices for
    every model, so per-sample difficulty shared by the models cancels in the difference (a paired design, as in the
    per-example comparisons of Carlini et al. 2022 and Hayes et al. 2024). ``metric`` is ``"auc"`` or
    ``"tpr@<fpr>"`` (:func:`tpr_at_fpr`). Deterministic for a given ``seed``.
    """
    references = list(references)
    if not references:
        raise ValueError("paired_difference needs at least one reference model")
    if subject in references:
        raise ValueError(f"subject {subject!r} is also listed among the references")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if n_bootstrap < 2:
        raise ValueError(f"n_bootstrap must be >= 2, got {n_bootstrap}")
    compute = _metric_function(metric)
    member_mask = np.asarray(is_member, dtype=bool)
    if member_mask.ndim != 1:
        raise ValueError(f"is_member must be 1-D, got shape {member_mask.shape}")
    member_idx, nonmember_idx = np.flatnonzero(member_mask), np.flatnonzero(~member_mask)
    m, n = member_idx.size, nonmember_idx.size
    if m == 0 or n == 0:
        raise ValueError(f"need at least one member and one non-member, got {m} and {n}")

    rng = np.random.default_rng(seed)
    boot_members = member_idx[rng.integers(0, m, size=(n_bootstrap, m))]
    boot_nonmembers = nonmember_idx[rng.integers(0, n, size=(n_bootstrap, n))]

    def full_and_boot(name: str) -> tuple[float, np.ndarray]:
        values = _as_scores(scores, name, member_mask.size)
        full = float(compute(values[member_idx][None, :], values[nonmember_idx][None, :])[0])
        return full, compute(values[boot_members], values[boot_nonmembers])

    subject_value, subject_boot = full_and_boot(subject)
    reference_results = [full_and_boot(name) for name in references]
    reference_values = [full for full, _ in reference_results]
    differences = subject_boot - np.mean([boot for _, boot in reference_results], axis=0)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(differences, [tail, 1.0 - tail])
    return PairedDifference(
        metric=metric,
        estimate=subject_value - float(np.mean(reference_values)),
        low=float(low),
        high=float(high),
        confidence=confidence,
        standard_error=float(np.std(differences, ddof=1)),
        subject_value=subject_value,
        reference_values=reference_values,
        reference_spread=float(np.std(reference_values, ddof=1)) if len(reference_values) > 1 else 0.0,
        num_members=int(m),
        num_nonmembers=int(n),
        n_bootstrap=n_bootstrap,
    )


def _offline_z(values: np.ndarray, reference_matrix: np.ndarray, per_example_variance_min_refs: int) -> np.ndarray:
    """Offline-LiRA z-scores of ``values`` against the OUT models' scores ``reference_matrix`` (K, N), K >= 2."""
    k = reference_matrix.shape[0]
    mean = reference_matrix.mean(axis=0)
    variance = reference_matrix.var(axis=0, ddof=1)
    pooled = math.sqrt(float(variance.mean()))
    if pooled == 0.0:
        raise ValueError("the reference models' scores do not vary: calibration has no scale")
    sigma = np.maximum(np.sqrt(variance), 1e-3 * pooled) if k >= per_example_variance_min_refs else pooled
    # sqrt(1 + 1/K): the mean is estimated from K models, so a fresh OUT model's score deviates from it with
    # variance sigma^2 (1 + 1/K); dividing it out makes calibrated scores of any OUT model ~ N(0, 1).
    return (values - mean) / (sigma * math.sqrt(1.0 + 1.0 / k))


def calibrate(
    scores: Mapping[str, np.ndarray],
    references: Sequence[str],
    *,
    per_example_variance_min_refs: int = 8,
) -> dict[str, np.ndarray]:
    """Per-example calibrated scores z for every model in ``scores`` (offline LiRA, Carlini et al. 2022).

    z_i = (s_i - mu_i) / (sigma_i sqrt(1 + 1/K)), where mu_i is the mean of the K references' scores on sample i and
    sqrt(1 + 1/K) accounts for mu_i being estimated, so that any model retrained without the forget set gets
    z ~ N(0, 1) on every sample. sigma is pooled over samples (root mean of the unbiased per-sample variances across
    references) when K < ``per_example_variance_min_refs``, as LiRA's "global variance" with few shadow models, and
    per-example otherwise (floored at 1e-3 x pooled). A reference is calibrated leave-one-out, against the other
    K - 1 references, exactly like an independent retrained model would be.

    Needs K >= 2 references; the leave-one-out of a reference has a variance of its own only with K >= 3, so with
    K = 2 each reference is centred on the other one and scaled by the pooled sigma of both (each sample's share in
    that pooled sigma is 1/N, a negligible dependence). Raises ValueError for K < 2.

    Calibration removes per-image difficulty (some images always denoise well): under a retrained model forget and
    heldout z are exchangeable (AUC ~ 0.5), so a leak shows with more power than on raw scores.
    """
    references = list(references)
    if len(references) < 2:
        raise ValueError(f"calibration needs at least K=2 reference models, got K={len(references)}")
    if len(set(references)) != len(references):
        raise ValueError(f"references listed twice: {references}")
    missing = [name for name in references if name not in scores]
    if missing:
        raise KeyError(f"no scores for reference models {missing}; have {sorted(scores)}")
    size = np.asarray(scores[references[0]]).size
    reference_matrix = np.stack([_as_scores(scores, name, size) for name in references])
    calibrated: dict[str, np.ndarray] = {}
    for name in scores:
        values = _as_scores(scores, name, size)
        if name not in references:
            calibrated[name] = _offline_z(values, reference_matrix, per_example_variance_min_refs)
            continue
        others = reference_matrix[[i for i, other in enumerate(references) if other != name]]
        if others.shape[0] >= 2:
            calibrated[name] = _offline_z(values, others, per_example_variance_min_refs)
        else:
            pooled = math.sqrt(float(reference_matrix.var(axis=0, ddof=1).mean()))
            if pooled == 0.0:
                raise ValueError("the reference models' scores do not vary: calibration has no scale")
            calibrated[name] = (values - others[0]) / (pooled * math.sqrt(2.0))
    return calibrated


def leakage(z: np.ndarray) -> np.ndarray:
    """One-sided p-value per sample, P(N(0, 1) >= z): small values mark the most exposed forget images."""
    return norm.sf(np.asarray(z, dtype=np.float64))


def decide(diff: PairedDifference, margin: float) -> str:
    """TOST verdict: PASS if the interval lies inside [-margin, margin], FAIL if entirely outside, else INCONCLUSIVE."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if -margin <= diff.low and diff.high <= margin:
        return PASS
    if diff.high < -margin or diff.low > margin:
        return FAIL
    return INCONCLUSIVE


def combine(decisions: Sequence[str]) -> str:
    """FAIL if any check fails, else INCONCLUSIVE if any is inconclusive (or there are none), else PASS."""
    unknown = set(decisions) - {PASS, FAIL, INCONCLUSIVE}
    if unknown:
        raise ValueError(f"unknown decisions: {sorted(unknown)}")
    if not decisions:
        return INCONCLUSIVE
    if FAIL in decisions:
        return FAIL
    if INCONCLUSIVE in decisions:
        return INCONCLUSIVE
    return PASS


def has_power(original_vs_references: PairedDifference, margin: float) -> bool:
    """Whether the attack can see the leak the erasure must remove: the ORIGINAL model fails the same check."""
    return decide(original_vs_references, margin) == FAIL


def samples_needed(diff: PairedDifference, margin: float) -> int | None:
    """Smallest number of forget images (>= the current one) that would make the interval decisive.

    Assumes the estimate stays put and the interval's half-width (the larger of its two sides around the estimate)
    shrinks as 1/sqrt(n), with the non-members scaled in the same proportion. A PASS needs the half-width at most
    margin - |estimate|; when |estimate| > margin no n gives a PASS, and the count returned is the one for a FAIL
    (half-width below |estimate| - margin). None when |estimate| == margin: no n decides either way.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    current = diff.num_members
    half_width = max(diff.high - diff.estimate, diff.estimate - diff.low, 0.0)
    gap = margin - abs(diff.estimate)
    if gap == 0.0:
        return None
    # n >= current * (half_width / |gap|)^2; rounding absorbs float noise in e.g. (0.06 / 0.03)^2.
    required = round(current * (half_width / abs(gap)) ** 2, 9)
    needed = math.ceil(required) if gap > 0 else math.floor(required) + 1
    return max(current, needed)
