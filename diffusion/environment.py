"""Provenance: package versions and the device, recorded in every output."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

PACKAGES = ("torch", "diffusers", "accelerate", "scikit-learn", "scipy", "numpy", "safetensors", "erasediff")


def use_threads(threads: int | None) -> None:
    """Run torch's CPU operators on ``threads`` threads (None: leave torch's default, one per core)."""
    if threads is not None:
        torch.set_num_threads(threads)


def environment_info() -> dict:
    """Python, package versions and the compute device of this process."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
    }
