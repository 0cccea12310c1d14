"""Losses the unlearning methods share: the DDPM loss on a batch and the random-label (relabel) forget loss."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.model import DiffusionModel


def draw_timesteps_and_noise(
    model: DiffusionModel, batch: LabeledImages, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform timesteps (B,) and standard normal noise (B, C, H, W) for ``batch``, on the model's device."""
    t = torch.randint(0, model.num_train_timesteps, (len(batch),), generator=generator)
    noise = torch.randn(batch.images.shape, generator=generator)
    return t.to(model.device), noise.to(model.device)


def diffusion_loss(model: DiffusionModel, batch: LabeledImages, generator: torch.Generator) -> torch.Tensor:
    """The DDPM training loss on ``batch`` (a scalar), with its own timesteps and noise from ``generator``."""
    t, noise = draw_timesteps_and_noise(model, batch, generator)
    return model.denoising_loss(batch.images.to(model.device), batch.labels.to(model.device), t, noise).mean()


def other_class_labels(
    labels: torch.Tensor, allowed: Sequence[int], generator: torch.Generator
) -> torch.Tensor:
    """For each label (B,), a class drawn uniformly from ``allowed`` other than the label itself: (B,)."""
    allowed_t = torch.as_tensor(list(allowed), dtype=torch.long)
    out = torch.empty_like(labels)
    for i, label in enumerate(labels.tolist()):
        choices = allowed_t[allowed_t != label]
        if len(choices) == 0:
            raise UsageError(f"no class other than {label} is left to relabel to; retain at least two classes")
        out[i] = choices[torch.randint(len(choices), (1,), generator=generator)]
    return out


@dataclass(frozen=True, eq=False)
class RelabelTarget:
    """One draw of the random-label forget loss: noisy forget images and the prediction they are pulled onto.

    Attributes:
        x_t: the forget images noised at ``t`` (B, C, H, W). t: timesteps (B,). labels: their own classes (B,).
        target: stopgrad eps_theta(x_t, t, c') (B, C, H, W), c' another class per image.
    """

    x_t: torch.Tensor
    t: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor


def relabel_target(
    model: DiffusionModel, batch: LabeledImages, allowed: Sequence[int], generator: torch.Generator
) -> RelabelTarget:
    """Draw timesteps, noise and other classes c' from ``allowed`` for ``batch``; predict the target once."""
    t, noise = draw_timesteps_and_noise(model, batch, generator)
    others = other_class_labels(batch.labels, allowed, generator).to(model.device)
    x_t = model.add_noise(batch.images.to(model.device), noise, t)
    with torch.no_grad():
        target = model.predict_noise(x_t, t, others)
    return RelabelTarget(x_t, t, batch.labels.to(model.device), target)


def relabel_loss(model: DiffusionModel, draw: RelabelTarget) -> torch.Tensor:
    """MSE(eps_theta(x_t, t, c), stopgrad eps_theta(x_t, t, c')): a scalar.

    The forget images are pulled onto the model's own trajectory for a different class (the random-label
    loss of SalUn, Fan et al. ICLR 2024, and EraseDiff's ``relabel`` target).
    """
    return F.mse_loss(model.predict_noise(draw.x_t, draw.t, draw.labels), draw.target)
