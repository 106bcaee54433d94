"""Depthwise-separable convolution: a per-channel spatial filter, then a 1x1 mix of channels.

A k x k depthwise conv costs ``k*k*C`` weights and a 1x1 pointwise conv ``C*C_out``, against
``k*k*C*C_out`` for a full conv (MobileNet, Howard et al. 2017).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
from flax import linen as nn

from cnn.layers.conv import ConvNormAct, IntOrSeq, Padding
from cnn.layers.norm import BatchNorm

Dtype = Any
ModuleDef = Any


class DepthwiseConv(nn.Module):
    """Depthwise conv (``groups = in_channels``, ``depth_multiplier`` filters each) + norm + act."""

    kernel_size: IntOrSeq = 3
    strides: IntOrSeq = 1
    padding: Padding = "SAME"
    dilation: IntOrSeq = 1
    depth_multiplier: int = 1
    norm: Optional[ModuleDef] = BatchNorm
    act: Optional[Callable[[jax.Array], jax.Array]] = nn.relu
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        channels = x.shape[-1]
        return ConvNormAct(
            channels * self.depth_multiplier,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            dilation=self.dilation,
            groups=channels,
            norm=self.norm,
            act=self.act,
            conv=self.conv,
            dtype=self.dtype,
            name="depthwise",
        )(x, train)


class SeparableConv(nn.Module):
    """``DepthwiseConv`` then a pointwise 1x1 ``ConvNormAct`` to ``features`` channels (MobileNetV1's unit)."""

    features: int
    kernel_size: IntOrSeq = 3
    strides: IntOrSeq = 1
    padding: Padding = "SAME"
    dilation: IntOrSeq = 1
    depth_multiplier: int = 1
    norm: Optional[ModuleDef] = BatchNorm
    act: Optional[Callable[[jax.Array], jax.Array]] = nn.relu
    pointwise_act: bool = True
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = DepthwiseConv(
            self.kernel_size,
            self.strides,
            self.padding,
            self.dilation,
            self.depth_multiplier,
            norm=self.norm,
            act=self.act,
            conv=self.conv,
            dtype=self.dtype,
            name="depthwise",
        )(x, train)
        return ConvNormAct(
            self.features,
            kernel_size=1,
            padding=0,
            norm=self.norm,
            act=self.act if self.pointwise_act else None,
            conv=self.conv,
            dtype=self.dtype,
            name="pointwise",
        )(x, train)
