"""Retraining from scratch on the remaining data: exact unlearning, the gold reference of every audit.

Bourtoule et al., "Machine Unlearning" (IEEE S&P 2021) define exact unlearning as this retraining; the recipe
is the reference model's own (:class:`diffusion.training.TrainConfig`), DDPM training of Ho et al. (NeurIPS 2020).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from numbers import Integral, Real
from typing import ClassVar

from diffusion.fine_tune import fine_tune
from diffusion.model import DiffusionModel
from diffusion.params import Interval
from diffusion.splits import ForgetTask
from diffusion.training import TrainConfig

from .base import METHODS, RunOptions, Unlearner, UnlearnResult


@METHODS.register
@dataclass
class Retrain(Unlearner):
    """Train a freshly initialised model of the same architecture on D_r with the reference recipe (a text model on
    the remaining images' captions, some dropped to the empty prompt for guidance).

    ``steps``, ``batch_size`` and ``lr`` default to the recipe's for the model's kind (:meth:`TrainConfig.for_kind`;
    a model trained elsewhere states its own in a recipe file, :mod:`diffusion.recipe`); the initial weights derive
    from ``seed``.
    """

    name = "retrain"
    _parameter_constraints: ClassVar[dict] = {"steps": [None, Interval(Integral, 1, None)],
                                              "batch_size": [None, Interval(Integral, 1, None)],
                                              "lr": [None, Interval(Real, 0, None, closed="neither")]}

    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None

    def run(self, model: DiffusionModel, task: ForgetTask, options: RunOptions) -> UnlearnResult:
        start = time.perf_counter()
        fresh = model.reinitialized(options.seed)
        given = {key: value for key, value in self.get_params().items() if value is not None}
        config = TrainConfig.for_kind(model.recipe_kind, seed=options.seed, **given)
        return train_on_remaining(fresh, task, config, options, self, start)


def train_on_remaining(model: DiffusionModel, task: ForgetTask, config: TrainConfig, options: RunOptions,
                       method: Unlearner, started: float) -> UnlearnResult:
    """``model`` (fresh, or a base) trained in place on D_r with ``config`` (a rank-R LoRA when
    ``config.lora_rank``, :func:`~diffusion.fine_tune.fine_tune`), as ``method``'s result: the exact references'
    common step (a text model on the remaining images' captions, some dropped to the empty prompt)."""
    labels = task.retain.labels if model.conditioning != "none" else None
    record = fine_tune(model, task.retain.images, labels, config, accelerator=options.accelerator,
                       quiet=options.quiet, desc=method.name,
                       conditions=model.training_conditions(config.caption_dropout))
    seconds = time.perf_counter() - started
    if options.callback is not None:
        options.callback(config.steps, model, seconds)
    return UnlearnResult(model, method.name, method.get_params(), config.steps, seconds,
                         {"loss_retain": record.loss_curve})
