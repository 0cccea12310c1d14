"""Gradient ascent (NegGrad) on the forget set, capped so that it cannot diverge.

Golatkar, Achille, Soatto, "Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep Networks",
CVPR 2020 (the NegGrad baseline); Thudi et al., "Unrolling SGD", EuroS&P 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import ClassVar

from diffusion.model import DiffusionModel
from diffusion.params import Interval

from .base import METHODS
from .loop import GradientUnlearner, StepInputs
from .losses import diffusion_loss, draw_timesteps_and_noise


@METHODS.register
@dataclass
class GradientAscent(GradientUnlearner):
    """Ascend the DDPM loss on D_f: minimise -mean(min(L_f per sample, ``max_forget_loss``)) + retain_weight * L_r.

    The cap stops pushing a sample once its loss exceeds ``max_forget_loss`` (a model predicting zeros scores
    1.0), which keeps the ascent from diverging; ``retain_weight`` > 0 adds the remain loss (NegGrad+).
    """

    name = "gradient_ascent"
    _parameter_constraints: ClassVar[dict] = {
        **GradientUnlearner._parameter_constraints,
        "max_forget_loss": [Interval(Real, 0, None, closed="neither")],
        "retain_weight": [Interval(Real, 0, None)],
    }

    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 128
    max_forget_loss: float = 2.0
    retain_weight: float = 0.0
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    ema_start: int = 0

    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        t, noise = draw_timesteps_and_noise(model, step.forget, step.generator)
        x0, labels = step.forget.images.to(model.device), step.forget.labels.to(model.device)
        per_sample = model.denoising_loss(x0, labels, t, noise)
        loss = -per_sample.clamp(max=self.max_forget_loss).mean()
        logs = {"loss_forget": per_sample.mean().item()}
        if self.retain_weight > 0:
            loss_retain = diffusion_loss(model, step.retain, step.generator)
            loss = loss + self.retain_weight * loss_retain
            logs["loss_retain"] = loss_retain.item()
        step.accelerator.backward(loss)
        return logs
