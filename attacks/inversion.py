"""Embedding inversion: learn a new class embedding for the erased class on the frozen model, then generate.

After Pham, Marshall, Cohen, Hegde et al., "Circumventing Concept Erasure Methods for Text-to-Image Generative
Models", ICLR 2024, itself built on textual inversion (Gal et al., "An Image is Worth One Word", ICLR 2023). If a
few erased images suffice to find an input that brings the class back, the knowledge was hidden, not erased.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.model import DiffusionModel
from diffusion.params import Interval, validate_params
from diffusion.quality import per_class_noise_ids
from diffusion.seeding import derive_seed

from .regeneration import POSITIVE_INT, ResurrectionResult, check_erased_classes, judge_generated


class ExtendedClassEmbedding(nn.Module):
    """A frozen class-embedding table (K, D) followed by trainable new rows (R, D): labels (B,) -> (B, D).

    Labels 0..K-1 read the original rows, K..K+R-1 the new ones.
    """

    def __init__(self, table: nn.Embedding, new_rows: int):
        super().__init__()
        self.register_buffer("frozen", table.weight.detach().clone())
        self.new = nn.Parameter(self.frozen.mean(0, keepdim=True).repeat(new_rows, 1))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return F.embedding(labels, torch.cat([self.frozen, self.new]))


@dataclass
class InvertedConditioning:
    """A copy of a model with one new, fitted class-embedding row per erased class; every original weight frozen.

    Attributes:
        model: the copy; its labels K..K+R-1 select the new rows.
        rows: {erased class: the label of its new row}.
        record: what the fit used and reached (JSON-ready): image ids, steps, lr, losses before and after.
    """

    model: DiffusionModel
    rows: dict[int, int]
    record: dict

    def relabel(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` (B,) with every erased class replaced by the label of its fitted row."""
        out = labels.clone()
        for c, row in self.rows.items():
            out[labels == c] = row
        return out


def fit_class_embedding(
    model: DiffusionModel,
    images: LabeledImages,
    classes: Sequence[int],
    *,
    seed: int = 0,
    images_per_class: int = 8,
    steps: int = 150,
    lr: float = 0.1,
    batch_size: int = 64,
    quiet: bool = True,
) -> InvertedConditioning:
    """Fit one new class-embedding row per class of ``classes`` on ``images_per_class`` of its ``images``.

    A copy of ``model`` gets :class:`ExtendedClassEmbedding` (rows start at the mean of the existing ones, so no
    class is given away); the rows are fitted with Adam on the DDPM loss of the chosen images (picked from
    (seed, class)), with timesteps and noises drawn from the seed. The model passed in is never changed. The
    record holds the ids used, the loss curve, and the DDPM loss of a fixed batch of the chosen images (256 draws
    of t and noise) before and after fitting.
    """
    classes = check_erased_classes(model, images, classes, "embedding inversion")
    given = {"images_per_class": images_per_class, "steps": steps, "lr": lr, "batch_size": batch_size}
    constraints = dict.fromkeys(given, POSITIVE_INT) | {"lr": [Interval(Real, 0, None, closed="neither")]}
    validate_params(constraints, given, "fit_class_embedding")
    table = model.unet.class_embedding
    if not isinstance(table, nn.Embedding):
        raise UsageError(
            f"embedding inversion needs a UNet whose class embedding is a lookup table (nn.Embedding); "
            f"got {type(table).__name__}"
        )
    num_classes = model.num_classes
    chosen, row_labels = [], []
    for row, c in enumerate(classes):
        positions = torch.nonzero(images.labels == c).flatten()
        if len(positions) == 0:
            raise UsageError(f"embedding inversion for class {c} needs images of that class; the set has none")
        order = torch.randperm(len(positions), generator=torch.Generator().manual_seed(derive_seed(seed, "inv", c)))
        picked = positions[order[:images_per_class]]
        chosen.append(picked)
        row_labels.append(torch.full((len(picked),), num_classes + row))
    chosen, row_labels = torch.cat(chosen), torch.cat(row_labels)

    probe = model.copy()
    probe.unet.requires_grad_(False).eval()
    rows = ExtendedClassEmbedding(table, len(classes)).to(probe.device)
    probe.unet.class_embedding = rows
    x0 = images.images[chosen].to(probe.device)
    labels = row_labels.to(probe.device)
    generator = torch.Generator().manual_seed(derive_seed(seed, "inversion-steps"))

    def draw(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pick = torch.randint(0, len(x0), (size,), generator=generator).to(probe.device)
        t = torch.randint(0, probe.num_train_timesteps, (size,), generator=generator).to(probe.device)
        noise = torch.randn((size, *x0.shape[1:]), generator=generator).to(probe.device)
        return pick, t, noise

    check_pick, check_t, check_noise = draw(256)  # a fixed batch that shows the fit, before and after

    def check_loss() -> float:
        with torch.no_grad():
            return probe.denoising_loss(x0[check_pick], labels[check_pick], check_t, check_noise).mean().item()

    loss_before = check_loss()
    optimizer = torch.optim.Adam([rows.new], lr=lr)
    curve = []
    for _ in tqdm(range(steps), desc="embedding inversion", disable=quiet, leave=False):
        pick, t, noise = draw(batch_size)
        loss = probe.denoising_loss(x0[pick], labels[pick], t, noise).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        curve.append(loss.item())
    record = {
        "fit_ids_used": images.ids[chosen].tolist(),
        "steps": steps,
        "lr": lr,
        "batch_size": batch_size,
        "fit_loss_before": loss_before,
        "fit_loss_after": check_loss(),
        "loss_curve": curve[:: max(1, steps // 100)],
    }
    return InvertedConditioning(probe, {c: num_classes + row for row, c in enumerate(classes)}, record)


def embedding_inversion(
    model: DiffusionModel,
    judge: Judge,
    forget: LabeledImages,
    classes: Sequence[int],
    *,
    fit_images: LabeledImages | None = None,
    seed: int = 0,
    per_class: int = 50,
    images_per_class: int = 8,
    steps: int = 150,
    lr: float = 0.1,
    batch_size: int = 64,
    sample_steps: int = 50,
    quiet: bool = True,
    fitted: InvertedConditioning | None = None,
) -> ResurrectionResult:
    """Fit a new class-embedding row per erased class (:func:`fit_class_embedding`), generate with it, judge.

    The rows are fitted on ``fit_images`` (by default the forget set itself: an attacker holding erased images;
    an audit passes other images of the class so that the scored sets stay disjoint), or ``fitted`` is reused.
    Returns the images generated with the new rows (noises as in :func:`conditional_regeneration`) judged against
    the class they were learned from (nearest distances to ``forget``), with the fit's record.
    """
    validate_params({"per_class": POSITIVE_INT, "sample_steps": POSITIVE_INT},
                    {"per_class": per_class, "sample_steps": sample_steps}, "embedding_inversion")
    classes = check_erased_classes(model, forget, classes, "embedding inversion")
    if fitted is None:
        fitted = fit_class_embedding(model, forget if fit_images is None else fit_images, classes, seed=seed,
                                     images_per_class=images_per_class, steps=steps, lr=lr, batch_size=batch_size,
                                     quiet=quiet)
    labels = torch.tensor([fitted.rows[c] for c in classes for _ in range(per_class)])
    target = torch.tensor(classes).repeat_interleave(per_class)
    images = fitted.model.sample(labels, seed=seed, ids=per_class_noise_ids(classes, per_class), steps=sample_steps)
    metrics = judge_generated(judge, images, target, forget)
    metrics.update(classes=classes, per_class_images=per_class, fit_on="forget set" if fit_images is None else
                   "images disjoint from the scored sets", **fitted.record, sampler=f"ddim-{sample_steps}", seed=seed)
    return ResurrectionResult("embedding_inversion", images, target, metrics)
