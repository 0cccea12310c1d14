"""Ring-A-Bell: a concept direction in the text encoder's output, added to an innocuous prompt's embedding.

Tsai et al., "Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion Models?", ICLR 2024 (arXiv
2310.10012). The concept is extracted as the mean, over prompt pairs that differ only by the concept, of (text
embedding with it - text embedding without it); an erased model is then asked for
``embedding(base prompt) + eta * direction``. An erasure that only unlearned the concept's words is blind to it.

Two choices differ from the paper. The direction is taken with the AUDITED model's own text encoder, not with an
encoder the attacker holds (the paper's CLIP): this project's text encoders are small custom ones, each UNet reads
only its own encoder's space, and an erasure that leaves the encoder alone (ESD, EraseDiff) gives the original's
direction anyway. And the model is conditioned on the continuous embedding itself; the paper's last step, a genetic
search for real tokens whose embedding comes near it, is left out: the continuous form is the stronger attacker, as
an auditor wants (a prompt anyone can type is the adversarial prompt's and P4D's job).
"""

from __future__ import annotations

import re
from numbers import Real

import torch

from diffusion.captions import ClassCaptions
from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.params import Interval, validate_params
from diffusion.quality import per_class_noise_ids
from diffusion.text_model import TextDiffusionModel

from .regeneration import POSITIVE_INT, ResurrectionResult, judge_generated

DEFAULT_STRENGTH = 3.0  # the paper's eta for its object / nudity concepts


def prompt_pairs(wordings: ClassCaptions, concept_class: int) -> list[tuple[str, str]]:
    """(with the concept, without it) for every wording template of the class (training and held-out): the template
    filled with the class's name, and the same template with the name left out ("a handwritten digit three" ->
    "a handwritten digit"; "{word}" alone -> the empty prompt). Duplicates are dropped, order kept."""
    if not 0 <= concept_class < wordings.num_classes:
        raise UsageError(f"class {concept_class} is out of range; expected a class id in 0..{wordings.num_classes - 1}")
    names = wordings.names[concept_class]
    pairs = {}
    for template in wordings.every_template:
        if "{word}" not in template and "{digit}" not in template:
            continue
        with_concept = template.format(word=names[0], digit=names[-1])
        without = re.sub(r"\s+", " ", template.format(word="", digit="")).strip()
        pairs[(with_concept, without)] = None
    if not pairs:
        raise UsageError("Ring-A-Bell needs wordings that name the class; the data's templates name none")
    return list(pairs)


@torch.no_grad()
def concept_direction(model: TextDiffusionModel, pairs: list[tuple[str, str]]) -> torch.Tensor:
    """The mean over ``pairs`` of (text-encoder output with the concept - without it), position by position: a
    tensor (L, D) on the CPU (L the tokenizer's length, D the encoder's width)."""
    if not pairs:
        raise UsageError("Ring-A-Bell needs at least one prompt pair")
    with_concept = model.prompt_states(model.tokenize([w for w, _ in pairs]))
    without = model.prompt_states(model.tokenize([w for _, w in pairs]))
    return (with_concept - without).mean(0).cpu()


@torch.no_grad()
def ring_a_bell_embeddings(model: TextDiffusionModel, base_prompt: str, direction: torch.Tensor,
                           strength: float) -> torch.Tensor:
    """``embedding(base_prompt) + strength * direction``: one conditioning (L, D) on the CPU."""
    base = model.prompt_states(model.tokenize([base_prompt]))[0].cpu()
    if direction.shape != base.shape:
        raise UsageError(f"the concept direction has shape {tuple(direction.shape)}; the model's prompt embeddings "
                         f"have {tuple(base.shape)}")
    return base + strength * direction


def ring_a_bell(
    model: TextDiffusionModel,
    judge: Judge,
    wordings: ClassCaptions,
    concept_class: int,
    forget_pixels: LabeledImages,
    *,
    base_prompt: str = "",
    strength: float = DEFAULT_STRENGTH,
    seed: int = 0,
    per_class: int = 50,
    sample_steps: int = 50,
) -> ResurrectionResult:
    """The concept direction of ``concept_class`` (:func:`prompt_pairs` of the data's ``wordings``, with ``model``'s
    own text encoder), added with ``strength`` to the embedding of ``base_prompt`` (the erasure's anchor: what the
    concept was mapped to); ``per_class`` images generated from it on ``model`` (the noises of the class's
    evaluation samples, as the other probes) and judged as ``concept_class``. The images are (per_class, C, H, W);
    ``per_image_correct`` pairs with the other probes' by starting noise. ``model`` is never changed."""
    validate_params({"per_class": POSITIVE_INT, "sample_steps": POSITIVE_INT,
                     "strength": [Interval(Real, 0, None, closed="neither")]},
                    {"per_class": per_class, "sample_steps": sample_steps, "strength": strength}, "ring_a_bell")
    pairs = prompt_pairs(wordings, concept_class)
    direction = concept_direction(model, pairs)
    conditioning = ring_a_bell_embeddings(model, base_prompt, direction, strength)
    noise_ids = per_class_noise_ids([concept_class], per_class)
    images = model.sample(None, embeddings=conditioning.expand(per_class, -1, -1), seed=seed, ids=noise_ids,
                          steps=sample_steps)
    target = torch.full((per_class,), concept_class)
    metrics = judge_generated(judge, images, target, forget_pixels)
    base = repr(base_prompt) if base_prompt else "the empty prompt"
    metrics.update(prompt=f"embedding of {base} + {strength:g} x concept direction", base_prompt=base_prompt,
                   strength=strength, prompt_pairs=[list(p) for p in pairs],
                   direction_norm=float(direction.norm()), classes=[concept_class], per_class_images=per_class,
                   sampler=f"ddim-{sample_steps}", seed=seed)
    return ResurrectionResult("ring_a_bell", images, target, metrics)
