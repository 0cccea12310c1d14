"""Fine-tuning a pretrained diffusion model on new images: every weight, or a low-rank adapter (LoRA).

Full fine-tuning continues DDPM training (Ho et al., NeurIPS 2020) from the base's weights. LoRA (Hu et al., "LoRA:
Low-Rank Adaptation of Large Language Models", ICLR 2022) freezes them and trains a rank-R update ``B A`` of every
convolution and linear layer of the denoiser through peft, as diffusers' LoRA training scripts adapt Stable
Diffusion's UNet; the updates are merged into the weights at the end, so a fine-tuned model is saved in its base's
own diffusers layout and loads like any other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .model import DiffusionModel
from .training import TrainConfig, TrainRecord, train_denoiser


def lora_targets(module: torch.nn.Module) -> list[str]:
    """The names of every convolution and linear layer of ``module``: the layers a LoRA adapts."""
    return [name for name, layer in module.named_modules() if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear))]


def fine_tune(
    model: DiffusionModel,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    config: TrainConfig,
    *,
    conditions: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    accelerator=None,
    quiet: bool = False,
    desc: str = "fine-tune",
) -> TrainRecord:
    """Train ``model`` in place from its current weights on ``images`` (N, C, H, W) and ``labels`` (N,) (or caption
    token ids (N, L)) with ``config`` (:func:`~diffusion.training.train_denoiser`); with ``config.lora_rank`` R > 0
    only a rank-R LoRA of every layer trains (``lora_alpha`` = R, so the update's scale is 1), merged at the end."""
    if not config.lora_rank:
        return train_denoiser(model, images, labels, config, accelerator=accelerator, quiet=quiet, desc=desc,
                              conditions=conditions)
    from peft import LoraConfig  # peft only when a LoRA is trained
    from peft.tuners.lora import LoraModel

    rank = config.lora_rank
    adapter = LoraConfig(r=rank, lora_alpha=rank, target_modules=lora_targets(model.unet))
    with torch.random.fork_rng(devices=[]):  # the adapter's initial A from the recipe's seed, B = 0
        torch.manual_seed(config.seed)
        model.unet = LoraModel(model.unet, adapter, "lora")
    try:
        record = train_denoiser(model, images, labels, config, accelerator=accelerator, quiet=quiet, desc=desc,
                                conditions=conditions)
    finally:
        model.unet = model.unet.merge_and_unload()
    return record
