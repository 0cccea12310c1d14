"""Retraining from scratch on the remaining data: exact unlearning, the gold reference of every audit.

Bourtoule et al., "Machine Unlearning" (IEEE S&P 2021) define exact unlearning as this retraining; the recipe
is the reference model's own (:class:`diffusion.training.TrainConfig`), DDPM training of Ho et al. (NeurIPS 2020).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from numbers import Integral
from typing import ClassVar

import torch
from accelerate import Accelerator
from diffusers import UNet2DModel

from diffusion.model import DiffusionModel
from diffusion.params import Interval
from diffusion.splits import ForgetTask
from diffusion.training import TrainConfig, train_denoiser

from .base import METHODS, StepCallback, Unlearner, UnlearnResult


@METHODS.register
class Retrain(Unlearner):
    """Train a freshly initialised model of the same architecture on D_r with the reference recipe.

    ``steps`` defaults to the recipe's (``TrainConfig().steps``); the initial weights derive from ``seed``.
    """

    name = "retrain"
    _parameter_constraints: ClassVar[dict] = {"steps": [Interval(Integral, 1, None)]}

    def __init__(self, steps: int = TrainConfig().steps):
        self.steps = steps

    def unlearn(
        self,
        model: DiffusionModel,
        task: ForgetTask,
        *,
        seed: int = 0,
        accelerator: Accelerator | None = None,
        quiet: bool = False,
        callback: StepCallback | None = None,
        callback_every: int = 10,
    ) -> UnlearnResult:
        self.check(task, model)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DModel.from_config(model.unet.config)
        fresh = DiffusionModel(unet, copy.deepcopy(model.scheduler), model.device)
        config = dataclasses.replace(TrainConfig(), steps=self.steps, seed=seed)
        record = train_denoiser(fresh, task.retain.images, task.retain.labels, config, accelerator=accelerator,
                                quiet=quiet, desc=self.name)
        seconds = time.perf_counter() - start
        if callback is not None:
            callback(self.steps, fresh, seconds)
        return UnlearnResult(fresh, self.name, self.get_params(), self.steps, seconds,
                             {"loss_retain": record.loss_curve})
