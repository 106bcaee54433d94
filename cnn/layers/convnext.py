"""ConvNeXt blocks (Liu et al. 2022, torchvision layout): depthwise 7x7, LayerNorm, inverted
bottleneck (4x) with exact GELU, layer scale and stochastic depth; and the 2x2 downsampling layer.

LayerNorm normalises the channel axis of ``[N, H, W, C]`` (channels last), epsilon 1e-6, with
float32 statistics. Convs and dense layers start from a truncated normal with std 0.02.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.activations import gelu_exact
from cnn.layers.drop_path import DropPath

Dtype = Any
ModuleDef = Any

convnext_init = nn.initializers.truncated_normal(0.02)


class ConvNeXtBlock(nn.Module):
    """``x + drop_path(gamma * pw2(gelu(pw1(LN(dw7x7(x))))))``, channels kept.

    ``layer_scale_init`` is the initial per-channel ``gamma`` (``None`` removes it).
    ``conv`` builds the depthwise conv (``nn.Conv``; see ``cnn.layers.cpu_kernels``).
    """

    kernel_size: int = 7
    expansion: int = 4
    layer_scale_init: Optional[float] = 1e-6
    drop_path_rate: float = 0.0
    epsilon: float = 1e-6
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        channels = x.shape[-1]
        pad = (self.kernel_size - 1) // 2
        y = self.conv(
            channels, (self.kernel_size,) * 2, padding=((pad, pad), (pad, pad)), feature_group_count=channels,
            kernel_init=convnext_init, dtype=self.dtype, param_dtype=jnp.float32, name="depthwise",
        )(x)
        y = nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, name="norm")(y)
        y = nn.Dense(self.expansion * channels, kernel_init=convnext_init, dtype=self.dtype, name="pointwise1")(y)
        y = nn.Dense(channels, kernel_init=convnext_init, dtype=self.dtype, name="pointwise2")(gelu_exact(y))
        if self.layer_scale_init is not None:
            gamma = self.param("layer_scale", nn.initializers.constant(self.layer_scale_init), (channels,), jnp.float32)
            y = y * gamma.astype(y.dtype)
        return x + DropPath(self.drop_path_rate, name="drop_path")(y, train)


class ConvNeXtDownsample(nn.Module):
    """LayerNorm then a 2x2 stride-2 conv (with bias) to ``features`` channels."""

    features: int
    epsilon: float = 1e-6
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.LayerNorm(epsilon=self.epsilon, dtype=self.dtype, name="norm")(x)
        return self.conv(self.features, (2, 2), strides=(2, 2), padding="VALID", kernel_init=convnext_init,
                       dtype=self.dtype, param_dtype=jnp.float32, name="conv")(x)
