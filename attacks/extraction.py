"""Training-data extraction: generate many images and flag those that copy a training image.

Carlini, Hayes, Nasr, Jagielski, Sehwag, Tramer, Balle, Ippolito and Wallace, "Extracting Training Data from
Diffusion Models", USENIX Security 2023 (arXiv 2301.13188). A generated image x_hat is a copy of its nearest
training image x when ||x_hat - x||_2 is far below its distances to its other near neighbours:
l(x_hat, x) = ||x_hat - x||_2 / (alpha * mean of the n smallest distances) < 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
import torch

from diffusion.captions import ClassCaptions
from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.model import DiffusionModel
from diffusion.params import Interval, validate_params
from diffusion.quality import generate_per_class

from .regeneration import POSITIVE_INT, check_class_ids

DEFAULT_ALPHA = 0.15  # fitted to 8x8 digits; see extract_training_data
PAPER_ALPHA = 0.5  # Carlini et al.'s alpha on 32x32 CIFAR-10, reported beside so counts compare with the paper


@dataclass
class ExtractionResult:
    """Each generated image, its nearest training image and whether it is a copy.

    Attributes:
        generated: (G, C, H, W) generated images in [-1, 1].
        generated_labels: (G,) the class each was generated for (-1 for an unconditional model).
        nearest_ids: (G,) dataset id of each generated image's nearest training image.
        distances: (G,) L2 distance to that nearest training image (pixels in [-1, 1]).
        relative_distances: (G,) distance / (alpha * mean distance to the n nearest training images).
        extracted: (G,) bool, relative distance below 1 and distance at most ``max_distance``.
        training: the training set the images were matched against.
        params: n_neighbors, alpha, max_distance, sampler settings.
    """

    generated: torch.Tensor
    generated_labels: torch.Tensor
    nearest_ids: np.ndarray
    distances: np.ndarray
    relative_distances: np.ndarray
    extracted: np.ndarray
    training: LabeledImages
    params: dict

    @property
    def extracted_training_ids(self) -> list[int]:
        """Sorted ids of the training images that were regenerated at least once."""
        return sorted({int(i) for i in self.nearest_ids[self.extracted]})

    def at_alpha(self, alpha: float) -> dict:
        """The counts the rule gives at another ``alpha`` (same neighbours and distances; ``max_distance`` kept)."""
        relative = self.relative_distances * self.params["alpha"] / alpha
        extracted = relative < 1.0
        if self.params["max_distance"] is not None:
            extracted &= self.distances <= self.params["max_distance"]
        return {"alpha": alpha, "num_extracted": int(extracted.sum()),
                "num_training_images_extracted": len({int(i) for i in self.nearest_ids[extracted]}),
                "extracted_training_ids": sorted({int(i) for i in self.nearest_ids[extracted]})}

    def pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The copies as two aligned image tensors (K, C, H, W): generated and the training image it copies."""
        rows = np.flatnonzero(self.extracted)
        position = {int(i): p for p, i in enumerate(self.training.ids.tolist())}
        training_rows = [position[int(i)] for i in self.nearest_ids[rows]]
        return self.generated[rows], self.training.images[training_rows]

    def to_dict(self) -> dict:
        """Counts, the extracted training ids, and every distance, JSON-ready."""
        rows = np.flatnonzero(self.extracted)
        labels = self.generated_labels.numpy()
        per_class = {
            int(c): {
                "num_generated": int((labels == c).sum()),
                "num_extracted": int(self.extracted[labels == c].sum()),
            }
            for c in np.unique(labels)
        }
        return {
            "num_generated": len(self.extracted),
            "num_extracted": int(self.extracted.sum()),
            "extraction_rate": float(self.extracted.mean()) if len(self.extracted) else 0.0,
            "num_training_images_extracted": len(self.extracted_training_ids),
            "extracted_training_ids": self.extracted_training_ids,
            "per_class": per_class,
            "copies": [
                {
                    "generated_index": int(r),
                    "training_id": int(self.nearest_ids[r]),
                    "distance": float(self.distances[r]),
                    "relative_distance": float(self.relative_distances[r]),
                }
                for r in rows
            ],
            "nearest_distance": {
                "mean": float(self.distances.mean()),
                "min": float(self.distances.min()),
                "quantiles_5_50_95": np.quantile(self.distances, [0.05, 0.5, 0.95]).tolist(),
            },
            "relative_distance_quantiles_5_50_95": np.quantile(self.relative_distances, [0.05, 0.5, 0.95]).tolist(),
            "at_paper_alpha": self.at_alpha(PAPER_ALPHA),
            "params": self.params,
        }


def match_to_training(
    generated: torch.Tensor,
    training: LabeledImages,
    *,
    generated_labels: torch.Tensor | None = None,
    n_neighbors: int = 50,
    alpha: float = DEFAULT_ALPHA,
    max_distance: float | None = None,
    params: dict | None = None,
) -> ExtractionResult:
    """Find each generated image's nearest training images and flag copies by the relative L2 rule.

    Args:
        generated: (G, C, H, W) images in [-1, 1].
        training: the training images to search (N >= 1), with their dataset ids.
        generated_labels: (G,) class of each generated image, or None.
        n_neighbors: size n of the neighbourhood whose mean distance normalises the nearest one (at most N).
        alpha: the rule's alpha: a copy is at most alpha times the mean neighbour distance away.
        max_distance: an optional absolute ceiling on the nearest L2 distance for a copy.
        params: extra settings to record in the result (e.g. the sampler).
    """
    validate_params(
        {"n_neighbors": POSITIVE_INT, "alpha": [Interval(Real, 0, 1, closed="right")],
         "max_distance": [None, Interval(Real, 0, None)]},
        {"n_neighbors": n_neighbors, "alpha": alpha, "max_distance": max_distance}, "match_to_training")
    if len(training) == 0:
        raise UsageError("match_to_training got an empty training set; give at least one training image")
    if tuple(generated.shape[1:]) != tuple(training.images.shape[1:]):
        raise UsageError(
            f"generated images of shape {tuple(generated.shape[1:])} cannot be matched to training images of "
            f"shape {tuple(training.images.shape[1:])}"
        )
    k = min(n_neighbors, len(training))
    distances = torch.cdist(generated.flatten(1).double(), training.images.flatten(1).double())
    nearest, index = distances.topk(k, dim=1, largest=False)
    d1 = nearest[:, 0].numpy()
    relative = d1 / (alpha * nearest.mean(1).clamp_min(1e-12).numpy())
    extracted = relative < 1.0
    if max_distance is not None:
        extracted &= d1 <= max_distance
    labels = generated_labels if generated_labels is not None else torch.full((len(generated),), -1)
    return ExtractionResult(
        generated=generated,
        generated_labels=labels,
        nearest_ids=training.ids.numpy()[index[:, 0].numpy()],
        distances=d1,
        relative_distances=relative,
        extracted=extracted,
        training=training,
        params={"n_neighbors": k, "alpha": alpha, "max_distance": max_distance, **(params or {})},
    )


def extract_training_data(
    model: DiffusionModel,
    training: LabeledImages,
    classes: Sequence[int] | None = None,
    *,
    per_class: int = 100,
    seed: int = 0,
    n_neighbors: int = 50,
    alpha: float = DEFAULT_ALPHA,
    max_distance: float | None = None,
    steps: int = 50,
    wordings: ClassCaptions | None = None,
) -> ExtractionResult:
    """Generate ``per_class`` DDIM images per targeted class and match them to ``training`` (a text model is
    asked for each class in the data's ``wordings``).

    ``classes`` None means every class of a class-conditional model, or ``per_class`` images from an
    unconditional one. The defaults (alpha 0.15, n 50) are fitted to 8x8 digits, where Carlini et al.'s alpha 0.5
    (set for 32x32 CIFAR-10) flags natural look-alikes among heldout digits (benchmarks/results/defaults.md).
    """
    validate_params({"per_class": POSITIVE_INT, "steps": POSITIVE_INT}, {"per_class": per_class, "steps": steps},
                    "extract_training_data")
    if classes is not None:
        classes = check_class_ids(model, classes, "extraction for given classes", wordings)
    elif model.num_classes is not None:
        classes = list(range(model.num_classes))
    if classes is None:
        generated = model.sample(None, seed=seed, num=per_class, steps=steps)
        labels = None
    else:
        generated, labels = generate_per_class(model, classes, per_class, seed=seed, steps=steps, wordings=wordings)
    return match_to_training(
        generated,
        training,
        generated_labels=labels,
        n_neighbors=n_neighbors,
        alpha=alpha,
        max_distance=max_distance,
        params={"per_class": per_class, "classes": classes, "sampler": f"ddim-{steps}", "seed": seed},
    )
