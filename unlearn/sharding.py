"""One global batch shared by the processes of an Accelerate launch, row by row.

Every process draws the same global batch and the same random numbers for it (one generator, the same seed), and
computes on its own equal share of the rows. With equal shares the mean of the processes' gradients is the
gradient on the global batch, so P processes take the steps one process takes, up to floating-point summation
order. A one-process run draws exactly what it drew before sharding existed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffusion.data import LabeledImages


@dataclass(frozen=True)
class Shard:
    """Process ``index`` of ``count``: which rows of a global batch it computes on."""

    index: int = 0
    count: int = 1

    def usable(self, size: int) -> int:
        """The largest global batch of at most ``size`` rows that the processes share equally."""
        return size - size % self.count

    def rows(self, size: int) -> slice:
        """This process's rows of a global batch of ``size`` rows (a multiple of ``count``)."""
        share = size // self.count
        return slice(self.index * share, (self.index + 1) * share)

    def of(self, batch: LabeledImages) -> LabeledImages:
        """This process's rows of the global ``batch``, remembering where they came from (:class:`BatchShare`)."""
        return batch if self.count == 1 else _share(batch, self.rows(len(batch)))


@dataclass(frozen=True)
class BatchShare(LabeledImages):
    """Rows ``rows`` of a global batch whose labels are ``global_labels`` (N,): what one process computes on."""

    rows: slice
    global_labels: torch.Tensor


def global_size(batch: LabeledImages) -> int:
    """The number of rows of the global batch ``batch`` belongs to."""
    return len(batch.global_labels) if isinstance(batch, BatchShare) else len(batch)


def global_labels(batch: LabeledImages) -> torch.Tensor:
    """The labels (N,) of the global batch ``batch`` belongs to."""
    return batch.global_labels if isinstance(batch, BatchShare) else batch.labels


def share_like(batch: LabeledImages, like: LabeledImages) -> LabeledImages:
    """The rows of the global ``batch`` that ``like`` (a batch of the same global size) holds."""
    return _share(batch, like.rows) if isinstance(like, BatchShare) else batch


def _share(batch: LabeledImages, rows: slice) -> BatchShare:
    return BatchShare(batch.images[rows], batch.labels[rows], batch.ids[rows], rows, batch.labels)


def per_row(batch: LabeledImages, draw: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """``draw(n)`` for the ``n`` rows of ``batch``'s global batch (one row per leading index), cut to ``batch``'s
    rows: every process draws the same numbers and keeps its own."""
    drawn = draw(global_size(batch))
    return drawn[batch.rows] if isinstance(batch, BatchShare) else drawn
