"""The sanity checks of Adebayo et al. 2018: an explanation must change when what it explains changes.

- Model randomisation, cascading: the parameters are re-initialised layer by layer from the output down;
  a map that barely changes does not depend on what the model learned.
- Data randomisation: the same architecture trained on shuffled labels; its maps should differ from
  those of the model trained on the true labels.

Maps are compared by Spearman rank correlation per example. The reference level is model-free: the
rank correlation of the trained model's map with the Sobel edge magnitude of the same input (Adebayo
et al. show that maps failing the checks behave like edge detectors). A map whose correlation with the
original, once the weights are random, is below that level keeps less of the original than an input-only
map does.
"""

from __future__ import annotations

from typing import Any, Iterator, List, Tuple

import jax
import numpy as np
import scipy.ndimage
import scipy.stats
from flax import linen as nn


def spearman(a: Any, b: Any) -> np.ndarray:
    """float ``[N]``: the Spearman rank correlation of each pair of maps ``a[n]``, ``b[n]`` (ties get average
    ranks; 0 where either map is constant)."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    ranks_a = scipy.stats.rankdata(a, axis=1)
    ranks_b = scipy.stats.rankdata(b, axis=1)
    ranks_a -= ranks_a.mean(axis=1, keepdims=True)
    ranks_b -= ranks_b.mean(axis=1, keepdims=True)
    norms = np.sqrt(np.sum(ranks_a**2, axis=1) * np.sum(ranks_b**2, axis=1))
    return np.where(norms > 0, np.sum(ranks_a * ranks_b, axis=1) / np.where(norms > 0, norms, 1.0), 0.0)


def edge_maps(images: Any) -> np.ndarray:
    """``[N, H, W]``: the Sobel gradient magnitude of ``[N, H, W, C]`` images, summed over channels (no model)."""
    images = np.asarray(images, np.float64)
    rows = scipy.ndimage.sobel(images, axis=1)
    cols = scipy.ndimage.sobel(images, axis=2)
    return np.sqrt(rows**2 + cols**2).sum(axis=-1)


def parameter_layers(params: Any) -> List[str]:
    """The model's top-level parameter groups in the order the model creates them (input to output)."""
    return list(params)


def cascading_randomisation(model: nn.Module, variables: Any, key: jax.Array, sample: Any) -> Iterator[Tuple[str, dict]]:
    """Yields ``(layer, variables)`` with the parameters of that layer and of every layer above it (towards the
    output) replaced by a fresh initialisation from ``key``; ``sample`` is one input batch for ``init``.

    The model's own initialisers draw the new values, so every layer keeps its usual scale; batch
    statistics are left as they were.
    """
    fresh = jax.jit(lambda k, x: model.init({"params": k, "dropout": k}, x, train=False))(key, sample)["params"]
    params = dict(variables["params"])
    for layer in reversed(parameter_layers(params)):
        params[layer] = fresh[layer]
        yield layer, {**variables, "params": dict(params)}
