"""ESD: erase a concept from a text-to-image model by negative guidance on the model's own trajectories.

Gandikota, Materzynska, Fiotto-Kaufman, Bau, "Erasing Concepts from Diffusion Models", ICCV 2023. Each step
samples x_t by DDIM with the model being trained under the concept prompt c (from noise down to a random step),
then regresses eps_theta(x_t, t, c) on the frozen original's negatively guided prediction
eps*(x_t, t) - eta (eps*(x_t, t, c) - eps*(x_t, t)) (eps*(x_t, t): the empty prompt's). No image is needed and no
remaining-data term holds the rest of the model: ESD-x trains only the cross-attention (the paper's choice for a
specific concept), ESD-u everything but it (for concepts that are not tied to a word).
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.params import Interval, Options
from diffusion.splits import ForgetTask
from diffusion.text_model import TRAINABLE_MODULES

from .base import METHODS
from .loop import GradientUnlearner, StepInputs
from .sharding import per_row


@METHODS.register
@dataclass
class ESD(GradientUnlearner):
    """ESD-x (Gandikota et al., ICCV 2023): the cross-attention of the UNet learns to negate the concept.

    Per step: one DDIM step index k ~ U{1, ..., ``ddim_steps`` - 1}; x_T ~ N(0, I) for each forget-batch row
    (B, C, H, W); k guided DDIM steps (guidance ``start_guidance``) with the current weights under the row's concept
    prompt give x_t; loss MSE(eps_theta(x_t, t, c), eps_0 - ``negative_guidance`` (eps_c - eps_0)) with eps_0, eps_c
    the frozen original's predictions under the empty and the concept prompt. The paper's defaults: lr 1e-5,
    1000 steps, batch 1, eta (``negative_guidance``) 1, start guidance 3; here the batch is the forget batch (the
    concept prompts cycled over its rows) and lr/steps are the tiny model's (benchmarks/unlearning.py, text mode).

    Args:
        steps, lr, batch_size: the loop's. modules: which UNet parameters train (:data:`TRAINABLE_MODULES`).
        negative_guidance: eta above. start_guidance: guidance of the sampling that makes x_t.
        ddim_steps: the DDIM schedule x_t is sampled on.
    """

    name = "esd_x"
    _parameter_constraints: ClassVar[dict] = {
        **GradientUnlearner._parameter_constraints,
        "modules": [Options(*TRAINABLE_MODULES)],
        "negative_guidance": [Interval(Real, 0, None)],
        "start_guidance": [Interval(Real, 0, None)],
        "ddim_steps": [Interval(Integral, 2, None)],
    }

    steps: int = 200
    lr: float = 1e-4
    batch_size: int = 32
    modules: str = "cross_attention"
    negative_guidance: float = 1.0
    start_guidance: float = 3.0
    ddim_steps: int = 50
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    ema_start: int = 0

    def check_task(self, task: ForgetTask) -> None:
        if task.anchor is None:
            raise UsageError(f"{self.name} erases a concept from a text-to-image model (--forget-concept); this task "
                             "is a class-conditional one")

    def prepare(self, original: DiffusionModel, task: ForgetTask, generator: torch.Generator, quiet: bool) -> dict:
        """The frozen original and the DDIM schedule x_t is sampled on."""
        scheduler = DDIMScheduler.from_config(original.scheduler.config)
        scheduler.set_timesteps(self.ddim_steps)
        return {"original": original, "scheduler": scheduler}

    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        original, scheduler = step.context["original"], step.context["scheduler"]
        prompts = step.forget.labels.to(model.device)
        k = int(torch.randint(1, self.ddim_steps, (1,), generator=step.generator))
        shape = step.forget.images.shape[1:]
        x = per_row(step.forget, lambda n: torch.randn((n, *shape), generator=step.generator)).to(model.device)
        with torch.no_grad():
            for t in scheduler.timesteps[:k]:
                x = scheduler.step(model.guided_noise(x, t, prompts, self.start_guidance), t, x, eta=0.0).prev_sample
            t = scheduler.timesteps[k].expand(len(x)).to(model.device)
            eps_empty = original.predict_noise(x, t, model.tokenize([""]).to(model.device).expand(len(x), -1))
            eps_concept = original.predict_noise(x, t, prompts)
            target = eps_empty - self.negative_guidance * (eps_concept - eps_empty)
        loss = F.mse_loss(model.predict_noise(x, t, prompts), target)
        step.accelerator.backward(loss)
        return {"loss_forget": loss.item(), "k": float(k)}


@METHODS.register
@dataclass
class ESDU(ESD):
    """ESD-u (Gandikota et al., ICCV 2023): every UNet parameter but the cross-attention learns to negate the
    concept (the paper's choice for concepts not tied to one word, e.g. nudity); otherwise as :class:`ESD`."""

    name = "esd_u"
    modules: str = "non_cross_attention"
