"""Receptive fields measured from gradients, so they hold for any model, whatever its layers.

The input region one output unit sees is the support of the gradient of that unit with
respect to the input. Zero-initialised scales, dead ReLUs or max-pool winners could hide part
of it for one set of weights and one input, so by default the weights are redrawn at random
(batch statistics set to mean 0, variance 1) and the support is the union over several
random inputs: the architecture's receptive field. ``weights="given"`` measures the field of
the given (e.g. trained) variables instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    size: Tuple[int, ...]  # extent per spatial axis, e.g. (7, 7)
    start: Tuple[int, ...]  # first input index seen, per spatial axis (inclusive)
    stop: Tuple[int, ...]  # last input index seen + 1
    output_position: Tuple[int, ...]  # the output unit measured (spatial index; () for [N, C] outputs)
    mask: np.ndarray  # bool [*input_spatial]: input positions that influence the unit


def _randomised(variables: Any, key: jax.Array) -> Any:
    """Fresh normal params; batch_stats means 0 and variances 1; everything else kept."""
    def redraw(path, leaf):
        names = [getattr(p, "key", str(p)) for p in path]
        if names[0] == "batch_stats":
            return jnp.ones_like(leaf) if names[-1] == "var" else jnp.zeros_like(leaf)
        if names[0] == "params":
            subkey = jax.random.fold_in(key, hash("/".join(map(str, names))) % (2**31))
            return jax.random.normal(subkey, leaf.shape, leaf.dtype)
        return leaf

    return jax.tree_util.tree_map_with_path(redraw, variables)


def receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    layer: Optional[str] = None,
    variables: Any = None,
    weights: str = "random",
    position: Optional[Sequence[int]] = None,
    trials: int = 4,
    seed: int = 0,
) -> ReceptiveField:
    """The receptive field of one output unit of ``model`` (or of submodule ``layer``).

    Args:
      input_shape: one example without the batch axis, ``[*spatial, C]``.
      layer: '/'-joined path of a submodule (e.g. ``"stage2_block1"``) whose output to measure;
        ``None`` measures the model's output.
      variables: the model's variables; initialised from ``seed`` when ``None``.
      weights: ``"random"`` (the architecture's field) or ``"given"`` (these weights' field).
      position: spatial index of the output unit; the centre by default. All channels are summed.
      trials: random inputs (and, with ``weights="random"``, weight draws) whose supports are united.
    """
    if weights not in ("random", "given"):
        raise ValueError(f"weights={weights!r}; expected 'random' or 'given'")
    key = jax.random.key(seed)
    x0 = jnp.zeros((1, *input_shape), jnp.float32)
    if variables is None:
        variables = jax.jit(lambda x: model.init({"params": key, "dropout": key}, x, train=False))(x0)
    target = None if layer is None else tuple(layer.split("/"))

    def unit_output(v, x):
        if target is None:
            return model.apply(v, x, train=False)
        _, state = model.apply(
            v, x, train=False, capture_intermediates=lambda m, name: name == "__call__" and m.scope.path == target,
            mutable=["intermediates"],
        )
        found = state.get("intermediates", {})
        for name in target:
            if name not in found:
                raise ValueError(f"layer={layer!r} is not a submodule path of {type(model).__name__}")
            found = found[name]
        return found["__call__"][0]

    out_shape = jax.eval_shape(unit_output, variables, x0).shape
    spatial_out = out_shape[1:-1]
    where = tuple(s // 2 for s in spatial_out) if position is None else tuple(position)
    if len(where) != len(spatial_out) or any(not 0 <= p < s for p, s in zip(where, spatial_out)):
        raise ValueError(f"position={position!r} is outside the output's spatial shape {spatial_out}")

    def unit(v, x):
        return jnp.sum(unit_output(v, x)[(0, *where)])

    grad = jax.jit(jax.grad(unit, argnums=1))
    randomised = jax.jit(_randomised)
    support = np.zeros(tuple(input_shape[:-1]), bool)
    for trial in range(trials):
        trial_key = jax.random.fold_in(key, trial + 1)
        v = randomised(variables, trial_key) if weights == "random" else variables
        x = jax.random.normal(jax.random.fold_in(trial_key, 7), x0.shape)
        support |= np.asarray(jnp.any(grad(v, x)[0] != 0, axis=-1))
    if not support.any():
        raise ValueError("no input position influences the chosen unit (is the output constant?)")
    idx = np.nonzero(support)
    start = tuple(int(i.min()) for i in idx)
    stop = tuple(int(i.max()) + 1 for i in idx)
    return ReceptiveField(tuple(b - a for a, b in zip(start, stop)), start, stop, where, support)
