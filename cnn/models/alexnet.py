"""AlexNet, torchvision's single-tower variant (Krizhevsky 2014, "One weird trick")."""

from __future__ import annotations

import functools
from typing import Any, Optional

import jax
from flax import linen as nn

from cnn.layers import ConvNormAct, adaptive_avg_pool, flatten, max_pool
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any


class AlexNet(nn.Module):
    """Five convs (64@11x11/4, 192@5x5, 384, 256, 256 @3x3), adaptive pool to 6x6, 4096-4096-classes.

    61,100,840 parameters for 1000 classes. Dropout precedes the two hidden dense layers.
    ``num_classes=0`` returns the 4096 features of the second hidden layer.
    """

    num_classes: int = 1000
    drop_rate: float = 0.5
    conv: ModuleDef = nn.Conv
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        conv = functools.partial(ConvNormAct, norm=None, conv=self.conv, dtype=self.dtype)
        x = conv(64, 11, strides=4, padding=2, name="conv1")(x, train)
        x = max_pool(x, 3, 2)
        x = conv(192, 5, padding=2, name="conv2")(x, train)
        x = max_pool(x, 3, 2)
        x = conv(384, 3, padding=1, name="conv3")(x, train)
        x = conv(256, 3, padding=1, name="conv4")(x, train)
        x = conv(256, 3, padding=1, name="conv5")(x, train)
        x = max_pool(x, 3, 2)
        x = flatten(adaptive_avg_pool(x, 6))
        for i in range(2):
            x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
            x = nn.relu(nn.Dense(4096, dtype=self.dtype, name=f"fc{i + 1}")(x))
        if self.num_classes == 0:
            return x
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x)


register("alexnet", AlexNet, params=61_100_840, min_size=63)
