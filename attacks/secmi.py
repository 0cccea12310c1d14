"""SecMI_stat: the step-wise error of a deterministic DDIM round trip near the data.

Duan, Kong, Wang, Shi and Xu, "Are Diffusion Models Vulnerable to Membership Inference Attacks?", ICML 2023
(arXiv 2302.01316). The image is inverted with deterministic DDIM steps of size k up to t_sec - k, pushed one
step further to t_sec, denoised one step back, and compared with the state it left: members come back closer.
"""

from __future__ import annotations

from numbers import Integral
from typing import ClassVar

import torch

from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.params import Interval

from .base import ATTACKS, Attack, check_timestep, ddim_move, matched_timestep


@ATTACKS.register
class SecMI(Attack):
    """Score = minus ||denoise(invert(x_{t_sec-k})) - x_{t_sec-k}||^2 (pixel mean); t_sec / k + 1 model calls.

    Args:
        t_sec: the timestep of the round trip on the 1000-step linear schedule (the paper's 100); on the model it
            becomes the timestep of equal noise level, rounded to a multiple of the step. :meth:`fit` picks it from
            ``calibration_grid``.
        interval: the DDIM step k on that schedule (the paper's 10); it must divide ``t_sec`` at least twice.
            The model keeps the number of steps t_sec / k.
        batch_size: samples per batch.
    """

    name = "secmi"
    calibration_grid: ClassVar[dict[str, tuple]] = {"t_sec": (20, 50, 100, 150, 200, 300)}
    _parameter_constraints: ClassVar[dict] = {
        **Attack._parameter_constraints,
        "t_sec": [Interval(Integral, 2, 999)],
        "interval": [Interval(Integral, 1, None)],
    }

    def __init__(self, t_sec: int = 100, interval: int = 10, batch_size: int = 64):
        super().__init__(batch_size)
        self.t_sec = t_sec
        self.interval = interval

    def resolve(self, model: DiffusionModel) -> dict:
        owner = type(self).__name__
        if self.t_sec % self.interval or self.t_sec == self.interval:
            raise UsageError(
                f"The 'interval' parameter of {owner} must divide 't_sec' at least twice. "
                f"Got interval {self.interval} and t_sec {self.t_sec} instead."
            )
        num_steps = self.t_sec // self.interval
        interval = max(1, round(matched_timestep(self.t_sec, model) / num_steps))
        t_sec = check_timestep(interval * num_steps, model, "t_sec", owner, 2)
        return {"model_t_sec": t_sec, "model_interval": interval}

    def calls_per_sample(self, params: dict) -> int:
        return params["model_t_sec"] // params["model_interval"] + 1

    def round_trip(
        self, model: DiffusionModel, x0: torch.Tensor, labels: torch.Tensor | None, params: dict
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The states (x, x_back), both (B, C, H, W): x0 inverted by DDIM to t_sec - k, and x after one more
        inversion step to t_sec and one denoising step back."""
        t_sec, k = params["model_t_sec"], params["model_interval"]
        x, t = x0, 0
        for t_next in range(k, t_sec, k):
            x, _ = ddim_move(model, x, t, t_next, labels)
            t = t_next
        x_up, _ = ddim_move(model, x, t, t_sec, labels)
        x_back, _ = ddim_move(model, x_up, t_sec, t, labels)
        return x, x_back

    def score_batch(self, model, x0, labels, ids, seed, params) -> torch.Tensor:
        x, x_back = self.round_trip(model, x0, labels, params)
        return -(x_back - x).square().flatten(1).mean(1)
