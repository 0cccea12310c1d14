"""Generation quality judged by the judge: per-class accuracy, entropy, and a Frechet distance.

Forgetting = the judge's accuracy (lower is better) and entropy (higher is better) on samples generated for the
forgotten classes; utility = its accuracy on the retained classes and the Frechet distance (Heusel et al.,
NeurIPS 2017) between generated and real retained-class images in the judge's feature space.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import linalg

from .captions import ClassCaptions
from .data import ImageDataset
from .judge import Judge
from .model import DiffusionModel


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between two (N, D) feature sets.

    Tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2), which stays stable when a covariance is singular (dead ReLU features).
    """
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    values, vectors = linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    cross = linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_root = np.sqrt(cross.clip(min=0)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each row of a (B, K) probability matrix: shape (B,)."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(1)


def judged_correct(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1.0 where the judge's top class of a (B, K) probability matrix is the label, else 0.0: shape (B,).

    In float64, so a mean of k hits out of n is exactly k / n (a float32 mean makes 5 of 50 0.1000000015, which
    fails a 10% bar).
    """
    return (probabilities.argmax(1) == labels).double()


def per_class_noise_ids(classes: Sequence[int], per_class: int) -> list[int]:
    """Noise ids of ``per_class`` samples of each class: sample j of class k gets id ``k * 100000 + j``, so every
    model, and every probe generating for class k, starts from the same noise."""
    return [int(c) * 100_000 + j for c in classes for j in range(per_class)]


def generate_per_class(
    model: DiffusionModel, classes: Sequence[int], per_class: int, *, seed: int, steps: int = 50,
    wordings: ClassCaptions | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` DDIM samples for each class: images (K * per_class, C, H, W) and labels (K * per_class,),
    with the noises of :func:`per_class_noise_ids`, each class asked for as the model takes it
    (:meth:`DiffusionModel.conditions_for`; a text model needs the data's ``wordings``)."""
    labels = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
    conditioning = model.conditions_for(labels, wordings)
    return model.sample(conditioning, seed=seed, ids=per_class_noise_ids(classes, per_class), steps=steps), labels


def evaluate_generation(
    model: DiffusionModel,
    judge: Judge,
    dataset: ImageDataset,
    *,
    forget_classes: Sequence[int] = (),
    per_class: int = 50,
    forgotten_per_class: int | None = None,
    seed: int = 0,
    steps: int = 50,
) -> dict:
    """Judge ``per_class`` samples of every retained class and ``forgotten_per_class`` (default ``per_class``) of
    every forgotten one; split the numbers into forgotten and retained classes.

    Returns a JSON-ready dict: ``per_class_accuracy``, ``per_class_entropy``, ``overall_accuracy``,
    ``forgotten_accuracy``, ``forgotten_entropy`` and ``forgotten_correct`` (the 0/1 judgment of each forgotten
    sample, in noise-id order, so models that share the noises compare image by image; None without forgotten
    classes), ``retained_correct`` (class -> the 0/1 judgment of each of its samples, in noise-id order: the
    per-class side-effect check pairs them across models), ``retained_accuracy``, ``retained_fd`` and the sampling
    settings.
    """
    classes = list(range(model.classes_known(dataset.class_wordings, "generation quality") or dataset.num_classes))
    forgotten_classes = [c for c in classes if c in set(forget_classes)]
    retained_classes = [c for c in classes if c not in set(forget_classes)]
    forgotten_per_class = per_class if forgotten_per_class is None else forgotten_per_class
    parts = [generate_per_class(model, group, count, seed=seed, steps=steps, wordings=dataset.class_wordings)
             for group, count in ((forgotten_classes, forgotten_per_class), (retained_classes, per_class)) if group]
    images, labels = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    probs = judge.probabilities(images)
    correct = judged_correct(probs, labels)
    ent = entropy(probs)
    per_class_accuracy = {c: correct[labels == c].mean().item() for c in classes}
    per_class_entropy = {c: ent[labels == c].mean().item() for c in classes}
    forgotten = torch.isin(labels, torch.tensor(forgotten_classes, dtype=torch.long))
    real = dataset.images[torch.isin(dataset.labels, torch.tensor(retained_classes))]
    fd = frechet_distance(judge.features(images[~forgotten]), judge.features(real))
    return {
        "per_class_accuracy": per_class_accuracy,
        "per_class_entropy": per_class_entropy,
        "overall_accuracy": correct.mean().item(),
        "forgotten_accuracy": correct[forgotten].mean().item() if forgotten.any() else None,
        "forgotten_entropy": ent[forgotten].mean().item() if forgotten.any() else None,
        "forgotten_correct": [int(v) for v in correct[forgotten].tolist()] if forgotten.any() else None,
        "retained_correct": {c: [int(v) for v in correct[labels == c].tolist()] for c in retained_classes},
        "retained_accuracy": correct[~forgotten].mean().item(),
        "retained_fd": fd,
        "samples_per_class": per_class,
        "forgotten_samples_per_class": forgotten_per_class if forgotten.any() else None,
        "sampler": f"ddim-{steps}",
        "seed": seed,
    }
