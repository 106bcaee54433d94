"""Pooling for ``[N, *spatial, C]`` inputs of any spatial rank, and flatten.

Window, stride and padding accept an int (every spatial axis) or one value per axis, with
PyTorch's meanings: ``max_pool(x, 3, 2, padding=1)`` is ``nn.MaxPool2d(3, 2, padding=1)``.

Non-overlapping max pooling (stride = window, no padding, the common ``max_pool(x, 2)``) takes a
fast path: the max of the window's strided slices, with a derivative that sends each window's
gradient to its first maximal element in row-major order, exactly what XLA's ``select_and_scatter``
does for ``reduce_window``, values and gradients bit for bit. ``select_and_scatter`` is slow on
XLA's CPU backend (more than 10x this path's forward and backward together); see
docs/performance.md, "Training throughput on CPU (issue 4)".
"""

from __future__ import annotations

import functools
import itertools
from typing import Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnn.layers.conv import to_padding, to_tuple

IntOrSeq = Union[int, Sequence[int]]


def _pool_args(x: jax.Array, window: IntOrSeq, strides: Optional[IntOrSeq], padding):
    rank = x.ndim - 2
    if rank < 1:
        raise ValueError(f"pooling needs [N, *spatial, C] input; got shape {x.shape}")
    window = to_tuple(window, rank, "window")
    strides = window if strides is None else to_tuple(strides, rank, "strides")
    return window, strides, to_padding(padding, rank)


def _window_taps(x: jax.Array, window: Tuple[int, ...]):
    """The window's taps in row-major order, each a strided slice ``[N, *out, C]`` of ``x``."""
    batch, *spatial, channels = x.shape
    out = [size // k for size, k in zip(spatial, window)]
    for tap in itertools.product(*(range(k) for k in window)):
        limit = (batch, *(t + (o - 1) * k + 1 for t, o, k in zip(tap, out, window)), channels)
        yield jax.lax.slice(x, (0, *tap, 0), limit, (1, *window, 1))


def _max_of_taps(x: jax.Array, window: Tuple[int, ...]) -> jax.Array:
    taps = _window_taps(x, window)
    result = next(taps)
    for tap in taps:
        result = jax.lax.max(result, tap)
    return result


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _tiled_max_pool(x: jax.Array, window: Tuple[int, ...]) -> jax.Array:
    """Max over non-overlapping windows of ``x``, whose spatial sizes are multiples of ``window``."""
    return _max_of_taps(x, window)


@_tiled_max_pool.defjvp
def _tiled_max_pool_jvp(window, primals, tangents):
    (x,), (tangent,) = primals, tangents
    pooled = _max_of_taps(x, window)
    first, seen = [], None  # the first tap equal to the max wins, as select_and_scatter's ">=" picks
    for tap in _window_taps(x, window):
        hit = tap == pooled
        first.append(hit if seen is None else hit & ~seen)
        seen = hit if seen is None else seen | hit
    # [N, o1, k1, o2, k2, ..., C]: a reshape of x, so that the transpose (the backward pass) is a
    # select and a reshape rather than a sum of interior-padded slices.
    rank = len(window)

    def stack(offset: int, axis: int) -> jax.Array:
        if axis == rank:
            return first[offset]
        inner = int(np.prod(window[axis + 1 :], dtype=np.int64))
        return jnp.stack([stack(offset + i * inner, axis + 1) for i in range(window[axis])], axis=2 + axis)

    batch, *spatial, channels = x.shape
    split = [batch] + [d for size, k in zip(spatial, window) for d in (size // k, k)] + [channels]
    windows = tangent.reshape(split)
    chosen = jnp.where(stack(0, 0), windows, jnp.zeros_like(windows))
    return pooled, jnp.sum(chosen, axis=tuple(2 + 2 * axis for axis in range(rank)))


def max_pool(x: jax.Array, window: IntOrSeq, strides: Optional[IntOrSeq] = None, padding=0) -> jax.Array:
    """Max over each window; padded positions never win (they are -inf). Stride defaults to the window."""
    window, strides, padding = _pool_args(x, window, strides, padding)
    unpadded = padding == "VALID" or (not isinstance(padding, str) and all(p == (0, 0) for p in padding))
    if strides == window and unpadded and all(size >= k for size, k in zip(x.shape[1:-1], window)):
        # Floor mode drops the trailing rows that do not fill a window (their gradient is zero).
        kept = tuple(slice(0, (size // k) * k) for size, k in zip(x.shape[1:-1], window))
        return _tiled_max_pool(x[(slice(None), *kept)], window)
    return nn.max_pool(x, window, strides, padding)


def avg_pool(
    x: jax.Array, window: IntOrSeq, strides: Optional[IntOrSeq] = None, padding=0, count_include_pad: bool = True
) -> jax.Array:
    """Mean over each window. ``count_include_pad`` as in PyTorch (padded zeros count by default)."""
    window, strides, padding = _pool_args(x, window, strides, padding)
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
