"""Noise aggregation after small-noise injection: membership from how closely a short denoising run agrees with itself.

Li, Chen and Fan, "Noise Aggregation Analysis Driven by Small-Noise Injection: Efficient Membership Inference for
Diffusion Models" (arXiv 2510.21783, 2025): inject a little noise into the image in one step, let the model predict
the noise at a few consecutive timesteps of the way back, and measure how aggregated those predictions are; on a
member they cluster, on a non-member they scatter. The paper's exact statistic was not available to us; this is our
reading of its method: consecutive timesteps are those of a ``steps``-step deterministic DDIM run from ``timestep``
to 0, and the aggregation is minus the mean spread of the predictions around their own mean.
"""

from __future__ import annotations

from numbers import Integral
from typing import ClassVar

import torch

from diffusion.errors import UsageError
from diffusion.params import Interval
from diffusion.seeding import seeded_normal

from .base import ATTACKS, TimestepAttack, ddim_move


@ATTACKS.register
class NoiseAggregation(TimestepAttack):
    """Score = minus mean over pixels of (1/K) sum_k |eps_k - mean_k eps_k|^p over K = ``steps`` model calls.

    x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps with eps drawn from (seed, sample id); eps_k is the prediction at the
    k-th timestep of the DDIM run t, t (K-1)/K, ..., t/K, each step moving x deterministically to the next one.

    Args:
        timestep: the injected noise level, on the 1000-step linear schedule, moved to the model's timestep of equal
            noise level; :meth:`fit` picks it from ``calibration_grid``.
        steps: K, the model calls per sample (the paper's "about 5").
        p: the exponent of the spread (2: the variance of the predictions).
        batch_size: samples per batch.
    """

    name = "noise_aggregation"
    # the smallest reference timesteps leave a short model schedule too few distinct steps below them
    calibration_grid: ClassVar[dict[str, tuple]] = {"timestep": (20, 50, 100, 150, 200, 300)}
    _parameter_constraints: ClassVar[dict] = {
        **TimestepAttack._parameter_constraints, "steps": [Interval(Integral, 2, None)]}

    def __init__(self, timestep: int = 20, steps: int = 5, p: float = 2.0, batch_size: int = 64):
        super().__init__(timestep, p, batch_size)
        self.steps = steps

    def resolve(self, model) -> dict:
        params = super().resolve(model)
        start = params["model_timestep"]
        if start < self.steps:
            raise UsageError(
                f"NoiseAggregation needs {self.steps} distinct model timesteps at or below its timestep; "
                f"'timestep' {self.timestep} maps to model timestep {start} on this "
                f"{model.num_train_timesteps}-step schedule. Raise 'timestep' or lower 'steps'.")
        params["model_timesteps"] = [round(start * (self.steps - k) / self.steps) for k in range(self.steps)]
        return params

    def calls_per_sample(self, params: dict) -> int:
        return self.steps

    def score_batch(self, model, x0, labels, ids, seed, params) -> torch.Tensor:
        timesteps = params["model_timesteps"]
        noise = seeded_normal(seed, ids, x0.shape[1:], stream="noise-aggregation").to(x0.device, x0.dtype)
        x = model.add_noise(x0, noise, torch.full((len(x0),), timesteps[0], device=x0.device, dtype=torch.long))
        predictions = []
        for t_from, t_to in zip(timesteps, [*timesteps[1:], 0]):
            x, eps = ddim_move(model, x, t_from, t_to, labels)
            predictions.append(eps)
        stacked = torch.stack(predictions)  # (K, B, C, H, W)
        spread = (stacked - stacked.mean(0, keepdim=True)).abs().pow(params["p"]).mean(0)
        return -spread.flatten(1).mean(1)
