"""Batch normalisation with explicit, mutable ``batch_stats``.

Statistics are computed and kept in float32 whatever the compute dtype. With ``axis_name``
set (under ``pmap``) the batch statistics are averaged across replicas (cross-replica
BatchNorm); under ``jit`` over a mesh the batch axis is global already and XLA inserts the
reductions itself.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn

Dtype = Any


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last (features), as ``torch.nn.BatchNorm{1,2,3}d``.

    Attributes:
      momentum: weight of the old running statistics (Flax convention: PyTorch's
        ``momentum=0.1`` is ``momentum=0.9`` here).
      epsilon: added to the variance before the square root.
      axis_name: ``pmap`` axis to average batch statistics over; ``None`` keeps them local.
      zero_init: start the scale at zero (the last norm of a residual branch), so that every
        residual block begins as the identity.
      unbiased_running_var: update the running variance with the unbiased batch variance
        (``n / (n - 1)``), as PyTorch does. Normalisation always uses the biased variance.
      use_scale, use_bias: learn the affine ``scale`` and ``bias``.
      dtype: dtype of the output (statistics are float32 regardless).
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    axis_name: Optional[str] = None
    zero_init: bool = False
    unbiased_running_var: bool = True
    use_scale: bool = True
    use_bias: bool = True
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        features = x.shape[-1]
        reduction_axes: Sequence[int] = tuple(range(x.ndim - 1))
        running_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
        running_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))

        x32 = x.astype(jnp.float32)
        if train:
            mean = jnp.mean(x32, axis=reduction_axes)
            if self.axis_name is not None:
                mean = jax.lax.pmean(mean, self.axis_name)
            # Two passes (mean, then centred squares) are exact where E[x^2] - E[x]^2 cancels.
            var = jnp.mean(jnp.square(x32 - mean), axis=reduction_axes)
            count = 1
            for axis in reduction_axes:
                count *= x.shape[axis]
            if self.axis_name is not None:
                var = jax.lax.pmean(var, self.axis_name)
                count = count * jax.lax.psum(1, self.axis_name)
            if not self.is_initializing():
                stat_var = var * count / jnp.maximum(count - 1, 1) if self.unbiased_running_var else var
                running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
                running_var.value = self.momentum * running_var.value + (1 - self.momentum) * stat_var
        else:
            mean, var = running_mean.value, running_var.value

        y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon)
        if self.use_scale:
            scale_init = nn.initializers.zeros if self.zero_init else nn.initializers.ones
            y = y * self.param("scale", scale_init, (features,), jnp.float32)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        return y.astype(self.dtype or x.dtype)


def batch_norm(model: Any) -> Any:
    """The BatchNorm of a model with BatchNorm fields: ``bn_momentum``, ``bn_epsilon`` and ``axis_name``.

    Every zoo model with BatchNorm has these three fields and builds its norm layers with this, so
    the statistics of every layer follow the model's fields (and under ``pmap`` its ``axis_name``).
    """
    return functools.partial(BatchNorm, momentum=model.bn_momentum, epsilon=model.bn_epsilon, axis_name=model.axis_name)
