"""Side effects, class by class: an erasure must not take its neighbours with it.

Erasing one concept erases others (Amara et al., "EraseBench: Understanding the Ripple Effects of Concept Erasure
Techniques", ICCV 2025), and a check on the mean over retained classes lets one damaged neighbour hide among nine
intact ones. Two checks:

- ``retained_per_class``: each retained class's accuracy drop from the original, on the same starting noises
  (:func:`audit.statistics.paired_proportion_difference`). PASS when every class's interval lies within
  ``retained_class_drop`` (an intersection-union test: each at the audit's confidence, no correction needed; Berger,
  "Multiparameter hypothesis testing and acceptance sampling", Technometrics 1982); FAIL when Holm's procedure at
  family-wise alpha = (1 - confidence) / 2 finds a class whose drop exceeds the limit
  (:func:`audit.statistics.holm_rejections`); INCONCLUSIVE otherwise.
- ``combined_prompts`` (text models): a prompt naming the erased concept and a retained class ("three and a picture
  of the number five") must still draw the retained class as often as the references draw it (paired by starting
  noise, seeds counted: :func:`audit.generation_checks.paired_generation_check` on the per-image misses).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from diffusion.model import DiffusionModel
from diffusion.quality import judged_correct, per_class_noise_ids
from reports.results import FAIL, INCONCLUSIVE, PASS, Check

from ..config import AuditConfig, Thresholds
from ..generation_checks import interval_text, paired_generation_check, signed
from ..statistics import holm_rejections, paired_proportion_difference
from ..subjects import AuditSubjects
from .base import PROBES, Probe

COMBINED_PROMPT_IMAGES = 20  # samples per retained class under "<concept> and <class>"
COMBINED = "combined_prompts"  # the check, and the per-image values it decides on: each image's miss (0/1)


def combined_prompt(concept: str, retained: str) -> str:
    """The prompt naming the erased concept and a retained class."""
    return f"{concept} and {retained}"


@PROBES.register
class SideEffectsProbe(Probe):
    """Per retained class, the erasure's damage; for a text model, the retained classes drawn under prompts that also
    name the erased concept (``side_effects: true``, the default: the per-class check costs nothing beyond the
    utility samples, the combined prompts :data:`COMBINED_PROMPT_IMAGES` samples per retained class)."""

    name = "side_effects"

    def applies(self, subjects: AuditSubjects, config: AuditConfig) -> bool:
        return config.side_effects

    def run(self, role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
            images_dir: Path) -> tuple[dict, dict[str, str]]:
        retained = list(subjects.task.retained_classes)
        section: dict = {"retained_classes": retained}
        if subjects.task.anchor is None or not subjects.spec.concept:
            return section, {}
        wordings = subjects.dataset.class_wordings
        classes = [c for c in retained for _ in range(COMBINED_PROMPT_IMAGES)]
        named = dict(zip(retained, wordings.heldout_prompts(retained)))
        prompts = [combined_prompt(subjects.spec.concept[0], named[c]) for c in classes]
        wanted = torch.tensor(classes)
        images = model.sample(prompts, seed=config.seed, ids=per_class_noise_ids(retained, COMBINED_PROMPT_IMAGES),
                              steps=config.eval_steps)
        correct = judged_correct(subjects.judge.probabilities(images), wanted).tolist()
        section[COMBINED] = {
            "prompts": [combined_prompt(subjects.spec.concept[0], named[c]) for c in retained],
            "per_image_correct": [int(v) for v in correct],
            "per_class_accuracy": {c: sum(correct[i * COMBINED_PROMPT_IMAGES:(i + 1) * COMBINED_PROMPT_IMAGES])
                                   / COMBINED_PROMPT_IMAGES for i, c in enumerate(retained)},
            "images_per_class": COMBINED_PROMPT_IMAGES,
        }
        return section, {}

    def checks(self, results: dict, thresholds: Thresholds) -> list[Check]:
        sections = results.get(self.name)
        if not sections or "unlearned" not in sections:
            return []
        checks = [_per_class_check(results["utility"], thresholds)]
        if COMBINED in sections["unlearned"]:
            check = _combined_prompt_check(results, sections, thresholds)
            if check is not None:
                checks.append(check)
        return [check for check in checks if check is not None]


def _per_class_check(utility: dict, thresholds: Thresholds) -> Check | None:
    """``retained_per_class``: each retained class's drop from the original (see the module docstring)."""
    original, unlearned = utility["original"].get("retained_correct"), utility["unlearned"].get("retained_correct")
    if not original or not unlearned:
        return None
    limit, confidence = thresholds.retained_class_drop, thresholds.confidence
    classes = sorted(original, key=int)
    drops = {c: paired_proportion_difference(original[c], unlearned[c], confidence, limit) for c in classes}
    alpha = (1 - confidence) / 2
    rejected = dict(zip(classes, holm_rejections([drops[c].p_value for c in classes], alpha)))
    if any(rejected.values()):
        decision = FAIL
    elif all(d.high <= limit for d in drops.values()):
        decision = PASS
    else:
        decision = INCONCLUSIVE
    worst = max(classes, key=lambda c: drops[c].estimate)
    ranked = sorted(classes, key=lambda c: -drops[c].high)[:3]
    listed = "; ".join(f"class {c}: {signed(drops[c].estimate)} "
                       f"{interval_text(drops[c].low, drops[c].high, confidence)}"
                       f"{' (exceeds the limit, Holm)' if rejected[c] else ''}" for c in ranked)
    n = len(original[classes[0]])
    return Check("retained_per_class", "every retained class on its own is still generated correctly (accuracy drop "
                 "from the original, class by class)", decision, drops[worst].estimate,
                 [drops[worst].low, drops[worst].high],
                 f"every class's drop at most {limit:g} (PASS: all intervals within; FAIL: Holm at family-wise "
                 f"{alpha:g} over {len(classes)} classes)",
                 f"{len(classes)} retained classes, {n} starting noises each, paired with the original (Agresti-Min "
                 f"intervals); largest upper bounds: {listed}")


def _combined_prompt_check(results: dict, sections: dict, thresholds: Thresholds) -> Check | None:
    """``combined_prompts``: the retained classes missed under "<concept> and <class>" no more often than by the
    references (per image, paired)."""
    per_role = {role: {COMBINED: [1 - v for v in section[COMBINED]["per_image_correct"]]}
                for role, section in sections.items() if COMBINED in section}
    check = paired_generation_check(
        COMBINED, "a prompt naming the erased concept and a retained class still draws the retained class "
        "as often as the references do (per-image misses, paired)", results, thresholds.retained_class_drop,
        thresholds.confidence, per_role)
    if check is None:
        return None
    rates = sections["unlearned"][COMBINED]["per_class_accuracy"]
    worst = sorted(rates, key=lambda c: rates[c])[:3]
    lowest = ", ".join(f"{c}: {rates[c]:.2f}" for c in worst)
    return replace(check, detail=f"{check.detail}; unlearned, lowest classes: {lowest}")
