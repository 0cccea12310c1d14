"""The contract every unlearning method keeps, the record it returns, and the registry of methods."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from accelerate import Accelerator

from diffusion.model import DiffusionModel
from diffusion.params import Parameterized
from diffusion.registry import Registry
from diffusion.splits import ForgetTask

# Called every ``callback_every`` steps with (step, model with the weights the method would return, seconds of
# unlearning so far, callback time excluded). Benchmarks use it to time how fast a method reaches a goal.
StepCallback = Callable[[int, DiffusionModel, float], None]


@dataclass(frozen=True)
class RunOptions:
    """How one run is carried out, as opposed to what the method is: its seed, the Accelerate engine (None: one
    process on the model's device), whether to show progress, a callback every ``callback_every`` steps, and what a
    large model needs on a GPU: ``mixed_precision`` (``bf16`` autocast of the steps) and ``gradient_checkpointing``
    (activations recomputed in the backward pass)."""

    seed: int = 0
    accelerator: Accelerator | None = None
    quiet: bool = False
    callback: StepCallback | None = None
    callback_every: int = 10
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False


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


class Unlearner(Parameterized, ABC):
    """An unlearning method. Parameters are its (dataclass) fields, declared in ``_parameter_constraints``;
    :meth:`unlearn` runs :meth:`check` (which callers may also run before any work), then the method's :meth:`run`."""

    name: ClassVar[str]

    def check_task(self, task: ForgetTask) -> None:
        """Raise :class:`~diffusion.errors.UsageError` when the method cannot serve ``task`` (default: any task)."""

    def check(self, task: ForgetTask, model: DiffusionModel | None = None) -> None:
        """Every check that can fail before any work: parameters, the task and, when given, the model."""
        self.validate_params()
        self.check_task(task)
        if model is not None:
            model.check_task(task)

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
        mixed_precision: str = "no",
        gradient_checkpointing: bool = False,
    ) -> UnlearnResult:
        """Return an unlearned copy of ``model``; ``model`` itself stays unchanged (see :class:`RunOptions`)."""
        self.check(task, model)
        return self.run(model, task, RunOptions(seed, accelerator, quiet, callback, callback_every, mixed_precision,
                                                gradient_checkpointing))

    @abstractmethod
    def run(self, model: DiffusionModel, task: ForgetTask, options: RunOptions) -> UnlearnResult:
        """The method's work on a checked task; never changes ``model``."""


METHODS: Registry[Unlearner] = Registry("unlearning method", Unlearner, "erasediff.methods")
