"""SimA: membership from the norm of ONE noise prediction on the clean image.

Rao, Qu and Moyer, "Score-based Membership Inference on Diffusion Models" (arXiv 2509.25003, 2025): near a
training image the learned score points at a kernel-weighted mean of the training images close to it, so on a
member (already on that mean) the predicted noise is small. One model call per sample.
"""

from __future__ import annotations

import torch

from .base import ATTACKS, TimestepAttack


@ATTACKS.register
class SimA(TimestepAttack):
    """Score = minus mean |eps_theta(x_0, t, c)|^p over pixels: the clean image presented as if at timestep t.

    Args:
        timestep: t on the 1000-step linear schedule, moved to the model's timestep of equal noise level. The
            paper finds small-to-moderate t strongest; :meth:`fit` picks it from ``calibration_grid``.
        p: the exponent of the norm (4, as PIA's distance; 2 is the plain squared norm).
        batch_size: samples per batch.
    """

    name = "sima"

    def __init__(self, timestep: int = 100, p: float = 4.0, batch_size: int = 64):
        super().__init__(timestep, p, batch_size)

    def calls_per_sample(self, params: dict) -> int:
        return 1

    def score_batch(self, model, x0, labels, ids, seed, params) -> torch.Tensor:
        t = torch.full((len(x0),), params["model_timestep"], device=x0.device, dtype=torch.long)
        return -model.predict_noise(x0, t, labels).abs().pow(params["p"]).flatten(1).mean(1)
