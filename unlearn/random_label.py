"""Random-label unlearning: denoise the forget images as if they belonged to another class.

The random-label baseline of Fan, Liu, Zhang, Wei, Wong, Liu, "SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import ClassVar

from diffusion.model import DiffusionModel
from diffusion.params import Interval

from .base import METHODS
from .loop import GradientUnlearner, StepInputs
from .losses import diffusion_loss, relabel_loss, relabel_target


@METHODS.register
@dataclass
class RandomLabel(GradientUnlearner):
    """Minimise MSE(eps(x_t, c_f), stopgrad eps(x_t, c')) on D_f + ``alpha`` * L_r on D_r.

    c' is drawn per image from the retained classes other than the image's own; Adam(lr), ``steps`` steps.
    ``alpha`` defaults to 1, not the paper's 1e-3, which collapses utility (benchmarks/results/defaults.md).
    """

    name = "random_label"
    _parameter_constraints: ClassVar[dict] = {
        **GradientUnlearner._parameter_constraints, "alpha": [Interval(Real, 0, None)]
    }

    steps: int = 1000
    lr: float = 1e-4
    batch_size: int = 128
    alpha: float = 1.0
    grad_clip: float | None = None
    ema_decay: float | None = None
    ema_start: int = 0

    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        draw = relabel_target(model, step.forget, step.task, step.generator)
        loss_forget = relabel_loss(model, draw)
        loss_retain = diffusion_loss(model, step.retain, step.generator)
        step.accelerator.backward(loss_forget + self.alpha * loss_retain)
        return {"loss_forget": loss_forget.item(), "loss_retain": loss_retain.item()}
