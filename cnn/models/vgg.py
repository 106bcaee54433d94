"""VGG (Simonyan & Zisserman 2015), configurations A, B, D, E, with or without BatchNorm."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Union

import jax
from flax import linen as nn

from cnn.layers import ClassifierHead, ConvNormAct, adaptive_avg_pool, batch_norm, max_pool
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any

# Channels of each 3x3 conv; "M" is a 2x2 max pool.
VGG_LAYERS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """3x3 conv stacks with max pools, adaptive pool to ``pool_size``, a 4096-4096 classifier.

    Convs keep their bias with BatchNorm too, as torchvision's ``vgg*_bn`` (so the counts match).
    ``pool_size=None`` with ``hidden=()`` gives the CIFAR-style head (global pool, one dense).
    """

    layers: Sequence[Union[int, str]]
    num_classes: int = 1000
    batch_norm: bool = False
    pool_size: Optional[int] = 7
    hidden: Sequence[int] = (4096, 4096)
    drop_rate: float = 0.5
    conv: ModuleDef = nn.Conv
    max_pool: Callable[..., jax.Array] = max_pool
    axis_name: Optional[str] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        norm = batch_norm(self) if self.batch_norm else None
        index = 0
        for item in self.layers:
            if item == "M":
                x = self.max_pool(x, 2)
                continue
            index += 1
            x = ConvNormAct(
                int(item), 3, padding=1, use_bias=True, norm=norm, conv=self.conv, dtype=self.dtype, name=f"conv{index}",
            )(x, train)
        if self.pool_size is None:
            return ClassifierHead(
                self.num_classes, pool="avg", hidden=self.hidden, drop_rate=self.drop_rate, dtype=self.dtype, name="head"
            )(x, train)
        x = adaptive_avg_pool(x, self.pool_size)
        return ClassifierHead(
            self.num_classes, pool="flatten", hidden=self.hidden, drop_rate=self.drop_rate, dropout_first=False,
            dtype=self.dtype, name="head",
        )(x, train)


# Parameters of vgg<depth> and vgg<depth>_bn at 1000 classes.
VGG_PARAMS = {11: (132_863_336, 132_868_840), 13: (133_047_848, 133_053_736),
              16: (138_357_544, 138_365_992), 19: (143_667_240, 143_678_248)}
for depth, layers in VGG_LAYERS.items():  # five 2x2 pools: at least 32x32
    plain_params, bn_params = VGG_PARAMS[depth]
    register(f"vgg{depth}", functools.partial(VGG, layers=layers), params=plain_params, min_size=32)
    register(f"vgg{depth}_bn", functools.partial(VGG, layers=layers, batch_norm=True), params=bn_params, min_size=32)

# kuangliu/pytorch-cifar VGG16: conv(bias)-BN-ReLU stacks, five pools take 32x32 to 1x1, one dense layer.
register(
    "vgg16_cifar",
    functools.partial(VGG, layers=VGG_LAYERS[16], batch_norm=True, pool_size=None, hidden=(), drop_rate=0.0),
    input_shape=(32, 32, 3),
    default_num_classes=10,
    params=14_728_266,
    min_size=32,
)
