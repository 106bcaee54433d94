"""Activations of the mobile families, written out so their definitions are visible.

``swish`` (SiLU, EfficientNet), ``hard_sigmoid`` and ``hard_swish`` (MobileNetV3) follow
PyTorch's ``nn.SiLU``, ``nn.Hardsigmoid`` and ``nn.Hardswish`` exactly; ``gelu_exact`` is the
erf form of ``nn.GELU()`` (Flax's ``nn.gelu`` defaults to the tanh approximation).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def swish(x: jax.Array) -> jax.Array:
    """``x * sigmoid(x)`` (Ramachandran et al. 2017; also called SiLU)."""
    return x * jax.nn.sigmoid(x)


def hard_sigmoid(x: jax.Array) -> jax.Array:
    """``relu6(x + 3) / 6``: a piecewise-linear sigmoid, 0 below -3 and 1 above 3."""
    return jnp.clip(x + 3.0, 0.0, 6.0) / 6.0


def hard_swish(x: jax.Array) -> jax.Array:
    """``x * hard_sigmoid(x)`` (Howard et al. 2019, MobileNetV3)."""
    return x * hard_sigmoid(x)


def relu6(x: jax.Array) -> jax.Array:
    """``min(max(x, 0), 6)`` (MobileNetV2)."""
    return jnp.clip(x, 0.0, 6.0)


def gelu_exact(x: jax.Array) -> jax.Array:
    """``x * Phi(x)`` with the erf-based normal CDF, as ``torch.nn.GELU()`` (ConvNeXt, ViT)."""
    return jax.nn.gelu(x, approximate=False)
