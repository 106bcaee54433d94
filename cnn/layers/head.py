"""Classifier heads: pool or flatten, dropout, dense layers, logits."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers.pooling import flatten, global_avg_pool

Dtype = Any


class ClassifierHead(nn.Module):
    """``[N, *spatial, C]`` or ``[N, C]`` -> logits ``[N, num_classes]``.

    Attributes:
      num_classes: output units; 0 returns the pooled features (for feature extraction).
      pool: ``"avg"`` (global average), ``"flatten"`` or ``None`` (input is already ``[N, C]``).
      hidden: widths of hidden dense layers, each followed by ``act`` and dropout.
      drop_rate: dropout before every dense layer (needs a ``"dropout"`` rng when training).
      dropout_first: whether dropout also precedes the first dense layer (AlexNet/VGG style
        applies it only between hidden layers when False).
    """

    num_classes: int
    pool: Optional[str] = "avg"
    hidden: Sequence[int] = ()
    drop_rate: float = 0.0
    dropout_first: bool = True
    act: Callable[[jax.Array], jax.Array] = nn.relu
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.pool == "avg":
            x = global_avg_pool(x)
        elif self.pool == "flatten":
            x = flatten(x)
        elif self.pool is not None:
            raise ValueError(f"pool={self.pool!r}; expected 'avg', 'flatten' or None")
        for i, width in enumerate(self.hidden):
            if i > 0 or self.dropout_first:
                x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
            x = self.act(nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32, name=f"hidden{i}")(x))
        if self.num_classes == 0:
            return x
        if self.hidden or self.dropout_first:
            x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32, name="fc")(x)
