"""Unlearning methods for diffusion models: EraseDiff and the baselines it is compared with.

``METHODS`` is the registry: ``METHODS.make(name, **params)`` builds a method with its parameters checked.
Other packages add methods under the entry-point group ``erasediff.methods``.
"""

from __future__ import annotations

from .base import METHODS, Unlearner, UnlearnResult
from .erasediff import EraseDiff
from .esd import ESD, ESDU
from .finetune import Finetune
from .gradient_ascent import GradientAscent
from .loop import GradientUnlearner
from .random_label import RandomLabel
from .refinetune import RefineTune
from .retrain import Retrain
from .salun import SalUn
from .selective_amnesia import SelectiveAmnesia

__all__ = [
    "ESD",
    "ESDU",
    "METHODS",
    "EraseDiff",
    "Finetune",
    "GradientAscent",
    "GradientUnlearner",
    "RandomLabel",
    "RefineTune",
    "Retrain",
    "SalUn",
    "SelectiveAmnesia",
    "UnlearnResult",
    "Unlearner",
]
