"""SqueezeNet 1.1 (Iandola et al. 2016; the v1.1 revision, torchvision layout).

No BatchNorm; every conv has a bias and ReLU. The classifier is dropout, a 1x1 conv to the
classes, ReLU, and a global average pool, so the logits are non-negative, as in the original.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers import ConvNormAct, global_avg_pool
from cnn.layers.ceil_pool import max_pool_ceil
from cnn.layers.fire import Fire
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any

# (squeeze, expand 1x1, expand 3x3) of each fire module; "M" is a 3x3/2 ceil-mode max pool.
SQUEEZENET1_1 = ("M", (16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128), "M",
                 (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))


class SqueezeNet(nn.Module):
    """3x3/2 conv (64), fire modules and pools, dropout, 1x1 conv to classes, ReLU, global pool.

    1,235,496 parameters for 1000 classes. Inputs must be at least 17x17.
    ``num_classes=0`` returns the pooled 512 features of the last fire module.
    """

    num_classes: int = 1000
    layers: tuple = SQUEEZENET1_1
    drop_rate: float = 0.5
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        x = ConvNormAct(64, 3, 2, padding=0, norm=None, use_bias=True, conv=self.conv,
                        dtype=self.dtype, name="stem")(x, train)
        index = 0
        for item in self.layers:
            if item == "M":
                x = max_pool_ceil(x, 3, 2)
                continue
            index += 1
            x = Fire(*item, conv=self.conv, dtype=self.dtype, name=f"fire{index + 1}")(x, train)
        if self.num_classes == 0:
            return global_avg_pool(x)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        x = self.conv(self.num_classes, (1, 1), kernel_init=nn.initializers.normal(0.01), dtype=self.dtype,
                    param_dtype=jnp.float32, name="classifier")(x)
        return global_avg_pool(nn.relu(x))


register("squeezenet1_1", SqueezeNet, params=1_235_496, min_size=25)
