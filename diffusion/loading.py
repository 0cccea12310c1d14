"""Load a saved or hub model as the adapter its layout calls for.

A diffusers ``DDPMPipeline`` folder (a class-conditional ``UNet2DModel``) loads as a
:class:`~diffusion.model.DiffusionModel`; a Stable-Diffusion layout (a ``text_encoder`` beside a
``UNet2DConditionModel``) as a :class:`~diffusion.text_model.TextDiffusionModel`. The adapters themselves never import
each other's subclasses: this module is the one place that chooses.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .model import DiffusionModel, model_location
from .text_model import TextDiffusionModel, is_text_to_image


def load_model(source: str | Path, device: torch.device | str | None = None) -> DiffusionModel:
    """The model in folder ``source`` (or the hub model ``hf://owner/name``), safetensors only, as the adapter its
    layout calls for; a :class:`~diffusion.errors.UsageError` in one line for a folder that holds no model."""
    location, local = model_location(source)
    adapter = TextDiffusionModel if is_text_to_image(location, local) else DiffusionModel
    return adapter.load(source, device)
