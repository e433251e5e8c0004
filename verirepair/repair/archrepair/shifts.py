"""Whole-pixel shifts of flat image rows: the data augmentation of labelled keep inputs.

A shift by ``(dy, dx)`` moves every pixel ``dy`` rows down and ``dx`` columns right
(``out[i, j] = in[i - dy, j - dx]``); what moves in from outside the image is 0, the background
of the image data sets here (`verirepair.datasets`: pixels in [0, 1], ink bright).
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor
ImageShape = tuple[int, int, int]
"""(channels, height, width) of one image."""


def shifted(x: Tensor, shape: ImageShape, dy: Tensor, dx: Tensor) -> Tensor:
    """Flat rows ``x`` [B, C·H·W], row ``b`` shifted by ``(dy[b], dx[b])`` (whole pixels)."""
    channels, height, width = shape
    reach = int(max(dy.abs().max(), dx.abs().max(), 0)) if len(x) else 0
    images = torch.nn.functional.pad(x.reshape(len(x), channels, height, width), (reach,) * 4)
    rows = (torch.arange(height).unsqueeze(0) - dy.unsqueeze(1) + reach)
    columns = (torch.arange(width).unsqueeze(0) - dx.unsqueeze(1) + reach)
    batch = torch.arange(len(x)).reshape(-1, 1, 1)
    moved = images[batch, :, rows.unsqueeze(2), columns.unsqueeze(1)]  # [B, H, W, C]
    return moved.permute(0, 3, 1, 2).reshape(len(x), -1)


def randomly_shifted(x: Tensor, shape: ImageShape, pixels: int, generator: torch.Generator) -> Tensor:
    """Each row of ``x`` shifted by a whole number of pixels drawn uniformly from
    [-pixels, pixels] on each axis (no shift among them)."""
    dy = torch.randint(-pixels, pixels + 1, (len(x),), generator=generator)
    dx = torch.randint(-pixels, pixels + 1, (len(x),), generator=generator)
    return shifted(x, shape, dy, dx)


def with_shifted_copies(x: Tensor, shape: ImageShape, pixels: int) -> Tensor:
    """``x`` followed by its copies shifted by ``pixels`` up, down, left and right (5·B rows)."""
    copies = [x]
    for dy, dx in ((-pixels, 0), (pixels, 0), (0, -pixels), (0, pixels)):
        copies.append(shifted(x, shape, torch.full((len(x),), dy), torch.full((len(x),), dx)))
    return torch.cat(copies)
