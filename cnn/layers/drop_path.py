"""Stochastic depth (Huang et al. 2016): drop a residual branch for a whole example.

In training each example keeps its branch with probability ``1 - rate`` and a kept branch is
scaled by ``1 / (1 - rate)``, so the expectation equals the evaluation output (torchvision's
``StochasticDepth(p, "row")``, timm's ``DropPath``). Randomness comes from the ``"dropout"`` rng
collection by default, so a training step that already passes ``rngs={"dropout": key}`` drives
dropout and stochastic depth alike; set ``rng_collection`` to separate them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


class DropPath(nn.Module):
    """``[N, ...] -> [N, ...]``: zero the whole of some examples in training, identity in evaluation."""

    rate: float = 0.0
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"drop path rate={self.rate}; expected 0 <= rate < 1")
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        rng = self.make_rng(self.rng_collection)
        mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))
