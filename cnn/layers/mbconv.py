"""Inverted residual (MobileNetV2/V3) and MBConv (EfficientNet) with squeeze-and-excitation.

One block covers all three: 1x1 expand -> k x k depthwise (stride) -> optional SE -> 1x1
linear projection, plus an identity shortcut with stochastic depth when the shape is kept.
Channel counts are computed by the models (their rounding rules differ) and passed in.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.conv import ConvNormAct
from cnn.layers.drop_path import DropPath
from cnn.layers.norm import BatchNorm
from cnn.layers.pooling import global_avg_pool

Dtype = Any
ModuleDef = Any
Activation = Callable[[jax.Array], jax.Array]


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never below ``min_value`` (default
    ``divisor``) and never more than 10% below ``value`` (the TF MobileNet/EfficientNet rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """Channel attention (Hu et al. 2018): global pool -> dense ``squeeze`` -> act -> dense C -> gate -> rescale.

    The dense layers carry biases, as the 1x1 convs of torchvision's ``SqueezeExcitation``.
    """

    squeeze: int
    act: Activation = nn.relu
    gate: Activation = jax.nn.sigmoid
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        channels = x.shape[-1]
        scale = global_avg_pool(x, keepdims=True)
        scale = self.act(nn.Dense(self.squeeze, dtype=self.dtype, param_dtype=jnp.float32, name="reduce")(scale))
        scale = self.gate(nn.Dense(channels, dtype=self.dtype, param_dtype=jnp.float32, name="expand")(scale))
        return x * scale


class InvertedResidual(nn.Module):
    """``[N, H, W, C] -> [N, H/s, W/s, features]``.

    Attributes:
      features: output channels.
      expanded: channels of the depthwise stage; the 1x1 expand conv is skipped when this equals
        the input channels, unless ``always_expand`` (kuangliu's CIFAR MobileNetV2 keeps it).
      kernel_size, strides: of the depthwise conv (padding ``(k - 1) // 2``).
      se_squeeze: SE bottleneck width, or ``None`` for no SE.
      shortcut: ``"identity"`` adds the input when stride is 1 and channels match (torchvision);
        ``"projection"`` also adds a 1x1 conv + norm projection when stride is 1 and channels
        differ (kuangliu's CIFAR MobileNetV2).
      drop_path_rate: stochastic depth on the residual branch (only where there is a shortcut).
      conv: conv factory for every conv of the block (see ``cnn.layers.depthwise``).
    """

    features: int
    expanded: int
    kernel_size: int = 3
    strides: int = 1
    act: Activation = nn.relu
    se_squeeze: Optional[int] = None
    se_act: Activation = nn.relu
    se_gate: Activation = jax.nn.sigmoid
    shortcut: str = "identity"
    always_expand: bool = False
    drop_path_rate: float = 0.0
    norm: ModuleDef = BatchNorm
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.shortcut not in ("identity", "projection"):
            raise ValueError(f"shortcut={self.shortcut!r}; expected 'identity' or 'projection'")
        unit = functools.partial(ConvNormAct, use_bias=False, norm=self.norm, conv=self.conv, dtype=self.dtype)
        in_channels = x.shape[-1]
        y = x
        if self.always_expand or self.expanded != in_channels:
            y = unit(self.expanded, 1, padding=0, act=self.act, name="expand")(y, train)
        y = unit(self.expanded, self.kernel_size, self.strides, padding=(self.kernel_size - 1) // 2,
                 groups=self.expanded, act=self.act, name="depthwise")(y, train)
        if self.se_squeeze is not None:
            y = SqueezeExcite(self.se_squeeze, self.se_act, self.se_gate, dtype=self.dtype, name="se")(y, train)
        y = unit(self.features, 1, padding=0, act=None, name="project")(y, train)
        if self.strides != 1:
            return y
        if in_channels == self.features:
            return x + DropPath(self.drop_path_rate, name="drop_path")(y, train)
        if self.shortcut == "projection":
            return y + unit(self.features, 1, padding=0, act=None, name="shortcut")(x, train)
        return y
