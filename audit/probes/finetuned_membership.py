"""Membership after fine-tuning: does a leftover signal grow back when the shipped model is fine-tuned?

Fine-tuning an approximately unlearned model amplifies what membership inference can still see of the forget set
(Xiao et al., "Reminiscence Attack on Residuals: Exploiting Approximate Machine Unlearning for Privacy", ICCV 2025:
up to 1.90x the accuracy of prior attacks per class, 1.12x per sample). Users fine-tune what they are given,
so the audit fine-tunes every model (original, unlearned, references) the same way, twice, and re-runs the
membership comparison of the forget set on each fine-tuned model:

- ``erased_class``: on the held-out images of the erased classes kept aside (the relearning probe's images; class
  and concept erasures only);
- ``retained``: on as many retained members (the calibration's, never scored): fine-tuning on unrelated data.

Each route is decided as the forget set's membership is (:func:`audit.membership.membership_from_scores`: the mean
over attacks, vetoes, the seeds counted: the between-retrain spread of the fine-tuned models' AUCs where one is
measured for the task, conditioning :func:`audit.seed_spread.finetuned`, else the references' alone), and the
amplification (the unlearned model's AUC difference from the
references after fine-tuning over before) is reported beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attacks.relearning import BenignFineTuning
from diffusion.data import LabeledImages
from diffusion.model import DiffusionModel
from reports.results import Check

from ..config import AuditConfig, Thresholds
from ..generation_checks import interval_text, signed
from ..membership import LABEL, membership_from_scores
from ..seed_spread import NO_PRIORS, SeedPriors, finetuned
from ..subjects import INVERSION_IMAGES_PER_CLASS, AuditSubjects
from .base import PROBES, Probe

FINE_TUNE_STEPS = 100  # the relearning probe's last checkpoint, at its rate and batch size
FINE_TUNE_LR = 1e-4
FINE_TUNE_BATCH = 16


@PROBES.register
class FinetunedMembershipProbe(Probe):
    """Every model fine-tuned :data:`FINE_TUNE_STEPS` steps on each route, then scored by every membership attack
    on the forget and heldout images under the label; checks ``membership_after_finetune[<route>]``
    (``finetuned_membership: true``; off by default: on one erased class at K = 2 its ``retained`` route certifies an
    exact retrain about 7 times in 10 with the measured spread, benchmarks/results/stress.txt)."""

    name = "finetuned_membership"

    def applies(self, subjects: AuditSubjects, config: AuditConfig) -> bool:
        return config.finetuned_membership and bool(fine_tuning_routes(subjects))

    def run(self, role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
            images_dir: Path) -> tuple[dict, dict[str, str]]:
        section: dict = {"is_member": subjects.sets.is_member.tolist(), "seed": config.seed, "steps": FINE_TUNE_STEPS,
                         "lr": FINE_TUNE_LR, "batch_size": FINE_TUNE_BATCH}
        for route, images in fine_tuning_routes(subjects).items():
            tuned = BenignFineTuning(model, images, lr=FINE_TUNE_LR, batch_size=FINE_TUNE_BATCH,
                                     seed=config.seed).run_until(FINE_TUNE_STEPS)
            section[route] = {"fit_ids": images.ids.tolist(),
                              "scores": {attack.name: attack.score(tuned, subjects.sets.samples,
                                                                   seed=config.seed).scores.tolist()
                                         for attack in subjects.attacks}}
        return section, {}

    def checks(self, results: dict, thresholds: Thresholds) -> list[Check]:
        sections, membership = results.get(self.name), results["membership"]
        if not sections or "unlearned" not in sections:
            return []
        references = membership["references"]
        before = membership.get("combined", {}).get(LABEL, {}).get("unlearned", {}).get("estimate")
        priors = SeedPriors.from_dict(membership.get("seed_spread", {}))
        checks = []
        for route in (r for r in ("erased_class", "retained") if r in sections["unlearned"]):
            combined = finetuned_comparison(sections, route, references, thresholds, priors)
            diff, original = combined["unlearned"], combined["original"]
            amplification = (f"; after / before fine-tuning {diff['estimate'] / before:.2f}x"
                             if before and abs(before) > 1e-3 else "")
            fitted = len(sections["unlearned"][route]["fit_ids"])
            detail = (f"after {sections['unlearned']['steps']} steps on {fitted}"
                      f" {'held-out images of the erased classes' if route == 'erased_class' else 'retained members'}"
                      f": mean AUC difference {signed(diff['estimate'])} "
                      f"{interval_text(diff['low'], diff['high'], thresholds.confidence)} against "
                      f"{'the references' if references else 'chance'} (images and seeds; seed spread from "
                      f"{diff.get('seed_source') or 'the references alone'}), margin "
                      f"+/-{thresholds.mia_auc_margin:g}; original {signed(original['estimate'])}; before fine-tuning "
                      f"{'n/a' if before is None else signed(before)}{amplification}")
            if combined["vetoes"]:
                detail += f"; decisively outside the margin: {', '.join(combined['vetoes'])}"
            checks.append(Check(
                f"membership_after_finetune[{route}]", "the forget set's membership, with every model fine-tuned the "
                "same way first, still matches the references' (mean over the attacks, under the label)",
                combined["decision"], diff["estimate"], [diff["low"], diff["high"]],
                f"the membership rule: mean interval within +/-{thresholds.mia_auc_margin:g}, no attack outside it",
                detail))
        return checks


def fine_tuning_routes(subjects: AuditSubjects) -> dict[str, LabeledImages]:
    """What every model is fine-tuned on: the erased classes' held-out images kept aside (when classes or a concept
    are erased), and as many retained members from the calibration set (at least
    :data:`~audit.subjects.INVERSION_IMAGES_PER_CLASS`)."""
    routes = {}
    if subjects.inversion_images is not None:
        routes["erased_class"] = subjects.inversion_images
    if subjects.calibration is not None:
        members = subjects.calibration.members
        count = len(subjects.inversion_images) if subjects.inversion_images is not None else INVERSION_IMAGES_PER_CLASS
        routes["retained"] = members.take(torch.arange(len(members)) < count)
    return routes


def finetuned_comparison(sections: dict, route: str, references: list[str], thresholds: Thresholds,
                         priors: SeedPriors = NO_PRIORS) -> dict:
    """The forget set's membership under the label after fine-tuning on ``route`` (the combined record of
    :func:`audit.membership.combine_attacks`) from the probe's per-model sections, with the seed spread ``priors``
    measured for conditioning ``finetuned(route)``, if any."""
    first, conditioning = sections["unlearned"], finetuned(route)
    scores = {attack: {conditioning: {role: np.asarray(section[route]["scores"][attack])
                                      for role, section in sections.items()}}
              for attack in first[route]["scores"]}
    _, combined, _ = membership_from_scores(scores, np.asarray(first["is_member"], bool), references, thresholds,
                                            first["seed"], priors)
    return combined[conditioning]
