"""The reference model: the class-conditional DDPM trained on the members, the model the toolkit erases from.

It is trained once per (data, split, recipe) and cached by a key over all three, so later runs reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMScheduler

from .cache import cache_entry, content_key, load_or_build_model
from .captions import CaptionSampler, build_tokenizer
from .data import ImageDataset
from .environment import environment_info
from .errors import UsageError
from .fine_tune import fine_tune
from .model import DiffusionModel
from .splits import Splits
from .text_model import TextDiffusionModel, build_text_components, training_captions
from .training import TrainConfig, train_denoiser


@dataclass(frozen=True)
class TrainedModel:
    """A trained model and the record written beside it (``erasediff.json``)."""

    model: DiffusionModel
    record: dict


def untrained_model(
    dataset: ImageDataset, config: TrainConfig, device: torch.device | str | None = None
) -> DiffusionModel:
    """A freshly initialised model of ``config``'s kind and architecture for ``dataset``'s images: class-conditional,
    or (``kind`` "text") text-conditional with a tokenizer of the data's captions.

    Also the stand-in that parameters are checked against before a reference model is trained.
    """
    if config.kind == "text":
        return untrained_text_model(dataset, config, device)
    return DiffusionModel.create(
        sample_size=dataset.image_shape[1],
        channels=dataset.image_shape[0],
        num_classes=dataset.num_classes,
        block_out_channels=config.block_out_channels,
        layers_per_block=config.layers_per_block,
        num_train_timesteps=config.num_train_timesteps,
        seed=config.seed,
        device=device,
    )


def untrained_text_model(
    dataset: ImageDataset, config: TrainConfig, device: torch.device | str | None = None
) -> TextDiffusionModel:
    """A freshly initialised text-to-image model of ``dataset`` (pixel space, no VAE) whose tokenizer knows every
    word of its captions (the images' own, if any) and of its classes' training and held-out wordings
    (:attr:`ImageDataset.class_wordings`); the same ``config.seed`` gives the same weights."""
    try:
        tokenizer = build_tokenizer([*dataset.class_wordings.every_caption(), *(dataset.captions or ())])
    except ValueError as error:
        raise UsageError(f"cannot build a tokenizer for the captions of '{dataset.name}': {error}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        unet, text_encoder = build_text_components(tokenizer, dataset.image_shape[1], dataset.image_shape[0],
                                                   config.block_out_channels)
    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="linear",
                              clip_sample=False, steps_offset=1)  # as Stable Diffusion's (its pipeline insists)
    return TextDiffusionModel(unet, text_encoder, tokenizer, scheduler, device=device)


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
    base: DiffusionModel | None = None,
) -> TrainedModel:
    """Train a fresh model of ``config``'s kind on the dataset images with the given ids: class-conditional, or a
    text model on each image's own caption (data with captions) or a random training wording of its class, with
    caption dropout. Given a ``base``, fine-tune a copy of it instead (:func:`~diffusion.fine_tune.fine_tune`) on
    the images as it takes them (a text model's encoded and captioned, :meth:`DiffusionModel.data_view`: the view
    its re-fine-tuned references get too)."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if base is not None:
        model = base.copy()
        view = model.data_view(dataset, config.seed)(dataset.select(ids))
        labels = view.labels if model.conditioning != "none" else None
        record = fine_tune(model, view.images, labels, config, accelerator=accelerator, quiet=quiet, desc=role,
                           conditions=model.training_conditions(config.caption_dropout))
    else:
        model = untrained_model(dataset, config, device)
        labels, conditions = dataset.labels[ids], None
        if config.kind == "text" and dataset.captions is not None:
            labels = training_captions(dataset, ids, model, config.seed)
            conditions = model.training_conditions(config.caption_dropout)
        elif config.kind == "text":
            conditions = CaptionSampler(model.tokenizer, dataset.class_wordings, dropout=config.caption_dropout)
        record = train_denoiser(model, dataset.images[ids], labels, config, accelerator=accelerator,
                                quiet=quiet, desc=role, conditions=conditions)
    metadata = {
        "role": role,
        "data": {"name": dataset.name, "fingerprint": dataset.fingerprint(), "num_images": len(ids)},
        "train_config": config.to_dict(),
        "steps": record.steps,
        "wall_seconds": record.seconds,
        "loss_curve": record.loss_curve,
        "environment": environment_info(),
        **(extra or {}),
    }
    return TrainedModel(model, metadata)


def _recipe_payload(dataset: ImageDataset, splits: Splits, config: TrainConfig) -> dict:
    return {"data": dataset.fingerprint(), "splits": splits.to_dict(), "config": config.to_dict()}


def recipe_key(record: dict) -> str | None:
    """The key of what a model was trained from (data, split, training settings), read from the record
    ``erasediff train`` writes beside it; None for a model that records no such recipe (a hub model).

    The built-in reference is cached under this key, and measurements made on it are shipped under it
    (:func:`audit.seed_spread.priors_for`): trained on another CPU, the same recipe gives other bits."""
    try:
        payload = {"data": record["data"]["fingerprint"], "splits": record["splits"], "config": record["train_config"]}
    except (KeyError, TypeError):
        return None
    return content_key(payload)


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
    directory = directory or cache_entry("reference", _recipe_payload(dataset, splits, config))

    def build() -> tuple[DiffusionModel, dict]:
        trained = train_on_ids(
            dataset, splits.members, config, role="reference", extra={"splits": splits.to_dict()}, quiet=quiet
        )
        return trained.model, trained.record

    model, built = load_or_build_model(directory, build, "reference model")
    return model, directory, built
