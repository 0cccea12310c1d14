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
from attacks.metrics import membership_metrics
from diffusion.data import LabeledImages
from diffusion.model import DiffusionModel

from . import statistics
from .config import Thresholds

logger = logging.getLogger(__name__)

LABEL, INVERTED = "label", "inverted"


@dataclass(frozen=True)
class ScoredSets:
    """The images every attack scores: the forget set then the scored heldout images, and which are members.

    ``classes_erased``: whole classes are deleted, so the references never learned the scored images' class.
    Per-example calibration then measures each image's difficulty under a model that does not know its class,
    the wrong baseline for a model that does: decisions stay on raw paired scores (see :func:`compare`).
    """

    samples: LabeledImages
    is_member: np.ndarray  # (N,) bool
    classes_erased: bool
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
    calibrated_decisions: bool,
) -> tuple[dict, dict[str, np.ndarray]]:
    """The unlearned and the original model against the references on one attack's scores under one conditioning.

    Decisions use per-example calibrated scores when ``calibrated_decisions`` and there are 2 references or more,
    raw paired scores otherwise (and are INCONCLUSIVE without any reference). Measured at full size
    (benchmarks/results/calibration.txt): deleting 50 member images, calibration raised the original-vs-references
    separation several-fold even at K = 2; erasing a class, it lowered it at K = 2 and K = 4 (the references never
    learned the class, so their per-image means are the wrong baseline; the no-op's PIA difference under the label
    fell from +0.109 raw to +0.016 calibrated at K = 4). Both scales are always reported, so the calibration's gain
    or loss in power shows. Returns the comparison (JSON-ready) and every model's calibrated scores ({} with fewer
    than 2 references).
    """
    if not references:
        return {"scale": None, "decision": statistics.INCONCLUSIVE, "power": False,
                "note": "no model retrained without the forget set to compare with"}, {}
    scales = {"raw": scores}
    if len(references) >= 2:
        scales["calibrated"] = statistics.calibrate(scores, references)
    diffs = {
        scale: {subject: statistics.paired_difference(values, is_member, subject, references, metric="auc",
                                                      confidence=thresholds.confidence, seed=seed)
                for subject in ("unlearned", "original")}
        for scale, values in scales.items()
    }
    scale = "calibrated" if calibrated_decisions and "calibrated" in scales else "raw"
    unlearned, original = diffs[scale]["unlearned"], diffs[scale]["original"]
    fpr = statistics.resolvable_fpr(int((~is_member).sum()), 0.01)
    tpr = statistics.paired_difference(scales[scale], is_member, "unlearned", references, metric=f"tpr@{fpr:.6g}",
                                       confidence=thresholds.confidence, seed=seed)
    comparison = {
        "scale": scale,
        "auc": {name: {subject: diff.to_dict() for subject, diff in per.items()} for name, per in diffs.items()},
        "tpr_at_resolvable_fpr": {"fpr": fpr, "unlearned": tpr.to_dict()},
        "decision": statistics.decide(unlearned, thresholds.mia_auc_margin),
        "power": statistics.has_power(original, thresholds.mia_auc_margin),
        "samples_needed": statistics.samples_needed(unlearned, thresholds.mia_auc_margin),
    }
    return comparison, scales.get("calibrated", {})


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
) -> tuple[dict, dict]:
    """Every attack on every model under every conditioning; writes ``scores_dir/<attack>.csv``.

    ``memo`` (optional, filled as it goes) holds scores by (attack and its parameters, model fingerprint, samples
    and their conditioning labels, seed): a caller that audits several candidate models against the same original
    and references passes one dict, and the fixed models are scored once (scores depend only on the weights, the
    samples and the seed). Returns the per-model metrics under the label (ROC and all: ``results["attacks"]``) and
    the comparisons (``results["membership"]``).
    """
    views = conditioned(models, inversions, sets)
    memo = {} if memo is None else memo
    is_member = sets.is_member
    per_model, comparisons = {}, {}
    for attack in attacks:
        blocks: list[tuple[str, str, AttackScores, np.ndarray | None]] = []
        comparisons[attack.name] = {}
        for conditioning, view in views.items():
            scored = {role: _memoized_score(attack, model, samples, seed, memo)
                      for role, (model, samples) in view.items()}
            raw = {role: s.scores for role, s in scored.items()}
            comparison, calibrated = compare(raw, is_member, references, thresholds, seed,
                                             calibrated_decisions=not sets.classes_erased)
            if calibrated:
                comparison["unlearned_forget_z"] = relative_to_nonmembers(calibrated["unlearned"], is_member).tolist()
            comparisons[attack.name][conditioning] = comparison
            blocks += [(role, conditioning, s, calibrated.get(role)) for role, s in scored.items()]
            if conditioning == LABEL:
                per_model[attack.name] = {
                    role: {**membership_metrics(s.scores[is_member], s.scores[~is_member], seed=seed),
                           "cost": s.to_dict()}
                    for role, s in scored.items()
                }
            logger.info("%s under %s: %s", attack.name, conditioning, comparison["decision"])
        write_scores_csv(scores_dir / f"{attack.name}.csv", blocks, is_member)
    return per_model, comparisons


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
