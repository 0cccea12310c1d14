"""Unlearning methods for diffusion models: EraseDiff and the baselines it is compared with.

``UNLEARNERS`` maps each method's name to its class; :func:`make_unlearner` builds one from a name and
parameters, checking both.
"""

from __future__ import annotations

from diffusion.errors import UsageError

from .base import ForgetTask, GradientUnlearner, Unlearner, UnlearnResult
from .erasediff import EraseDiff
from .finetune import Finetune
from .gradient_ascent import GradientAscent
from .random_label import RandomLabel
from .retrain import Retrain
from .salun import SalUn
from .selective_amnesia import SelectiveAmnesia

UNLEARNERS: dict[str, type[Unlearner]] = {
    cls.name: cls for cls in (EraseDiff, Retrain, Finetune, GradientAscent, RandomLabel, SalUn, SelectiveAmnesia)
}


def make_unlearner(name: str, **params) -> Unlearner:
    """The unlearner ``name`` with ``params``; a :class:`UsageError` names an unknown method or parameter."""
    if name not in UNLEARNERS:
        raise UsageError(f"unknown unlearning method '{name}'; expected one of: {', '.join(UNLEARNERS)}")
    cls = UNLEARNERS[name]
    allowed = cls.param_names()
    for key in params:
        if key not in allowed:
            raise UsageError(f"'{key}' is not a parameter of {name}; its parameters are: {', '.join(allowed)}")
    return cls(**params)


__all__ = [
    "UNLEARNERS",
    "EraseDiff",
    "Finetune",
    "ForgetTask",
    "GradientAscent",
    "GradientUnlearner",
    "RandomLabel",
    "Retrain",
    "SalUn",
    "SelectiveAmnesia",
    "UnlearnResult",
    "Unlearner",
    "make_unlearner",
]
