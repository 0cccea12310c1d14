"""The update loop shared by the methods that unlearn with optimizer steps on batches of D_f and D_r."""

from __future__ import annotations

import logging
import math
import time
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar

import torch
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from diffusion.data import LabeledImages
from diffusion.errors import RunError
from diffusion.model import DiffusionModel
from diffusion.params import Interval
from diffusion.seeding import derive_seed
from diffusion.splits import ForgetTask
from diffusion.training import autocast, make_accelerator

from .base import RunOptions, Unlearner, UnlearnResult
from .sharding import Shard
from .stopping import MembershipStopping

logger = logging.getLogger(__name__)

ONE_PROCESS = Shard()


class BatchCycler:
    """Endless mini-batches of a :class:`LabeledImages` subset: shuffled epochs drawn from ``generator``.

    The batch size is ``min(batch_size, len(data))``, so a forget set smaller than a batch is used whole (rounded
    down to a multiple of the processes of ``shard``, which share every batch equally).
    """

    def __init__(self, data: LabeledImages, batch_size: int, generator: torch.Generator, shard: Shard = ONE_PROCESS):
        self.data = data
        self.batch_size = shard.usable(min(batch_size, len(data)))
        self.generator = generator
        self._order = torch.randperm(len(data), generator=generator)
        self._cursor = 0

    def next(self) -> LabeledImages:
        if self._cursor + self.batch_size > len(self.data):
            self._order, self._cursor = torch.randperm(len(self.data), generator=self.generator), 0
        index = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return self.data.take(index)


def check_finite(method: str, step: int, logs: dict[str, float]) -> None:
    """Raise :class:`RunError` (one line) when a logged loss is NaN or infinite."""
    for key, value in logs.items():
        if not math.isfinite(value):
            raise RunError(
                f"{method}: {key} became {value} at step {step}; lower the learning rate or check the model weights"
            )


def gradients(parameters: Sequence[torch.nn.Parameter]) -> list[torch.Tensor]:
    """The current ``.grad`` of each parameter (zeros where there is none)."""
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]


@dataclass
class StepInputs:
    """What one update of a :class:`GradientUnlearner` sees: the task, this process's share of this step's forget
    and remain batches, the result of :meth:`GradientUnlearner.prepare`, the seeded generator (the same on every
    process), the accelerator and this process's :class:`Shard` of any other global batch."""

    task: ForgetTask
    forget: LabeledImages
    retain: LabeledImages
    context: Any
    generator: torch.Generator
    accelerator: Accelerator
    shard: Shard


class GradientUnlearner(Unlearner):
    """The loop shared by the methods that unlearn with optimizer steps on batches of D_f and D_r.

    A subclass stores ``steps``, ``lr``, ``batch_size``, ``grad_clip`` (None: off), ``ema_decay`` (None: off)
    and ``ema_start`` in ``__init__`` (their constraints are :attr:`_parameter_constraints`, to extend), and
    implements :meth:`compute_gradients`; it may override :meth:`prepare` for work done once before the loop
    (a saliency mask, a Fisher matrix, replay samples).
    The Adam optimizer, clipping, the EMA, NaN checks, progress bar, timing and curves live here. The EMA (diffusers'
    :class:`EMAModel`, ``update_after_step=ema_start``) copies the weights through step ``ema_start + 1``, then
    averages them with the constant ``ema_decay``; the average is what is returned (and what a callback sees).
    On P processes (an Accelerate launch) every process draws the same global batches and random numbers and
    computes on its own equal share of the rows (:mod:`unlearn.sharding`); the gradients and logged values are
    averaged, so P processes take the one-process steps up to floating-point summation order when the batch sizes
    are multiples of P (otherwise a batch drops its last rows, at most P - 1).
    """

    _parameter_constraints: ClassVar[dict] = {
        "steps": [Interval(Integral, 1, None)],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None)],
        "grad_clip": [None, Interval(Real, 0, None, closed="neither")],
        "ema_decay": [None, Interval(Real, 0, 1, closed="neither")],
        "ema_start": [Interval(Integral, 0, None)],
    }

    steps: int
    lr: float
    batch_size: int
    grad_clip: float | None
    ema_decay: float | None
    ema_start: int
    modules: str = "full"  # a text model's UNet parameters that train (a field of the methods that choose)

    def prepare(self, original: DiffusionModel, task: ForgetTask, generator: torch.Generator, quiet: bool) -> Any:
        """Work done once before the loop; the result is passed to every :meth:`compute_gradients` call."""
        return None

    def stopping_rule(self, task: ForgetTask, seed: int) -> MembershipStopping | None:
        """The rule that may end the run before ``steps`` (None: run every step)."""
        return None

    @abstractmethod
    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        """Leave this step's update direction in the parameters' ``.grad``; return the values to log."""

    def run(self, model: DiffusionModel, task: ForgetTask, options: RunOptions) -> UnlearnResult:
        start = time.perf_counter()
        paused = 0.0
        work = model.copy()
        work.train_only(self.modules)
        if options.gradient_checkpointing:
            work.enable_gradient_checkpointing()
        work.unet.train()
        accelerator = options.accelerator or make_accelerator(work)
        shard = Shard(accelerator.process_index, accelerator.num_processes)
        generator = torch.Generator().manual_seed(derive_seed(options.seed, self.name, 0))  # the same on all
        context = self.prepare(model, task, generator, options.quiet)
        parameters = work.trainable_parameters()
        optimizer = torch.optim.Adam(parameters, lr=self.lr)
        ema = None
        if self.ema_decay:
            ema = EMAModel(parameters, decay=self.ema_decay, min_decay=self.ema_decay, update_after_step=self.ema_start)
        forget_batches = BatchCycler(task.forget, self.batch_size, generator, shard)
        retain_batches = BatchCycler(task.retain, self.batch_size, generator, shard)
        curves: dict[str, list[float]] = defaultdict(list)
        rule, done = self.stopping_rule(task, options.seed), self.steps
        bar = tqdm(range(self.steps), desc=self.name,
                   disable=options.quiet or not accelerator.is_local_main_process, leave=False)
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            inputs = StepInputs(task, shard.of(forget_batches.next()), shard.of(retain_batches.next()), context,
                                generator, accelerator, shard)
            with autocast(work.device, options.mixed_precision):
                logs = self.compute_gradients(work, inputs)
            if shard.count > 1:
                for p in parameters:
                    p.grad = accelerator.reduce(gradients([p])[0], reduction="mean")
                values = accelerator.reduce(torch.tensor(list(logs.values()), dtype=torch.float64), reduction="mean")
                logs = dict(zip(logs, values.tolist()))
            check_finite(self.name, step, logs)
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.step(parameters)
            for key, value in logs.items():
                curves[key].append(value)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(logs.items())[:3]})
            stop = False
            if rule is not None and rule.due(step + 1):
                with averaged(ema, parameters):  # the weights the method would return
                    stop = rule(step + 1, work)
                curves["internal_auc"].append(rule.history[-1][1])
            if options.callback is not None and (step + 1) % options.callback_every == 0:
                pause = time.perf_counter()
                with averaged(ema, parameters):
                    options.callback(step + 1, work, pause - start - paused)
                paused += time.perf_counter() - pause
            if stop:
                done = step + 1
                logger.info("%s: stopped after %d steps (internal AUC %.3f)", self.name, done, rule.history[-1][1])
                break
        if ema is not None:
            ema.copy_to(parameters)
        work.unet.eval()
        seconds = time.perf_counter() - start - paused
        logger.info("%s: %d steps in %.1f s", self.name, done, seconds)
        return UnlearnResult(work, self.name, self.get_params(), done, seconds, dict(curves))


@contextmanager
def averaged(ema: EMAModel | None, parameters: list[torch.nn.Parameter]) -> Iterator[None]:
    """Within the block the parameters hold the EMA weights (when there is an EMA); restored after."""
    if ema is None:
        yield
        return
    ema.store(parameters)
    ema.copy_to(parameters)
    try:
        yield
    finally:
        ema.restore(parameters)
