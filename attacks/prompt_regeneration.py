"""Prompt regeneration: ask a text model for the erased concept in wordings the erasure never used.

An erasure that only unlearns the words it was given leaves the concept one paraphrase away (the regeneration probe
of the concept-erasure papers: Gandikota et al., ICCV 2023; Zhang et al., ECCV 2024). Each prompt gets the same
starting noises; the judge says how often the concept comes back, per prompt and overall.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.quality import per_class_noise_ids
from diffusion.text_model import TextDiffusionModel

from .regeneration import ResurrectionResult, judge_generated


def prompt_regeneration(
    model: TextDiffusionModel,
    judge: Judge,
    prompts: Sequence[str],
    concept_class: int,
    forget_pixels: LabeledImages,
    *,
    seed: int = 0,
    per_prompt: int = 25,
    sample_steps: int = 50,
) -> ResurrectionResult:
    """``per_prompt`` images for each of ``prompts`` (the class's evaluation noises), judged as ``concept_class``:
    images (len(prompts) * per_prompt, C, H, W) in prompt order; the metrics add the prompts, each prompt's judged
    accuracy and the prompt that brings the concept back most."""
    prompts = [str(p) for p in prompts]
    if not prompts:
        raise UsageError("prompt regeneration needs at least one prompt")
    noise_ids = per_class_noise_ids([concept_class], per_prompt) * len(prompts)
    conditioning = [p for p in prompts for _ in range(per_prompt)]
    images = model.sample(conditioning, seed=seed, ids=noise_ids, steps=sample_steps)
    target = torch.full((len(images),), concept_class)
    metrics = judge_generated(judge, images, target, forget_pixels)
    correct = (judge.probabilities(images).argmax(1) == target).double().view(len(prompts), per_prompt).mean(1)
    per_prompt_accuracy = dict(zip(prompts, correct.tolist()))
    best = max(per_prompt_accuracy, key=per_prompt_accuracy.get)
    metrics.update(classes=[concept_class], prompts=prompts, per_prompt_images=per_prompt,
                   per_prompt_accuracy=per_prompt_accuracy,
                   best_prompt=best, best_prompt_accuracy=per_prompt_accuracy[best],
                   sampler=f"ddim-{sample_steps}", seed=seed)
    return ResurrectionResult("prompt_regeneration", images, target, metrics)
