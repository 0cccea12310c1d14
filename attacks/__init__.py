"""The attack battery: membership inference, extraction and resurrection probes on a :class:`DiffusionModel`.

``ATTACKS`` is the registry of membership-inference attacks: ``ATTACKS.make(name, **params)`` builds one with its
parameters checked. Other packages add attacks under the entry-point group ``erasediff.attacks``.
"""

from __future__ import annotations

from .base import ATTACKS, Attack, AttackScores, CalibrationSet
from .clid import CLiD
from .loss import LossAttack
from .noise_aggregation import NoiseAggregation
from .pia import PIA, PIAN
from .secmi import SecMI
from .secmi_nn import SecMINN
from .sima import SimA

__all__ = [
           "ATTACKS",
           "PIA",
           "PIAN",
           "Attack",
           "AttackScores",
           "CLiD",
           "CalibrationSet",
           "LossAttack",
           "NoiseAggregation",
           "SecMI",
           "SecMINN",
           "SimA",
]
