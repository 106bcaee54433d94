"""Input attributions: vanilla gradients, SmoothGrad, integrated gradients and occlusion sensitivity.

Each returns raw attributions, with their analytic meaning kept: the gradient methods an array like
the input ``[N, *spatial, C]`` (integrated gradients add up to ``f(x) - f(baseline)``), occlusion
the mean drop of the class score over the windows covering each position ``[N, *spatial]``.
``heat_map`` turns an input-shaped attribution into a ``[N, *spatial]`` map in [0, 1].

Written here rather than taken from PAIR's ``saliency`` package: its methods take one numpy example
at a time, call the model through a Python callback and draw SmoothGrad noise from numpy's global
generator, so they can be neither jitted, batched nor given a key. The tests compare against it.

Loops over gradient evaluations (SmoothGrad's samples, the integration steps) are Python loops, unrolled
under ``jit``: XLA's CPU backend runs convolution gradients inside a ``lax.scan`` body up to 10x slower
than outside one (jax-ml/jax#12868). Occlusion needs no gradient and scans over its windows.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnn.analysis.maps import class_scores, explained_classes, normalize_maps


def _score_gradients(model: nn.Module, variables: Any, images: jax.Array, classes: jax.Array) -> jax.Array:
    """``d logits[n, classes[n]] / d images[n]`` for every example: ``[N, *spatial, C]``."""

    def total(x):
        return jnp.sum(class_scores(model.apply(variables, x, train=False), classes))

    return jax.grad(total)(images)


def _predicted(model: nn.Module, variables: Any, images: jax.Array, target: Any) -> jax.Array:
    if target is not None:
        return jnp.broadcast_to(jnp.asarray(target, jnp.int32), images.shape[:1])
    return explained_classes(model.apply(variables, images, train=False), None)


@functools.partial(jax.jit, static_argnames=("model",))
def vanilla_gradients(model: nn.Module, variables: Any, images: Any, *, target: Any = None) -> jax.Array:
    """The gradient of the class score (pre-softmax) with respect to the input (Simonyan et al. 2014).

    Returns ``[N, *spatial, C]``; ``target``: an int or int ``[N]``, default the predicted class.
    """
    images = jnp.asarray(images, jnp.float32)
    return _score_gradients(model, variables, images, _predicted(model, variables, images, target))


@functools.partial(jax.jit, static_argnames=("model", "samples", "squared"))
def smoothgrad(model: nn.Module, variables: Any, images: Any, key: jax.Array, *, target: Any = None,
               samples: int = 25, noise: float = 0.15, squared: bool = False) -> jax.Array:
    """The mean gradient over ``samples`` noisy copies of each input (Smilkov et al. 2017).

    The noise is Gaussian with standard deviation ``noise * (max - min)`` of each example; the class
    is chosen on the clean input. ``squared`` averages squared gradients (PAIR's ``magnitude``).
    """
    images = jnp.asarray(images, jnp.float32)
    classes = _predicted(model, variables, images, target)
    axes = tuple(range(1, images.ndim))
    scale = noise * (jnp.max(images, axis=axes, keepdims=True) - jnp.min(images, axis=axes, keepdims=True))

    total = jnp.zeros_like(images)
    for sample_key in jax.random.split(key, samples):  # unrolled: see the module's note on loops
        gradient = _score_gradients(model, variables, images + scale * jax.random.normal(sample_key, images.shape), classes)
        total = total + (gradient**2 if squared else gradient)
    return total / samples


@functools.partial(jax.jit, static_argnames=("model", "steps"))
def integrated_gradients(model: nn.Module, variables: Any, images: Any, *, target: Any = None,
                         baseline: Any = None, steps: int = 32) -> jax.Array:
    """``(x - baseline) * mean_k grad f(baseline + a_k (x - baseline))`` with midpoints ``a_k = (k + 1/2) / steps``
    (Sundararajan et al. 2017). The attributions sum to ``f(x) - f(baseline)`` up to the quadrature error.

    ``baseline``: like ``images`` (or broadcastable), default zeros; the class is chosen on the input.
    """
    images = jnp.asarray(images, jnp.float32)
    baseline = jnp.zeros_like(images) if baseline is None else jnp.broadcast_to(jnp.asarray(baseline, jnp.float32), images.shape)
    classes = _predicted(model, variables, images, target)
    difference = images - baseline

    total = jnp.zeros_like(images)
    for k in range(steps):  # unrolled: see the module's note on loops
        total = total + _score_gradients(model, variables, baseline + (k + 0.5) / steps * difference, classes)
    return difference * total / steps


def _window_starts(size: int, window: int, stride: int) -> list:
    """Window offsets along one axis: every ``stride``, plus one flush with the end."""
    if window > size:
        raise ValueError(f"occlusion window {window} is larger than the input's spatial size {size}")
    starts = list(range(0, size - window + 1, stride))
    return starts if starts[-1] == size - window else starts + [size - window]


def occlusion_masks(spatial: Sequence[int], window: int, stride: int) -> np.ndarray:
    """bool ``[P, *spatial]``: one mask per occluding window position (covering every position)."""
    if window < 1 or stride < 1:
        raise ValueError(f"occlusion window={window}, stride={stride}; both must be positive ints")
    ranges = [_window_starts(size, window, stride) for size in spatial]
    masks = np.zeros((int(np.prod([len(r) for r in ranges])), *spatial), bool)
    for index, corner in enumerate(itertools.product(*ranges)):
        masks[(index, *(slice(c, c + window) for c in corner))] = True
    return masks


@functools.partial(jax.jit, static_argnames=("model", "window", "stride"))
def occlusion(model: nn.Module, variables: Any, images: Any, *, target: Any = None, window: int = 8,
              stride: Optional[int] = None, value: float = 0.0) -> jax.Array:
    """Occlusion sensitivity (Zeiler and Fergus 2014): ``[N, *spatial]``, at each position the mean drop of
    the class score when a ``window``-wide cube of the input around it is set to ``value``.

    Windows move by ``stride`` (default ``window // 2``), the last one flush with the border.
    """
    images = jnp.asarray(images, jnp.float32)
    stride = stride or max(window // 2, 1)
    masks = jnp.asarray(occlusion_masks(images.shape[1:-1], window, stride))
    logits = model.apply(variables, images, train=False)
    classes = explained_classes(logits, target)
    clean = class_scores(logits, classes)

    def add(total, mask):
        occluded = jnp.where(mask[None, ..., None], jnp.asarray(value, images.dtype), images)
        drop = clean - class_scores(model.apply(variables, occluded, train=False), classes)
        return total + drop.reshape((-1,) + (1,) * mask.ndim) * mask, None

    total, _ = jax.lax.scan(add, jnp.zeros(images.shape[:-1], jnp.float32), masks)
    return total / jnp.sum(masks, axis=0)


@jax.jit
def heat_map(attributions: jax.Array) -> jax.Array:
    """``[N, *spatial, C]`` attributions -> ``[N, *spatial]`` in [0, 1]: absolute values summed over channels,
    scaled per example (the grayscale map of PAIR's ``VisualizeImageGrayscale``, without its clipping)."""
    return normalize_maps(jnp.sum(jnp.abs(attributions), axis=-1))
