"""Selective Amnesia: forgetting a class as continual learning with EWC and generative replay.

Heng, Soh, "Selective Amnesia: A Continual Learning Approach to Forgetting in Deep Generative Models",
NeurIPS 2023. The forgotten class is remapped onto a surrogate distribution (uniform noise images) while an
elastic weight consolidation penalty (Kirkpatrick et al., PNAS 2017) and replay of the original model's own
samples of the other classes preserve them.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.params import Interval
from diffusion.quality import generate_per_class
from diffusion.splits import ForgetTask

from .base import METHODS
from .loop import BatchCycler, GradientUnlearner, StepInputs
from .losses import diffusion_loss, draw_timesteps_and_noise
from .sharding import global_size, share_like


@dataclass
class AmnesiaContext:
    """What Selective Amnesia computes once from the original model before its updates."""

    fisher: list[torch.Tensor]  # diagonal Fisher information, one tensor per parameter
    anchor: list[torch.Tensor]  # the original weights theta*
    replay: BatchCycler  # generated samples of the retained classes, with their labels


def diagonal_fisher(
    model: DiffusionModel, samples: LabeledImages, generator: torch.Generator, quiet: bool = True
) -> list[torch.Tensor]:
    """Empirical diagonal Fisher E[(grad of the per-sample DDPM loss)^2] over ``samples`` (one random t each)."""
    parameters = model.trainable_parameters()
    fisher = [torch.zeros_like(p) for p in parameters]
    for i in tqdm(range(len(samples)), desc="fisher", disable=quiet, leave=False):
        one = samples.take(slice(i, i + 1))
        t, noise = draw_timesteps_and_noise(model, one, generator)
        loss = model.denoising_loss(one.images.to(model.device), one.labels.to(model.device), t, noise).sum()
        for f, g in zip(fisher, torch.autograd.grad(loss, parameters, allow_unused=True)):
            if g is not None:
                f.add_(g.detach() ** 2)
    return [f / len(samples) for f in fisher]


@METHODS.register
@dataclass
class SelectiveAmnesia(GradientUnlearner):
    """Selective Amnesia for class forgetting (NeurIPS 2023).

    Before the updates: ``fisher_samples_per_class`` samples of every class from the original model give the
    diagonal Fisher F at theta*, and ``replay_samples_per_class`` samples of each retained class form the
    replay set. Each step minimises

        L_ddpm(uniform-noise images labelled with a forgotten class) + L_ddpm(replay batch)
        + ``ewc_weight`` * sum_i F_i (theta_i - theta*_i)^2

    Samples are drawn with DDIM ``sample_steps`` steps. Sample-level deletion is not covered by the method
    (it remaps a condition), so the task must name at least one class.
    """

    name = "selective_amnesia"
    _parameter_constraints: ClassVar[dict] = {
        **GradientUnlearner._parameter_constraints,
        "ewc_weight": [Interval(Real, 0, None)],
        "fisher_samples_per_class": [Interval(Integral, 1, None)],
        "replay_samples_per_class": [Interval(Integral, 1, None)],
        "sample_steps": [Interval(Integral, 1, None)],
    }

    steps: int = 500
    lr: float = 1e-4
    batch_size: int = 128
    ewc_weight: float = 10.0
    fisher_samples_per_class: int = 50
    replay_samples_per_class: int = 100
    sample_steps: int = 50
    grad_clip: float | None = None
    ema_decay: float | None = None
    ema_start: int = 0

    def check_task(self, task: ForgetTask) -> None:
        if task.anchor is not None:
            raise UsageError("selective_amnesia replays generated images under class labels; it serves "
                             "class-conditional models only (for a text-to-image model use erasediff or esd_x)")
        if not task.forget_classes:
            raise UsageError("selective_amnesia needs a forget task naming at least one class (it remaps a class); "
                             "got a sample-level deletion")

    def prepare(self, original: DiffusionModel, task: ForgetTask, generator: torch.Generator, quiet: bool) -> Any:
        sample_seed = int(torch.randint(2**31, (1,), generator=generator))
        images, labels = generate_per_class(original, range(task.num_classes), self.fisher_samples_per_class,
                                            seed=sample_seed, steps=self.sample_steps)
        scratch = original.copy()
        scratch.unet.train()
        fisher = diagonal_fisher(scratch, LabeledImages(images, labels, torch.arange(len(labels))), generator,
                                 quiet)
        images, labels = generate_per_class(original, task.retained_classes, self.replay_samples_per_class,
                                            seed=sample_seed + 1, steps=self.sample_steps)
        replay = BatchCycler(LabeledImages(images, labels, torch.arange(len(labels))), self.batch_size, generator)
        anchor = [p.detach().clone() for p in original.trainable_parameters()]
        return AmnesiaContext(fisher, anchor, replay)

    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        n = global_size(step.forget)
        classes = torch.as_tensor(step.task.forget_classes, dtype=torch.long)
        surrogate = LabeledImages(
            torch.rand((n, *step.forget.images.shape[1:]), generator=step.generator) * 2 - 1,
            classes[torch.randint(len(classes), (n,), generator=step.generator)],
            torch.arange(n),
        )
        loss_forget = diffusion_loss(model, share_like(surrogate, step.forget), step.generator)
        loss_replay = diffusion_loss(model, step.shard.of(step.context.replay.next()), step.generator)
        fisher, anchor = step.context.fisher, step.context.anchor
        penalty = sum((f * (p - a) ** 2).sum() for p, f, a in zip(model.trainable_parameters(), fisher, anchor))
        step.accelerator.backward(loss_forget + loss_replay + self.ewc_weight * penalty)
        penalty = penalty.detach()
        return {"loss_forget": loss_forget.item(), "loss_retain": loss_replay.item(), "ewc": penalty.item()}
