"""EfficientNet B0-B3 (Tan & Le 2019), torchvision layout, derived from the B0 table by compound scaling.

A variant is ``(width, depth, resolution, dropout)``; every stage of the B0 table gets
``round_filters(c) = make_divisible(c * width)`` channels and ``round_repeats(n) = ceil(n * depth)``
blocks. Blocks are MBConv with SE (squeeze width ``max(1, in_channels // 4)``, swish inside,
sigmoid gate), swish activations, and stochastic depth rising linearly from 0 to
``drop_path_rate`` over the blocks (torchvision: ``rate * index / total``).

BatchNorm: torchvision's B0-B4 use PyTorch's defaults (epsilon 1e-5, momentum 0.1); the TF
originals use epsilon 1e-3 and momentum 0.01 (``bn_epsilon=1e-3, bn_momentum=0.99`` here).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional, Sequence, Tuple

import jax
from flax import linen as nn

from cnn.layers import ClassifierHead, ConvNormAct, batch_norm
from cnn.layers.activations import swish
from cnn.layers.mbconv import InvertedResidual, make_divisible
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any

# B0: (expansion, kernel, first stride, input channels, output channels, repeats) of each stage.
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

# Compound-scaling coefficients: (width, depth, resolution, dropout), from the paper.
SCALING = {
    "b0": (1.0, 1.0, 224, 0.2),
    "b1": (1.0, 1.1, 240, 0.2),
    "b2": (1.1, 1.2, 260, 0.3),
    "b3": (1.2, 1.4, 300, 0.3),
}
PARAMS = {"b0": 5_288_548, "b1": 7_794_184, "b2": 9_109_994, "b3": 12_233_232}


def round_filters(channels: int, width: float) -> int:
    """Scale a width and round it to a multiple of 8 (never more than 10% down)."""
    return make_divisible(channels * width, 8)


def round_repeats(repeats: int, depth: float) -> int:
    """Scale a stage's block count, rounding up."""
    return int(math.ceil(repeats * depth))


class EfficientNet(nn.Module):
    """Swish stem (3x3/2), seven MBConv stages, 1x1 conv to ``4 x`` the last width, pool, dropout, fc.

    ``width`` and ``depth`` scale ``stages`` (``B0_STAGES``); registry variants set them from ``SCALING``.
    ``conv`` is the module of every conv (``nn.Conv``; see ``cnn.layers.cpu_kernels``).
    """

    num_classes: int = 1000
    width: float = 1.0
    depth: float = 1.0
    stages: Sequence[Tuple[int, int, int, int, int, int]] = B0_STAGES
    drop_rate: float = 0.2
    drop_path_rate: float = 0.2
    conv: ModuleDef = nn.Conv
    axis_name: Optional[str] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        norm, conv = batch_norm(self), self.conv
        stem_width = round_filters(self.stages[0][3], self.width)
        x = ConvNormAct(stem_width, 3, 2, padding=1, use_bias=False, norm=norm, act=swish, conv=conv,
                        dtype=self.dtype,
                        name="stem")(x, train)
        total = sum(round_repeats(stage[5], self.depth) for stage in self.stages)
        index = 0
        for stage_index, (expansion, kernel, stride, _, out, repeats) in enumerate(self.stages):
            features = round_filters(out, self.width)
            for i in range(round_repeats(repeats, self.depth)):
                in_channels = x.shape[-1]
                x = InvertedResidual(
                    features, expanded=make_divisible(in_channels * expansion), kernel_size=kernel,
                    strides=stride if i == 0 else 1, act=swish, se_squeeze=max(1, in_channels // 4), se_act=swish,
                    drop_path_rate=self.drop_path_rate * index / total, norm=norm, conv=conv, dtype=self.dtype,
                    name=f"stage{stage_index + 1}_block{i + 1}",
                )(x, train)
                index += 1
        x = ConvNormAct(4 * x.shape[-1], 1, padding=0, use_bias=False, norm=norm, act=swish, conv=conv,
                        dtype=self.dtype,
                        name="last_conv")(x, train)
        return ClassifierHead(self.num_classes, pool="avg", drop_rate=self.drop_rate, dtype=self.dtype, name="head")(
            x, train
        )


for variant, (width, depth, resolution, dropout) in SCALING.items():
    register(
        f"efficientnet_{variant}",
        functools.partial(EfficientNet, width=width, depth=depth, drop_rate=dropout),
        input_shape=(resolution, resolution, 3),
        params=PARAMS[variant],
    )
