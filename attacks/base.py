"""The contract of every membership-inference probe: per-sample scores, higher = more member-like."""

from __future__ import annotations

import csv
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.params import Interval, Parameterized
from diffusion.registry import Registry
from diffusion.training import process_state

from .metrics import auc


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


@dataclass(frozen=True)
class CalibrationSet:
    """Images an attack may fit its free choices on (a timestep, a band, a learned classifier): members and
    non-members of the attacked model, disjoint from every image the attack will score.

    Fitting on a separate split is the field's protocol (Carlini et al., "Membership Inference Attacks From First
    Principles", S&P 2022; Duan et al. 2023 train SecMI-NN on a split of their own): choices fitted on the scored
    images inflate the very AUC they are chosen by.
    """

    members: LabeledImages
    nonmembers: LabeledImages

    def __post_init__(self) -> None:
        if len(self.members) == 0 or len(self.nonmembers) == 0:
            raise UsageError(f"a calibration set needs members and non-members; got {len(self.members)} and "
                             f"{len(self.nonmembers)}")
        overlap = np.intersect1d(self.members.ids.numpy(), self.nonmembers.ids.numpy())
        if len(overlap):
            raise ValueError(f"calibration members and non-members share sample ids {overlap[:5].tolist()}")

    @classmethod
    def split_off(cls, members: LabeledImages, nonmembers: LabeledImages, size: int, seed: int
                  ) -> tuple[CalibrationSet, LabeledImages, LabeledImages]:
        """``size`` random members and ``size`` random non-members (from ``seed``) as a calibration set, and the
        members and non-members left to score."""
        rng = np.random.default_rng(seed)
        picked = [torch.as_tensor(np.sort(rng.permutation(len(s))[:size])) for s in (members, nonmembers)]
        rest = [torch.as_tensor(np.setdiff1d(np.arange(len(s)), p.numpy())) for s, p in zip((members, nonmembers),
                                                                                            picked)]
        return cls(members.take(picked[0]), nonmembers.take(picked[1])), members.take(rest[0]), nonmembers.take(rest[1])

    @property
    def ids(self) -> np.ndarray:
        """(M + N,) every sample id of the set, members first."""
        return np.r_[self.members.ids.numpy(), self.nonmembers.ids.numpy()].astype(np.int64)

    def check_disjoint(self, scored_ids: Iterable[int]) -> None:
        """Raise ValueError if any scored sample is also a calibration sample."""
        shared = np.intersect1d(self.ids, np.asarray(list(scored_ids), dtype=np.int64))
        if len(shared):
            raise ValueError(f"{len(shared)} scored samples are also calibration samples (e.g. {shared[:5].tolist()})")

    def summary(self) -> dict:
        """Counts and ids, JSON-ready (recorded with every fitted attack)."""
        return {"num_members": len(self.members), "num_nonmembers": len(self.nonmembers),
                "member_ids": self.members.ids.tolist(), "nonmember_ids": self.nonmembers.ids.tolist()}


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

    Free choices are fitted, scikit-learn style, by :meth:`fit` on a :class:`CalibrationSet` of the attacked
    model: by default a grid search over ``calibration_grid`` (parameter -> candidate values) that keeps the
    values of highest calibration AUC and records every candidate's AUC in ``calibration_``. An unfitted attack
    uses its fixed paper defaults; ``needs_fit`` attacks (a learned classifier) refuse to score unfitted.
    """

    name: ClassVar[str]
    _parameter_constraints: ClassVar[dict] = {"batch_size": [Interval(Integral, 1, None)]}
    calibration_grid: ClassVar[dict[str, tuple]] = {}
    needs_fit: ClassVar[bool] = False
    conditionings: ClassVar[tuple[str, ...]] = ("none", "class", "text")  # the models it attacks

    def __init__(self, batch_size: int = 64):
        self.batch_size = batch_size

    def fit(self, model: DiffusionModel, calibration: CalibrationSet, *, seed: int = 0, quiet: bool = True) -> Attack:
        """Set the parameters of ``calibration_grid`` to the candidates of highest AUC on ``calibration`` scored on
        ``model`` (ties keep the earlier candidate); returns self. Records ``calibration_``: the set, every
        candidate's AUC and the choice. The model should be one trained on the calibration members (the original)."""
        self.check(model)
        names = list(self.calibration_grid)
        table = []
        for values in tqdm(list(itertools.product(*self.calibration_grid.values())), desc=f"fit {self.name}",
                           disable=quiet, leave=False):
            candidate = type(self)(**{**self.get_params(), **dict(zip(names, values))})
            members = candidate.score(model, calibration.members, seed=seed).scores
            nonmembers = candidate.score(model, calibration.nonmembers, seed=seed).scores
            table.append({**dict(zip(names, values)), "auc": auc(members, nonmembers)})
        if table:
            best = max(table, key=lambda row: row["auc"])
            for name in names:
                setattr(self, name, best[name])
            logging.getLogger(__name__).info("%s fitted on %d + %d calibration images: %s (AUC %.3f)", self.name,
                                             len(calibration.members), len(calibration.nonmembers),
                                             {n: best[n] for n in names}, best["auc"])
        self.calibration_ = {**calibration.summary(), "grid": table,
                             "chosen": {name: getattr(self, name) for name in names}}
        return self

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "calibration_")

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
        """Scores (B,) for clean images ``x0`` (B, C, H, W) on the model's device, labels (B,) (token ids (B, L) for
        a text model) or None."""

    def prepare(self, model: DiffusionModel, samples: LabeledImages) -> dict:
        """Check the attack against ``model`` and ``samples``; returns the parameters :meth:`score_batch` gets."""
        owner = type(self).__name__
        resolved = self.check(model)
        if self.needs_fit and not self.is_fitted:
            raise UsageError(f"{owner} learns from a calibration set: call fit(model, calibration) before score")
        if len(samples) == 0:
            raise UsageError(f"{owner} got an empty sample set; give at least one image to score")
        if tuple(samples.images.shape[1:]) != model.image_shape:
            raise UsageError(
                f"{owner} got images of shape {tuple(samples.images.shape[1:])} but the model expects "
                f"{model.image_shape}"
            )
        params = {**self.get_params(), **resolved}
        if self.is_fitted:
            params["calibration"] = {k: v for k, v in self.calibration_.items() if not k.endswith("_ids")}
        return params

    def map_batches(self, model: DiffusionModel, samples: LabeledImages, batch_fn, *, quiet: bool = True,
                    batch_size: int | None = None) -> torch.Tensor:
        """``batch_fn(x0, labels, ids)`` -> (B, ...) over batches of ``batch_size`` (default: the attack's)
        samples, without gradients and with the model in eval mode (restored after); the results concatenated on
        the CPU as float64. The labels (class ids (B,), or a text model's caption token ids (B, L)) are passed when
        the model is conditional, else None.

        In an Accelerate launch of P processes the batches are dealt out round-robin and every process returns
        all results: noise comes from (seed, sample id), so the scores are those of one process.
        """
        batch_size = batch_size or self.batch_size
        conditional = model.conditioning != "none"
        ids = [int(i) for i in samples.ids]
        state = process_state()
        firsts = range(0, len(ids), batch_size)
        mine = firsts[state.process_index :: state.num_processes]
        was_training = model.unet.training
        model.unet.eval()
        parts = {}
        try:
            with torch.no_grad():
                for first in tqdm(mine, desc=self.name, disable=quiet or not state.is_main_process, leave=False):
                    rows = slice(first, first + batch_size)
                    x0 = samples.images[rows].to(model.device, torch.float32)
                    labels = samples.labels[rows].to(model.device) if conditional else None
                    parts[first] = batch_fn(x0, labels, ids[rows]).double().cpu()
        finally:
            model.unet.train(was_training)
        if state.num_processes > 1:
            parts = dict(gather_object(list(parts.items())))
        return torch.cat([parts[first] for first in firsts])

    def score(
        self, model: DiffusionModel, samples: LabeledImages, *, seed: int = 0, quiet: bool = True
    ) -> AttackScores:
        """Score every sample of ``samples`` (class labels are used when the model is class-conditional)."""
        params = self.prepare(model, samples)
        start = time.perf_counter()
        scores = self.map_batches(model, samples,
                                  lambda x0, labels, ids: self.score_batch(model, x0, labels, ids, seed, params),
                                  quiet=quiet)
        return AttackScores(
            attack=self.name,
            sample_ids=samples.ids.numpy().astype(np.int64),
            scores=scores.numpy(),
            calls_per_sample=float(self.calls_per_sample(params)),
            seconds=time.perf_counter() - start,
            params=params,
        )


# Candidate timesteps (1000-step linear schedule) that fits choose from: small to middle noise levels.
TIMESTEP_GRID = (10, 20, 50, 100, 150, 200, 300)


class TimestepAttack(Attack):
    """An attack that queries the model at one timestep ``timestep`` (1000-step linear schedule, moved to the
    model's timestep of equal noise level) and scores a distance raised to the power ``p``; :meth:`fit` picks the
    timestep from :data:`TIMESTEP_GRID`. Subclasses give their paper's defaults in ``__init__``."""

    calibration_grid: ClassVar[dict[str, tuple]] = {"timestep": TIMESTEP_GRID}
    _parameter_constraints: ClassVar[dict] = {
        **Attack._parameter_constraints,
        "timestep": [Interval(Integral, 1, 999)],
        "p": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, timestep: int, p: float, batch_size: int):
        super().__init__(batch_size)
        self.timestep = timestep
        self.p = p

    def resolve(self, model: DiffusionModel) -> dict:
        step = matched_timestep(self.timestep, model)
        return {"model_timestep": check_timestep(step, model, "timestep", type(self).__name__, 1)}


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
