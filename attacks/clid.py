"""CLiD: membership inference on text-to-image models by the conditional likelihood discrepancy.

Zhai, Chen, Wang, Zhang, Zhang, Hu, Wang, Guo, "Membership Inference on Text-to-Image Diffusion Models via
Conditional Likelihood Discrepancy", NeurIPS 2024: a text-to-image model overfits the pairing of a training image
with its caption, so the denoising loss of a member rises more than a non-member's when the caption is degraded.
Per (image, caption): D = mean_k L(x, c_k) - L(x, c) over degraded captions c_k (the empty prompt and the caption
with about half of its words dropped), and the score mixes D with the conditional loss (the paper's CLiD_th).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar

import torch

from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.params import Interval
from diffusion.seeding import seeded_normal

from .base import ATTACKS, Attack, check_timestep, matched_timestep


def drop_words(tokens: torch.Tensor, ids: list[int], seed: int, pad: int, rate: float = 0.5) -> torch.Tensor:
    """Captions (B, L) with each word token (not the first or the padding) replaced by ``pad`` with probability
    ``rate``, the choice drawn from (seed, sample id): a degraded caption that still shares some words."""
    out = tokens.clone()
    for row, sample_id in enumerate(ids):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + int(sample_id))
        words = (tokens[row] != pad).nonzero().flatten()[1:].cpu()
        dropped = words[torch.rand(len(words), generator=generator) < rate]
        out[row, dropped.to(out.device)] = pad
    return out


@ATTACKS.register
class CLiD(Attack):
    """Score = D - ``alpha`` * L(x, c), losses averaged over ``noises`` noises at ``timestep`` (CLiD_th).

    Args:
        timestep: on the 1000-step linear schedule (moved to the model's timestep of equal noise level); the
            paper's is about 450. alpha: weight of the conditional loss (fitted on a calibration set from
            :attr:`calibration_grid`). noises: noises per image, from (seed, sample id).
    """

    name = "clid"
    conditionings: ClassVar[tuple[str, ...]] = ("text",)
    calibration_grid: ClassVar[dict[str, tuple]] = {"alpha": (0.0, 0.5, 1.0, 2.0, 4.0), "timestep": (100, 300, 450)}
    _parameter_constraints: ClassVar[dict] = {
        **Attack._parameter_constraints,
        "timestep": [Interval(Integral, 1, 999)],
        "alpha": [Interval(Real, 0, None)],
        "noises": [Interval(Integral, 1, None)],
    }

    def __init__(self, timestep: int = 450, alpha: float = 1.0, noises: int = 3, batch_size: int = 64):
        super().__init__(batch_size)
        self.timestep = timestep
        self.alpha = alpha
        self.noises = noises

    def resolve(self, model: DiffusionModel) -> dict:
        if model.conditioning != "text":
            raise UsageError(f"clid scores (image, caption) pairs of a text-to-image model; this model is "
                             f"conditioned on {model.conditioning}")
        step = matched_timestep(self.timestep, model)
        return {"model_timestep": check_timestep(step, model, "timestep", type(self).__name__, 1)}

    def calls_per_sample(self, params: dict) -> int:
        return 3 * params["noises"]

    def score_batch(self, model, x0, labels, ids, seed, params) -> torch.Tensor:
        n, pad = params["noises"], model.tokenizer.pad_token_id
        empty = model.tokenize([""]).to(x0.device).expand(len(x0), -1)
        captions = torch.stack([labels, empty, drop_words(labels, ids, seed, pad)], 1)  # (B, 3, L)
        noise = seeded_normal(seed, ids, (n, *x0.shape[1:]), stream="clid").to(x0.device)  # (B, n, C, H, W)
        t = torch.full((len(x0) * 3 * n,), params["model_timestep"], device=x0.device)
        losses = model.denoising_loss(
            x0.repeat_interleave(3 * n, 0), captions.repeat_interleave(n, 1).flatten(0, 1), t,
            noise.repeat(1, 3, 1, 1, 1).flatten(0, 1),
        ).view(len(x0), 3, n).mean(2)
        conditional = losses[:, 0]
        discrepancy = losses[:, 1:].mean(1) - conditional
        return discrepancy - params["alpha"] * conditional
