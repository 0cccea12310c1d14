"""The loss attack: minus the denoising loss at a few timesteps with fixed noises, each timestep standardised.

Matsumoto, Miura and Yanai, "Membership Inference Attacks against Diffusion Models", IEEE Security and Privacy
Workshops 2023 (arXiv 2302.03262): a training image is denoised better than an unseen one, most visibly at small
and middle timesteps. The loss falls by orders of magnitude from small to large t, so a plain mean is ruled by the
largest-t terms; fitted on a calibration set, each timestep's loss is standardised by its pooled (label-free) mean
and spread before averaging, and the band of timesteps is chosen there (the per-timestep normalisation of the
step-wise attacks of Duan et al., ICML 2023, applied to the loss).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from numbers import Integral
from typing import ClassVar

import numpy as np
import torch

from diffusion.data import LabeledImages
from diffusion.model import DiffusionModel
from diffusion.params import Interval, SequenceOf
from diffusion.seeding import seeded_normal

from .base import ATTACKS, TIMESTEP_GRID, Attack, CalibrationSet, check_timestep, matched_timestep
from .metrics import auc


@ATTACKS.register
class LossAttack(Attack):
    """Score = minus the mean over ``timesteps`` of each timestep's loss ||eps - eps_theta(x_t, t, c)||^2 (mean over
    ``noises_per_timestep`` noises), standardised by the calibration set's mean and spread once fitted.

    Args:
        timesteps: timesteps on the 1000-step linear schedule, moved to the model's timestep of equal noise level.
            The unfitted default spans the middle band where Matsumoto et al. found the loss gap largest (it beats
            the low band on the reference model: benchmarks/results/defaults.md). :meth:`fit` picks the contiguous
            band of ``band_grid`` of highest calibration AUC.
        noises_per_timestep: independent noises per timestep; each is derived from (seed, sample id).
        batch_size: samples per batch (each batch is one model call of batch_size * calls_per_sample images).
    """

    name = "loss"
    band_grid: ClassVar[tuple[int, ...]] = TIMESTEP_GRID
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

    def timestep_losses(self, model, x0, labels, ids, seed, params) -> torch.Tensor:
        """Losses (B, T) for images x0 (B, C, H, W): one column per timestep, averaged over its noises."""
        per_sample = self.calls_per_sample(params)
        t = torch.tensor(params["model_timesteps"], device=x0.device).repeat_interleave(params["noises_per_timestep"])
        noise = seeded_normal(seed, ids, (per_sample, *x0.shape[1:]), stream="loss-attack").to(x0.device)
        x0_rep = x0.repeat_interleave(per_sample, 0)
        labels_rep = labels.repeat_interleave(per_sample, 0) if labels is not None else None
        loss = model.denoising_loss(x0_rep, labels_rep, t.repeat(len(x0)), noise.flatten(0, 1))
        return loss.view(len(x0), len(params["model_timesteps"]), params["noises_per_timestep"]).mean(2)

    def score_batch(self, model, x0, labels, ids, seed, params) -> torch.Tensor:
        losses = self.timestep_losses(model, x0, labels, ids, seed, params)
        if self.is_fitted:
            scale = self.calibration_["scale"]
            mean = torch.tensor([scale[str(t)][0] for t in self.timesteps], dtype=losses.dtype, device=losses.device)
            spread = torch.tensor([scale[str(t)][1] for t in self.timesteps], dtype=losses.dtype,
                                  device=losses.device)
            losses = (losses - mean) / spread
        return -losses.mean(1)

    def fit(self, model: DiffusionModel, calibration: CalibrationSet, *, seed: int = 0, quiet: bool = True
            ) -> LossAttack:
        """Standardise every timestep of ``band_grid`` by its pooled mean and spread over the calibration images
        (members and non-members together: no label is used), then keep the contiguous band whose mean
        standardised score has the highest calibration AUC. Records ``calibration_``: the scale, each timestep's
        AUC and each band's."""
        probe = type(self)(**{**self.get_params(), "timesteps": self.band_grid})

        def losses(samples: LabeledImages) -> np.ndarray:
            params = probe.prepare(model, samples)
            return probe.map_batches(
                model, samples, lambda x0, labels, ids: probe.timestep_losses(model, x0, labels, ids, seed, params),
                quiet=quiet).numpy()

        members, nonmembers = losses(calibration.members), losses(calibration.nonmembers)
        pooled = np.concatenate([members, nonmembers])
        mean, spread = pooled.mean(0), np.maximum(pooled.std(0, ddof=1), 1e-12)
        z_members, z_nonmembers = (members - mean) / spread, (nonmembers - mean) / spread
        grid = self.band_grid
        bands = [(i, j) for i in range(len(grid)) for j in range(i, len(grid))]
        table = [{"timesteps": list(grid[i:j + 1]),
                  "auc": auc(-z_members[:, i:j + 1].mean(1), -z_nonmembers[:, i:j + 1].mean(1))}
                 for i, j in bands]
        best = max(table, key=lambda row: row["auc"])
        self.timesteps = tuple(best["timesteps"])
        self.calibration_ = {
            **calibration.summary(),
            "grid": table,
            "chosen": {"timesteps": list(self.timesteps)},
            "per_timestep_auc": {str(t): auc(-z_members[:, k], -z_nonmembers[:, k])
                                 for k, t in enumerate(grid)},
            "scale": {str(t): [float(mean[k]), float(spread[k])] for k, t in enumerate(grid)},
        }
        logging.getLogger(__name__).info("loss fitted on %d + %d calibration images: band %s (AUC %.3f)",
                                         len(calibration.members), len(calibration.nonmembers), self.timesteps,
                                         best["auc"])
        return self
