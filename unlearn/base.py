"""The interface every unlearning method implements, the record it returns, and the shared update loop."""

from __future__ import annotations

import inspect
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from diffusion.data import ImageDataset, LabeledImages
from diffusion.errors import RunError, UsageError
from diffusion.model import DiffusionModel
from diffusion.seeding import derive_seed
from diffusion.splits import ForgetSpec, Splits
from diffusion.training import make_accelerator

logger = logging.getLogger(__name__)

# Called every ``callback_every`` steps with (step, model with the weights the method would return, seconds of
# unlearning so far, callback time excluded). Benchmarks use it to time how fast a method reaches a goal.
StepCallback = Callable[[int, DiffusionModel, float], None]


@dataclass(frozen=True, eq=False)
class ForgetTask:
    """What an unlearner is given: the forget set D_f, the remaining data D_r, and the class structure.

    Attributes:
        forget: member images to erase (images (N_f, C, H, W), labels, ids).
        retain: the remaining members D_r.
        forget_classes: classes erased entirely (empty for sample-level deletion).
        num_classes: number of class labels of the model.
    """

    forget: LabeledImages
    retain: LabeledImages
    forget_classes: tuple[int, ...]
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.forget) == 0:
            raise UsageError("the forget set is empty; give at least one member image to forget")
        if len(self.retain) == 0:
            raise UsageError("the remaining set is empty; at least one member image must be retained")
        if not self.retained_classes:
            raise UsageError(f"cannot forget every class ({self.num_classes}); at least one class must be retained")

    @classmethod
    def from_spec(cls, dataset: ImageDataset, splits: Splits, spec: ForgetSpec) -> ForgetTask:
        """The task for a deletion request ``spec`` on the training members of ``splits`` (validated first)."""
        spec.validate(dataset.labels, splits, dataset.num_classes)
        return cls(
            forget=dataset.select(spec.forget_ids(dataset.labels, splits)),
            retain=dataset.select(spec.retain_ids(dataset.labels, splits)),
            forget_classes=spec.classes,
            num_classes=dataset.num_classes,
        )

    @property
    def retained_classes(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.num_classes) if c not in self.forget_classes)

    def check_model(self, model: DiffusionModel) -> None:
        """Raise :class:`UsageError` unless ``model`` is conditioned on this task's classes."""
        num_classes = model.require_class_conditioning("unlearning")
        if num_classes != self.num_classes:
            raise UsageError(
                f"the model has {num_classes} class labels but the forget task has {self.num_classes}; "
                "use the data the model was trained on"
            )


@dataclass
class UnlearnResult:
    """A NEW model (the input model is never changed) and how it was made.

    ``curves`` maps a quantity (e.g. ``loss_retain``, ``loss_forget``, ``lambda``) to its value per step.
    """

    model: DiffusionModel
    method: str
    params: dict
    steps: int
    seconds: float
    curves: dict[str, list[float]] = field(default_factory=dict)


class Unlearner(ABC):
    """An unlearning method. Parameters are set in ``__init__`` and the work happens in :meth:`unlearn`."""

    name: ClassVar[str]

    @abstractmethod
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
        """Return an unlearned copy of ``model``; ``model`` itself must stay unchanged."""

    @classmethod
    def param_names(cls) -> list[str]:
        """The names of the ``__init__`` parameters (scikit-learn style: each is stored under its own name)."""
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    def get_params(self) -> dict:
        """The method's parameters, JSON-ready (recorded with the result)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


def param_error(owner: str, name: str, expected: str, got: Any) -> UsageError:
    """A scikit-learn style error: "The 'x' parameter of Y must be ... Got ... instead."."""
    return UsageError(f"The '{name}' parameter of {owner} must be {expected}. Got {got!r} instead.")


def check_positive(owner: str, **values: float) -> None:
    """Raise :class:`UsageError` for any value that is not a number > 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not (isinstance(value, (int, float)) and value > 0):
            raise param_error(owner, name, "> 0", value)


def check_int(owner: str, minimum: int, **values: int) -> None:
    """Raise :class:`UsageError` for any value that is not an int >= ``minimum``."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise param_error(owner, name, f"an int >= {minimum}", value)


def check_optional_positive(owner: str, **values: float | None) -> None:
    """Like :func:`check_positive`, with None allowed (a switched-off option)."""
    check_positive(owner, **{name: value for name, value in values.items() if value is not None})


def check_choice(owner: str, name: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise :class:`UsageError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise param_error(owner, name, f"one of {list(allowed)}", value)


class BatchCycler:
    """Endless mini-batches of a :class:`LabeledImages` subset: shuffled epochs drawn from ``generator``.

    The batch size is ``min(batch_size, len(data))``, so a forget set smaller than a batch is used whole.
    """

    def __init__(self, data: LabeledImages, batch_size: int, generator: torch.Generator):
        self.data = data
        self.batch_size = min(batch_size, len(data))
        self.generator = generator
        self._order = torch.randperm(len(data), generator=generator)
        self._cursor = 0

    def next(self) -> LabeledImages:
        if self._cursor + self.batch_size > len(self.data):
            self._order, self._cursor = torch.randperm(len(self.data), generator=self.generator), 0
        index = self._order[self._cursor : self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return self.data.take(index)


def draw_timesteps_and_noise(
    model: DiffusionModel, batch: LabeledImages, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform timesteps (B,) and standard normal noise (B, C, H, W) for ``batch``, on the model's device."""
    t = torch.randint(0, model.num_train_timesteps, (len(batch),), generator=generator)
    noise = torch.randn(batch.images.shape, generator=generator)
    return t.to(model.device), noise.to(model.device)


def diffusion_loss(model: DiffusionModel, batch: LabeledImages, generator: torch.Generator) -> torch.Tensor:
    """The DDPM training loss on ``batch`` (a scalar), with its own timesteps and noise from ``generator``."""
    t, noise = draw_timesteps_and_noise(model, batch, generator)
    return model.denoising_loss(batch.images.to(model.device), batch.labels.to(model.device), t, noise).mean()


def other_class_labels(
    labels: torch.Tensor, allowed: Sequence[int], generator: torch.Generator
) -> torch.Tensor:
    """For each label (B,), a class drawn uniformly from ``allowed`` other than the label itself: (B,)."""
    allowed_t = torch.as_tensor(list(allowed), dtype=torch.long)
    out = torch.empty_like(labels)
    for i, label in enumerate(labels.tolist()):
        choices = allowed_t[allowed_t != label]
        if len(choices) == 0:
            raise UsageError(f"no class other than {label} is left to relabel to; retain at least two classes")
        out[i] = choices[torch.randint(len(choices), (1,), generator=generator)]
    return out


@dataclass(frozen=True, eq=False)
class RelabelTarget:
    """One draw of the random-label forget loss: noisy forget images and the prediction they are pulled onto.

    Attributes:
        x_t: the forget images noised at ``t`` (B, C, H, W). t: timesteps (B,). labels: their own classes (B,).
        target: stopgrad eps_theta(x_t, t, c') (B, C, H, W), c' another class per image.
    """

    x_t: torch.Tensor
    t: torch.Tensor
    labels: torch.Tensor
    target: torch.Tensor


def relabel_target(
    model: DiffusionModel, batch: LabeledImages, allowed: Sequence[int], generator: torch.Generator
) -> RelabelTarget:
    """Draw timesteps, noise and other classes c' from ``allowed`` for ``batch``; predict the target once."""
    t, noise = draw_timesteps_and_noise(model, batch, generator)
    others = other_class_labels(batch.labels, allowed, generator).to(model.device)
    x_t = model.add_noise(batch.images.to(model.device), noise, t)
    with torch.no_grad():
        target = model.predict_noise(x_t, t, others)
    return RelabelTarget(x_t, t, batch.labels.to(model.device), target)


def relabel_loss(model: DiffusionModel, draw: RelabelTarget) -> torch.Tensor:
    """MSE(eps_theta(x_t, t, c), stopgrad eps_theta(x_t, t, c')): a scalar.

    The forget images are pulled onto the model's own trajectory for a different class (the random-label
    loss of SalUn, Fan et al. ICLR 2024, and EraseDiff's ``relabel`` target).
    """
    return F.mse_loss(model.predict_noise(draw.x_t, draw.t, draw.labels), draw.target)


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
    """What one update of a :class:`GradientUnlearner` sees: the task, this step's forget and remain batches,
    the result of :meth:`GradientUnlearner.prepare`, the seeded generator and the accelerator."""

    task: ForgetTask
    forget: LabeledImages
    retain: LabeledImages
    context: Any
    generator: torch.Generator
    accelerator: Accelerator


class GradientUnlearner(Unlearner):
    """The loop shared by the methods that unlearn with optimizer steps on batches of D_f and D_r.

    A subclass stores ``steps``, ``lr``, ``batch_size``, ``grad_clip`` (None: off), ``ema_decay`` (None: off)
    and ``ema_start`` in ``__init__``, and implements :meth:`compute_gradients`; it may override :meth:`prepare`
    for work done once before the loop (a saliency mask, a Fisher matrix, replay samples), and :meth:`trainable` /
    :meth:`mask`.
    The Adam optimizer, clipping, the EMA, NaN checks, progress bar, timing and curves live here. The EMA (diffusers'
    :class:`EMAModel`, ``update_after_step=ema_start``) copies the weights through step ``ema_start + 1``, then
    averages them with the constant ``ema_decay``; the average is what is returned (and what a callback sees).
    On several processes (an Accelerate launch), each draws its own batches and gradients are averaged.
    """

    steps: int
    lr: float
    batch_size: int
    grad_clip: float | None
    ema_decay: float | None
    ema_start: int

    def validate(self, task: ForgetTask) -> None:
        """Check parameters and task before any work; raise :class:`UsageError`."""
        owner = type(self).__name__
        check_int(owner, 1, steps=self.steps, batch_size=self.batch_size)
        check_positive(owner, lr=self.lr)
        check_optional_positive(owner, grad_clip=self.grad_clip)
        check_int(owner, 0, ema_start=self.ema_start)
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise param_error(owner, "ema_decay", "None or in (0, 1)", self.ema_decay)

    def prepare(self, original: DiffusionModel, task: ForgetTask, generator: torch.Generator, quiet: bool) -> Any:
        """Work done once before the loop; the result is passed to every :meth:`compute_gradients` call."""
        return None

    @abstractmethod
    def compute_gradients(self, model: DiffusionModel, step: StepInputs) -> dict[str, float]:
        """Leave this step's update direction in the parameters' ``.grad``; return the values to log."""

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
        task.check_model(model)
        self.validate(task)
        start = time.perf_counter()
        paused = 0.0
        work = model.copy()
        work.unet.train()
        accelerator = accelerator or make_accelerator(work)
        generator = torch.Generator().manual_seed(derive_seed(seed, self.name, accelerator.process_index))
        context = self.prepare(model, task, generator, quiet)
        parameters = [p for p in work.unet.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(parameters, lr=self.lr)
        ema = None
        if self.ema_decay:
            ema = EMAModel(parameters, decay=self.ema_decay, min_decay=self.ema_decay, update_after_step=self.ema_start)
        forget_batches = BatchCycler(task.forget, self.batch_size, generator)
        retain_batches = BatchCycler(task.retain, self.batch_size, generator)
        curves: dict[str, list[float]] = defaultdict(list)
        bar = tqdm(range(self.steps), desc=self.name, disable=quiet or not accelerator.is_local_main_process,
                   leave=False)
        for step in bar:
            optimizer.zero_grad(set_to_none=True)
            inputs = StepInputs(task, forget_batches.next(), retain_batches.next(), context, generator, accelerator)
            logs = self.compute_gradients(work, inputs)
            check_finite(self.name, step, logs)
            if accelerator.num_processes > 1:
                for p in parameters:
                    p.grad = accelerator.reduce(gradients([p])[0], reduction="mean")
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.step(parameters)
            for key, value in logs.items():
                curves[key].append(value)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(logs.items())[:3]})
            if callback is not None and (step + 1) % callback_every == 0:
                pause = time.perf_counter()
                if ema is not None:
                    ema.store(parameters)
                    ema.copy_to(parameters)
                callback(step + 1, work, pause - start - paused)
                if ema is not None:
                    ema.restore(parameters)
                paused += time.perf_counter() - pause
        if ema is not None:
            ema.copy_to(parameters)
        work.unet.eval()
        seconds = time.perf_counter() - start - paused
        logger.info("%s: %d steps in %.1f s", self.name, self.steps, seconds)
        return UnlearnResult(work, self.name, self.get_params(), self.steps, seconds, dict(curves))
