"""Pretrained tensors adapted to another input: other channel counts, another ViT resolution.

Both follow timm, so that a checkpoint adapted here equals the one timm would build:

- ``adapt_input_conv``: timm's ``adapt_input_conv``. One channel sums the RGB filters (a grey image
  ``g`` then gives what ``(g, g, g)`` gave); N channels repeat the RGB filters cyclically and scale them
  by ``3 / N``, so that the response to N equal channels equals the response to 3 equal channels.
- ``resample_pos_embed``: timm's ``resample_abs_pos_embed``: the class token's embedding is kept, the
  grid of patch embeddings is resized as an image, bilinear or bicubic, with PyTorch's antialiased
  ``interpolate`` (``antialias=True``, timm's default: the filter widens when shrinking; Keys' cubic
  with ``a = -0.5``; weights renormalised where the filter runs past the edge).

Both take and return PyTorch layouts (``[O, I, *k]``; ``[1, tokens, D]``) as numpy arrays.
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import numpy as np


def adapt_input_conv(weight: np.ndarray, in_channels: int) -> np.ndarray:
    """``[O, I, *k]`` RGB (``I == 3``) filters -> ``[O, in_channels, *k]`` (timm's rule; float32)."""
    weight = np.asarray(weight, np.float32)
    channels = weight.shape[1]
    if in_channels < 1:
        raise ValueError(f"in_channels={in_channels}; expected a positive channel count")
    if in_channels == channels:
        return weight
    if in_channels == 1:
        if channels > 3:  # space-to-depth stems: groups of 3 channels
            if channels % 3:
                raise ValueError(f"cannot sum {channels} input channels to 1: not a multiple of 3")
            return weight.reshape((weight.shape[0], channels // 3, 3) + weight.shape[2:]).sum(axis=2)
        return weight.sum(axis=1, keepdims=True)
    if channels != 3:
        raise ValueError(f"cannot adapt a first conv of {channels} input channels to {in_channels}; "
                         "only RGB (3) filters repeat to other channel counts")
    repeats = int(math.ceil(in_channels / 3))
    tiled = np.tile(weight, (1, repeats) + (1,) * (weight.ndim - 2))[:, :in_channels]
    return tiled * np.float32(3 / in_channels)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (PyTorch's antialiased bicubic, PIL's)."""
    a, x = -0.5, np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(1.0 - np.abs(x), 0.0)


FILTERS = {"bilinear": (_triangle, 2), "bicubic": (_cubic, 4)}  # filter and its support in input pixels


def resize_weights(in_size: int, out_size: int, interpolation: str) -> np.ndarray:
    """``[out_size, in_size]`` weights of PyTorch's antialiased 1D resize (``align_corners=False``)."""
    kernel, support = FILTERS[interpolation]
    scale = in_size / out_size
    stretch = max(scale, 1.0)  # shrinking widens the filter by the scale (antialiasing)
    half_width = support / 2 * stretch
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        center = scale * (i + 0.5)
        low = max(int(center - half_width + 0.5), 0)  # int() truncates toward zero, as PyTorch's cast
        high = min(int(center + half_width + 0.5), in_size)
        taps = kernel((np.arange(low, high) - center + 0.5) / stretch)
        total = taps.sum()
        matrix[i, low:high] = taps / total if total != 0 else taps
    return matrix


def resample_pos_embed(
    pos_embed: np.ndarray,
    grid: Union[int, Tuple[int, int]],
    *,
    old_grid: Union[int, Tuple[int, int], None] = None,
    prefix_tokens: int = 1,
    interpolation: str = "bicubic",
) -> np.ndarray:
    """``[1, prefix + h * w, D] -> [1, prefix + H * W, D]`` for a ``grid = (H, W)`` of patches (timm's
    ``resample_abs_pos_embed``); ``old_grid`` defaults to the square ``h = w`` the length gives."""
    if interpolation not in FILTERS:
        raise ValueError(f"interpolation={interpolation!r}; expected one of {', '.join(FILTERS)}")
    pos_embed = np.asarray(pos_embed, np.float32)
    grid = (grid, grid) if isinstance(grid, int) else tuple(grid)
    patches = pos_embed.shape[1] - prefix_tokens
    if old_grid is None:
        side = int(math.isqrt(patches))
        if side * side != patches:
            raise ValueError(f"{patches} patch embeddings are not a square grid; pass old_grid=(h, w)")
        old_grid = (side, side)
    old_grid = (old_grid, old_grid) if isinstance(old_grid, int) else tuple(old_grid)
    if old_grid[0] * old_grid[1] != patches:
        raise ValueError(f"old_grid={old_grid} holds {old_grid[0] * old_grid[1]} patches; the embedding has {patches}")
    if old_grid == grid:
        return pos_embed
    prefix, patches = pos_embed[:, :prefix_tokens], pos_embed[:, prefix_tokens:]
    image = patches.reshape(old_grid + (-1,)).astype(np.float64)  # [h, w, D]
    rows = resize_weights(old_grid[0], grid[0], interpolation)
    cols = resize_weights(old_grid[1], grid[1], interpolation)
    resized = np.einsum("Hh,Ww,hwd->HWd", rows, cols, image).astype(np.float32)
    return np.concatenate([prefix, resized.reshape(1, grid[0] * grid[1], -1)], axis=1)
