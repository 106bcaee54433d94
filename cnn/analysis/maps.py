"""What every explanation shares: the explained class and score, and maps scaled to [0, 1]."""

from __future__ import annotations

from typing import Any, Tuple

import jax
import jax.numpy as jnp


def explained_classes(logits: jax.Array, target: Any) -> jax.Array:
    """The class explained per example, int ``[N]``: ``target`` (an int or int ``[N]``), else the predicted one."""
    if target is None:
        return jnp.argmax(logits, axis=-1)
    return jnp.broadcast_to(jnp.asarray(target, jnp.int32), logits.shape[:1])


def class_scores(logits: jax.Array, classes: jax.Array) -> jax.Array:
    """``logits[n, classes[n]]`` as float32 ``[N]``: the pre-softmax score being explained."""
    return jnp.take_along_axis(logits.astype(jnp.float32), classes[:, None], axis=1)[:, 0]


def normalize_maps(maps: jax.Array) -> jax.Array:
    """Each example's map shifted and scaled to [0, 1] (all zeros where the map is constant)."""
    axes = tuple(range(1, maps.ndim))
    low = jnp.min(maps, axis=axes, keepdims=True)
    span = jnp.max(maps, axis=axes, keepdims=True) - low
    return jnp.where(span > 0, (maps - low) / jnp.where(span > 0, span, 1.0), 0.0)


def resize_maps(maps: jax.Array, spatial: Tuple[int, ...]) -> jax.Array:
    """``[N, *s]`` -> ``[N, *spatial]`` by (bi/tri)linear interpolation with half-pixel centres."""
    if tuple(maps.shape[1:]) == tuple(spatial):
        return maps
    return jax.image.resize(maps, (maps.shape[0], *spatial), method="linear")
