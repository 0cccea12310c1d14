"""The judge: a small CNN classifier that scores generated images (class, confidence, features).

It is trained on a stratified part of the dataset and tested on the rest; the test ids are recorded with
its weights. Its penultimate activations are the feature space of the Frechet distance (Heusel et al.,
"GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from sklearn.model_selection import train_test_split
from torch import nn

from .cache import building, cache_entry
from .data import ImageDataset
from .errors import UsageError
from .io import write_json
from .training import process_state

logger = logging.getLogger(__name__)

JUDGE_VERSION = 1


class JudgeNet(nn.Module):
    """conv(32) - conv(64) - pool - conv(64) - global pool - fc(128) - fc(classes), for (B, C, H, W) in [-1, 1]."""

    def __init__(self, channels: int, num_classes: int, feature_dim: int = 128):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(64 * 4, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@dataclass
class Judge:
    """A trained :class:`JudgeNet` plus its provenance (test accuracy, test ids, data fingerprint)."""

    net: JudgeNet
    record: dict

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Class probabilities (B, num_classes) for images (B, C, H, W) in [-1, 1]."""
        self.net.eval()
        return torch.cat([F.softmax(self.net(images[i : i + batch_size].float()), 1)
                          for i in range(0, len(images), batch_size)]) if len(images) else torch.empty(0)

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """Penultimate features (B, 128) as float64, for Frechet distances."""
        self.net.eval()
        parts = [self.net.body(images[i : i + batch_size].float()) for i in range(0, len(images), batch_size)]
        return torch.cat(parts).double().numpy()

    @property
    def test_accuracy(self) -> float:
        return float(self.record["test_accuracy"])


def _shift_augment(x: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Random translation by up to ``max_shift`` pixels (padding with background -1): (B, C, H, W)."""
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    h, w = x.shape[-2:]
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + h, dx : dx + w]


def train_judge(dataset: ImageDataset, *, seed: int = 0, epochs: int = 40, test_fraction: float = 0.2) -> Judge:
    """Train the judge on a stratified (1 - test_fraction) of ``dataset`` and measure it on the rest.

    Every class needs enough images to appear in both parts (5 for the default test_fraction).
    """
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"test_fraction must be in (0, 1); got {test_fraction}")
    minimum = math.ceil(round(1 / min(test_fraction, 1 - test_fraction), 9))
    counts = np.bincount(dataset.labels.numpy(), minlength=dataset.num_classes)
    smallest = int(counts.argmin())
    if counts[smallest] < minimum:
        raise UsageError(f"the judge needs at least {minimum} images per class; "
                         f"class '{dataset.class_names[smallest]}' has {counts[smallest]}")
    ids = np.arange(len(dataset))
    train_ids, test_ids = train_test_split(
        ids, test_size=test_fraction, stratify=dataset.labels.numpy(), random_state=seed
    )
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = JudgeNet(dataset.image_shape[0], dataset.num_classes)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_train, y_train = dataset.images[train_ids], dataset.labels[train_ids]
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(train_ids), generator=generator)
        for start in range(0, len(order), 64):
            idx = order[start : start + 64]
            loss = F.cross_entropy(net(_shift_augment(x_train[idx], generator)), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    judge = Judge(net.eval(), {})
    predictions = judge.probabilities(dataset.images[test_ids]).argmax(1)
    accuracy = (predictions == dataset.labels[test_ids]).float().mean().item()
    judge.record = {
        "version": JUDGE_VERSION,
        "seed": seed,
        "epochs": epochs,
        "data_fingerprint": dataset.fingerprint(),
        "data_name": dataset.name,
        "num_classes": dataset.num_classes,
        "channels": dataset.image_shape[0],
        "test_accuracy": accuracy,
        "test_ids": np.sort(test_ids).tolist(),
    }
    logger.info("judge trained: test accuracy %.4f on %d images", accuracy, len(test_ids))
    return judge


def load_or_train_judge(dataset: ImageDataset, *, seed: int = 0, directory: Path | None = None) -> Judge:
    """The judge for ``dataset``, from the cache when present (keyed by data fingerprint, seed, version)."""
    directory = directory or cache_entry(
        "judges", {"data": dataset.fingerprint(), "seed": seed, "version": JUDGE_VERSION}
    )
    weights, meta = directory / "judge.safetensors", directory / "judge.json"
    with building(directory, "judge", lambda: weights.is_file() and meta.is_file()) as needed:
        if not needed:
            record = json.loads(meta.read_text())
            net = JudgeNet(record["channels"], record["num_classes"])
            net.load_state_dict(load_file(weights))
            return Judge(net.eval(), record)
        judge = train_judge(dataset, seed=seed)  # the same judge on every process of a launch (same seed)
        if process_state().is_main_process:
            directory.mkdir(parents=True, exist_ok=True)
            save_file(judge.net.state_dict(), str(weights) + ".tmp")
            Path(str(weights) + ".tmp").replace(weights)
            write_json(meta, judge.record)
    return judge
