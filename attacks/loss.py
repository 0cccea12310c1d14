"""The loss attack: minus the denoising loss at a few timesteps with fixed noises.

Matsumoto, Miura and Yanai, "Membership Inference Attacks against Diffusion Models", IEEE Security and Privacy
Workshops 2023 (arXiv 2302.03262): a training image is denoised better than an unseen one, most visibly at small
and middle timesteps.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import ClassVar

import torch

from diffusion.model import DiffusionModel
from diffusion.params import Interval, SequenceOf
from diffusion.seeding import seeded_normal

from .base import ATTACKS, Attack, check_timestep, matched_timestep


@ATTACKS.register
class LossAttack(Attack):
    """Score = minus the mean of ||eps - eps_theta(x_t, t, c)||^2 over ``timesteps`` x ``noises_per_timestep``.

    Args:
        timesteps: timesteps on the 1000-step linear schedule, moved to the model's timestep of equal noise level.
            The default spans the middle band where Matsumoto et al. found the loss gap largest (it beats the low
            band on the reference model: benchmarks/results/defaults.md).
        noises_per_timestep: independent noises per timestep; each is derived from (seed, sample id).
        batch_size: samples per batch (each batch is one model call of batch_size * calls_per_sample images).
    """

    name = "loss"
    _parameter_constraints: ClassVar[dict] = {
        **Attack._parameter_constraints,
        "timesteps": [SequenceOf(Interval(Integral, 1, 999))],
        "noises_per_timestep": [Interval(Integral, 1, None)],
    }

    def __init__(
        self, timesteps: Sequence[int] = (50, 100, 150, 200, 300), noises_per_timestep: int = 3, batch_size: int = 64
    ):
        super().__init__(batch_size)
        self.timesteps = tuple(timesteps)
        self.noises_per_timestep = noises_per_timestep

    def resolve(self, model: DiffusionModel) -> dict:
        owner = type(self).__name__
        steps = [check_timestep(matched_timestep(t, model), model, "timesteps", owner, 1) for t in self.timesteps]
        return {"model_timesteps": steps}

    def calls_per_sample(self, params: dict) -> int:
        return len(params["model_timesteps"]) * params["noises_per_timestep"]

    def score_batch(self, model, x0, labels, ids, seed, params) -> torch.Tensor:
        per_sample = self.calls_per_sample(params)
        t = torch.tensor(params["model_timesteps"], device=x0.device).repeat_interleave(params["noises_per_timestep"])
        noise = seeded_normal(seed, ids, (per_sample, *x0.shape[1:]), stream="loss-attack").to(x0.device)
        x0_rep = x0.repeat_interleave(per_sample, 0)
        labels_rep = labels.repeat_interleave(per_sample) if labels is not None else None
        loss = model.denoising_loss(x0_rep, labels_rep, t.repeat(len(x0)), noise.flatten(0, 1))
        return -loss.view(len(x0), per_sample).mean(1)
