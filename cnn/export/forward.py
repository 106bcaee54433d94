"""The function every export writes out: a model's evaluation forward pass over a symbolic batch."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers import cpu_kernels

BATCH = "batch"  # the name of the symbolic batch dimension in every exported program


def input_spec(input_shape: Sequence[int], dtype: Any = jnp.float32) -> jax.ShapeDtypeStruct:
    """``[batch, *input_shape]`` with a symbolic ``batch``: the exported program accepts any batch size."""
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input_shape={tuple(input_shape)}; expected one example's shape without the batch axis, e.g. (28, 28, 1)")
    (batch,) = jax.export.symbolic_shape(BATCH)
    return jax.ShapeDtypeStruct((batch,) + shape, dtype)


def forward(model: nn.Module, variables: Any) -> Callable[[jax.Array], jax.Array]:
    """``images [N, H, W, C] -> logits [N, classes]`` (float32) in evaluation mode, with the variables
    closed over (they become the exported program's constants) and the model's plain kernels."""
    model = cpu_kernels.plain(model)
    return lambda images: model.apply(variables, images, train=False).astype(jnp.float32)
