"""ConvNeXt (Liu et al. 2022), torchvision layout: 4x4/4 patchify stem + LayerNorm, four stages of
ConvNeXt blocks with LayerNorm + 2x2/2 conv downsampling between them, global pool, LayerNorm, fc."""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.convnext import ConvNeXtBlock, ConvNeXtDownsample, convnext_init
from cnn.layers.pooling import global_avg_pool
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any


class ConvNeXt(nn.Module):
    """Attributes:
      depths, widths: blocks and channels of each stage (Tiny: ``(3, 3, 9, 3)``, ``(96, 192, 384, 768)``).
      drop_path_rate: stochastic depth of the last block; block ``i`` of ``n`` gets ``rate * i / (n - 1)``.
      layer_scale_init: initial layer-scale value (``None`` removes layer scale).
      drop_rate: dropout before the classifier (torchvision has none; 0 by default).
      conv: the module of every conv (``nn.Conv``; see ``cnn.layers.cpu_kernels``).
    """

    depths: Sequence[int] = (3, 3, 9, 3)
    widths: Sequence[int] = (96, 192, 384, 768)
    num_classes: int = 1000
    drop_path_rate: float = 0.1
    layer_scale_init: Optional[float] = 1e-6
    drop_rate: float = 0.0
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        if len(self.depths) != len(self.widths):
            raise ValueError(f"depths={tuple(self.depths)} and widths={tuple(self.widths)} differ in length")
        x = self.conv(self.widths[0], (4, 4), strides=(4, 4), padding="VALID", kernel_init=convnext_init,
                    dtype=self.dtype, param_dtype=jnp.float32, name="stem")(x)
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="stem_norm")(x)
        total, index = sum(self.depths), 0
        for stage, (depth, width) in enumerate(zip(self.depths, self.widths)):
            if stage > 0:
                x = ConvNeXtDownsample(width, conv=self.conv, dtype=self.dtype, name=f"downsample{stage}")(x, train)
            for block in range(depth):
                rate = self.drop_path_rate * index / max(total - 1, 1)
                x = ConvNeXtBlock(layer_scale_init=self.layer_scale_init, drop_path_rate=rate, conv=self.conv,
                                  dtype=self.dtype, name=f"stage{stage + 1}_block{block + 1}")(x, train)
                index += 1
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="head_norm")(global_avg_pool(x))
        if self.num_classes == 0:
            return x
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=convnext_init, dtype=self.dtype, name="fc")(x)


register("convnext_tiny", functools.partial(ConvNeXt, depths=(3, 3, 9, 3), drop_path_rate=0.1), params=28_589_128, min_size=32)
register("convnext_small", functools.partial(ConvNeXt, depths=(3, 3, 27, 3), drop_path_rate=0.4), params=50_223_688, min_size=32)
