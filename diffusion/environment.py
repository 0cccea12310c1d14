"""Provenance: package versions and the device, recorded in every output."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from .errors import UsageError

PACKAGES = ("torch", "diffusers", "accelerate", "scikit-learn", "scipy", "numpy", "safetensors", "erasediff")


def use_threads(threads: int | None) -> None:
    """Run torch's CPU operators on ``threads`` threads (None: leave torch's default, one per core).

    More threads than the machine has cores only slow torch down (1000 threads on 2 cores ran for over ten minutes
    what 2 do in seconds), so such a number is refused (:class:`UsageError`) before any work.
    """
    if threads is None:
        return
    cores = os.cpu_count() or 1
    if threads > cores:
        raise UsageError(f"--threads {threads} is more than this machine's {cores} CPU core(s); give at most {cores}")
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
