"""The remaining members' exposure: does the erasure make the data that stays easier to detect?

Removing some members changes how exposed the others are (Carlini et al., "The Privacy Onion Effect: Memorization
is Relative", NeurIPS 2022): an erasure can push the retained members' loss below the heldout images' further than a
model trained without the forget set does, and a membership check on the forget set alone never sees it. Every
membership attack of the audit scores up to ``exposure_images`` retained members against as many heldout images
(:attr:`audit.subjects.AuditSubjects.exposure`) on every model; the mean over attacks of the AUC difference from
the references is decided as the forget set's is (:func:`audit.membership.membership_from_scores`, the seeds
counted), but one-sided, at ``exposure_margin``: the erasure may leave the remaining members less exposed, never
more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffusion.model import DiffusionModel
from reports.results import INCONCLUSIVE, PASS, Check

from ..config import AuditConfig, Thresholds
from ..generation_checks import at_most_decision, interval_text, signed
from ..membership import LABEL, membership_from_scores
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
        if not sections or "unlearned" not in sections or not references:
            return []
        combined = exposure_comparison(sections, references, thresholds)
        diff, original = combined["unlearned"], combined["original"]
        margin, confidence = thresholds.exposure_margin, thresholds.confidence
        decision = at_most_decision(diff["low"], diff["high"], margin)
        if decision == PASS and diff["seed_dof"] == 0:
            decision = INCONCLUSIVE
        num_members = sum(sections["unlearned"]["is_member"])
        headroom = 1 - sum(diff["reference_values"]) / len(diff["reference_values"])
        limit = (f"; the references' AUC leaves +{headroom:.3f} of headroom, under the margin: this check cannot FAIL "
                 "here" if headroom <= margin else "")
        return [Check(
            "retained_exposure", "the retained members are no more exposed to membership inference than in the "
            "references (mean AUC over the attacks, retained members vs heldout images)", decision, diff["estimate"],
            [diff["low"], diff["high"]], f"interval at most +{margin:g}",
            f"mean AUC difference {signed(diff['estimate'])} {interval_text(diff['low'], diff['high'], confidence)} "
            f"(images and seeds; seed spread from {diff['seed_source']}) on {num_members} retained members and "
            f"{len(sections['unlearned']['is_member']) - num_members} heldout images; original "
            f"{signed(original['estimate'])}; unlearned AUC {diff['subject_value']:.3f}, references "
            f"{', '.join(f'{v:.3f}' for v in diff['reference_values'])}{limit}")]


def exposure_comparison(sections: dict, references: list[str], thresholds: Thresholds) -> dict:
    """The retained members' membership under the label, the unlearned and the original model against the
    references (:func:`audit.membership.combine_attacks`'s record) from the probe's per-model sections."""
    first = sections["unlearned"]
    attacks = list(first["scores"])
    scores = {attack: {LABEL: {role: np.asarray(section["scores"][attack]) for role, section in sections.items()}}
              for attack in attacks}
    _, combined, _ = membership_from_scores(scores, np.asarray(first["is_member"], bool), references, thresholds,
                                            first["seed"])
    return combined[LABEL]
