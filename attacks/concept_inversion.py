"""Concept inversion: learn a new word for the erased concept on the frozen text model, then generate with it.

Pham, Marshall, Cohen, Hegde et al., "Circumventing Concept Erasure Methods for Text-to-Image Generative Models",
ICLR 2024: textual inversion (Gal et al., "An Image is Worth One Word", ICLR 2023) of a new token on images of the
erased concept, every weight frozen but that token's embedding. If a prompt made of that one word brings the
concept back, the erasure hid the concept from its name and kept it in the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real

import torch

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.params import Interval, validate_params
from diffusion.seeding import derive_seed
from diffusion.text_model import TextDiffusionModel

from .inversion import ExtendedClassEmbedding
from .prompt_fit import fit_prompt, frozen_copy_reading, judge_prompt
from .regeneration import POSITIVE_INT, ResurrectionResult


@dataclass
class InvertedToken:
    """A frozen copy of a text model whose tokenizer-free token id ``token`` reads a fitted embedding.

    Attributes:
        model: the copy (its token table extended by one trainable row, now fitted).
        prompt: token ids (L,) of the prompt made of the new word alone: [BOS, token, EOS, pad...].
        record: what the fit used and reached (JSON-ready).
    """

    model: TextDiffusionModel
    prompt: torch.Tensor
    record: dict


def word_prompt(model: TextDiffusionModel, token: int) -> torch.Tensor:
    """Token ids (L,) of a prompt holding the single token ``token``: the empty prompt's with it after BOS."""
    empty = model.tokenize([""])[0]
    return torch.cat([empty[:1], torch.tensor([token]), empty[1:-1]])


def fit_concept_token(
    model: TextDiffusionModel,
    images: LabeledImages,
    *,
    seed: int = 0,
    num_images: int = 16,
    steps: int = 200,
    lr: float = 0.05,
    batch_size: int = 32,
    quiet: bool = True,
) -> InvertedToken:
    """Fit one new token embedding on ``num_images`` of ``images`` (the diffusion's data: latents for a VAE model)
    with Adam on the DDPM loss under the one-word prompt; the row starts at the mean of the vocabulary's rows, so no
    word is given away. ``model`` is never changed."""
    validate_params({"num_images": POSITIVE_INT, "steps": POSITIVE_INT, "batch_size": POSITIVE_INT,
                     "lr": [Interval(Real, 0, None, closed="neither")]},
                    {"num_images": num_images, "steps": steps, "batch_size": batch_size, "lr": lr},
                    "fit_concept_token")
    if len(images) == 0:
        raise UsageError("concept inversion needs images of the concept; got none")
    generator = torch.Generator().manual_seed(derive_seed(seed, "concept-inversion"))
    chosen = torch.randperm(len(images), generator=generator)[:num_images]
    probe, table, rows = frozen_copy_reading(model, lambda table: ExtendedClassEmbedding(table, 1))
    prompt = word_prompt(probe, table.num_embeddings)
    before, after = fit_prompt(probe, images.images[chosen].to(probe.device), prompt,
                               torch.optim.Adam([rows.new], lr=lr), steps=steps, batch_size=batch_size,
                               generator=generator, desc="concept inversion", quiet=quiet)
    record = {"fit_ids_used": images.ids[chosen].tolist(), "steps": steps, "lr": lr, "batch_size": batch_size,
              "fit_loss_before": before, "fit_loss_after": after}
    return InvertedToken(probe, prompt, record)


def concept_inversion(
    model: TextDiffusionModel,
    judge: Judge,
    fit_images: LabeledImages,
    concept_class: int,
    forget_pixels: LabeledImages,
    *,
    seed: int = 0,
    per_class: int = 50,
    sample_steps: int = 50,
    quiet: bool = True,
    **fit_options,
) -> ResurrectionResult:
    """Fit a word for the concept on ``fit_images`` (:func:`fit_concept_token`), generate ``per_class`` images with
    the one-word prompt (the noises of the class's evaluation samples), and judge them as ``concept_class``
    (nearest distances to ``forget_pixels``, the erased images in pixels)."""
    fitted = fit_concept_token(model, fit_images, seed=seed, quiet=quiet, **fit_options)
    images, target, metrics = judge_prompt(fitted.model, fitted.prompt, judge, concept_class, forget_pixels,
                                           seed=seed, per_class=per_class, sample_steps=sample_steps)
    metrics.update(prompt="<learned word>", **fitted.record)
    return ResurrectionResult("concept_inversion", images, target, metrics)
