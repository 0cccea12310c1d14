"""The remaining members' exposure: does the erasure make the data that stays easier to detect?

Removing some members changes how exposed the others are (Carlini et al., "The Privacy Onion Effect: Memorization
is Relative", NeurIPS 2022): an erasure can push the retained members' loss below the heldout images' further than a
model trained without the forget set does, and a membership check on the forget set alone never sees it. Every
membership attack of the audit scores up to ``exposure_images`` retained members against as many heldout images
(:attr:`audit.subjects.AuditSubjects.exposure`) on every model.

The statistic is the log odds of the AUC, log(AUC / (1 - AUC)), the odds that an attack ranks a retained member
above a heldout image, averaged over the attacks, minus the references' (a log odds ratio). Retained members are
images the models trained on, so their AUC sits near the top of its scale (0.92-0.93 for the built-in model's
retrains), where an AUC margin has no room left: 0.1 above 0.93 is more than a perfect ranking, and a model that
cuts the attack's mistakes five-fold (0.93 -> 0.985) moves the AUC by only 0.055. The odds have no ceiling: the
check FAILs when the erasure multiplies them by more than ``exposure_odds_ratio`` (3, at the confidence of every
check, the seeds counted as in :func:`audit.statistics.seed_aware_difference`), one-sided: the erasure may leave
the remaining members less exposed, never more.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from attacks.metrics import rowwise_auc_log_odds, rowwise_aucs
from diffusion.model import DiffusionModel
from reports.results import INCONCLUSIVE, PASS, Check, PairedDifference

from .. import statistics
from ..config import AuditConfig, Thresholds
from ..generation_checks import at_most_decision, signed
from ..seed_spread import EXPOSURE, SeedPriors, mean_statistic
from ..subjects import AuditSubjects
from .base import PROBES, Probe


@PROBES.register
class ExposureProbe(Probe):
    """The audit's membership attacks on the retained members vs heldout images, per model; the check
    ``retained_exposure`` (on by default: five attack passes over about 200 images per model, a few seconds on the
    built-in models; ``exposure_images: 0`` turns it off)."""

    name = "exposure"

    def applies(self, subjects: AuditSubjects, config: AuditConfig) -> bool:
        return subjects.exposure is not None

    def run(self, role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
            images_dir: Path) -> tuple[dict, dict[str, str]]:
        sets = subjects.exposure
        scores = {attack.name: attack.score(model, sets.samples, seed=config.seed).scores.tolist()
                  for attack in subjects.attacks}
        return {"sample_ids": sets.samples.ids.tolist(), "is_member": sets.is_member.tolist(), "scores": scores,
                "seed": config.seed}, {}

    def checks(self, results: dict, thresholds: Thresholds) -> list[Check]:
        sections, references = results.get(self.name), results["membership"]["references"]
        if not sections or "unlearned" not in sections or not references or not set(references) <= set(sections):
            return []
        priors = SeedPriors.from_dict(results["membership"].get("seed_spread", {}))
        prior = priors.spread(EXPOSURE, mean_statistic(list(sections["unlearned"]["scores"])))
        diffs = exposure_comparison(sections, references, thresholds.confidence, prior)
        diff, original = diffs["unlearned"], diffs["original"]
        ratio, confidence = thresholds.exposure_odds_ratio, thresholds.confidence
        margin = math.log(ratio)
        decision = exposure_decision(diff.low, diff.high, diff.seed_dof, ratio)
        is_member = np.asarray(sections["unlearned"]["is_member"], bool)
        aucs = {role: mean_over_attacks(section, rowwise_aucs) for role, section in sections.items()}
        ceiling = math.log(2 * is_member.sum() * (~is_member).sum() - 1)  # the log odds of a perfect ranking
        limit = (f"; the references' log odds leave {ceiling - np.mean(diff.reference_values):.2f} to a perfect "
                 "ranking, under the margin: this check cannot FAIL here"
                 if ceiling - np.mean(diff.reference_values) <= margin else "")
        return [Check(
            "retained_exposure", "the retained members are no more exposed to membership inference than in the "
            "references (the odds that an attack ranks a retained member above a heldout image, mean log odds over "
            "the attacks)", decision, diff.estimate, [diff.low, diff.high],
            f"interval at most +{margin:.3f} (log of odds ratio {ratio:g})",
            f"odds ratio {_ratio(diff.estimate)} [{_ratio(diff.low)}, {_ratio(diff.high)}] at {confidence:.0%} "
            f"(log {signed(diff.estimate)}; images and seeds; seed spread from {diff.seed_source}) on "
            f"{int(is_member.sum())} retained members and {int((~is_member).sum())} heldout images, at most "
            f"x{ratio:g}; original {_ratio(original.estimate)}; mean AUC over the attacks: unlearned "
            f"{aucs['unlearned']:.3f}, original {aucs['original']:.3f}, references "
            f"{', '.join(f'{aucs[r]:.3f}' for r in references)}{limit}")]


def exposure_decision(low: float, high: float, seed_dof: float, odds_ratio: float) -> str:
    """``retained_exposure``'s rule on the interval [low, high] of a log odds ratio: PASS when all of it is at most
    log(``odds_ratio``), FAIL when all of it is above, else INCONCLUSIVE; never PASS without a measured seed spread
    (``seed_dof`` 0: an interval of the images alone is too narrow to certify)."""
    decision = at_most_decision(low, high, math.log(odds_ratio))
    return INCONCLUSIVE if decision == PASS and seed_dof == 0 else decision


def _ratio(log_odds_ratio: float) -> str:
    return f"x{math.exp(log_odds_ratio):.2f}"


def metric_per_attack(is_member: list[bool], scores: dict[str, list[float]],
                      metric=rowwise_auc_log_odds) -> dict[str, float]:
    """Each attack's members-vs-non-members ``metric`` (a rowwise metric of attacks.metrics: the AUC's log odds, or
    the AUC) on one model's ``scores`` (attack -> (N,) scores; ``is_member`` (N,))."""
    members = np.asarray(is_member, bool)
    return {attack: float(metric(np.asarray(values)[members][None, :], np.asarray(values)[~members][None, :])[0])
            for attack, values in scores.items()}


def mean_over_attacks(section: dict, metric=rowwise_auc_log_odds) -> float:
    """One model's retained-members-vs-heldout ``metric`` averaged over the attacks (its probe section)."""
    return float(np.mean(list(metric_per_attack(section["is_member"], section["scores"], metric).values())))


def exposure_comparison(sections: dict, references: list[str], confidence: float,
                        prior: statistics.SeedSpread | None = None) -> dict[str, PairedDifference]:
    """The unlearned and the original model's retained-member exposure against the references, from the probe's
    per-model sections: per attack a paired bootstrap of the AUC's log odds (the same images resampled for every
    model and attack), averaged over the attacks replicate by replicate, with the references' seed spread
    (:func:`audit.statistics.seed_aware_difference`; ``prior``: the spread measured for the task, pooled with the
    references'). Subject -> (subject - references' mean) of the mean log odds.
    """
    first = sections["unlearned"]
    is_member = np.asarray(first["is_member"], bool)
    differences = {}
    for subject in ("unlearned", "original"):
        boots = [statistics.paired_bootstrap({role: np.asarray(section["scores"][attack])
                                              for role, section in sections.items()},
                                             is_member, subject, references, metric="auc_log_odds",
                                             seed=first["seed"])
                 for attack in first["scores"]]
        differences[subject] = statistics.seed_aware_difference(statistics.mean_bootstrap(boots), confidence, prior)
    return differences
