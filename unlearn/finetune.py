"""Fine-tuning on the remaining data only: the simplest unlearning baseline.

Catastrophic forgetting is expected to wash out D_f (Warnecke et al., "Machine Unlearning of Features and
Labels", NDSS 2023, use it as the standard baseline; for diffusion models see Fan et al., "SalUn", ICLR 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusion.model import DiffusionModel

from .base import METHODS
from .loop import GradientUnlearner, StepInputs
from .losses import diffusion_loss


@METHODS.register
@dataclass
class Finetune(GradientUnlearner):
    """Continue DDPM training on D_r only: Adam(lr) on L_r for ``steps`` batches of ``batch_size``."""

    name = "finetune"

    steps: int = 300
    lr: float = 1e-3
    batch_size: int = 128
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    ema_start: int = 0

    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        loss_retain = diffusion_loss(model, step.retain, step.generator)
        step.accelerator.backward(loss_retain)
        return {"loss_retain": loss_retain.item()}
