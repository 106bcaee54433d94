"""The training state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import struct
from flax.training.dynamic_scale import DynamicScale


class TrainState(struct.PyTreeNode):
    """step, params, batch_stats, opt_state and rng; optional EMA params and float16 loss scale.

    ``apply_fn`` and ``tx`` are static (not leaves), so the state can be jitted, donated,
    sharded and checkpointed as it is. ``step`` counts optimizer updates. ``rng`` is the run's key,
    a raw ``uint32[2]`` key (checkpointable): the loop passes it to every ``train_step``, which folds
    in the step number, so a resumed run draws exactly the keys an uninterrupted one would.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array
    ema_params: Optional[Any] = None
    dynamic_scale: Optional[DynamicScale] = None
    apply_fn: Callable = struct.field(pytree_node=False, default=None)
    tx: optax.GradientTransformation = struct.field(pytree_node=False, default=None)

    def variables(self, use_ema: bool = False) -> dict:
        """The ``{"params": ..., "batch_stats": ...}`` dict a model's ``apply`` takes."""
        params = self.ema_params if use_ema and self.ema_params is not None else self.params
        variables = {"params": params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def create_train_state(
    model: Any,
    tx: optax.GradientTransformation,
    rng: jax.Array,
    input_shape,
    *,
    ema: bool = False,
    loss_scale: bool = False,
    apply_fn: Optional[Callable] = None,
) -> TrainState:
    """Initialises a model on zeros of ``[1, *input_shape]`` and wraps it with ``tx``'s state.

    Pure and jit-able: ``jax.jit(create_train_state, ..., out_shardings=...)`` places the
    state directly where it will live, with no host copy of the parameters. ``apply_fn`` replaces
    ``model.apply`` in the steps (``cnn.train.transfer``: frozen BatchNorm layers in evaluation mode).
    """
    init_key, run_key = jax.random.split(rng)
    variables = model.init({"params": init_key, "dropout": init_key}, jnp.zeros((1, *input_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=run_key,
        ema_params=jax.tree.map(jnp.copy, params) if ema else None,
        dynamic_scale=DynamicScale(fin_steps=jnp.zeros((), jnp.int32), scale=jnp.asarray(2.0**15, jnp.float32))
        if loss_scale
        else None,
        apply_fn=apply_fn or model.apply,
        tx=tx,
    )
