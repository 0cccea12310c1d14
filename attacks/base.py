"""The contract of every membership-inference probe: per-sample scores, higher = more member-like."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from diffusion.data import LabeledImages
from diffusion.model import DiffusionModel


@dataclass
class AttackScores:
    """One score per sample (higher = more member-like / more leaked) and what computing them cost.

    Attributes:
        attack: the attack's registry name.
        sample_ids: (N,) int64 dataset ids, in the order of ``scores``.
        scores: (N,) float64.
        calls_per_sample: noise-prediction calls spent on each sample.
        seconds: wall time of the scoring.
        params: the attack's parameters.
    """

    attack: str
    sample_ids: np.ndarray
    scores: np.ndarray
    calls_per_sample: float
    seconds: float
    params: dict


class Attack(ABC):
    """A membership-inference attack on a :class:`DiffusionModel`.

    Noise and timesteps derive from (seed, sample id), so a sample gets the same noise on every model and at
    every batch size.
    """

    name: ClassVar[str]

    @abstractmethod
    def score(self, model: DiffusionModel, samples: LabeledImages, *, seed: int = 0) -> AttackScores:
        """Score every sample; raise ``UsageError`` for an empty sample set."""

    @abstractmethod
    def get_params(self) -> dict:
        """The attack's parameters, JSON-ready."""
