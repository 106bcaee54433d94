"""DenseNet-BC (Huang et al. 2017), torchvision layout, and kuangliu's CIFAR DenseNet-121."""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
from flax import linen as nn

from cnn.layers import ClassifierHead, ConvNormAct, batch_norm, max_pool
from cnn.layers.densenet import DenseBlock, Transition
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any


class DenseNet(nn.Module):
    """Stem, dense blocks separated by transitions that halve channels (``compression``) and
    resolution, final BN -> ReLU, global pool, fc.

    Attributes:
      block_sizes: dense layers per block, e.g. ``(6, 12, 24, 16)`` for DenseNet-121.
      growth_rate: feature maps each dense layer adds (k).
      stem_width: channels of the stem conv (64 for ImageNet, ``2k`` for CIFAR).
      stem: ``"imagenet"`` (7x7/2 conv, BN, ReLU, 3x3/2 max pool) or ``"cifar"`` (a bare 3x3 conv).
      bn_size: the bottleneck is ``bn_size * growth_rate`` wide.
      compression: channels kept by a transition, ``floor(C * compression)``.
      drop_rate: dropout after each dense layer (torchvision's ``drop_rate``); the head has none.
      new_first: concatenate each layer's output before its input (kuangliu's order).
    """

    block_sizes: Sequence[int]
    num_classes: int = 1000
    growth_rate: int = 32
    stem_width: int = 64
    stem: str = "imagenet"
    bn_size: int = 4
    compression: float = 0.5
    drop_rate: float = 0.0
    new_first: bool = False
    conv: ModuleDef = nn.Conv
    axis_name: Optional[str] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        norm = batch_norm(self)
        if self.stem == "imagenet":
            x = ConvNormAct(self.stem_width, 7, 2, padding=3, use_bias=False, norm=norm, conv=self.conv,
                            dtype=self.dtype, name="stem")(x, train)
            x = max_pool(x, 3, 2, padding=1)
        elif self.stem == "cifar":
            x = ConvNormAct(self.stem_width, 3, padding=1, use_bias=False, norm=None, act=None, conv=self.conv,
                            dtype=self.dtype, name="stem")(x, train)
        else:
            raise ValueError(f"stem={self.stem!r}; expected 'imagenet' or 'cifar'")
        for i, num_layers in enumerate(self.block_sizes):
            x = DenseBlock(num_layers, self.growth_rate, self.bn_size, self.drop_rate, new_first=self.new_first,
                           norm=norm, conv=self.conv, dtype=self.dtype, name=f"block{i + 1}")(x, train)
            if i < len(self.block_sizes) - 1:
                x = Transition(int(x.shape[-1] * self.compression), norm=norm, conv=self.conv, dtype=self.dtype,
                               name=f"transition{i + 1}")(x, train)
        x = nn.relu(norm(dtype=self.dtype, name="final_norm")(x, train=train))
        return ClassifierHead(self.num_classes, pool="avg", dtype=self.dtype, name="head")(x, train)


DEPTHS = {121: ((6, 12, 24, 16), 7_978_856), 169: ((6, 12, 32, 32), 14_149_480),
          201: ((6, 12, 48, 32), 20_013_928)}  # (block sizes, parameters)
for depth, (sizes, params) in DEPTHS.items():
    register(f"densenet{depth}", functools.partial(DenseNet, block_sizes=sizes), params=params, min_size=29)

# kuangliu/pytorch-cifar DenseNet121: 3x3 stem of 2k channels, no pool, new maps first; 32x32 -> 4x4.
register(
    "densenet121_cifar",
    functools.partial(DenseNet, block_sizes=(6, 12, 24, 16), stem="cifar", stem_width=64, new_first=True),
    input_shape=(32, 32, 3),
    default_num_classes=10,
    params=6_956_298,
    min_size=8,
)
