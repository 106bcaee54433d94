"""Pure Linen building blocks; every module's ``__call__`` takes ``(x, train)``."""

from cnn.layers.conv import ConvNormAct, conv_output_size, he_normal_fan_out, to_padding, to_tuple
from cnn.layers.head import ClassifierHead
from cnn.layers.norm import BatchNorm
from cnn.layers.pooling import (
    adaptive_avg_pool,
    avg_pool,
    flatten,
    global_avg_pool,
    global_max_pool,
    max_pool,
)
from cnn.layers.residual import BasicBlock, Bottleneck, PreActBlock, PreActBottleneck, zero_pad_shortcut
from cnn.layers.separable import DepthwiseConv, SeparableConv

__all__ = [
    "BasicBlock",
    "BatchNorm",
    "Bottleneck",
    "ClassifierHead",
    "ConvNormAct",
    "DepthwiseConv",
    "PreActBlock",
    "PreActBottleneck",
    "SeparableConv",
    "adaptive_avg_pool",
    "avg_pool",
    "conv_output_size",
    "flatten",
    "global_avg_pool",
    "global_max_pool",
    "he_normal_fan_out",
    "max_pool",
    "to_padding",
    "to_tuple",
    "zero_pad_shortcut",
]
