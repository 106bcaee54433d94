"""The Inception-v3 modules A to E and its auxiliary classifier (Szegedy et al. 2016, torchvision layout).

Names follow torchvision (``Mixed_5b`` = ``InceptionA`` ...) so a checkpoint maps one to one.
Every conv is conv (no bias) -> BatchNorm (``epsilon=1e-3``) -> ReLU. Pools in the branches
are 3x3: average (stride 1, padding 1, padded zeros counted) or max (stride 2, no padding).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.inception import basic_conv, inception_bn
from cnn.layers.pooling import avg_pool, global_avg_pool, max_pool

Dtype = Any
ModuleDef = Any


class _InceptionBlock(nn.Module):
    norm: ModuleDef = inception_bn
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    def unit(self, features, kernel, strides=1, padding=0, name=None):
        return basic_conv(self.norm, self.conv, self.dtype)(features, kernel, strides, padding=padding, name=name)


class InceptionA(_InceptionBlock):
    """35x35 grid: 1x1 (64); 1x1 (48) -> 5x5 (64); 1x1 (64) -> 3x3 (96) -> 3x3 (96); avg pool -> 1x1."""

    pool_features: int = 32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b1 = self.unit(64, 1, name="branch1x1")(x, train)
        b5 = self.unit(48, 1, name="branch5x5_1")(x, train)
        b5 = self.unit(64, 5, padding=2, name="branch5x5_2")(b5, train)
        b3 = self.unit(64, 1, name="branch3x3dbl_1")(x, train)
        b3 = self.unit(96, 3, padding=1, name="branch3x3dbl_2")(b3, train)
        b3 = self.unit(96, 3, padding=1, name="branch3x3dbl_3")(b3, train)
        bp = self.unit(self.pool_features, 1, name="branch_pool")(avg_pool(x, 3, 1, padding=1), train)
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_InceptionBlock):
    """Grid reduction 35 -> 17: 3x3/2 (384); 1x1 (64) -> 3x3 (96) -> 3x3/2 (96); 3x3/2 max pool."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b3 = self.unit(384, 3, strides=2, name="branch3x3")(x, train)
        bd = self.unit(64, 1, name="branch3x3dbl_1")(x, train)
        bd = self.unit(96, 3, padding=1, name="branch3x3dbl_2")(bd, train)
        bd = self.unit(96, 3, strides=2, name="branch3x3dbl_3")(bd, train)
        return jnp.concatenate([b3, bd, max_pool(x, 3, 2)], axis=-1)


class InceptionC(_InceptionBlock):
    """17x17 grid with factorised 7x7 convs (1x7 then 7x1) of width ``channels_7x7``."""

    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c7 = self.channels_7x7
        row, col = ((1, 7), ((0, 0), (3, 3))), ((7, 1), ((3, 3), (0, 0)))
        b1 = self.unit(192, 1, name="branch1x1")(x, train)
        b7 = self.unit(c7, 1, name="branch7x7_1")(x, train)
        b7 = self.unit(c7, row[0], padding=row[1], name="branch7x7_2")(b7, train)
        b7 = self.unit(192, col[0], padding=col[1], name="branch7x7_3")(b7, train)
        bd = self.unit(c7, 1, name="branch7x7dbl_1")(x, train)
        for i, (features, (kernel, pad)) in enumerate(zip((c7, c7, c7, 192), (col, row, col, row)), start=2):
            bd = self.unit(features, kernel, padding=pad, name=f"branch7x7dbl_{i}")(bd, train)
        bp = self.unit(192, 1, name="branch_pool")(avg_pool(x, 3, 1, padding=1), train)
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_InceptionBlock):
    """Grid reduction 17 -> 8: 1x1 -> 3x3/2 (320); 1x1 -> 1x7 -> 7x1 -> 3x3/2 (192); 3x3/2 max pool."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        b3 = self.unit(192, 1, name="branch3x3_1")(x, train)
        b3 = self.unit(320, 3, strides=2, name="branch3x3_2")(b3, train)
        b7 = self.unit(192, 1, name="branch7x7x3_1")(x, train)
        b7 = self.unit(192, (1, 7), padding=((0, 0), (3, 3)), name="branch7x7x3_2")(b7, train)
        b7 = self.unit(192, (7, 1), padding=((3, 3), (0, 0)), name="branch7x7x3_3")(b7, train)
        b7 = self.unit(192, 3, strides=2, name="branch7x7x3_4")(b7, train)
        return jnp.concatenate([b3, b7, max_pool(x, 3, 2)], axis=-1)


class InceptionE(_InceptionBlock):
    """8x8 grid with expanded filter banks: 1x3 and 3x1 side by side after a 1x1 and after a 3x3."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        row, col = ((1, 3), ((0, 0), (1, 1))), ((3, 1), ((1, 1), (0, 0)))
        b1 = self.unit(320, 1, name="branch1x1")(x, train)
        b3 = self.unit(384, 1, name="branch3x3_1")(x, train)
        b3 = jnp.concatenate(
            [self.unit(384, row[0], padding=row[1], name="branch3x3_2a")(b3, train),
             self.unit(384, col[0], padding=col[1], name="branch3x3_2b")(b3, train)], axis=-1)
        bd = self.unit(448, 1, name="branch3x3dbl_1")(x, train)
        bd = self.unit(384, 3, padding=1, name="branch3x3dbl_2")(bd, train)
        bd = jnp.concatenate(
            [self.unit(384, row[0], padding=row[1], name="branch3x3dbl_3a")(bd, train),
             self.unit(384, col[0], padding=col[1], name="branch3x3dbl_3b")(bd, train)], axis=-1)
        bp = self.unit(192, 1, name="branch_pool")(avg_pool(x, 3, 1, padding=1), train)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class InceptionV3Aux(_InceptionBlock):
    """Auxiliary classifier on the 17x17 grid: 5x5/3 avg pool, 1x1 (128), 5x5 (768), global pool, logits."""

    num_classes: int = 1000

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = avg_pool(x, 5, 3)
        x = self.unit(128, 1, name="conv0")(x, train)
        x = self.unit(768, 5, name="conv1")(x, train)
        x = global_avg_pool(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
