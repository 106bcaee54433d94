"""GoogLeNet (Inception v1, Szegedy et al. 2015) and Inception-v3 (Szegedy et al. 2016), torchvision layout.

Auxiliary classifiers: ``__call__`` always returns the main logits. In training (and at
initialisation, so their parameters exist) the auxiliary heads also run and their logits are
sown into the ``"intermediates"`` collection under ``"aux_logits"``; a training step that wants
the auxiliary loss applies with ``mutable=["batch_stats", "intermediates"]``. In evaluation
they are skipped, as torchvision does.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers import ClassifierHead, batch_norm, max_pool
from cnn.layers.ceil_pool import max_pool_ceil
from cnn.layers.inception import InceptionAux, InceptionModule, basic_conv, transform_input
from cnn.layers.inception_v3 import InceptionA, InceptionB, InceptionC, InceptionD, InceptionE, InceptionV3Aux
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any

# (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection) of each GoogLeNet Inception module.
GOOGLENET_MODULES = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNet(nn.Module):
    """Stem (7x7/2, pool, 1x1, 3x3, pool), nine Inception modules in three groups, global pool, dropout, fc.

    6,624,904 parameters for 1000 classes without auxiliary heads (``aux_logits=False``, the
    default); 13,004,888 with both. Pools use ceil mode, as torchvision. ``second_kernel=5``
    gives the paper's 5x5 branch instead of torchvision's 3x3.
    ``transform_input`` (off by default) re-normalises ImageNet-normalised inputs as torchvision does
    for its published ImageNet weights (``cnn.layers.inception.transform_input``): turn it on with them.
    """

    num_classes: int = 1000
    aux_logits: bool = False
    transform_input: bool = False
    drop_rate: float = 0.2
    aux_drop_rate: float = 0.7
    second_kernel: int = 3
    conv: ModuleDef = nn.Conv
    axis_name: Optional[str] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        norm = batch_norm(self)
        unit = basic_conv(norm, self.conv, self.dtype)
        if self.transform_input:
            x = transform_input(x)
        x = unit(64, 7, 2, padding=3, name="conv1")(x, train)
        x = max_pool_ceil(x, 3, 2)
        x = unit(64, 1, padding=0, name="conv2")(x, train)
        x = unit(192, 3, padding=1, name="conv3")(x, train)
        x = max_pool_ceil(x, 3, 2)
        run_aux = self.aux_logits and self.num_classes > 0 and (train or self.is_initializing())  # no head, no aux
        for key, widths in GOOGLENET_MODULES.items():
            if key in ("4a", "5a"):
                x = max_pool_ceil(x, 3 if key == "4a" else 2, 2)
            x = InceptionModule(*widths, second_kernel=self.second_kernel, norm=norm, conv=self.conv, dtype=self.dtype,
                                name=f"inception{key}")(x, train)
            if run_aux and key in ("4a", "4d"):
                aux = InceptionAux(self.num_classes, self.aux_drop_rate, norm=norm, conv=self.conv, dtype=self.dtype,
                                   name=f"aux{1 if key == '4a' else 2}")(x, train)
                if not self.is_initializing():
                    self.sow("intermediates", "aux_logits", aux)
        return ClassifierHead(self.num_classes, pool="avg", drop_rate=self.drop_rate, dtype=self.dtype, name="head")(
            x, train
        )


class InceptionV3(nn.Module):
    """Inception-v3 for 299x299 inputs: 5-conv stem, 3 x A, B, 4 x C, (aux head), D, 2 x E, pool, dropout, fc.

    27,161,264 parameters for 1000 classes with the auxiliary head (``aux_logits=True``, the
    default, as torchvision); 23,834,568 without. The auxiliary head's 5x5 conv needs the full
    17x17 grid, i.e. 299x299 inputs in training; without it (or in evaluation) 75x75 is the minimum.
    ``transform_input``: as GoogLeNet's (on for torchvision's published ImageNet weights; off by default).
    """

    num_classes: int = 1000
    aux_logits: bool = True
    transform_input: bool = False
    drop_rate: float = 0.5
    conv: ModuleDef = nn.Conv
    axis_name: Optional[str] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-3
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        norm = batch_norm(self)
        unit = basic_conv(norm, self.conv, self.dtype)
        block = dict(norm=norm, conv=self.conv, dtype=self.dtype)
        if self.transform_input:
            x = transform_input(x)
        x = unit(32, 3, 2, padding=0, name="Conv2d_1a_3x3")(x, train)
        x = unit(32, 3, padding=0, name="Conv2d_2a_3x3")(x, train)
        x = unit(64, 3, padding=1, name="Conv2d_2b_3x3")(x, train)
        x = max_pool(x, 3, 2)
        x = unit(80, 1, padding=0, name="Conv2d_3b_1x1")(x, train)
        x = unit(192, 3, padding=0, name="Conv2d_4a_3x3")(x, train)
        x = max_pool(x, 3, 2)
        for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = InceptionA(pool_features=pool_features, name=name, **block)(x, train)
        x = InceptionB(name="Mixed_6a", **block)(x, train)
        for name, channels in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = InceptionC(channels_7x7=channels, name=name, **block)(x, train)
        aux = self.aux_logits and self.num_classes > 0  # features only (num_classes=0): no auxiliary head
        if aux and self.is_initializing():  # a 17x17 stand-in, so that any input size initialises
            InceptionV3Aux(num_classes=self.num_classes, name="AuxLogits", **block)(
                jnp.zeros((x.shape[0], 17, 17, x.shape[-1]), x.dtype), train)
        elif aux and train:
            aux = InceptionV3Aux(num_classes=self.num_classes, name="AuxLogits", **block)(x, train)
            self.sow("intermediates", "aux_logits", aux)
        x = InceptionD(name="Mixed_7a", **block)(x, train)
        x = InceptionE(name="Mixed_7b", **block)(x, train)
        x = InceptionE(name="Mixed_7c", **block)(x, train)
        return ClassifierHead(self.num_classes, pool="avg", drop_rate=self.drop_rate, dtype=self.dtype, name="head")(
            x, train
        )


register("googlenet", GoogLeNet, params=6_624_904, min_size=31)
register("inception_v3", InceptionV3, input_shape=(299, 299, 3), params=27_161_264, min_size=75)
