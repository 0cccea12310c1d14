"""Embedding inversion: learn a new class embedding for the erased class on the frozen model, then generate.

After Pham, Marshall, Cohen, Hegde et al., "Circumventing Concept Erasure Methods for Text-to-Image Generative
Models", ICLR 2024, itself built on textual inversion (Gal et al., "An Image is Worth One Word", ICLR 2023). If a
few erased images suffice to find an input that brings the class back, the knowledge was hidden, not erased.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def embedding_inversion(
    model: DiffusionModel,
    judge: Judge,
    forget: LabeledImages,
    classes: Sequence[int],
    *,
    seed: int = 0,
    per_class: int = 50,
    images_per_class: int = 8,
    steps: int = 150,
    lr: float = 0.1,
    batch_size: int = 64,
    sample_steps: int = 50,
    quiet: bool = True,
) -> ResurrectionResult:
    """Learn one new class-embedding row per erased class from a few of its forget images, generate, judge.

    A copy of ``model`` gets :class:`ExtendedClassEmbedding` (rows start at the mean of the existing ones, so no
    class is given away); every other weight is frozen. The rows are fitted with Adam on the DDPM loss of
    ``images_per_class`` forget images per class (chosen from (seed, class)), with timesteps and noises drawn from
    the seed. The model passed in is never changed.

    Returns the images generated with the new rows (noises as in :func:`conditional_regeneration`) judged against
    the class they were learned from, the forget ids used, the training loss curve, and the DDPM loss of a fixed
    batch of the chosen images (256 draws of t and noise) before and after fitting.
    """
    classes = check_erased_classes(model, forget, classes, "embedding inversion")
    given = {"per_class": per_class, "images_per_class": images_per_class, "steps": steps, "lr": lr,
             "batch_size": batch_size, "sample_steps": sample_steps}
    constraints = dict.fromkeys(given, POSITIVE_INT) | {"lr": [Interval(Real, 0, None, closed="neither")]}
    validate_params(constraints, given, "embedding_inversion")
    table = model.unet.class_embedding
    if not isinstance(table, nn.Embedding):
        raise UsageError(
            f"embedding inversion needs a UNet whose class embedding is a lookup table (nn.Embedding); "
            f"got {type(table).__name__}"
        )
    num_classes = model.num_classes
    chosen, row_labels = [], []
    for row, c in enumerate(classes):
        positions = torch.nonzero(forget.labels == c).flatten()
        if len(positions) == 0:
            raise UsageError(f"embedding inversion for class {c} needs forget images of that class; the set has none")
        order = torch.randperm(len(positions), generator=torch.Generator().manual_seed(derive_seed(seed, "inv", c)))
        picked = positions[order[:images_per_class]]
        chosen.append(picked)
        row_labels.append(torch.full((len(picked),), num_classes + row))
    chosen, row_labels = torch.cat(chosen), torch.cat(row_labels)

    probe = model.copy()
    probe.unet.requires_grad_(False).eval()
    rows = ExtendedClassEmbedding(table, len(classes)).to(probe.device)
    probe.unet.class_embedding = rows
    x0 = forget.images[chosen].to(probe.device)
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

    sample_rows = torch.arange(len(classes)).repeat_interleave(per_class)
    target = torch.tensor(classes)[sample_rows]
    images = probe.sample(num_classes + sample_rows, seed=seed, ids=per_class_noise_ids(classes, per_class),
                          steps=sample_steps)
    metrics = judge_generated(judge, images, target, forget)
    metrics.update(
        classes=classes,
        per_class_images=per_class,
        forget_ids_used=forget.ids[chosen].tolist(),
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        fit_loss_before=loss_before,
        fit_loss_after=check_loss(),
        loss_curve=curve[:: max(1, steps // 100)],
        sampler=f"ddim-{sample_steps}",
        seed=seed,
    )
    return ResurrectionResult("embedding_inversion", images, target, metrics)
