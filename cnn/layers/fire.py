"""SqueezeNet's fire module (Iandola et al. 2016): squeeze to few channels, expand with 1x1 and 3x3."""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.conv import ConvNormAct

Dtype = Any
ModuleDef = Any


class Fire(nn.Module):
    """1x1 squeeze (ReLU) -> [1x1 expand (ReLU), 3x3 expand (ReLU)] concatenated; convs carry biases, no norm."""

    squeeze: int
    expand1x1: int
    expand3x3: int
    conv: ModuleDef = nn.Conv
    kernel_init: Any = nn.initializers.variance_scaling(2.0, "fan_in", "uniform")  # torch's kaiming_uniform_
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        unit = functools.partial(ConvNormAct, norm=None, use_bias=True, conv=self.conv, kernel_init=self.kernel_init,
                                 dtype=self.dtype)
        x = unit(self.squeeze, 1, padding=0, name="squeeze")(x, train)
        return jnp.concatenate(
            [unit(self.expand1x1, 1, padding=0, name="expand1x1")(x, train),
             unit(self.expand3x3, 3, padding=1, name="expand3x3")(x, train)], axis=-1)
