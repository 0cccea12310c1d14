"""What the attacks that learn a text model's input on images of a concept (a new word, an adversarial prompt) share:
a frozen copy reading its token embeddings from the attack's module, the fitting loop (the frozen model's DDPM loss
under one prompt, minimised over what the optimizer holds), and the judging of what the found prompt generates."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from diffusion.data import LabeledImages
from diffusion.judge import Judge
from diffusion.quality import per_class_noise_ids
from diffusion.text_model import TextDiffusionModel

from .regeneration import judge_generated


@dataclass
class FoundPrompt:
    """A prompt a search found: its token ids (L,), its text, and how the search went (JSON-ready)."""

    tokens: torch.Tensor
    text: str
    record: dict


def fit_prompt(
    probe: TextDiffusionModel,
    x0: torch.Tensor,
    prompt: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    steps: int,
    batch_size: int,
    generator: torch.Generator,
    desc: str,
    quiet: bool = True,
) -> tuple[float, float]:
    """``steps`` optimizer steps on the DDPM loss of ``x0`` (N, C, H, W; on the model's device) under the token ids
    ``prompt`` (L,), with images, timesteps and noises drawn from ``generator``. Returns the loss of one fixed draw
    of 256 (image, t, noise) before and after, to show the fit."""
    prompt = prompt.to(probe.device)

    def draw(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pick = torch.randint(0, len(x0), (size,), generator=generator)
        t = torch.randint(0, probe.num_train_timesteps, (size,), generator=generator)
        return pick, t.to(probe.device), torch.randn((size, *x0.shape[1:]), generator=generator).to(probe.device)

    def loss_on(pick: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return probe.denoising_loss(x0[pick], prompt.expand(len(pick), -1), t, noise).mean()

    check = draw(256)
    with torch.no_grad():
        before = loss_on(*check).item()
    for _ in tqdm(range(steps), desc=desc, disable=quiet, leave=False):
        loss = loss_on(*draw(batch_size))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = loss_on(*check).item()
    return before, after


def frozen_copy_reading(model: TextDiffusionModel, make_table) -> tuple[TextDiffusionModel, torch.nn.Embedding,
                                                                        torch.nn.Module]:
    """A copy of ``model`` with every weight frozen whose text encoder reads its token embeddings from
    ``make_table(original table)`` (a module with the attack's trainable rows); returns (copy, original table,
    new module). ``model`` is never changed."""
    probe = model.copy()
    probe.unet.requires_grad_(False).eval()
    table = probe.unet.text_encoder.get_input_embeddings()
    reading = make_table(table).to(probe.device)
    probe.unet.text_encoder.set_input_embeddings(reading)
    return probe, table, reading


def judge_prompt(
    model: TextDiffusionModel, tokens: torch.Tensor, judge: Judge, concept_class: int, forget_pixels: LabeledImages,
    *, seed: int, per_class: int, sample_steps: int,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``per_class`` images of ``model`` under the token ids ``tokens`` (L,), from the noises of the class's
    evaluation samples, judged as ``concept_class`` (:func:`~attacks.regeneration.judge_generated`): (images,
    targets, metrics with the sampling settings)."""
    noise_ids = per_class_noise_ids([concept_class], per_class)
    images = model.sample(tokens.expand(per_class, -1), seed=seed, ids=noise_ids, steps=sample_steps)
    target = torch.full((per_class,), concept_class)
    metrics = judge_generated(judge, images, target, forget_pixels)
    metrics.update(classes=[concept_class], per_class_images=per_class, sampler=f"ddim-{sample_steps}", seed=seed)
    return images, target, metrics
