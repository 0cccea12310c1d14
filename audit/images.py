"""PNG files of image tensors for the report: sample grids and side-by-side pairs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    array = ((images.detach().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return array.permute(0, 2, 3, 1).numpy()


def save_grid(images: torch.Tensor, path: Path, *, columns: int | None = None, scale: int = 4, gap: int = 1) -> Path:
    """Tile (N, C, H, W) images in [-1, 1] into one PNG, each enlarged ``scale`` times (nearest neighbour)."""
    tiles = to_uint8(images)
    n, h, w, c = tiles.shape
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    canvas = np.full((rows * (h + gap) + gap, columns * (w + gap) + gap, c), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, col = divmod(i, columns)
        canvas[gap + r * (h + gap) : gap + r * (h + gap) + h, gap + col * (w + gap) : gap + col * (w + gap) + w] = tile
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def save_pairs(left: torch.Tensor, right: torch.Tensor, path: Path, *, scale: int = 4) -> Path:
    """Rows of (left[i], right[i]) pairs, e.g. a generated image beside the training image it copies."""
    interleaved = torch.stack([left, right], 1).flatten(0, 1) if len(left) else left
    return save_grid(interleaved, path, columns=2, scale=scale)
