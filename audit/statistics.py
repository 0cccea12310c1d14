"""Statistics for the audit's verdict: AUC / TPR at low FPR, a paired bootstrap, the retrains' seed spread, LiRA
calibration, TOST decisions.

The unlearned model is compared with K models retrained without the forget set, on the SAME samples scored by the
same membership-inference attack (U-LiRA: Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid
a False Sense of Privacy", 2024). Per-example calibration against the references is the offline LiRA of Carlini et
al., "Membership Inference Attacks From First Principles" (IEEE S&P 2022). A check is an equivalence test: two
one-sided tests at level alpha (TOST, Schuirmann 1987) are the same as asking whether the (1 - 2 alpha) interval of
the difference lies inside [-margin, +margin]; the default ``confidence=0.90`` is a TOST at alpha = 0.05.

The decision rule, and why (the README's "The audit's verdict" says it for users):

1. What varies. A user's images are fixed; what a retrain would score on them varies with the retrain's seed, and
   measured on the default task that spread is 1.6-4x what resampling the images predicts. So the interval of
   (unlearned - references' mean) is sigma^2 (1 + 1/K), sigma^2 the between-retrain variance on fixed images, with
   the paired bootstrap over images as a floor (:func:`seed_aware_difference`). sigma^2 comes from the references
   (K - 1 degrees of freedom) pooled with a measurement shipped for the built-in tasks (audit/seed_spread.py),
   which every audit checks against its references' own spread (:func:`pooled_seed_spread`). With neither, no PASS
   is given. The generation checks (forgotten generation, resurrection, relearning) use the same interval on
   per-image values paired by starting noise.
2. How attacks combine. Requiring every attack to pass on its own makes a PASS nearly impossible even for an exact
   retrain (ten correlated cells at once), while a FAIL of one cell near the margin may be noise. The statistic is
   the mean over attacks of the AUC difference, per conditioning, its bootstrap averaged replicate by replicate so
   the attacks' correlation stays in its spread (:func:`mean_bootstrap`): power adds up across attacks. A single
   attack whose own interval lies wholly outside the margin still FAILs the check (a veto): one attack that clearly
   sees the forget set is enough.
3. Conditionings are never averaged: a class whose embedding was redirected hides under the label (+0.02) and shows
   only under the inverted embedding (+0.42), so each conditioning is its own check.
4. The residual guard: a PASS also needs at most ``RESIDUAL_GUARD`` (half) of the original's mean difference left,
   so a no-op cannot PASS on a margin wide enough to hold a weakly leaking original.
5. The margin means: an attacker's AUC within +/-margin of what a retrained model gives, on these images; 0.1 AUC is
   at most ~0.07 of balanced accuracy gained over someone who never saw the data. Power: the original must FAIL the
   same rule, else the audit is INCONCLUSIVE.
6. Coverage, pass rates and type-I errors of this rule are measured on known answers (retrains with unused seeds,
   no-ops, redirected classes, early-stopped erasures): benchmarks/controls.py, benchmarks/results/controls.txt.

The membership metrics themselves (AUC, TPR at FPR, their tie rule) are attacks/metrics.py's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy.stats import f as f_distribution
from scipy.stats import norm
from scipy.stats import t as student_t

from attacks.metrics import rowwise_auc_log_odds, rowwise_aucs, rowwise_tprs_at_fpr
from diffusion.params import Interval, checks_arguments
from reports.results import FAIL, INCONCLUSIVE, PASS, PairedDifference

UNIT_OPEN = [Interval(Real, 0, 1, closed="neither")]  # a confidence level
MARGIN = [Interval(Real, 0, None)]
REPLICATES = [Interval(Integral, 2, None)]
RESIDUAL_GUARD = 0.5  # a membership PASS keeps at most half of the original's mean AUC difference from the references


def _metric_function(metric: str):
    if metric == "auc":
        return rowwise_aucs
    if metric == "auc_log_odds":
        return rowwise_auc_log_odds
    if metric.startswith("tpr@"):
        try:
            fpr = float(metric[4:])
        except ValueError:
            raise ValueError(f"bad metric {metric!r}: expected 'tpr@<fpr>', e.g. 'tpr@0.01'") from None
        return lambda members, nonmembers: rowwise_tprs_at_fpr(members, nonmembers, fpr)[0]
    raise ValueError(f"unknown metric {metric!r}: expected 'auc', 'auc_log_odds' or 'tpr@<fpr>'")


@dataclass(frozen=True)
class SeedSpread:
    """What is known of how much a metric moves between retrains with different seeds, on fixed images.

    ``variance`` is the between-retrain variance of the metric (e.g. the forget-vs-heldout AUC), ``dof`` its degrees
    of freedom (0: nothing known), ``source`` where it comes from, in words (a shipped measurement's provenance, or
    the audit's own references).
    """

    variance: float
    dof: int
    source: str


@dataclass(frozen=True)
class PairedBootstrap:
    """A subject's metric and the references', with B paired-bootstrap replicates of (subject - references' mean).

    ``differences`` has shape (B,); every replicate resamples the same member and non-member indices for every
    model (and, for a fixed ``seed``, for every attack scored on the same sets, so replicates can be averaged over
    attacks: :func:`mean_bootstrap`).
    """

    metric: str
    subject_value: float
    reference_values: list[float]
    differences: np.ndarray
    num_members: int
    num_nonmembers: int

    @property
    def estimate(self) -> float:
        return self.subject_value - float(np.mean(self.reference_values))


def _as_scores(scores: Mapping[str, np.ndarray], name: str, size: int) -> np.ndarray:
    if name not in scores:
        raise KeyError(f"no scores for model {name!r}; have {sorted(scores)}")
    values = np.asarray(scores[name], dtype=np.float64)
    if values.shape != (size,):
        raise ValueError(f"scores of {name!r} have shape {values.shape}, expected ({size},)")
    return values


@checks_arguments({"n_bootstrap": REPLICATES})
def paired_bootstrap(
    scores: Mapping[str, np.ndarray],
    is_member: np.ndarray,
    subject: str,
    references: Sequence[str],
    *,
    metric: str = "auc",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> PairedBootstrap:
    """Subject's ``metric`` and the references', with paired-bootstrap replicates of the difference.

    Every resample draws member and non-member indices separately, with replacement, and uses the SAME indices for
    every model, so per-sample difficulty shared by the models cancels in the difference (a paired design, as in the
    per-example comparisons of Carlini et al. 2022 and Hayes et al. 2024). ``metric`` is ``"auc"``,
    ``"auc_log_odds"`` (:func:`attacks.metrics.rowwise_auc_log_odds`) or ``"tpr@<fpr>"``
    (:func:`attacks.metrics.tpr_at_fpr`). Deterministic for a given ``seed``.
    """
    references = list(references)
    if not references:
        raise ValueError("paired_difference needs at least one reference model")
    if subject in references:
        raise ValueError(f"subject {subject!r} is also listed among the references")
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
    differences = subject_boot - np.mean([boot for _, boot in reference_results], axis=0)
    return PairedBootstrap(metric, subject_value, [full for full, _ in reference_results], differences, int(m), int(n))


def paired_mean_bootstrap(subject: np.ndarray, references: np.ndarray, *, n_bootstrap: int = 1000, seed: int = 0,
                          metric: str = "mean") -> PairedBootstrap:
    """The mean of per-image values (N,) of a subject and of K references (K, N) that share their images (e.g.
    samples from the same starting noises), with paired-bootstrap replicates of (subject - references' mean)."""
    subject = np.asarray(subject, dtype=np.float64)
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    if references.shape[1] != subject.size or subject.size == 0:
        raise ValueError(f"per-image values differ in length: subject {subject.size}, references {references.shape}")
    differences = subject - references.mean(axis=0)
    picks = np.random.default_rng(seed).integers(0, subject.size, size=(n_bootstrap, subject.size))
    return PairedBootstrap(metric, float(subject.mean()), references.mean(axis=1).tolist(),
                           differences[picks].mean(axis=1), int(subject.size), 0)


def mean_bootstrap(parts: Sequence[PairedBootstrap]) -> PairedBootstrap:
    """The mean over several metrics (e.g. every attack's AUC on the same sets): values and replicates averaged.

    The parts must come from the same sets and bootstrap seed, so that replicate b of every part resampled the
    same images; their correlation (attacks agree on which images look like members) then stays in the mean's
    spread.
    """
    if not parts:
        raise ValueError("mean_bootstrap needs at least one part")
    shapes = {(p.differences.shape, len(p.reference_values), p.num_members, p.num_nonmembers) for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"parts differ in replicates, references or set sizes: {sorted(shapes)}")
    return PairedBootstrap(
        metric=f"mean of {len(parts)}: " + ", ".join(sorted({p.metric for p in parts})),
        subject_value=float(np.mean([p.subject_value for p in parts])),
        reference_values=np.mean([p.reference_values for p in parts], axis=0).tolist(),
        differences=np.mean([p.differences for p in parts], axis=0),
        num_members=parts[0].num_members,
        num_nonmembers=parts[0].num_nonmembers,
    )


def pooled_seed_spread(reference_values: Sequence[float], prior: SeedSpread | None,
                       consistency_level: float = 0.01) -> SeedSpread:
    """The between-retrain variance to use: the shipped ``prior`` pooled with the references' own spread.

    With K references the sample variance s^2 has K - 1 degrees of freedom; pooled with a prior of variance
    sigma0^2 and d0 degrees of freedom: (d0 sigma0^2 + (K - 1) s^2) / (d0 + K - 1), on d0 + K - 1 degrees of
    freedom. The prior is checked in every audit: when the references spread more than it allows (one-sided F test,
    s^2 / sigma0^2 on (K - 1, d0) degrees of freedom, p < ``consistency_level``), it is dropped and the references'
    spread alone is used, so a measurement made for another model cannot shrink this audit's interval.
    """
    k = len(reference_values)
    own_dof = k - 1
    own = float(np.var(reference_values, ddof=1)) if own_dof > 0 else 0.0
    if prior is None or prior.dof <= 0:
        source = f"the spread of the {k} references" if own_dof else "unknown: one reference and no measured spread"
        return SeedSpread(own, own_dof, source)
    if own_dof > 0 and prior.variance > 0:
        p_value = float(f_distribution.sf(own / prior.variance, own_dof, prior.dof))
        if p_value < consistency_level:
            return SeedSpread(own, own_dof, f"the spread of the {k} references (they spread more than {prior.source} "
                              f"allows, F test p = {p_value:.2g}: that measurement is not used)")
    dof = prior.dof + own_dof
    variance = (prior.dof * prior.variance + own_dof * own) / dof
    return SeedSpread(variance, dof, f"{prior.source}, pooled with the {k} references' spread")


@checks_arguments({"confidence": UNIT_OPEN})
def seed_aware_difference(boot: PairedBootstrap, confidence: float = 0.90, prior: SeedSpread | None = None
                          ) -> PairedDifference:
    """The interval of (subject - references' mean) with the retrains' seeds counted, not only the images.

    Under exact unlearning the subject is one more retrain: on the audit's fixed images its difference from the
    mean of K references varies as sigma^2 (1 + 1/K), sigma^2 the between-retrain variance measured on fixed images
    (:func:`pooled_seed_spread`). That sigma^2 already holds the part the paired bootstrap sees (how a retrain's
    image-by-image outcomes scatter around its mean, which averages down with more images), so the two are not
    added: the variance is max(se_boot^2, sigma^2 (1 + 1/K)), the bootstrap a floor for a subject whose own
    difference varies from image to image more than a retrain's (a leak concentrated on a few images). The
    interval is estimate -/+ the larger of the two terms' own half-widths: z se_boot (normal quantile) and
    t sqrt(sigma^2 (1 + 1/K)) (t quantile on sigma^2's ``seed.dof`` degrees of freedom, which carries the
    uncertainty of an estimated sigma^2), so a noisier subject never gets a narrower interval. Without any estimate
    of sigma^2 (``dof`` 0) the interval holds the images alone and is marked so (``seed_dof`` 0).
    """
    k = len(boot.reference_values)
    seed = pooled_seed_spread(boot.reference_values, prior)
    boot_variance = float(np.var(boot.differences, ddof=1))
    seed_term = seed.variance * (1.0 + 1.0 / k) if seed.dof > 0 else 0.0
    total = max(boot_variance, seed_term)
    half = float(norm.ppf((1.0 + confidence) / 2.0)) * math.sqrt(boot_variance)
    if seed_term > 0.0:
        half = max(half, float(student_t.ppf((1.0 + confidence) / 2.0, seed.dof)) * math.sqrt(seed_term))
    tail = (1.0 - confidence) / 2.0
    boot_low, boot_high = np.quantile(boot.differences, [tail, 1.0 - tail])
    estimate = boot.estimate
    return PairedDifference(
        metric=boot.metric,
        estimate=estimate,
        low=estimate - half,
        high=estimate + half,
        confidence=confidence,
        standard_error=math.sqrt(total),
        subject_value=boot.subject_value,
        reference_values=list(boot.reference_values),
        reference_spread=float(np.std(boot.reference_values, ddof=1)) if k > 1 else 0.0,
        num_members=boot.num_members,
        num_nonmembers=boot.num_nonmembers,
        n_bootstrap=int(boot.differences.size),
        bootstrap_low=float(boot_low),
        bootstrap_high=float(boot_high),
        bootstrap_standard_error=math.sqrt(boot_variance),
        seed_variance=seed.variance if seed.dof > 0 else 0.0,
        seed_dof=float(seed.dof) if seed_term > 0.0 else 0.0,
        seed_source=seed.source,
    )


@checks_arguments({"confidence": UNIT_OPEN, "n_bootstrap": REPLICATES})
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
    seed_prior: SeedSpread | None = None,
) -> PairedDifference:
    """Subject's ``metric`` minus the references' mean, with an interval over images and seeds: a
    :func:`paired_bootstrap` turned into a :func:`seed_aware_difference`. Deterministic for a given ``seed``."""
    boot = paired_bootstrap(scores, is_member, subject, references, metric=metric, n_bootstrap=n_bootstrap, seed=seed)
    return seed_aware_difference(boot, confidence, seed_prior)


def residual_fraction(unlearned: PairedDifference, original: PairedDifference) -> dict | None:
    """The share of the original's membership signal that remains: (unlearned - refs) / (original - refs).

    0 is a retrain, 1 the original. The interval divides the unlearned model's (images and seeds) by the original's
    estimate, so the uncertainty of the denominator is left out (stated in the report); None when the original's
    interval touches 0 (no signal to take a share of).
    """
    if original.low <= 0.0 <= original.high or original.estimate == 0.0:
        return None
    scale = original.estimate
    low, high = sorted((unlearned.low / scale, unlearned.high / scale))
    return {"estimate": unlearned.estimate / scale, "low": low, "high": high, "confidence": unlearned.confidence,
            "note": "denominator (the original's difference) held fixed"}


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


@checks_arguments({"margin": MARGIN})
def decide(diff: PairedDifference, margin: float) -> str:
    """TOST verdict: PASS if the interval lies inside [-margin, margin], FAIL if entirely outside, else INCONCLUSIVE.

    No PASS when the seeds' spread is unknown (``seed_dof`` 0): an interval of the images alone would certify
    what may be one retrain's luck.
    """
    if diff.high < -margin or diff.low > margin:
        return FAIL
    if -margin <= diff.low and diff.high <= margin and diff.seed_dof > 0:
        return PASS
    return INCONCLUSIVE


def has_power(original_vs_references: PairedDifference, margin: float) -> bool:
    """Whether the attack can see the leak the erasure must remove: the ORIGINAL model fails the same check."""
    return decide(original_vs_references, margin) == FAIL


def _half_width(diff: PairedDifference, forget_scale: float, references: int) -> float:
    """The interval's half-width with ``forget_scale`` times the forget (and heldout) images and ``references``
    references, both variance terms shrinking as 1 / images and the seed term as (1 + 1/K), the t quantile kept
    (the larger term counts, as in :func:`seed_aware_difference`)."""
    quantile = (diff.high - diff.estimate) / diff.standard_error if diff.standard_error > 0 else 0.0
    seed_term = diff.seed_variance * (1.0 + 1.0 / references)
    return quantile * math.sqrt(max(diff.bootstrap_standard_error**2, seed_term) / forget_scale)


@checks_arguments({"margin": MARGIN})
def what_would_decide(diff: PairedDifference, margin: float, max_forget: int, max_references: int = 16) -> dict:
    """What would make an INCONCLUSIVE difference decisive, with the estimate held where it is.

    Returns ``forget_images``: the smallest number of forget images (from the current one up to ``max_forget``, what
    the data holds) that decides with the current references, or None; ``references``: the smallest K (up to
    ``max_references``) that decides with the current images, or None; and ``outcome``: "PASS" or "FAIL", the
    answer the estimate points to (None when it sits on the margin). Both variance terms are assumed to shrink as
    1 / images (an AUC is a mean over image pairs) and the seed term as (1 + 1/K).
    """
    gap = margin - abs(diff.estimate)
    if gap == 0.0:
        return {"forget_images": None, "references": None, "outcome": None}
    outcome = PASS if gap > 0 else FAIL
    current, k = diff.num_members, len(diff.reference_values)

    def decides(scale: float, references: int) -> bool:
        return _half_width(diff, scale, references) < abs(gap) and (outcome == FAIL or diff.seed_dof > 0)

    images = next((n for n in range(current, max(current, max_forget) + 1) if decides(n / current, k)), None)
    more_refs = next((r for r in range(k, max_references + 1) if decides(1.0, r)), None)
    return {"forget_images": images, "references": more_refs, "outcome": outcome}


@dataclass(frozen=True)
class PairedProportionDifference:
    """The difference of two success rates judged on the same items (first - second), with its interval and the
    one-sided p-value of "the difference is at most ``limit``"."""

    estimate: float
    low: float
    high: float
    p_value: float


def paired_proportion_difference(first: Sequence[int], second: Sequence[int], confidence: float, limit: float
                                 ) -> PairedProportionDifference:
    """mean(first) - mean(second) for 0/1 outcomes paired item by item (N,), with the Wald interval on the
    discordant pairs after adding one half to each cell of the 2x2 table (Agresti and Min, "Simple improved
    confidence intervals for comparing matched proportions", Statistics in Medicine 2005), so that a table with no
    discordant pair keeps a width. ``p_value``: one-sided, of the hypothesis difference <= ``limit`` (normal)."""
    a, b = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired outcomes need two lists of the same length; got {a.shape} and {b.shape}")
    n = len(a) + 2.0
    only_first, only_second = (a & ~b).sum() + 0.5, (~a & b).sum() + 0.5
    centre = (only_first - only_second) / n
    error = math.sqrt(max(only_first + only_second - (only_first - only_second) ** 2 / n, 0.0)) / n
    z = norm.ppf((1 + confidence) / 2)
    p_value = float(norm.sf((centre - limit) / error))
    return PairedProportionDifference(float(a.mean() - b.mean()), centre - z * error, centre + z * error, p_value)


def holm_rejections(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Which hypotheses Holm's step-down procedure rejects at family-wise error ``alpha`` (Holm, "A simple
    sequentially rejective multiple test procedure", Scandinavian Journal of Statistics 1979)."""
    order = np.argsort(p_values, kind="stable")
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected
