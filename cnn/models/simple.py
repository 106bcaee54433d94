"""Small networks for 28x28 digits: the seed's Keras MNIST network and LeNet-5."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
from flax import linen as nn

from cnn.layers import ConvNormAct, avg_pool, flatten, max_pool
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any

# Keras initialises kernels with Glorot uniform and biases with zeros.
glorot_uniform = nn.initializers.xavier_uniform()


class SimpleCNN(nn.Module):
    """Conv(32, 3x3, relu) MaxPool2 Conv(64, 3x3, relu) MaxPool2 Flatten Dense(128, relu) Dense(classes).

    225,034 parameters for 10 classes on [N, 28, 28, 1]. ``drop_rate`` adds dropout before the
    last layer (the seed recipe uses none). ``num_classes=0`` returns the 128 hidden features.
    """

    num_classes: int = 10
    widths: tuple = (32, 64)
    hidden: int = 128
    drop_rate: float = 0.0
    conv: ModuleDef = nn.Conv
    max_pool: Callable[..., jax.Array] = max_pool
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        for i, width in enumerate(self.widths):
            x = ConvNormAct(
                width, 3, padding="VALID", norm=None, kernel_init=glorot_uniform, conv=self.conv, dtype=self.dtype,
                name=f"conv{i + 1}",
            )(x, train)
            x = self.max_pool(x, 2)
        x = flatten(x)
        x = nn.relu(nn.Dense(self.hidden, kernel_init=glorot_uniform, dtype=self.dtype, name="fc1")(x))
        if self.num_classes == 0:
            return x
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, kernel_init=glorot_uniform, dtype=self.dtype, name="fc2")(x)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998): 6@5x5, pool, 16@5x5, pool, 120, 84, classes.

    61,706 parameters for 10 classes. A 28x28 input is zero-padded by 2 to the paper's 32x32.
    ``act``/``pool`` default to ReLU and max pooling; ``act=nn.tanh, pool="avg"`` gives the
    1998 choices (without the paper's trainable subsampling coefficients and RBF outputs).
    ``num_classes=0`` returns the 84 features of the last hidden layer. ``widths`` (the convs) and
    ``hidden`` (the dense layers) give narrower or wider variants, e.g. after structured pruning.
    """

    num_classes: int = 10
    widths: tuple = (6, 16)
    hidden: tuple = (120, 84)
    padding: int = 2
    act: Callable[[jax.Array], jax.Array] = nn.relu
    pool: str = "max"
    conv: ModuleDef = nn.Conv
    max_pool: Callable[..., jax.Array] = max_pool
    dtype: Optional[Dtype] = None

    spatial_rank = 2  # inputs [N, H, W, C]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        check_layout(self, x)
        if self.pool not in ("max", "avg"):
            raise ValueError(f"pool={self.pool!r}; expected 'max' or 'avg'")
        pool = self.max_pool if self.pool == "max" else avg_pool
        unit = functools.partial(ConvNormAct, kernel_size=5, norm=None, act=self.act, conv=self.conv, dtype=self.dtype)
        x = pool(unit(self.widths[0], padding=self.padding, name="conv1")(x, train), 2)
        x = pool(unit(self.widths[1], padding=0, name="conv2")(x, train), 2)
        x = flatten(x)
        x = self.act(nn.Dense(self.hidden[0], dtype=self.dtype, name="fc1")(x))
        x = self.act(nn.Dense(self.hidden[1], dtype=self.dtype, name="fc2")(x))
        if self.num_classes == 0:
            return x
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x)


register("simple_cnn", SimpleCNN, input_shape=(28, 28, 1), default_num_classes=10, params=225_034, min_size=10)
register("lenet5", LeNet5, input_shape=(28, 28, 1), default_num_classes=10, params=61_706, min_size=12)
