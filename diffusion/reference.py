"""The reference model: the class-conditional DDPM trained on the members, the model the toolkit erases from.

It is trained once per (data, split, recipe) and cached by a key over all three, so later runs reuse it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .data import ImageDataset
from .environment import environment_info
from .io import atomic_output_dir, cache_dir
from .model import DiffusionModel
from .splits import Splits
from .training import TrainConfig, train_denoiser

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    """A trained model and the record written beside it (``erasediff.json``)."""

    model: DiffusionModel
    record: dict


def train_on_ids(
    dataset: ImageDataset,
    ids,
    config: TrainConfig,
    *,
    role: str,
    extra: dict | None = None,
    quiet: bool = False,
    accelerator=None,
    device: torch.device | str | None = None,
) -> TrainedModel:
    """Train a fresh class-conditional model from ``config`` on the dataset images with the given ids."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    model = DiffusionModel.create(
        sample_size=dataset.image_shape[1],
        channels=dataset.image_shape[0],
        num_classes=dataset.num_classes,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        num_train_timesteps=config.num_train_timesteps,
        seed=config.seed,
        device=device,
    )
    record = train_denoiser(
        model, dataset.images[ids], dataset.labels[ids], config, accelerator=accelerator, quiet=quiet, desc=role
    )
    metadata = {
        "role": role,
        "data": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "num_images": int(len(ids))},
        "train_config": config.to_dict(),
        "steps": record.steps,
        "wall_seconds": record.seconds,
        "loss_curve": record.loss_curve,
        "environment": environment_info(),
        **(extra or {}),
    }
    return TrainedModel(model, metadata)


def reference_key(dataset: ImageDataset, splits: Splits, config: TrainConfig) -> str:
    """Cache key of a reference model: data fingerprint, member ids and the training recipe."""
    payload = json.dumps(
        {"data": dataset.fingerprint(), "splits": splits.to_dict(), "config": config.to_dict()}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def load_or_train_reference(
    dataset: ImageDataset,
    splits: Splits,
    config: TrainConfig,
    *,
    quiet: bool = False,
    directory: Path | None = None,
) -> tuple[DiffusionModel, Path, bool]:
    """The reference model for (dataset, splits, config): from the cache, or trained and cached now.

    Returns the model, its folder, and whether it was trained in this call.
    """
    directory = directory or cache_dir() / "reference" / reference_key(dataset, splits, config)
    if (directory / "erasediff.json").is_file():
        logger.info("reusing cached reference model %s", directory)
        return DiffusionModel.load(directory), directory, False
    trained = train_on_ids(
        dataset, splits.members, config, role="reference", extra={"splits": splits.to_dict()}, quiet=quiet
    )
    with atomic_output_dir(directory, force=True) as tmp:
        trained.model.save(tmp, trained.record)
    return trained.model, directory, True
