"""Resurrection as an audit probe: can an attacker bring the erased class back from the model's weights?

Three routes, each fitted on held-out images of the erased class that no membership attack scores
(:attr:`~audit.subjects.AuditSubjects.inversion_images`): asking for it (``regeneration``; Heng and Soh, "Selective
Amnesia", NeurIPS 2023), learning a new class embedding or word for it (``inversion``; Gal et al., "An Image is
Worth One Word", ICLR 2023, as Pham et al., "Circumventing Concept Erasure Methods for Text-to-Image Generative
Models", ICLR 2024, use it against erasures) and fine-tuning on a few of its images (``relearning``; Suriyakumar et
al., "Unstable Unlearning", arXiv 2410.08074). A text model adds an adversarial prompt (``adversarial_prompt``;
Zhang et al., "To Generate or Not? Safety-Driven Unlearned Diffusion Models Are Still Easy to Generate Unsafe
Images", ECCV 2024), a concept direction added to the anchor's embedding (``ring_a_bell``; Tsai et al., "Ring-A-Bell!
How Reliable are Concept Removal Methods for Diffusion Models?", ICLR 2024), a prompt matched to the ORIGINAL model's
noise predictions (``p4d``; Chin et al., "Prompting4Debugging", ICML 2024), a partly noised image of the concept to
finish (``noise_trajectory``; Lu et al., "When Are Concepts Erased From Diffusion Models?", NeurIPS 2025), the
worst case over the prompt and embedding attacks (the ``worst_resurrection`` check) and the report's prompt ->
samples rows (``prompt_grid``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch

from attacks.adversarial_prompt import adversarial_prompt_attack
from attacks.concept_inversion import concept_inversion
from attacks.inversion import embedding_inversion
from attacks.noise_trajectory import noise_trajectory
from attacks.p4d import p4d_attack
from attacks.prompt_regeneration import prompt_regeneration
from attacks.regeneration import ResurrectionResult, conditional_regeneration
from attacks.relearning import relearning_curve
from attacks.ring_a_bell import ring_a_bell
from diffusion.concepts import unused_wordings
from diffusion.model import DiffusionModel
from diffusion.params import Options, SequenceOf
from reports.results import Check

from ..config import AuditConfig, Thresholds
from ..generation_checks import WORST_OF, paired_generation_check, worst_of
from ..images import save_grid
from ..subjects import AuditSubjects
from .base import PROBES, Probe

PROMPT_GRID_IMAGES = 8  # images per prompt in a text model's prompt -> samples grid (one row of the report)
TEXT_ATTACKS = ("ring_a_bell", "p4d", "noise_trajectory")  # a text model's further attacks, each switchable off

_CHECKS = {  # check name -> (what it says, the margin's thresholds key)
    "resurrection": ("a newly learned class embedding (a word, for a text model) brings the erased class back no "
                     "more than for the references", "resurrection_margin"),
    "adversarial_prompt": ("an adversarial prompt (real words before the concept prompt, searched with the model's "
                           "own loss) brings the erased class back no more than for the references",
                           "resurrection_margin"),
    "ring_a_bell": ("a concept direction (Ring-A-Bell: text embeddings with minus without the concept) added to the "
                    "anchor prompt's embedding brings the erased class back no more than for the references",
                    "resurrection_margin"),
    "p4d": ("a prompt searched to make the model's noise predictions match the original model's under the concept "
            "prompt (P4D) brings the erased class back no more than for the references", "resurrection_margin"),
    "noise_trajectory": ("finishing held-out images of the erased class noised part-way, under the concept prompt, "
                         "the model brings the class back no more often than the references", "resurrection_margin"),
    "worst_resurrection": ("image by image the worst of the prompt and embedding attacks (inversion, adversarial "
                           "prompt, Ring-A-Bell, P4D) brings the erased class back no more than for the references",
                           "resurrection_margin"),
    "relearning": ("fine-tuned on a few held-out images of the erased class, the model relearns it no faster than "
                   "the references (judge accuracy averaged over the relearning curve)", "relearning_margin"),
}


@PROBES.register
class ResurrectionProbe(Probe):
    """Regeneration, inversion and relearning on every model (with an adversarial prompt and the prompt grid for a
    text model); the checks compare each route's per-image outcomes with the references'
    (:func:`audit.generation_checks.paired_generation_check`). Runs when erased classes or a concept left held-out
    images aside (``resurrection: true``, the default). ``text_attacks``: which of :data:`TEXT_ATTACKS` a text model
    also gets (``PROBES.make("resurrection", text_attacks=[...])``; all by default)."""

    name = "resurrection"
    _parameter_constraints: ClassVar[dict] = {"text_attacks": [SequenceOf(Options(*TEXT_ATTACKS), min_length=0)]}

    def __init__(self, text_attacks: Sequence[str] = TEXT_ATTACKS):
        self.text_attacks = text_attacks

    def applies(self, subjects: AuditSubjects, config: AuditConfig) -> bool:
        return subjects.inversion_images is not None

    def run(self, role: str, model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
            images_dir: Path) -> tuple[dict, dict[str, str]]:
        section, shown = (_class_resurrection(model, subjects, config) if subjects.task.anchor is None
                          else _concept_resurrection(model, subjects, config, self.text_attacks))
        images = {f"{role}_{kind}": save_grid(generated[:16], images_dir / f"{role}_{kind}.png", columns=8).name
                  for kind, generated in shown.items()}
        return section, images

    def checks(self, results: dict, thresholds: Thresholds) -> list[Check]:
        checks = [paired_generation_check(name, description, results, getattr(thresholds, margin_key),
                                          thresholds.confidence)
                  for name, (description, margin_key) in _CHECKS.items()]
        return [check for check in checks if check is not None]


def _class_resurrection(model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig
                        ) -> tuple[dict, dict[str, torch.Tensor]]:
    """A class-conditional model: the erased classes asked for, a class embedding fitted on the images kept aside
    (the one the inverted membership conditioning uses), relearning on the same images."""
    classes = subjects.spec.classes
    regenerated = conditional_regeneration(model, subjects.judge, subjects.task.forget, classes, seed=config.seed,
                                           per_class=config.eval_samples_per_class, steps=config.eval_steps)
    inverted = embedding_inversion(model, subjects.judge, subjects.task.forget, classes,
                                   fit_images=subjects.inversion_images, fitted=subjects.inversion(model, config),
                                   seed=config.seed, per_class=config.forgotten_samples_per_class,
                                   sample_steps=config.eval_steps)
    relearned = relearning_curve(model, subjects.judge, subjects.inversion_images, classes, seed=config.seed,
                                 per_class=config.eval_samples_per_class, sample_steps=config.eval_steps,
                                 quiet=config.quiet)
    section = {"regeneration": regenerated.to_dict(), "inversion": inverted.to_dict(),
               "relearning": relearned.to_dict()}
    return section, {"inversion": inverted.images}


def _concept_resurrection(model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
                          text_attacks: Sequence[str] = TEXT_ATTACKS) -> tuple[dict, dict[str, torch.Tensor]]:
    """A text model: every caption wording of the concept's class not given to the erasure, and the held-out
    images' own captions when the data has them (``regeneration``), a word learned by concept inversion
    (``inversion``), an adversarial prompt (``adversarial_prompt``) and relearning, the last three fitted on the
    held-out images kept aside; those of ``text_attacks`` asked for (:func:`_further_attacks`); with the report's
    prompt -> samples rows (``prompt_grid``) and their images, keyed ``prompt_<row>``."""
    spec, judge, fit = subjects.spec, subjects.judge, subjects.inversion_images
    forget_pixels = subjects.dataset.select(subjects.task.forget.ids)  # class labels, pixels (for a VAE model too)
    concept, wordings = spec.classes[0], subjects.dataset.class_wordings
    common = {"seed": config.seed, "sample_steps": config.eval_steps}
    given = prompt_regeneration(model, judge, spec.concept, concept, forget_pixels, seed=config.seed,
                                per_prompt=PROMPT_GRID_IMAGES, sample_steps=config.eval_steps)
    unused = unused_wordings(spec, subjects.dataset, fit.ids.tolist())
    regenerated = prompt_regeneration(model, judge, unused, concept, forget_pixels, seed=config.seed,
                                      per_prompt=max(1, config.eval_samples_per_class // 5),
                                      sample_steps=config.eval_steps)
    inverted = concept_inversion(model, judge, fit, concept, forget_pixels,
                                 per_class=config.forgotten_samples_per_class, quiet=config.quiet, **common)
    adversarial = adversarial_prompt_attack(model, judge, fit, spec.concept[0], concept, forget_pixels,
                                            per_class=config.forgotten_samples_per_class, quiet=config.quiet,
                                            **common)
    relearned = relearning_curve(model, judge, fit, spec.classes, per_class=config.eval_samples_per_class,
                                 quiet=config.quiet, wordings=wordings, **common)
    further = _further_attacks(model, subjects, config, text_attacks)
    grid, images = _prompt_grid(given, regenerated, inverted, adversarial, further)
    section = {"regeneration": regenerated.to_dict(), "inversion": inverted.to_dict(),
               "adversarial_prompt": adversarial.to_dict(), "relearning": relearned.to_dict(),
               **{name: result.to_dict() for name, result in further.items()}, "prompt_grid": grid}
    if "noise_trajectory" in further:
        images["noise_trajectory"] = further["noise_trajectory"].images
    outcomes = {name: result.metrics["per_image_correct"]
                for name, result in (("resurrection", inverted), ("adversarial_prompt", adversarial),
                                     *further.items())}
    worst = worst_of(outcomes)
    if worst is not None:  # what the report shows; the check recomputes it from the per-image outcomes
        section["worst_case"] = {"attacks": [name for name in WORST_OF if name in outcomes],
                                 "judge_accuracy": sum(worst) / len(worst), "num_images": len(worst)}
    return section, images


def _further_attacks(model: DiffusionModel, subjects: AuditSubjects, config: AuditConfig,
                     text_attacks: Sequence[str]) -> dict[str, ResurrectionResult]:
    """Those of :data:`TEXT_ATTACKS` in ``text_attacks``, by name: Ring-A-Bell from the erasure's anchor prompt, P4D
    against the audit's original model (the model itself when there is none), the noise trajectory from the held-out
    images kept aside under the first concept prompt; each judged on ``forgotten_samples_per_class`` images."""
    spec, judge, fit = subjects.spec, subjects.judge, subjects.inversion_images
    forget_pixels = subjects.dataset.select(subjects.task.forget.ids)
    concept, n = spec.classes[0], config.forgotten_samples_per_class
    common = {"seed": config.seed, "sample_steps": config.eval_steps}
    found = {}
    if "ring_a_bell" in text_attacks:
        found["ring_a_bell"] = ring_a_bell(model, judge, subjects.dataset.class_wordings, concept, forget_pixels,
                                           base_prompt=spec.anchor or "", per_class=n, **common)
    if "p4d" in text_attacks:
        original = subjects.models.get("original", model)
        found["p4d"] = p4d_attack(model, original, judge, fit, spec.concept[0], concept, forget_pixels, per_class=n,
                                  quiet=config.quiet, **common)
    if "noise_trajectory" in text_attacks:
        found["noise_trajectory"] = noise_trajectory(model, judge, fit, concept, forget_pixels,
                                                     condition=model.tokenize([spec.concept[0]])[0], num_images=n,
                                                     **common)
    return found


def _prompt_grid(given: ResurrectionResult, regenerated: ResurrectionResult, inverted: ResurrectionResult,
                 adversarial: ResurrectionResult, further: dict[str, ResurrectionResult] | None = None
                 ) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """One model's prompt -> samples rows: each prompt the erasure was given, each wording it was not, the word
    learned by concept inversion and the adversarial prompt found for this model (the last two differ between
    models), then Ring-A-Bell's embedding (described the same for every model; its direction is each model's own)
    and P4D's prompt (found per model) when ``further`` holds them, with the first :data:`PROMPT_GRID_IMAGES`
    images of each (the same starting noises in every row and model) and the judged accuracy of all the prompt's
    images."""
    rows, images = [], {}

    def add(source: str, prompt: str, accuracy: float, shown: torch.Tensor, same_for_every_model: bool) -> None:
        images[f"prompt_{len(rows)}"] = shown[:PROMPT_GRID_IMAGES]
        rows.append({"source": source, "prompt": prompt, "judge_accuracy": accuracy,
                     "same_for_every_model": same_for_every_model, "image": f"prompt_{len(rows)}"})

    for source, result in (("prompt given to the erasure", given), ("wording not given to the erasure", regenerated)):
        per_prompt, accuracy = result.metrics["per_prompt_images"], result.metrics["per_prompt_accuracy"]
        for prompt in dict.fromkeys(result.metrics["prompts"]):
            first = result.metrics["prompts"].index(prompt) * per_prompt
            add(source, prompt, accuracy[prompt], result.images[first:first + per_prompt], True)
    add("word learned by concept inversion", inverted.metrics["prompt"], inverted.metrics["judge_accuracy"],
        inverted.images, False)
    add("adversarial prompt", adversarial.metrics["prompt"], adversarial.metrics["judge_accuracy"],
        adversarial.images, False)
    further = further or {}
    if "ring_a_bell" in further:
        result = further["ring_a_bell"]
        add("Ring-A-Bell: concept direction added to the anchor's embedding", result.metrics["prompt"],
            result.metrics["judge_accuracy"], result.images, True)
    if "p4d" in further:
        result = further["p4d"]
        add("P4D prompt (matched to the original model)", result.metrics["prompt"], result.metrics["judge_accuracy"],
            result.images, False)
    return rows, images
