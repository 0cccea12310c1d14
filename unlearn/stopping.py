"""A stopping rule from an internal membership probe: stop unlearning once the forget images look like never-seen
images to a loss attack.

The probe compares the forget images' denoising losses with those of non-member images of the same distribution
(images the model never trained on, which an audit must not score: ``ForgetTask.nonmembers``). Under a model
retrained without the forget set the two groups are exchangeable when they come from the same distribution, so
the target AUC is 0.5. For a whole class that needs unseen images OF THAT CLASS: non-members of other classes sit
at another loss level, and the rule then stops at the wrong point. Hayes et al. ("Inexact Unlearning Needs More
Careful Evaluations to Avoid a False Sense of Privacy", arXiv 2403.01218, 2024) caution that a population-level
stopping signal need not hold per example: the audit's per-example comparison is what tells.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from diffusion.data import LabeledImages
from diffusion.model import DiffusionModel
from diffusion.seeding import seeded_normal

NOISE_LEVELS = (0.01, 0.05, 0.1, 0.2, 0.4)  # fractions of the schedule: t = 10, 50, 100, 200, 400 of 1000


def denoising_losses(model: DiffusionModel, data: LabeledImages, seed: int, batch_size: int = 256) -> np.ndarray:
    """Each image's DDPM loss averaged over :data:`NOISE_LEVELS`, noise fixed per (seed, sample id, t): (N,)."""
    timesteps = [max(1, round(level * model.num_train_timesteps)) for level in NOISE_LEVELS]
    was_training = model.unet.training
    model.unet.eval()
    losses = np.zeros(len(data))
    try:
        with torch.no_grad():
            for first in range(0, len(data), batch_size):
                batch = data.take(slice(first, first + batch_size))
                ids = [int(i) for i in batch.ids]
                x0, labels = batch.images.to(model.device), batch.labels.to(model.device)
                for t in timesteps:
                    noise = seeded_normal(seed, ids, batch.images.shape[1:], stream=f"loss-probe-{t}")
                    step = torch.full((len(ids),), t, device=model.device)
                    loss = model.denoising_loss(x0, labels, step, noise.to(model.device))
                    losses[first : first + len(ids)] += loss.double().cpu().numpy() / len(timesteps)
    finally:
        model.unet.train(was_training)
    return losses


def internal_membership_auc(model: DiffusionModel, members: LabeledImages, nonmembers: LabeledImages,
                            seed: int) -> float:
    """The loss attack's AUC of ``members`` (the forget images) against ``nonmembers``: 0.5 when the forget images
    look like never-seen images, above when they still look trained on."""
    losses = [denoising_losses(model, data, seed) for data in (members, nonmembers)]
    truth = np.r_[np.ones(len(losses[0])), np.zeros(len(losses[1]))]
    return float(roc_auc_score(truth, -np.concatenate(losses)))


class MembershipStopping:
    """Every ``every`` steps, stop when the internal AUC (forget vs non-members) is at most 0.5 + ``margin``."""

    def __init__(self, members: LabeledImages, nonmembers: LabeledImages, every: int, margin: float, seed: int):
        self.members, self.nonmembers = members, nonmembers
        self.every, self.margin, self.seed = every, margin, seed
        self.history: list[tuple[int, float]] = []

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def __call__(self, step: int, model: DiffusionModel) -> bool:
        """Probe ``model`` after ``step`` steps; True when the run should stop."""
        auc = internal_membership_auc(model, self.members, self.nonmembers, self.seed)
        self.history.append((step, auc))
        return auc <= 0.5 + self.margin
