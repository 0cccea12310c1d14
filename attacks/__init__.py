"""The attack battery: membership inference, extraction and resurrection probes on a :class:`DiffusionModel`."""

from __future__ import annotations

import inspect

from diffusion.errors import UsageError

from .base import Attack, AttackScores
from .loss import LossAttack
from .pia import PIA, PIAN
from .secmi import SecMI

ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (LossAttack, SecMI, PIA, PIAN)}


def make_attack(name: str, **params) -> Attack:
    """The membership-inference attack registered as ``name``, built with ``params``."""
    if name not in ATTACKS:
        raise UsageError(f"unknown attack '{name}'; expected one of: {', '.join(sorted(ATTACKS))}")
    cls = ATTACKS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise UsageError(
            f"unknown parameter(s) {', '.join(unknown)} for attack '{name}'; expected some of: {', '.join(allowed)}"
        )
    return cls(**params)


__all__ = ["ATTACKS", "Attack", "AttackScores", "LossAttack", "PIA", "PIAN", "SecMI", "make_attack"]
