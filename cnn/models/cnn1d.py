"""A 1D CNN for sequences: audio or sensor signals ``[N, L, C]`` (or ``[N, L]``), or text as integer
tokens ``[N, L]`` through an embedding. Conv blocks (conv -> BatchNorm -> ReLU, max pool 2 between
blocks), global pooling over time, dropout, fc."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.layers import ConvNormAct, batch_norm, global_avg_pool, global_max_pool, max_pool
from cnn.models.layout import check_layout
from cnn.models.registry import register

Dtype = Any
ModuleDef = Any


class CNN1D(nn.Module):
    """Attributes:
      vocab_size: 0 for real-valued input; otherwise inputs are token ids in ``[0, vocab_size)``,
        embedded to ``embed_dim`` channels.
      widths: channels of each conv block; ``kernel_size`` is odd, padding keeps the length.
      pool: global pooling over time, ``"max"`` (text CNNs) or ``"avg"``.
      batch_norm: BatchNorm after each conv (else the convs carry a bias).
    """

    num_classes: int = 10
    vocab_size: int = 0
    embed_dim: int = 128
    widths: Sequence[int] = (64, 128, 256)
    kernel_size: int = 5
    pool: str = "max"
    batch_norm: bool = True
    drop_rate: float = 0.0
    conv: ModuleDef = nn.Conv
    max_pool: Callable[..., jax.Array] = max_pool
    axis_name: Optional[str] = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: Optional[Dtype] = None

    spatial_rank = 1  # inputs [N, L, C] (or [N, L]: one channel; int tokens [N, L] with vocab_size)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.pool not in ("max", "avg"):
            raise ValueError(f"pool={self.pool!r}; expected 'max' or 'avg'")
        if self.vocab_size > 0:
            if x.ndim != 2 or not jnp.issubdtype(x.dtype, jnp.integer):
                raise ValueError(f"with vocab_size={self.vocab_size} the input is int tokens [N, L]; got "
                                 f"{x.dtype} {x.shape}")
            x = nn.Embed(self.vocab_size, self.embed_dim, dtype=self.dtype, name="embed")(x)
        else:
            if x.ndim == 2:
                x = x[..., None]
            check_layout(self, x)
        norm = batch_norm(self) if self.batch_norm else None
        for i, width in enumerate(self.widths):
            if i > 0:
                x = self.max_pool(x, 2)
            x = ConvNormAct(width, self.kernel_size, padding=self.kernel_size // 2, norm=norm, conv=self.conv,
                            dtype=self.dtype, name=f"conv{i + 1}")(x, train)
        x = global_max_pool(x) if self.pool == "max" else global_avg_pool(x)
        if self.num_classes == 0:
            return x
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


register("cnn1d", CNN1D, input_shape=(1024, 1), default_num_classes=10, params=208_586, min_size=4)
