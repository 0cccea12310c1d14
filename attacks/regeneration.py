"""Conditional regeneration: ask the model for the erased class and let the judge say whether it comes back.

The probe of the unlearning papers (e.g. Heng and Soh, "Selective Amnesia", NeurIPS 2023; Fan et al., "SalUn",
ICLR 2024): generate with the forgotten condition and measure the judge's accuracy, its confidence and entropy,
and how close the images come to the forget set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

import torch

from diffusion.captions import ClassCaptions
from diffusion.data import LabeledImages
from diffusion.errors import UsageError
from diffusion.judge import Judge
from diffusion.model import DiffusionModel
from diffusion.params import Interval, validate_params
from diffusion.quality import entropy, generate_per_class, judged_correct

POSITIVE_INT = [Interval(Integral, 1, None)]


@dataclass
class ResurrectionResult:
    """What a resurrection probe generated and what the judge made of it.

    Attributes:
        probe: ``conditional_regeneration`` or ``embedding_inversion``.
        images: (G, C, H, W) generated images in [-1, 1].
        target_classes: (G,) the erased class each image was generated for.
        metrics: JSON-ready numbers (see :func:`judge_generated`) and the probe's settings.
    """

    probe: str
    images: torch.Tensor
    target_classes: torch.Tensor
    metrics: dict

    def to_dict(self) -> dict:
        return {"probe": self.probe, **self.metrics}


def _summary(probs: torch.Tensor, target: torch.Tensor, nn_distance: torch.Tensor) -> dict:
    """Judge accuracy, mean probability of the target class, mean entropy (nats), mean nearest distance."""
    return {
        "num_images": len(target),
        "judge_accuracy": float(judged_correct(probs, target).mean()),
        "mean_probability": float(probs.gather(1, target[:, None]).mean()),
        "entropy": float(entropy(probs).mean()),
        "nn_distance_to_forget": float(nn_distance.mean()),
    }


def judge_generated(judge: Judge, images: torch.Tensor, target_classes: torch.Tensor, forget: LabeledImages) -> dict:
    """How much of the erased classes the judge sees in ``images``, overall and per class.

    ``nn_distance_to_forget`` is the mean L2 distance (pixels in [-1, 1]) from each image to its nearest forget
    image of the same class (of any class when the forget set holds none of it); lower = closer to D_f.
    ``per_image_correct`` is the judge's 0/1 verdict on each image, in order (models sampled from the same noises
    compare image by image).
    """
    probs = judge.probabilities(images)
    target_classes = target_classes.long()
    distances = torch.cdist(images.flatten(1).double(), forget.images.flatten(1).double())
    same_class = forget.labels[None, :] == target_classes[:, None]
    has_same = same_class.any(1, keepdim=True)
    distances = distances.masked_fill(has_same & ~same_class, float("inf"))
    nearest = distances.min(1).values
    per_class = {}
    for c in target_classes.unique().tolist():
        rows = target_classes == c
        per_class[int(c)] = _summary(probs[rows], target_classes[rows], nearest[rows])
    correct = [int(v) for v in judged_correct(probs, target_classes).tolist()]
    return {**_summary(probs, target_classes, nearest), "per_image_correct": correct, "per_class": per_class}


def check_class_ids(model: DiffusionModel, classes: Sequence[int], what: str,
                    wordings: ClassCaptions | None = None) -> list[int]:
    """The class ids as ints; raise :class:`UsageError` for an unconditional model, a bad id or no id (a text
    model's classes are those its data's ``wordings`` name)."""
    num_classes = model.classes_known(wordings, what)
    classes = [int(c) for c in classes]
    if not classes:
        raise UsageError(f"{what} needs at least one class id")
    for c in classes:
        if num_classes is not None and not 0 <= c < num_classes:
            raise UsageError(f"class {c} is out of range; expected a class id in 0..{num_classes - 1}")
    return classes


def check_erased_classes(model: DiffusionModel, forget: LabeledImages, classes: Sequence[int], what: str,
                         wordings: ClassCaptions | None = None) -> list[int]:
    """:func:`check_class_ids`, and the forget set must not be empty."""
    classes = check_class_ids(model, classes, what, wordings)
    if len(forget) == 0:
        raise UsageError(f"{what} got an empty forget set; give the erased images")
    return classes


def conditional_regeneration(
    model: DiffusionModel,
    judge: Judge,
    forget: LabeledImages,
    classes: Sequence[int],
    *,
    seed: int = 0,
    per_class: int = 50,
    steps: int = 50,
) -> ResurrectionResult:
    """Generate ``per_class`` DDIM images for each erased class and judge them (see :func:`judge_generated`).

    The noises are those of :func:`diffusion.quality.generate_per_class`, so every model sees the same ones.
    """
    classes = check_erased_classes(model, forget, classes, "conditional regeneration")
    validate_params({"per_class": POSITIVE_INT, "steps": POSITIVE_INT}, {"per_class": per_class, "steps": steps},
                    "conditional_regeneration")
    images, labels = generate_per_class(model, classes, per_class, seed=seed, steps=steps)
    metrics = judge_generated(judge, images, labels, forget)
    metrics.update(classes=classes, per_class_images=per_class, sampler=f"ddim-{steps}", seed=seed)
    return ResurrectionResult("conditional_regeneration", images, labels, metrics)
