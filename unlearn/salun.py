"""SalUn: random-label unlearning restricted to the weights most salient for the forget set.

Fan, Liu, Zhang, Wei, Wong, Liu, "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
Both Image Classification and Generation", ICLR 2024 (DDPM setting: alpha 1e-3, 1000 iterations, Adam 1e-4).

``alpha`` defaults to 1 rather than the paper's 1e-3, which lets utility collapse on the digits reference model
(measurements: benchmarks/results/defaults.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import torch

from diffusion.data import LabeledImages
from diffusion.model import DiffusionModel
from diffusion.params import Interval
from diffusion.splits import ForgetTask

from .base import METHODS
from .loop import BatchCycler, StepInputs, gradients
from .losses import diffusion_loss
from .random_label import RandomLabel


def saliency_mask(
    model: DiffusionModel, forget: LabeledImages, sparsity: float, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Masks (one 0/1 tensor per parameter) keeping the top ``1 - sparsity`` of |grad L_f| over all weights.

    The gradient of the DDPM loss is accumulated over the whole forget set in batches of ``batch_size``.
    """
    parameters = model.trainable_parameters()
    for p in parameters:
        p.grad = None
    batches = BatchCycler(forget, batch_size, generator)
    for _ in range(-(-len(forget) // batches.batch_size)):
        diffusion_loss(model, batches.next(), generator).backward()
    magnitudes = [g.abs() for g in gradients(parameters)]
    for p in parameters:
        p.grad = None
    flat = torch.cat([m.flatten() for m in magnitudes])
    keep = max(1, round((1 - sparsity) * flat.numel()))
    threshold = flat.kthvalue(flat.numel() - keep + 1).values
    return [(m >= threshold).to(m.dtype) for m in magnitudes]


@METHODS.register
@dataclass
class SalUn(RandomLabel):
    """Random-label unlearning (see :class:`RandomLabel`) with gradients multiplied by a saliency mask.

    The mask keeps the weights whose |gradient of the forget loss| is in the top ``1 - sparsity`` (global).
    """

    name = "salun"
    _parameter_constraints: ClassVar[dict] = {
        **RandomLabel._parameter_constraints, "sparsity": [Interval(Real, 0, 1, closed="left")]
    }

    sparsity: float = 0.5

    def prepare(self, original: DiffusionModel, task: ForgetTask, generator: torch.Generator, quiet: bool) -> Any:
        scratch = original.copy()
        scratch.unet.train()
        return saliency_mask(scratch, task.forget, self.sparsity, self.batch_size, generator)

    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        logs = super().compute_gradients(model, step)
        for p, mask in zip(model.trainable_parameters(), step.context):
            if p.grad is not None:
                p.grad.mul_(mask)
        return logs
