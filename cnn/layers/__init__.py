"""Pure Linen building blocks; every module's ``__call__`` takes ``(x, train)``.

Every block uses plain Flax/lax ops and takes its conv (and norm, activation) as injected fields;
``cnn.layers.cpu_kernels`` holds the faster CPU formulations the training loop can inject.
"""

from cnn.layers.conv import ConvNormAct, conv_output_size, he_normal_fan_out, to_padding, to_tuple
from cnn.layers.head import ClassifierHead
from cnn.layers.norm import BatchNorm, batch_norm
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
    "batch_norm",
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

from cnn.layers.activations import gelu_exact, hard_sigmoid, hard_swish, relu6, swish
from cnn.layers.ceil_pool import ceil_mode_padding, max_pool_ceil
from cnn.layers.convnext import ConvNeXtBlock, ConvNeXtDownsample
from cnn.layers.densenet import DenseBlock, DenseLayer, Transition
from cnn.layers.drop_path import DropPath
from cnn.layers.fire import Fire
from cnn.layers.inception import InceptionAux, InceptionModule
from cnn.layers.inception_v3 import InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, InceptionV3Aux
from cnn.layers.mbconv import InvertedResidual, SqueezeExcite, make_divisible
from cnn.layers.vit import EncoderBlock, Mlp, PatchEmbedding, SelfAttention

__all__ += [
    "ConvNeXtBlock",
    "ConvNeXtDownsample",
    "DenseBlock",
    "DenseLayer",
    "DropPath",
    "EncoderBlock",
    "Fire",
    "InceptionA",
    "InceptionAux",
    "InceptionB",
    "InceptionC",
    "InceptionD",
    "InceptionE",
    "InceptionModule",
    "InceptionV3Aux",
    "InvertedResidual",
    "Mlp",
    "PatchEmbedding",
    "SelfAttention",
    "SqueezeExcite",
    "Transition",
    "ceil_mode_padding",
    "gelu_exact",
    "hard_sigmoid",
    "hard_swish",
    "make_divisible",
    "max_pool_ceil",
    "relu6",
    "swish",
]
