"""The interface every unlearning method implements, and the record it returns."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from diffusion.data import LabeledImages
from diffusion.model import DiffusionModel


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

    @property
    def retained_classes(self) -> tuple[int, ...]:
        return tuple(c for c in range(self.num_classes) if c not in self.forget_classes)


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
        self, model: DiffusionModel, task: ForgetTask, *, seed: int = 0, accelerator=None, quiet: bool = False
    ) -> UnlearnResult:
        """Return an unlearned copy of ``model``; ``model`` itself must stay unchanged."""

    @abstractmethod
    def get_params(self) -> dict:
        """The method's parameters, JSON-ready (recorded with the result)."""
