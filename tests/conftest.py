"""Shared fixtures: the bundled digits, deterministic splits and tiny real diffusers models (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion.data import load_digits_dataset
from diffusion.judge import train_judge
from diffusion.model import DiffusionModel
from diffusion.splits import make_splits

# One thread: the tiny models gain nothing from two, and a busy 2-core machine slows two threads 5-10x.
torch.set_num_threads(1)

TINY = dict(block_out_channels=(8, 16), layers_per_block=1, num_train_timesteps=100)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep every test's cache (judge, reference models) out of the user's home."""
    monkeypatch.setenv("ERASEDIFF_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def digits():
    return load_digits_dataset()


@pytest.fixture(scope="session")
def splits(digits):
    return make_splits(digits.labels, seed=0)


def tiny_model(seed: int = 0, num_classes: int | None = 10) -> DiffusionModel:
    """A ~20 k parameter class-conditional UNet2DModel on 8x8 with a 100-step DDPM schedule, on the CPU."""
    return DiffusionModel.create(num_classes=num_classes, seed=seed, device="cpu", **TINY)


@pytest.fixture
def model() -> DiffusionModel:
    return tiny_model()


@pytest.fixture(scope="session")
def judge(digits):
    """The real judge recipe (about 10 s): later tests score generated images with it."""
    return train_judge(digits)


def write_digit_folder(root: Path, digits, classes=(0, 1, 2)) -> Path:
    """The bundled digits of ``classes`` written as an image folder ``root/digit<c>/<id>.png`` (8x8 grey PNGs)."""
    for c in classes:
        (root / f"digit{c}").mkdir(parents=True)
        for i in np.flatnonzero(digits.labels.numpy() == c):
            pixels = ((digits.images[i, 0].numpy() + 1) * 127.5).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / f"digit{c}" / f"{i}.png")
    return root
