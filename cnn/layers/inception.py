"""GoogLeNet's Inception module and auxiliary classifier (Szegedy et al. 2015, torchvision layout).

Every conv is conv (no bias) -> BatchNorm -> ReLU, as torchvision's ``BasicConv2d`` (BatchNorm
``epsilon=1e-3``; the models inject it). Branch outputs are concatenated on the channel axis in
the order 1x1, 3x3, "5x5", pool projection.
"""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.ceil_pool import max_pool_ceil
from cnn.layers.conv import ConvNormAct
from cnn.layers.norm import BatchNorm
from cnn.layers.pooling import adaptive_avg_pool, flatten

Dtype = Any
ModuleDef = Any

inception_bn = functools.partial(BatchNorm, epsilon=1e-3)

# ImageNet's channel statistics, which torchvision's ``transform_input`` undoes.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def transform_input(x: jax.Array) -> jax.Array:
    """torchvision's ``transform_input`` on ``[N, H, W, 3]``: re-normalise from ImageNet's mean/std to mean 0.5, std 0.5.

    Its GoogLeNet and Inception-v3 ImageNet weights were converted from Google's, trained on images scaled
    to [-1, 1]; torchvision feeds them ImageNet-normalised images and maps them back with this.
    """
    if x.shape[-1] != 3:
        raise ValueError(f"transform_input needs 3 (RGB) channels; got input shape {x.shape}")
    mean, std = jnp.asarray(IMAGENET_MEAN, x.dtype), jnp.asarray(IMAGENET_STD, x.dtype)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


def basic_conv(norm: ModuleDef, conv: ModuleDef, dtype: Optional[Dtype]) -> ModuleDef:
    """The conv-BN-ReLU unit of every Inception network: ``unit(features, kernel, strides, padding, name=...)``."""
    return functools.partial(ConvNormAct, use_bias=False, norm=norm, act=nn.relu, conv=conv, dtype=dtype)


class InceptionModule(nn.Module):
    """Four parallel branches: 1x1; 1x1 -> 3x3; 1x1 -> k x k; 3x3 max pool -> 1x1.

    ``second_kernel`` is the kernel of the third branch: torchvision (and so its parameter
    count, 6,624,904 for GoogLeNet) uses 3 where the paper says 5 (pytorch/vision#906).
    """

    ch1x1: int
    ch3x3_reduce: int
    ch3x3: int
    ch5x5_reduce: int
    ch5x5: int
    pool_proj: int
    second_kernel: int = 3
    norm: ModuleDef = inception_bn
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        unit = basic_conv(self.norm, self.conv, self.dtype)
        branch1 = unit(self.ch1x1, 1, padding=0, name="branch1x1")(x, train)
        branch2 = unit(self.ch3x3_reduce, 1, padding=0, name="branch3x3_reduce")(x, train)
        branch2 = unit(self.ch3x3, 3, padding=1, name="branch3x3")(branch2, train)
        branch3 = unit(self.ch5x5_reduce, 1, padding=0, name="branch5x5_reduce")(x, train)
        branch3 = unit(self.ch5x5, self.second_kernel, padding=self.second_kernel // 2, name="branch5x5")(branch3, train)
        branch4 = max_pool_ceil(x, 3, 1, padding=1)
        branch4 = unit(self.pool_proj, 1, padding=0, name="pool_proj")(branch4, train)
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


class InceptionAux(nn.Module):
    """GoogLeNet's auxiliary classifier: pool to 4x4, 1x1 conv to 128, dense 1024, dropout 0.7, logits.

    Flatten is in NHWC order; a torchvision checkpoint's ``fc1`` rows must be permuted from NCHW.
    """

    num_classes: int
    drop_rate: float = 0.7
    norm: ModuleDef = inception_bn
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = adaptive_avg_pool(x, 4)
        x = basic_conv(self.norm, self.conv, self.dtype)(128, 1, padding=0, name="conv")(x, train)
        x = nn.relu(nn.Dense(1024, dtype=self.dtype, param_dtype=jnp.float32, name="fc1")(flatten(x)))
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc2")(x)
