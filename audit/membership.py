"""Membership inference on every model of an audit, under every conditioning an attacker could use, calibrated per
example against the retrained references and compared model to model on the same samples.

Every attack scores the same forget images (members) and heldout images (non-members) on the original, the
unlearned and the K retrained models, under the class label and, when classes are erased, under a class embedding
the attacker recovers by inversion (Pham et al., ICLR 2024) from images disjoint from the scored sets: redirecting
a class's embedding must not hide membership. Scores are calibrated per example against the references (offline
LiRA, Carlini et al. 2022; U-LiRA, Hayes et al. 2024) and the unlearned model is compared with the references by a
paired bootstrap (audit/statistics.py).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attacks import Attack, AttackScores
from attacks.base import write_scores_csv
from attacks.inversion import InvertedConditioning
from attacks.metrics import membership_metrics, resolvable_fpr
from diffusion.data import LabeledImages
from diffusion.model import DiffusionModel

from . import statistics
from .config import Thresholds
from .seed_spread import NO_PRIORS, SeedPriors, mean_statistic

logger = logging.getLogger(__name__)

LABEL, INVERTED = "label", "inverted"
CHANCE = "chance"  # the stand-in reference of an audit without references: one constant score, AUC 0.5


@dataclass(frozen=True)
class ScoredSets:
    """The images every attack scores: the forget set then the scored heldout images, and which are members."""

    samples: LabeledImages
    is_member: np.ndarray  # (N,) bool
    class_labels: torch.Tensor | None = None  # (N,): each image's class where ``samples`` holds captions

    @property
    def classes(self) -> torch.Tensor:
        """The class of each scored image (N,): its label, or for a text model's captioned images its class."""
        return self.samples.labels if self.class_labels is None else self.class_labels

    @property
    def num_members(self) -> int:
        return int(self.is_member.sum())

    @property
    def num_nonmembers(self) -> int:
        return int((~self.is_member).sum())


def conditioned(
    models: dict[str, DiffusionModel], inversions: dict[str, InvertedConditioning], sets: ScoredSets
) -> dict[str, dict[str, tuple[DiffusionModel, LabeledImages]]]:
    """For each conditioning, each model role's (model, samples with the labels to condition on)."""
    views = {LABEL: {role: (model, sets.samples) for role, model in models.items()}}
    if inversions:
        samples = sets.samples
        views[INVERTED] = {
            role: (fitted.model, LabeledImages(samples.images, fitted.relabel(samples.labels), samples.ids))
            for role, fitted in inversions.items()
        }
    return views


def compare(
    scores: dict[str, np.ndarray], is_member: np.ndarray, references: list[str], thresholds: Thresholds, seed: int,
    prior: statistics.SeedSpread | None = None,
) -> tuple[dict, dict[str, np.ndarray], dict[str, statistics.PairedBootstrap]]:
    """The unlearned and the original model against the references on one attack's scores under one conditioning.

    Decisions use raw paired scores, with the retrains' seed spread in the interval (``prior``: the shipped
    measurement for this task, pooled with the references' own spread; see
    :func:`audit.statistics.seed_aware_difference`). Per-example calibrated scores (K >= 2) are reported beside
    them, not decided on: erasing a class, the references never learned it and their per-image means are the wrong
    baseline (benchmarks/results/calibration.txt), and deleting member images at K = 2 the two calibrated references
    are mirror images of each other. Returns the comparison (JSON-ready), every model's calibrated scores ({} with
    fewer than 2 references) and the raw paired bootstraps of the unlearned and the original model (for the mean
    over attacks, :func:`combine_attacks`).
    """
    scales = {"raw": scores}
    if len(references) >= 2:
        scales["calibrated"] = statistics.calibrate(scores, references)
    boots = {scale: {subject: statistics.paired_bootstrap(values, is_member, subject, references, metric="auc",
                                                          seed=seed)
                     for subject in ("unlearned", "original")}
             for scale, values in scales.items()}
    diffs = {scale: {subject: statistics.seed_aware_difference(boot, thresholds.confidence,
                                                               prior if scale == "raw" else None)
                     for subject, boot in per.items()}
             for scale, per in boots.items()}
    unlearned, original = diffs["raw"]["unlearned"], diffs["raw"]["original"]
    fpr = resolvable_fpr(int((~is_member).sum()), 0.01)
    tpr = statistics.paired_difference(scores, is_member, "unlearned", references, metric=f"tpr@{fpr:.6g}",
                                       confidence=thresholds.confidence, seed=seed)
    comparison = {
        "scale": "raw",
        "auc": {name: {subject: diff.to_json() for subject, diff in per.items()} for name, per in diffs.items()},
        "tpr_at_resolvable_fpr": {"fpr": fpr, "unlearned": tpr.to_json()},
        "decision": statistics.decide(unlearned, thresholds.mia_auc_margin),
        "power": statistics.has_power(original, thresholds.mia_auc_margin),
        "residual_fraction": statistics.residual_fraction(unlearned, original),
    }
    return comparison, scales.get("calibrated", {}), boots["raw"]


def combine_attacks(
    boots: dict[str, dict[str, statistics.PairedBootstrap]], cells: dict[str, dict], thresholds: Thresholds,
    prior: statistics.SeedSpread | None = None,
) -> dict:
    """The membership decision under one conditioning: every attack's AUC difference averaged, with vetoes.

    The rule (audit/statistics.py and the README's "The audit's verdict" give its reasoning):
    - the statistic is the mean over attacks of (subject AUC - references' mean AUC), with its paired bootstrap
      averaged replicate by replicate (the attacks' correlation kept) and the seeds' spread counted (``prior``
      for the mean, pooled with the references');
    - FAIL when that interval lies outside +/-margin, or when any single attack's interval does (a veto: one
      attack that decisively sees the forget set is enough);
    - PASS when it lies inside, no attack vetoes, and at most ``RESIDUAL_GUARD`` (one half) of the original's mean
      difference remains (a no-op whose original leaks weakly cannot PASS on a wide margin);
    - INCONCLUSIVE otherwise. Power: the original FAILs the same rule.
    ``boots``: attack -> {"unlearned"/"original": raw paired bootstrap}; ``cells``: attack -> its comparison.
    """
    margin = thresholds.mia_auc_margin
    diffs = {subject: statistics.seed_aware_difference(
                 statistics.mean_bootstrap([per[subject] for per in boots.values()]), thresholds.confidence, prior)
             for subject in ("unlearned", "original")}
    unlearned, original = diffs["unlearned"], diffs["original"]
    vetoes = sorted(attack for attack, cell in cells.items() if cell.get("decision") == statistics.FAIL)
    decision = statistics.decide(unlearned, margin)
    guard = abs(unlearned.estimate) <= statistics.RESIDUAL_GUARD * abs(original.estimate)
    if vetoes:
        decision = statistics.FAIL
    elif decision == statistics.PASS and not guard:
        decision = statistics.INCONCLUSIVE
    original_decision = statistics.decide(original, margin)
    power = original_decision == statistics.FAIL or any(cell.get("power") for cell in cells.values())
    result = {"attacks": sorted(boots), "unlearned": unlearned.to_json(), "original": original.to_json(),
              "decision": decision, "power": power, "vetoes": vetoes, "residual_guard": guard,
              "residual_fraction": statistics.residual_fraction(unlearned, original)}
    return result


def membership_from_scores(
    scores: dict[str, dict[str, dict[str, np.ndarray]]], is_member: np.ndarray, references: list[str],
    thresholds: Thresholds, seed: int, priors: SeedPriors = NO_PRIORS,
) -> tuple[dict, dict, dict[tuple[str, str], dict[str, np.ndarray]]]:
    """The membership comparisons from raw scores alone (attack -> conditioning -> model role -> (N,) scores).

    Returns the per-attack comparisons (attack -> conditioning -> :func:`compare`), the decision under each
    conditioning (conditioning -> :func:`combine_attacks`) and the calibrated scores per (attack, conditioning).
    Pure: a benchmark re-decides finished audits from their score tables with it.

    Without references (a model no reference can be made for) the target is chance: a constant score, AUC 0.5 in
    every bootstrap replicate, stands in as the one reference (:data:`CHANCE`). A model that never saw the forget set
    scores its forget images like the heldout ones, so its AUC is 0.5 over draws of the images; on the audit's fixed
    images it is off by the images' luck, which the paired bootstrap measures, and by its seed, which only a measured
    seed spread counts (then as for one reference: sigma^2 (1 + 1), conservative). Both directions are checked:
    forget images scored far below the heldout ones leak as well.
    """
    if not references:
        scores = {attack: {c: {**per, CHANCE: np.zeros(len(is_member))} for c, per in per_c.items()}
                  for attack, per_c in scores.items()}
        references = [CHANCE]
    comparisons: dict = {attack: {} for attack in scores}
    boots: dict = {}
    calibrated_scores = {}
    for attack, per_conditioning in scores.items():
        for conditioning, raw in per_conditioning.items():
            comparison, calibrated, boot = compare(raw, is_member, references, thresholds, seed,
                                                   priors.spread(conditioning, attack))
            if calibrated:
                comparison["unlearned_forget_z"] = relative_to_nonmembers(calibrated["unlearned"], is_member).tolist()
            comparisons[attack][conditioning] = comparison
            calibrated_scores[attack, conditioning] = calibrated
            boots.setdefault(conditioning, {})[attack] = boot
    conditionings = list(dict.fromkeys(c for per in scores.values() for c in per))
    statistic = mean_statistic(list(scores))
    combined = {c: combine_attacks(boots.get(c, {}), {a: comparisons[a][c] for a in scores}, thresholds,
                                   priors.spread(c, statistic))
                for c in conditionings}
    return comparisons, combined, calibrated_scores


def run_membership(
    attacks: list[Attack],
    models: dict[str, DiffusionModel],
    inversions: dict[str, InvertedConditioning],
    sets: ScoredSets,
    references: list[str],
    thresholds: Thresholds,
    seed: int,
    scores_dir: Path,
    memo: dict[tuple[str, str, str], AttackScores] | None = None,
    priors: SeedPriors = NO_PRIORS,
) -> tuple[dict, dict, dict]:
    """Every attack on every model under every conditioning; writes ``scores_dir/<attack>.csv``.

    ``memo`` (optional, filled as it goes) holds scores by (attack and its parameters, model fingerprint, samples
    and their conditioning labels, seed): a caller that audits several candidate models against the same original
    and references passes one dict, and the fixed models are scored once (scores depend only on the weights, the
    samples and the seed). ``priors``: the measured seed spread of this task, if any. Returns the per-model metrics
    under the label (ROC and all: ``results["attacks"]``), the per-attack comparisons and the decision under each
    conditioning (``results["membership"]["attacks"]`` and ``["combined"]``).
    """
    views = conditioned(models, inversions, sets)
    memo = {} if memo is None else memo
    is_member = sets.is_member
    per_model: dict = {}
    scored: dict = {attack.name: {} for attack in attacks}
    for attack in attacks:
        for conditioning, view in views.items():
            scored[attack.name][conditioning] = {role: _memoized_score(attack, model, samples, seed, memo)
                                                 for role, (model, samples) in view.items()}
        per_model[attack.name] = {
            role: {**membership_metrics(s.scores[is_member], s.scores[~is_member], seed=seed), "cost": s.to_dict()}
            for role, s in scored[attack.name][LABEL].items()
        }
    raw = {attack: {c: {role: s.scores for role, s in per.items()} for c, per in per_c.items()}
           for attack, per_c in scored.items()}
    comparisons, combined, calibrated = membership_from_scores(raw, is_member, references, thresholds, seed, priors)
    for attack, per_conditioning in scored.items():
        blocks = [(role, c, s, calibrated[attack, c].get(role))
                  for c, per in per_conditioning.items() for role, s in per.items()]
        write_scores_csv(scores_dir / f"{attack}.csv", blocks, is_member)
    for conditioning, decision in combined.items():
        logger.info("membership under %s: %s", conditioning, decision["decision"])
    return per_model, comparisons, combined


def _memoized_score(
    attack: Attack, model: DiffusionModel, samples: LabeledImages, seed: int, memo: dict
) -> AttackScores:
    """``attack.score(model, samples, seed=seed)``, looked up in ``memo`` first (see :func:`run_membership`)."""
    labels = hashlib.sha256(samples.labels.numpy().tobytes() + samples.ids.numpy().tobytes()).hexdigest()
    key = (f"{attack.name}{sorted(attack.get_params().items())}", model.fingerprint(), f"{labels}:{seed}")
    if key not in memo:
        memo[key] = attack.score(model, samples, seed=seed)
    return memo[key]


def relative_to_nonmembers(z: np.ndarray, is_member: np.ndarray) -> np.ndarray:
    """The members' calibrated scores standardised by the same model's non-member scores: (M,).

    A model may shift every calibrated score (e.g. under its own inverted embedding it denoises the whole class
    better); what marks a leaked record is standing out from never-seen images of its class under the same model.
    """
    nonmembers = z[~is_member]
    return (z[is_member] - nonmembers.mean()) / max(float(nonmembers.std(ddof=1)), 1e-12)


def exposed_forget_images(comparisons: dict, sets: ScoredSets, top: int = 8) -> list[dict]:
    """The forget images that stand out most from the heldout images under the unlearned model (calibrated
    scores standardised by the heldout ones, :func:`relative_to_nonmembers`), each under the attack and
    conditioning where it stands out most, with the one-sided p-value of N(0, 1)."""
    best: dict[int, dict] = {}
    forget_ids = sets.samples.ids[: sets.num_members].tolist()
    labels = sets.classes[: sets.num_members].tolist()
    for attack, per_conditioning in comparisons.items():
        for conditioning, comparison in per_conditioning.items():
            for sample_id, label, z in zip(forget_ids, labels, comparison.get("unlearned_forget_z", [])):
                if sample_id not in best or z > best[sample_id]["z"]:
                    best[sample_id] = {"sample_id": sample_id, "label": label, "attack": attack,
                                       "conditioning": conditioning, "z": float(z)}
    ranked = sorted(best.values(), key=lambda row: -row["z"])[:top]
    for row in ranked:
        row["p_value"] = float(statistics.leakage(np.array([row["z"]]))[0])
    return ranked
