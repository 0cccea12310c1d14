"""Losses the unlearning methods share: the DDPM loss on a batch and the random-label (relabel) forget loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.splits import ForgetTask

from .sharding import global_labels, global_size, per_row, share_like


def draw_timesteps_and_noise(
    model: DiffusionModel, batch: LabeledImages, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform timesteps (B,) and standard normal noise (B, C, H, W) for ``batch``, on the model's device (drawn
    for its global batch when it is one process's share: :mod:`unlearn.sharding`)."""
    t = per_row(batch, lambda n: torch.randint(0, model.num_train_timesteps, (n,), generator=generator))
    noise = per_row(batch, lambda n: torch.randn((n, *batch.images.shape[1:]), generator=generator))
    return t.to(model.device), noise.to(model.device)


def diffusion_loss(model: DiffusionModel, batch: LabeledImages, generator: torch.Generator) -> torch.Tensor:
    """The DDPM training loss on ``batch`` (a scalar), with its own timesteps and noise from ``generator``."""
    t, noise = draw_timesteps_and_noise(model, batch, generator)
    return model.denoising_loss(batch.images.to(model.device), batch.labels.to(model.device), t, noise).mean()


@dataclass(frozen=True)
class MembershipGap:
    """How much higher the original model's denoising loss is on non-members than on members, per timestep band.

    Attributes:
        edges: (num_bands - 1,) inner band edges in timesteps, geometric: the member/non-member gap lives at small
            timesteps, where the loss also changes fastest with t.
        ratios: (num_bands,) mean non-member loss / mean member loss in each band.
    """

    edges: torch.Tensor
    ratios: torch.Tensor

    def band(self, t: torch.Tensor) -> torch.Tensor:
        """The band index of each timestep of ``t`` (B,): (B,), on the CPU."""
        return torch.bucketize(t.cpu(), self.edges, right=True)

    def at(self, t: torch.Tensor) -> torch.Tensor:
        """The ratio for each timestep of ``t`` (B,): (B,)."""
        return self.ratios[self.band(t)].to(t.device)


@torch.no_grad()
def membership_gap(
    model: DiffusionModel, members: LabeledImages, nonmembers: LabeledImages, generator: torch.Generator,
    num_bands: int = 12, draws: int = 32,
) -> MembershipGap:
    """Estimate :class:`MembershipGap` from ``draws`` (timestep, noise) draws per image on up to as many members
    as non-members; both sets' losses are pooled per band, so no image is matched to another."""
    members = members.take(torch.randperm(len(members), generator=generator)[: len(nonmembers)])
    inner = torch.logspace(0, math.log10(model.num_train_timesteps), num_bands + 1)[1:-1]
    sums = torch.zeros(2, num_bands, dtype=torch.float64)
    counts = torch.zeros(2, num_bands, dtype=torch.float64)
    for row, images in enumerate((members, nonmembers)):
        for _ in range(draws):
            t, noise = draw_timesteps_and_noise(model, images, generator)
            loss = model.denoising_loss(images.images.to(model.device), images.labels.to(model.device), t, noise)
            band = torch.bucketize(t.cpu(), inner, right=True)
            sums[row].index_add_(0, band, loss.double().cpu())
            counts[row].index_add_(0, band, torch.ones_like(band, dtype=torch.float64))
    means = sums / counts.clamp_min(1)
    ratios = torch.where(counts.min(0).values > 0, means[1] / means[0].clamp_min(1e-12), torch.ones(num_bands))
    return MembershipGap(inner, ratios.float())


def membership_matching_loss(
    model: DiffusionModel, original: DiffusionModel, gap: MembershipGap, batch: LabeledImages,
    generator: torch.Generator,
):
    """A closure on one draw: mean_i |L(x_i) - target_i| / target_i, target_i = L_orig(x_i) * gap(t_i).

    Each forget image x_i is driven to the loss the ORIGINAL model would give it were it a non-member: its own
    loss under the original (its difficulty, same timestep and noise) raised by the members-to-non-members ratio
    at that timestep. Two-sided, so the image is not pushed beyond a non-member's level (over-unlearning exposes
    examples too: Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of
    Privacy", arXiv 2403.01218, 2024).
    """
    t, noise = draw_timesteps_and_noise(model, batch, generator)
    x0, labels = batch.images.to(model.device), batch.labels.to(model.device)
    with torch.no_grad():
        target = original.denoising_loss(x0, labels, t, noise) * gap.at(t)
    return lambda: ((model.denoising_loss(x0, labels, t, noise) - target).abs() / target).mean()


def nonmember_anchor_loss(
    model: DiffusionModel, original: DiffusionModel, nonmembers: LabeledImages, like: LabeledImages,
    generator: torch.Generator,
) -> torch.Tensor:
    """MSE(eps_theta(x_t, t, c), stopgrad eps_original(x_t, t, c)) on as many non-members drawn at random as
    ``like`` (a batch) has rows: keeps the model's behaviour on images it never saw where the original had it (a
    scalar)."""
    drawn = torch.randint(len(nonmembers), (global_size(like),), generator=generator)
    batch = share_like(nonmembers.take(drawn), like)
    t, noise = draw_timesteps_and_noise(model, batch, generator)
    x0, labels = batch.images.to(model.device), batch.labels.to(model.device)
    x_t = model.add_noise(x0, noise, t)
    with torch.no_grad():
        target = original.predict_noise(x_t, t, labels)
    return F.mse_loss(model.predict_noise(x_t, t, labels), target)


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
        x_t: the forget images noised at ``t`` (B, C, H, W). t: timesteps (B,). labels: their own conditioning
            (classes (B,) or token ids (B, L)).
        target: stopgrad eps_theta(x_t, t, c') (B, C, H, W), c' another class per image or the anchor prompt.
    """

    x_t: torch.Tensor
    t: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor


def relabel_target(
    model: DiffusionModel, batch: LabeledImages, task: ForgetTask, generator: torch.Generator
) -> RelabelTarget:
    """Draw timesteps and noise for ``batch`` and another conditioning c' per image: a class drawn from the task's
    retained classes, or, for a text model, the task's anchor prompt (EraseDiff's and ESD's SD form); predict the
    target once."""
    t, noise = draw_timesteps_and_noise(model, batch, generator)
    if task.anchor is not None:
        others = task.anchor.to(model.device).expand(len(batch), -1)
    else:
        others = per_row(batch, lambda n: other_class_labels(global_labels(batch), task.retained_classes, generator))
        others = others.to(model.device)
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


def relabel_and_diffusion_losses(
    model: DiffusionModel, draw: RelabelTarget, retain: LabeledImages, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`relabel_loss` on ``draw`` and :func:`diffusion_loss` on ``retain`` (same random numbers), from ONE
    forward of the UNet over both batches stacked, (B_f + B_r, C, H, W): two scalars.

    The UNet's group norms act per image, so the stacked forward gives each image what its own forward would.
    """
    t, noise = draw_timesteps_and_noise(model, retain, generator)
    x0, labels = retain.images.to(model.device), retain.labels.to(model.device)
    x_t = torch.cat([draw.x_t, model.add_noise(x0, noise, t)])
    prediction = model.predict_noise(x_t, torch.cat([draw.t, t]), torch.cat([draw.labels, labels]))
    forget_rows = len(draw.x_t)
    return F.mse_loss(prediction[:forget_rows], draw.target), F.mse_loss(prediction[forget_rows:], noise)
