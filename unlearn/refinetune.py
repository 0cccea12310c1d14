"""Fine-tuning the base again on the remaining data: exact unlearning of a fine-tuned model.

A model fine-tuned from a pretrained base never saw the forget set in its base's training, only in the fine-tune;
the model that never saw it at all is the base fine-tuned on the remaining fine-tuning data with the same recipe
(exact unlearning, Bourtoule et al., "Machine Unlearning", IEEE S&P 2021, applied to the fine-tuning stage). It costs
a fine-tune, where retraining from scratch (unlearn/retrain.py) would cost a pretraining and give a model that never
had the base's knowledge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from numbers import Integral, Real
from typing import ClassVar

from diffusion.errors import UsageError
from diffusion.loading import load_model
from diffusion.model import DiffusionModel
from diffusion.params import Interval, Text
from diffusion.splits import ForgetTask
from diffusion.training import TrainConfig

from .base import METHODS, RunOptions, Unlearner, UnlearnResult
from .retrain import train_on_remaining


@METHODS.register
@dataclass
class RefineTune(Unlearner):
    """Fine-tune ``base`` (a folder or ``hf://owner/name``; required) on D_r with the original fine-tune's recipe:
    ``steps``, ``batch_size``, ``lr``, ``ema_decay`` and ``lora_rank`` (0: every weight; R: a rank-R LoRA merged at
    the end).

    ``base_fingerprint`` (optional): the base's weights when the original was fine-tuned
    (:meth:`DiffusionModel.fingerprint`); a base that has changed since is refused. The base must have the fine-tuned
    model's architecture; the fine-tune's sampling seed derives from the run's seed.
    """

    name = "refinetune"
    _parameter_constraints: ClassVar[dict] = {
        "base": [None, Text()],
        "base_fingerprint": [None, Text()],
        "steps": [Interval(Integral, 1, None)],
        "batch_size": [Interval(Integral, 1, None)],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "ema_decay": [Interval(Real, 0, 1, closed="left")],
        "lora_rank": [Interval(Integral, 0, 1024)],
    }

    base: str | None = None
    base_fingerprint: str | None = None
    steps: int = 300
    batch_size: int = 128
    lr: float = 1e-4
    ema_decay: float = 0.999
    lora_rank: int = 0

    def load_base(self, model: DiffusionModel) -> DiffusionModel:
        """The base on ``model``'s device; a :class:`UsageError` when it is not the recorded base or not of
        ``model``'s architecture."""
        base = load_model(self.base, device=model.device)
        if self.base_fingerprint is not None and base.fingerprint() != self.base_fingerprint:
            raise UsageError(f"base model '{self.base}' has other weights (fingerprint {base.fingerprint()[:12]}) "
                             f"than the model was fine-tuned from ({self.base_fingerprint[:12]}); give that base")
        shapes = {name: tuple(p.shape) for name, p in model.unet.state_dict().items()}
        if type(base) is not type(model) or shapes != {n: tuple(p.shape) for n, p in base.unet.state_dict().items()}:
            raise UsageError(f"base model '{self.base}' does not have the fine-tuned model's architecture; give the "
                             "model it was fine-tuned from")
        return base

    def check(self, task: ForgetTask, model: DiffusionModel | None = None) -> None:
        super().check(task, model)
        if self.base is None:
            raise UsageError("refinetune fine-tunes a base model again: give its 'base' (a folder or hf://owner/name)")
        if model is not None:
            self.load_base(model)

    def run(self, model: DiffusionModel, task: ForgetTask, options: RunOptions) -> UnlearnResult:
        start = time.perf_counter()
        tuned = self.load_base(model)
        config = TrainConfig.for_kind(model.recipe_kind, seed=options.seed, steps=self.steps,
                                      batch_size=self.batch_size, lr=self.lr, ema_decay=self.ema_decay,
                                      lora_rank=self.lora_rank)
        return train_on_remaining(tuned, task, config, options, self, start)
