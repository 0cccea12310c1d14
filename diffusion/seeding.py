"""Randomness derived from (seed, stream, sample id), so results depend on neither batch size nor device count."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and any labels (a stream name, a sample id, a timestep index...)."""
    text = "/".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def seeded_generators(seed: int, ids: Sequence[int], stream: str) -> list[torch.Generator]:
    """One CPU generator per sample id, seeded from (seed, stream, id)."""
    return [torch.Generator().manual_seed(derive_seed(seed, stream, int(i))) for i in ids]


def seeded_normal(seed: int, ids: Sequence[int], shape: Sequence[int], stream: str) -> torch.Tensor:
    """Standard normal noise of shape (len(ids), *shape) on the CPU; row i depends only on (seed, stream, ids[i])."""
    rows = [torch.randn(tuple(shape), generator=g) for g in seeded_generators(seed, ids, stream)]
    return torch.stack(rows) if rows else torch.empty((0, *shape))

