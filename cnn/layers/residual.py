"""Residual blocks: basic, bottleneck (ResNet v1.5) and their pre-activation forms.

``features`` is the block's base width ("planes"); a bottleneck outputs ``4 * features``.
``groups`` and ``base_width`` give ResNeXt (``groups=32, base_width=4``) and Wide ResNet
(``base_width=128``) from the same code, with torchvision's width rule
``width = int(features * base_width / 64) * groups``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.conv import ConvNormAct, he_normal_fan_out
from cnn.layers.norm import BatchNorm

Dtype = Any
ModuleDef = Any


def zero_pad_shortcut(x: jax.Array, features: int, strides: int) -> jax.Array:
    """Parameter-free shortcut ("option A", He et al. 2016 sec. 4.2): subsample, then pad channels with zeros."""
    if strides > 1:
        x = x[:, ::strides, ::strides, :]
    extra = features - x.shape[-1]
    if extra < 0:
        raise ValueError(f"zero-pad shortcut cannot shrink {x.shape[-1]} channels to {features}")
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class _Block(nn.Module):
    """Fields and the shortcut shared by every residual block."""

    features: int
    strides: int = 1
    groups: int = 1
    base_width: int = 64
    shortcut: str = "projection"  # or "zero_pad" (CIFAR ResNets, option A)
    zero_init_last: bool = True
    norm: ModuleDef = BatchNorm
    act: Callable[[jax.Array], jax.Array] = nn.relu
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    expansion = 1

    def unit(self, features, kernel, strides=1, groups=1, act=True, zero_init=False, norm=True, name=None):
        return ConvNormAct(
            features,
            kernel_size=kernel,
            strides=strides,
            padding=kernel // 2,
            groups=groups,
            norm=self.norm if norm else None,
            act=self.act if act else None,
            use_bias=False,
            zero_init_norm=zero_init and norm,
            # Without a norm after it (pre-activation), the branch starts at zero through its last kernel.
            kernel_init=nn.initializers.zeros if zero_init and not norm else he_normal_fan_out,
            conv=self.conv,
            dtype=self.dtype,
            name=name,
        )

    def keeps_shape(self, x: jax.Array) -> bool:
        """Whether the block's output has ``x``'s shape, so that the shortcut is the identity."""
        return x.shape[-1] == self.features * self.expansion and self.strides == 1

    def residual(self, x: jax.Array, train: bool, pre_activated: bool = False) -> jax.Array:
        out_features = self.features * self.expansion
        if self.keeps_shape(x):
            return x
        if self.shortcut == "zero_pad":
            return zero_pad_shortcut(x, out_features, self.strides)
        if self.shortcut != "projection":
            raise ValueError(f"shortcut={self.shortcut!r}; expected 'projection' or 'zero_pad'")
        return self.unit(out_features, 1, self.strides, act=False, norm=not pre_activated, name="shortcut")(x, train)


class BasicBlock(_Block):
    """3x3 conv (stride) -> 3x3 conv, plus the shortcut, then ReLU (ResNet-18/34)."""

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.groups != 1 or self.base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64 (as torchvision)")
        y = self.unit(self.features, 3, self.strides, name="conv1")(x, train)
        y = self.unit(self.features, 3, act=False, zero_init=self.zero_init_last, name="conv2")(y, train)
        return self.act(y + self.residual(x, train))


class Bottleneck(_Block):
    """1x1 reduce -> 3x3 (stride, groups) -> 1x1 expand x4, plus the shortcut, then ReLU.

    The stride sits on the 3x3 conv (ResNet v1.5, as torchvision and the Flax ImageNet example).
    """

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        width = int(self.features * (self.base_width / 64.0)) * self.groups
        y = self.unit(width, 1, name="conv1")(x, train)
        y = self.unit(width, 3, self.strides, groups=self.groups, name="conv2")(y, train)
        y = self.unit(self.features * 4, 1, act=False, zero_init=self.zero_init_last, name="conv3")(y, train)
        return self.act(y + self.residual(x, train))


class PreActBlock(_Block):
    """norm-act-conv twice (He et al. 2016, "Identity Mappings"); nothing after the addition.

    The projection shortcut reads the pre-activated input, as in the paper's code.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        pre = self.act(self.norm(dtype=self.dtype, name="preact")(x, train=train))
        # An identity shortcut carries x itself; only a projection reads the pre-activated input.
        projects = self.shortcut == "projection" and not self.keeps_shape(x)
        shortcut = self.residual(pre if projects else x, train, pre_activated=True)
        y = self.unit(self.features, 3, self.strides, name="conv1")(pre, train)
        y = self.unit(self.features, 3, act=False, norm=False, zero_init=self.zero_init_last, name="conv2")(y, train)
        return y + shortcut


class PreActBottleneck(_Block):
    """Pre-activation bottleneck: norm-act-1x1, norm-act-3x3 (stride, groups), norm-act-1x1 x4."""

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        width = int(self.features * (self.base_width / 64.0)) * self.groups
        pre = self.act(self.norm(dtype=self.dtype, name="preact")(x, train=train))
        # An identity shortcut carries x itself; only a projection reads the pre-activated input.
        projects = self.shortcut == "projection" and not self.keeps_shape(x)
        shortcut = self.residual(pre if projects else x, train, pre_activated=True)
        y = self.unit(width, 1, name="conv1")(pre, train)
        y = self.unit(width, 3, self.strides, groups=self.groups, name="conv2")(y, train)
        y = self.unit(self.features * 4, 1, act=False, norm=False, zero_init=self.zero_init_last, name="conv3")(y, train)
        return y + shortcut
