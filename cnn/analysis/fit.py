"""A small classifier fitted in a few lines of JAX and optax, for the explanation benchmarks and their tests.

Not the training engine (``cnn.train``, which ``analysis`` never imports): no checkpoints, no
devices, no data pipeline; arrays in memory, each step a mini-batch of
rows drawn uniformly at random, AdamW, a fixed number of steps.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn


@dataclasses.dataclass
class Fitted:
    """A fitted model: its variables and the mean loss and accuracy of each logged window of steps."""

    model: nn.Module
    variables: dict
    losses: list
    accuracies: list

    def logits(self, inputs: Any, batch_size: int = 1000) -> np.ndarray:
        """Eval-mode logits ``[N, K]`` of model inputs, in batches."""
        forward = _forward(self.model)
        return np.concatenate([np.asarray(forward(self.variables, jnp.asarray(inputs[i:i + batch_size])))
                               for i in range(0, len(inputs), batch_size)])

    def accuracy(self, inputs: Any, labels: Any) -> float:
        return float(np.mean(self.logits(inputs).argmax(-1) == np.asarray(labels)))


def _forward(model: nn.Module) -> Callable:
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False).astype(jnp.float32))


def fit_classifier(model: nn.Module, inputs: Any, labels: Any, key: jax.Array, *, steps: int, batch_size: int = 128,
                   learning_rate: float = 1e-3, weight_decay: float = 0.0, log_every: int = 100,
                   transform: Optional[Callable[[jax.Array], jax.Array]] = None,
                   report: Optional[Callable[[int, float, float], None]] = None) -> Fitted:
    """Fits ``model`` to ``inputs [M, ...]`` (numpy, kept on the device) and int ``labels [M]`` with AdamW.

    ``transform`` maps a batch of stored inputs to model inputs on the device (e.g. uint8 -> float);
    ``key`` draws the initialisation, the batches and dropout; ``report(step, loss, accuracy)`` is called
    after each window of ``log_every`` steps with its mean loss and accuracy.
    """
    inputs, labels = jnp.asarray(inputs), jnp.asarray(labels, jnp.int32)
    transform = transform or (lambda x: x.astype(jnp.float32))
    init_key, data_key = jax.random.split(key)
    variables = jax.jit(lambda k, x: model.init({"params": k, "dropout": k}, x, train=False))(init_key, transform(inputs[:1]))
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    optimizer = optax.adamw(learning_rate, weight_decay=weight_decay)

    def loss_fn(params, batch_stats, x, y, dropout_key):
        variables = {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}
        logits, updates = model.apply(variables, x, train=True, rngs={"dropout": dropout_key}, mutable=["batch_stats"])
        logits = logits.astype(jnp.float32)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        return loss, (updates.get("batch_stats", batch_stats), jnp.mean(jnp.argmax(logits, -1) == y))

    @jax.jit
    def step(carry, step_key, inputs, labels):  # the data as arguments: closed over, it would be a constant in the program
        params, batch_stats, opt_state = carry
        index_key, dropout_key = jax.random.split(step_key)
        rows = jax.random.randint(index_key, (batch_size,), 0, labels.shape[0])
        (loss, (batch_stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, transform(inputs[rows]), labels[rows], dropout_key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), batch_stats, opt_state), (loss, accuracy)

    # One jitted call per step, not a lax.scan over steps: XLA's CPU backend runs the weight gradients of
    # convolutions inside a loop body up to 100x slower than outside one (jax-ml/jax#12868).
    carry, losses, accuracies, window = (params, batch_stats, optimizer.init(params)), [], [], []
    for index in range(steps):
        carry, metrics = step(carry, jax.random.fold_in(data_key, index), inputs, labels)
        window.append(metrics)
        if len(window) == log_every or index == steps - 1:
            loss, accuracy = np.mean(np.asarray(jax.device_get(window)), axis=0)
            losses.append(float(loss))
            accuracies.append(float(accuracy))
            window = []
            if report is not None:
                report(index + 1, losses[-1], accuracies[-1])
    params, batch_stats, _ = carry
    return Fitted(model, {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}, losses, accuracies)
