"""Max pooling with PyTorch's ``ceil_mode=True`` (GoogLeNet, SqueezeNet).

Ceil mode rounds the number of windows up, so a partial window at the high end still produces
an output, provided it starts inside the input or the low padding. That equals floor-mode
pooling with extra padding on the high side, which is what this does (padding never wins a max).
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import jax
from flax import linen as nn

from cnn.layers.conv import to_tuple

IntOrSeq = Union[int, Sequence[int]]


def ceil_mode_padding(size: int, window: int, stride: int, padding: int = 0) -> Tuple[int, int]:
    """``(low, high)`` padding that makes floor-mode pooling return PyTorch's ceil-mode output size."""
    span = size + 2 * padding - window
    if span < 0:
        raise ValueError(f"a window of {window} does not fit an axis of {size} with padding {padding}")
    outputs = -(-span // stride) + 1
    if (outputs - 1) * stride >= size + padding:  # the last window would start in the high padding
        outputs -= 1
    extra = max((outputs - 1) * stride + window - (size + 2 * padding), 0)
    return padding, padding + extra


def max_pool_ceil(x: jax.Array, window: IntOrSeq, strides: IntOrSeq, padding: IntOrSeq = 0) -> jax.Array:
    """``nn.MaxPool{1,2,3}d(window, strides, padding, ceil_mode=True)`` on ``[N, *spatial, C]``."""
    rank = x.ndim - 2
    window = to_tuple(window, rank, "window")
    strides = to_tuple(strides, rank, "strides")
    padding = to_tuple(padding, rank, "padding")
    pads = tuple(ceil_mode_padding(x.shape[1 + i], window[i], strides[i], padding[i]) for i in range(rank))
    return nn.max_pool(x, window, strides, pads)
