"""Pooling for ``[N, *spatial, C]`` inputs of any spatial rank, and flatten.

Window, stride and padding accept an int (every spatial axis) or one value per axis, with
PyTorch's meanings: ``max_pool(x, 3, 2, padding=1)`` is ``nn.MaxPool2d(3, 2, padding=1)``.

Max pooling is ``nn.max_pool`` (XLA's ``reduce_window``); ``cnn.layers.cpu_kernels.max_pool`` is a
faster formulation of non-overlapping windows on the CPU, injected into models by the training loop.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.conv import to_padding, to_tuple

IntOrSeq = Union[int, Sequence[int]]


def pool_args(x: jax.Array, window: IntOrSeq, strides: Optional[IntOrSeq], padding):
    """``(window, strides, padding)`` as tuples for ``x``'s spatial rank; strides default to the window."""
    rank = x.ndim - 2
    if rank < 1:
        raise ValueError(f"pooling needs [N, *spatial, C] input; got shape {x.shape}")
    window = to_tuple(window, rank, "window")
    strides = window if strides is None else to_tuple(strides, rank, "strides")
    return window, strides, to_padding(padding, rank)


def max_pool(x: jax.Array, window: IntOrSeq, strides: Optional[IntOrSeq] = None, padding=0) -> jax.Array:
    """Max over each window; padded positions never win (they are -inf). Stride defaults to the window."""
    window, strides, padding = pool_args(x, window, strides, padding)
    return nn.max_pool(x, window, strides, padding)


def avg_pool(
    x: jax.Array, window: IntOrSeq, strides: Optional[IntOrSeq] = None, padding=0, count_include_pad: bool = True
) -> jax.Array:
    """Mean over each window. ``count_include_pad`` as in PyTorch (padded zeros count by default)."""
    window, strides, padding = pool_args(x, window, strides, padding)
    return nn.avg_pool(x, window, strides, padding, count_include_pad=count_include_pad)


def global_avg_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """``[N, *spatial, C] -> [N, C]``: the mean of each feature map (float32 accumulation)."""
    axes = tuple(range(1, x.ndim - 1))
    return jnp.mean(x.astype(jnp.float32), axis=axes, keepdims=keepdims).astype(x.dtype)


def global_max_pool(x: jax.Array, keepdims: bool = False) -> jax.Array:
    """``[N, *spatial, C] -> [N, C]``: the strongest response of each feature map."""
    return jnp.max(x, axis=tuple(range(1, x.ndim - 1)), keepdims=keepdims)


def adaptive_avg_pool(x: jax.Array, output_size: IntOrSeq) -> jax.Array:
    """PyTorch's ``AdaptiveAvgPool``: output cell i averages input rows floor(i*H/o) .. ceil((i+1)*H/o)."""
    rank = x.ndim - 2
    output_size = to_tuple(output_size, rank, "output_size")
    for axis, out in enumerate(output_size, start=1):
        size = x.shape[axis]
        if size == out:
            continue
        if size % out == 0:  # uniform windows: one reshape-and-mean
            shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1 :]
            x = jnp.mean(x.reshape(shape), axis=axis + 1)
            continue
        cells = []
        for i in range(out):
            start, end = (i * size) // out, -((-(i + 1) * size) // out)
            cells.append(jnp.mean(jax.lax.slice_in_dim(x, start, end, axis=axis), axis=axis, keepdims=True))
        x = jnp.concatenate(cells, axis=axis)
    return x


def flatten(x: jax.Array) -> jax.Array:
    """``[N, ...] -> [N, prod(...)]`` in NHWC order (PyTorch flattens NCHW: permute weights to port them)."""
    return x.reshape((x.shape[0], -1))
