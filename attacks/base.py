"""The contract of every membership-inference probe: per-sample scores, higher = more member-like."""

from __future__ import annotations

import csv
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.params import Interval, Parameterized
from diffusion.registry import Registry


@dataclass
class AttackScores:
    """One score per sample (higher = more member-like / more leaked) and what computing them cost.

    Attributes:
        attack: the attack's registry name.
        sample_ids: (N,) int64 dataset ids, in the order of ``scores``.
        scores: (N,) float64.
        calls_per_sample: noise-prediction calls spent on each sample.
        seconds: wall time of the scoring.
        params: the attack's parameters, with the timesteps resolved for the scored model.
    """

    attack: str
    sample_ids: np.ndarray
    scores: np.ndarray
    calls_per_sample: float
    seconds: float
    params: dict

    def to_dict(self) -> dict:
        """The cost and parameters, JSON-ready (the scores themselves go to a CSV)."""
        return {
            "attack": self.attack,
            "num_samples": len(self.scores),
            "calls_per_sample": self.calls_per_sample,
            "seconds": self.seconds,
            "samples_per_second": len(self.scores) / self.seconds if self.seconds > 0 else None,
            "params": self.params,
        }


SCORE_COLUMNS = ("sample_id", "split", "is_member", "model", "conditioning", "score", "calibrated_score")

# One block of a score table: (model role, conditioning, the attack's scores, per-example calibrated scores or None)
ScoreBlock = tuple[str, str, AttackScores, "np.ndarray | None"]


def write_scores_csv(
    path: Path, blocks: Iterable[ScoreBlock], is_member: np.ndarray, member_split: str = "forget"
) -> None:
    """One attack's scores as a CSV of :data:`SCORE_COLUMNS`, a row per (model, conditioning, sample).

    Every block scores the same samples in the same order; ``is_member`` (N,) marks the members (split
    ``member_split``; the others are ``heldout``). ``calibrated_score`` is empty where there is none.
    """
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SCORE_COLUMNS)
        for role, conditioning, scores, calibrated in blocks:
            zs = [""] * len(scores.scores) if calibrated is None else [repr(float(z)) for z in calibrated]
            for sample_id, member, score, z in zip(scores.sample_ids, is_member, scores.scores, zs):
                split = member_split if member else "heldout"
                writer.writerow([int(sample_id), split, int(member), role, conditioning, repr(float(score)), z])


def check_timestep(t: int, model: DiffusionModel, name: str, owner: str, minimum: int = 0) -> int:
    """Return ``t`` if ``minimum <= t < model.num_train_timesteps``, else raise :class:`UsageError`."""
    if model.num_train_timesteps <= minimum:
        raise UsageError(
            f"{owner} needs a model with more than {minimum} training timesteps; this one has "
            f"{model.num_train_timesteps}"
        )
    if not minimum <= t < model.num_train_timesteps:
        raise UsageError(
            f"The '{name}' parameter of {owner} must be a timestep in [{minimum}, {model.num_train_timesteps - 1}] "
            f"for this model ({model.num_train_timesteps} training timesteps). Got {t} instead."
        )
    return t


def matched_timestep(reference_t: int, model: DiffusionModel) -> int:
    """The model timestep (>= 1) whose noise level alpha_bar is closest to that of ``reference_t`` on the
    1000-step linear schedule (beta 1e-4 to 0.02) of Ho et al. (2020), where the papers set their timesteps.

    On a model with that schedule this is ``reference_t`` itself; on a shorter or different schedule it keeps the
    signal-to-noise ratio the attack was designed for.
    """
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    target = torch.cumprod(1 - betas, 0)[min(max(int(reference_t), 0), 999)]
    gaps = (model.alphas_cumprod.double().cpu() - target).abs()
    return max(1, int(gaps.argmin()))


class Attack(Parameterized, ABC):
    """A membership-inference attack on a :class:`DiffusionModel` (gray-box: it sees noise predictions).

    Parameters are stored in ``__init__`` and declared in ``_parameter_constraints``; :meth:`score` does the work
    in batches of ``batch_size`` samples, each batch in a few batched model calls. Noise and timesteps derive from
    (seed, sample id), so a sample gets the same noise on every model and at every batch size. Subclasses
    implement :meth:`resolve` (the concrete timesteps for a model), :meth:`calls_per_sample` and
    :meth:`score_batch`.
    """

    name: ClassVar[str]
    _parameter_constraints: ClassVar[dict] = {"batch_size": [Interval(Integral, 1, None)]}

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size

    def check(self, model: DiffusionModel) -> dict:
        """Every check that can fail before any work: the parameters, then against ``model``; returns
        :meth:`resolve`'s concrete parameters."""
        self.validate_params()
        return self.resolve(model)

    @abstractmethod
    def resolve(self, model: DiffusionModel) -> dict:
        """The parameters with every timestep made concrete for ``model``; raise ``UsageError`` if invalid."""

    @abstractmethod
    def calls_per_sample(self, params: dict) -> int:
        """Noise-prediction calls spent on one sample with the resolved ``params``."""

    @abstractmethod
    def score_batch(
        self, model: DiffusionModel, x0: torch.Tensor, labels: torch.Tensor | None, ids: list[int], seed: int,
        params: dict,
    ) -> torch.Tensor:
        """Scores (B,) for clean images ``x0`` (B, C, H, W) on the model's device, labels (B,) or None."""

    def score(
        self, model: DiffusionModel, samples: LabeledImages, *, seed: int = 0, quiet: bool = True
    ) -> AttackScores:
        """Score every sample of ``samples`` (class labels are used when the model is class-conditional)."""
        owner = type(self).__name__
        resolved = self.check(model)
        if len(samples) == 0:
            raise UsageError(f"{owner} got an empty sample set; give at least one image to score")
        if tuple(samples.images.shape[1:]) != model.image_shape:
            raise UsageError(
                f"{owner} got images of shape {tuple(samples.images.shape[1:])} but the model expects "
                f"{model.image_shape}"
            )
        params = {**self.get_params(), **resolved}
        conditional = model.num_classes is not None
        ids = [int(i) for i in samples.ids]
        was_training = model.unet.training
        model.unet.eval()
        start = time.perf_counter()
        parts = []
        with torch.no_grad():
            for first in tqdm(range(0, len(ids), self.batch_size), desc=self.name, disable=quiet, leave=False):
                rows = slice(first, first + self.batch_size)
                x0 = samples.images[rows].to(model.device, torch.float32)
                labels = samples.labels[rows].to(model.device) if conditional else None
                parts.append(self.score_batch(model, x0, labels, ids[rows], seed, params).double().cpu())
        seconds = time.perf_counter() - start
        model.unet.train(was_training)
        return AttackScores(
            attack=self.name,
            sample_ids=np.asarray(ids, dtype=np.int64),
            scores=torch.cat(parts).numpy(),
            calls_per_sample=float(self.calls_per_sample(params)),
            seconds=seconds,
            params=params,
        )



ATTACKS: Registry[Attack] = Registry("attack", Attack, "erasediff.attacks")

def ddim_move(model: DiffusionModel, x: torch.Tensor, t_from: int, t_to: int, labels: torch.Tensor | None):
    """One deterministic DDIM step (Song et al., ICLR 2021) from timestep ``t_from`` to ``t_to`` (either way).

    x (B, C, H, W) at ``t_from`` -> (x at ``t_to``, eps_theta(x, t_from)). Going up the schedule this is DDIM
    inversion; going down it is the eta = 0 sampler step.
    """
    t = torch.full((len(x),), t_from, device=x.device, dtype=torch.long)
    eps = model.predict_noise(x, t, labels)
    ab_from, ab_to = model.alphas_cumprod[t_from], model.alphas_cumprod[t_to]
    x0_hat = (x - (1 - ab_from).sqrt() * eps) / ab_from.sqrt()
    return ab_to.sqrt() * x0_hat + (1 - ab_to).sqrt() * eps, eps
