"""PIA and PIAN: proximal initialisation from the model's own noise estimate at t = 0.

Kong, Li, Wang, Zhong, Meng and Jiang, "An Efficient Membership Inference Attack for the Diffusion Model by
Proximal Initialization", ICLR 2024 (arXiv 2305.18355). eps_0 = eps_theta(x_0, 0) stands in for the noise; x_t is
rebuilt deterministically from it and a member's prediction at t returns to eps_0 more closely. PIAN first
rescales eps_0 so that its mean absolute value is that of a standard normal (sqrt(2 / pi)).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from .base import ATTACKS, TimestepAttack


@ATTACKS.register
class PIA(TimestepAttack):
    """Score = minus mean |eps_theta(x_t, t, c) - eps_0|^p with x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps_0: 2 calls.

    Args:
        timestep: the attack timestep on the 1000-step linear schedule (the paper's 200 for DDPM), moved to the
            model's timestep of equal noise level; :meth:`fit` picks it from ``calibration_grid``.
        p: the exponent of the distance (the paper's l_4).
        batch_size: samples per batch.
    """

    name = "pia"
    normalize_epsilon: ClassVar[bool] = False

    def __init__(self, timestep: int = 200, p: float = 4.0, batch_size: int = 64):
        super().__init__(timestep, p, batch_size)

    def calls_per_sample(self, params: dict) -> int:
        return 2

    def score_batch(self, model, x0, labels, ids, seed, params) -> torch.Tensor:
        zero = torch.zeros(len(x0), device=x0.device, dtype=torch.long)
        eps0 = model.predict_noise(x0, zero, labels)
        if self.normalize_epsilon:
            eps0 = eps0 / eps0.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1) * math.sqrt(2 / math.pi)
        t = torch.full_like(zero, params["model_timestep"])
        eps_t = model.predict_noise(model.add_noise(x0, eps0, t), t, labels)
        return -(eps_t - eps0).abs().pow(params["p"]).flatten(1).mean(1)


@ATTACKS.register
class PIAN(PIA):
    """PIA with eps_0 rescaled to a standard normal's mean absolute value before x_t is built (same cost)."""

    name = "pian"
    normalize_epsilon = True
