"""ResNet v1.5 (He et al. 2016; torchvision), ResNeXt, Wide ResNet, pre-activation ResNet,
and the CIFAR ResNets of He et al. section 4.2. Variants are partials of one module."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import jax
from flax import linen as nn

from cnn.layers import (
    BasicBlock,
    Bottleneck,
    ClassifierHead,
    ConvNormAct,
    PreActBlock,
    PreActBottleneck,
    batch_norm,
    max_pool,
)
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any


class ResNet(nn.Module):
    """Stem, stages of residual blocks (the first block of each stage after the first strides 2), head.

    Attributes:
      stage_sizes: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
      block: ``BasicBlock``, ``Bottleneck`` or their pre-activation forms.
      widths: base width of each stage (a bottleneck outputs 4x).
      stem: ``"imagenet"`` (7x7/2 conv + 3x3/2 max pool) or ``"cifar"`` (3x3/1 conv, no pool).
      groups, base_width: ResNeXt cardinality and width per group; Wide ResNet is ``base_width=128``.
      shortcut: ``"projection"`` (1x1 conv + norm) or ``"zero_pad"`` (parameter-free, option A).
      zero_init_last: start each residual branch's last norm scale at zero.
      conv: the conv module of every conv (``nn.Conv``; see ``cnn.layers.cpu_kernels``).
      axis_name, bn_momentum, bn_epsilon: the BatchNorm (``cnn.layers.batch_norm``); ``axis_name`` is the
        pmap axis of cross-replica statistics.
    """

    stage_sizes: Sequence[int]
    block: ModuleDef
    num_classes: int = 1000
    widths: Sequence[int] = (64, 128, 256, 512)
    stem: str = "imagenet"
    stem_width: int = 64
    groups: int = 1
    base_width: int = 64
    shortcut: str = "projection"
    zero_init_last: bool = True
    drop_rate: float = 0.0
    act: Callable[[jax.Array], jax.Array] = nn.relu
    conv: ModuleDef = nn.Conv
    axis_name: Optional[str] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        if len(self.widths) != len(self.stage_sizes):
            raise ValueError(f"widths={tuple(self.widths)} and stage_sizes={tuple(self.stage_sizes)} differ in length")
        norm = batch_norm(self)
        pre_activation = self.block in (PreActBlock, PreActBottleneck)
        stem_norm = None if pre_activation else norm
        stem_act = None if pre_activation else self.act
        if self.stem == "imagenet":
            x = ConvNormAct(self.stem_width, 7, 2, padding=3, norm=stem_norm, act=stem_act, use_bias=False,
                            conv=self.conv, dtype=self.dtype, name="stem")(x, train)
            x = max_pool(x, 3, 2, padding=1)
        elif self.stem == "cifar":
            x = ConvNormAct(self.stem_width, 3, 1, padding=1, norm=stem_norm, act=stem_act, use_bias=False,
                            conv=self.conv, dtype=self.dtype, name="stem")(x, train)
        else:
            raise ValueError(f"stem={self.stem!r}; expected 'imagenet' or 'cifar'")

        for stage, (num_blocks, width) in enumerate(zip(self.stage_sizes, self.widths)):
            for index in range(num_blocks):
                x = self.block(
                    width,
                    strides=2 if stage > 0 and index == 0 else 1,
                    groups=self.groups,
                    base_width=self.base_width,
                    shortcut=self.shortcut,
                    zero_init_last=self.zero_init_last,
                    norm=norm,
                    act=self.act,
                    conv=self.conv,
                    dtype=self.dtype,
                    name=f"stage{stage + 1}_block{index + 1}",
                )(x, train)
        if pre_activation:
            x = self.act(norm(dtype=self.dtype, name="final_norm")(x, train=train))
        return ClassifierHead(self.num_classes, pool="avg", drop_rate=self.drop_rate, dtype=self.dtype, name="head")(
            x, train
        )


def _imagenet(name: str, stage_sizes, block, params: int, **fields) -> None:
    register(name, functools.partial(ResNet, stage_sizes=stage_sizes, block=block, **fields), params=params)


_imagenet("resnet18", (2, 2, 2, 2), BasicBlock, 11_689_512)
_imagenet("resnet34", (3, 4, 6, 3), BasicBlock, 21_797_672)
_imagenet("resnet50", (3, 4, 6, 3), Bottleneck, 25_557_032)
_imagenet("resnet101", (3, 4, 23, 3), Bottleneck, 44_549_160)
_imagenet("resnet152", (3, 8, 36, 3), Bottleneck, 60_192_808)
_imagenet("resnext50_32x4d", (3, 4, 6, 3), Bottleneck, 25_028_904, groups=32, base_width=4)
_imagenet("resnext101_32x8d", (3, 4, 23, 3), Bottleneck, 88_791_336, groups=32, base_width=8)
_imagenet("wide_resnet50_2", (3, 4, 6, 3), Bottleneck, 68_883_240, base_width=128)
_imagenet("wide_resnet101_2", (3, 4, 23, 3), Bottleneck, 126_886_696, base_width=128)
_imagenet("preact_resnet18", (2, 2, 2, 2), PreActBlock, 11_687_720)
_imagenet("preact_resnet50", (3, 4, 6, 3), PreActBottleneck, 25_549_352)

# The common CIFAR ResNet-18 (3x3 stem, no max pool; kuangliu/pytorch-cifar).
_cifar = dict(input_shape=(32, 32, 3), default_num_classes=10)
register("resnet18_cifar", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock, stem="cifar"),
         params=11_173_962, **_cifar)
register("resnet50_cifar", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck, stem="cifar"),
         params=23_520_842, **_cifar)
register("preact_resnet18_cifar",
         functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=PreActBlock, stem="cifar"),
         params=11_172_170, **_cifar)

# He et al. 2016, section 4.2: 6n+2 layers, widths 16/32/64, parameter-free shortcuts (0.27M ... 1.7M parameters).
CIFAR_DEPTHS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962}
for depth, params in CIFAR_DEPTHS.items():
    n = (depth - 2) // 6
    register(
        f"resnet{depth}_cifar",
        functools.partial(
            ResNet, stage_sizes=(n, n, n), block=BasicBlock, widths=(16, 32, 64), stem="cifar", stem_width=16,
            shortcut="zero_pad",
        ),
        params=params,
        **_cifar,
    )
