"""MobileNet v1 (Howard et al. 2017), v2 (Sandler et al. 2018, torchvision) and v3 (Howard et al.
2019, torchvision), plus kuangliu/pytorch-cifar's CIFAR MobileNetV2.

Every conv, the depthwise ones included, is the model's ``conv`` module (``nn.Conv``; the training
loop injects ``cnn.layers.cpu_kernels.CpuConv`` on the CPU, whose depthwise path XLA runs faster).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import jax
from flax import linen as nn

from cnn.layers import ClassifierHead, ConvNormAct, SeparableConv, batch_norm
from cnn.layers.activations import hard_sigmoid, hard_swish, relu6
from cnn.layers.mbconv import InvertedResidual, make_divisible
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any

# MobileNet v1: (output channels, stride) of each depthwise-separable layer after the 32-channel stem.
V1_LAYERS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)) + ((512, 1),) * 5 + ((1024, 2), (1024, 1))

# MobileNetV2: (expansion t, channels c, repeats n, first stride s) of each stage.
V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# kuangliu's CIFAR version: the second stage keeps stride 1 (and the stem does too).
V2_CIFAR_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                   (6, 320, 1, 1))

# MobileNetV3: (kernel, expanded, out, squeeze-excite, hard-swish, stride) of each block.
V3_LARGE = (
    (3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
    (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
    (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
    (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
    (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1),
)
V3_SMALL = (
    (3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
    (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
    (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
    (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1),
)


class MobileNetV1(nn.Module):
    """3x3/2 conv (32), 13 depthwise-separable layers, global pool, dropout, fc; 4,231,976 parameters.

    ``width_multiplier`` scales every width (``int(c * alpha)``, the paper's rule). ``act`` is ReLU, as
    the paper; timm's ``mobilenetv1_100`` (same layers, same parameters) uses ReLU6, so
    ``load_torch_weights("mobilenet_v1", ...)`` builds the model with ``act=relu6``.
    """

    num_classes: int = 1000
    width_multiplier: float = 1.0
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
        norm, conv = batch_norm(self), self.conv
        width = lambda c: max(int(c * self.width_multiplier), 1)  # noqa: E731
        x = ConvNormAct(width(32), 3, 2, padding=1, use_bias=False, norm=norm, act=self.act, conv=conv,
                        dtype=self.dtype, name="stem")(x, train)
        for i, (channels, stride) in enumerate(V1_LAYERS):
            x = SeparableConv(width(channels), 3, stride, padding=1, norm=norm, act=self.act, conv=conv,
                              dtype=self.dtype, name=f"layer{i + 1}")(x, train)
        return ClassifierHead(self.num_classes, pool="avg", drop_rate=self.drop_rate, dtype=self.dtype, name="head")(
            x, train
        )


class MobileNetV2(nn.Module):
    """Stem, inverted-residual stages, 1x1 conv to ``last_width``, global pool, dropout, fc.

    Attributes:
      stages: ``(t, c, n, s)`` rows (``V2_STAGES``); widths are ``make_divisible(c * width_multiplier)``.
      stem_strides: 2 for ImageNet, 1 for kuangliu's CIFAR model.
      act: ReLU6 (torchvision) or ReLU (kuangliu).
      always_expand, shortcut: see ``InvertedResidual``; kuangliu uses ``True`` and ``"projection"``.
    """

    num_classes: int = 1000
    stages: Sequence[Tuple[int, int, int, int]] = V2_STAGES
    width_multiplier: float = 1.0
    last_width: int = 1280
    stem_strides: int = 2
    act: Callable[[jax.Array], jax.Array] = relu6
    always_expand: bool = False
    shortcut: str = "identity"
    drop_rate: float = 0.2
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
        unit = functools.partial(ConvNormAct, use_bias=False, norm=norm, act=self.act, conv=conv, dtype=self.dtype)
        x = unit(make_divisible(32 * self.width_multiplier), 3, self.stem_strides, padding=1, name="stem")(x, train)
        index = 0
        for expansion, channels, repeats, stride in self.stages:
            features = make_divisible(channels * self.width_multiplier)
            for i in range(repeats):
                index += 1
                x = InvertedResidual(
                    features, expanded=x.shape[-1] * expansion, strides=stride if i == 0 else 1, act=self.act,
                    shortcut=self.shortcut, always_expand=self.always_expand, norm=norm, conv=conv, dtype=self.dtype,
                    name=f"block{index}",
                )(x, train)
        last = make_divisible(self.last_width * max(1.0, self.width_multiplier))
        x = unit(last, 1, padding=0, name="last_conv")(x, train)
        return ClassifierHead(self.num_classes, pool="avg", drop_rate=self.drop_rate, dtype=self.dtype, name="head")(
            x, train
        )


class MobileNetV3(nn.Module):
    """Hard-swish stem (16), inverted residuals with optional SE (hard-sigmoid gate), 1x1 conv to
    6x the last width, global pool, dense ``last_width`` + hard-swish, dropout, fc.

    BatchNorm has epsilon 1e-3 and PyTorch momentum 0.01 (Flax 0.99), as torchvision.
    """

    blocks: Sequence[Tuple[int, int, int, bool, bool, int]]
    last_width: int
    num_classes: int = 1000
    width_multiplier: float = 1.0
    drop_rate: float = 0.2
    conv: ModuleDef = nn.Conv
    axis_name: Optional[str] = None
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        norm, conv = batch_norm(self), self.conv
        adjust = lambda c: make_divisible(c * self.width_multiplier)  # noqa: E731
        x = ConvNormAct(adjust(16), 3, 2, padding=1, use_bias=False, norm=norm, act=hard_swish, conv=conv,
                        dtype=self.dtype,
                        name="stem")(x, train)
        for i, (kernel, expanded, out, use_se, use_hs, stride) in enumerate(self.blocks):
            expanded = adjust(expanded)
            x = InvertedResidual(
                adjust(out), expanded, kernel, stride, act=hard_swish if use_hs else nn.relu,
                se_squeeze=make_divisible(expanded // 4) if use_se else None, se_gate=hard_sigmoid,
                norm=norm, conv=conv, dtype=self.dtype, name=f"block{i + 1}",
            )(x, train)
        x = ConvNormAct(6 * x.shape[-1], 1, padding=0, use_bias=False, norm=norm, act=hard_swish, conv=conv,
                        dtype=self.dtype,
                        name="last_conv")(x, train)
        return ClassifierHead(self.num_classes, pool="avg", hidden=(adjust(self.last_width),),
                              drop_rate=self.drop_rate, dropout_first=False, act=hard_swish, dtype=self.dtype,
                              name="head")(x, train)


register("mobilenet_v1", MobileNetV1, params=4_231_976)
register("mobilenet_v2", MobileNetV2, params=3_504_872)
register("mobilenet_v3_large", functools.partial(MobileNetV3, blocks=V3_LARGE, last_width=1280), params=5_483_032)
register("mobilenet_v3_small", functools.partial(MobileNetV3, blocks=V3_SMALL, last_width=1024), params=2_542_856)
register(
    "mobilenet_v2_cifar",
    functools.partial(MobileNetV2, stages=V2_CIFAR_STAGES, stem_strides=1, act=nn.relu, always_expand=True,
                      shortcut="projection", drop_rate=0.0),
    input_shape=(32, 32, 3),
    default_num_classes=10,
    params=2_296_922,
)
