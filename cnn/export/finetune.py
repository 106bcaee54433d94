"""A short fine-tuning loop and an accuracy count for compressed models, on arrays in memory.

Compression needs a few hundred steps of training from given weights (after pruning, for QAT), which
the full training loop, built to train from scratch and resume, does not offer; this is that loop:
softmax cross-entropy, any optax transformation (a pruning one included), BatchNorm statistics and
qwix's ``quant_stats`` carried along when the model has them.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn


def finetune(model: nn.Module, variables: Any, tx: optax.GradientTransformation, images: np.ndarray,
             labels: np.ndarray, *, steps: int, batch_size: int, key: jax.Array) -> Any:
    """``variables`` after ``steps`` updates of ``tx`` on random batches of ``images`` (model inputs
    float32 [N, H, W, C]) and integer ``labels`` [N]; ``key`` draws the batches and the dropout."""
    collections = [name for name in variables if name != "params"]

    def loss_fn(params, state, x, y, dropout_key):
        logits, new_state = model.apply({"params": params, **state}, x, train=True, mutable=collections,
                                        rngs={"dropout": dropout_key})
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y).mean(), new_state

    @jax.jit
    def step(params, state, opt_state, x, y, dropout_key):
        (_, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, x, y, dropout_key)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), dict(new_state), opt_state

    params, state = variables["params"], {name: variables[name] for name in collections}
    opt_state = tx.init(params)
    for _ in range(steps):
        key, batch_key, dropout_key = jax.random.split(key, 3)
        index = np.asarray(jax.random.randint(batch_key, (batch_size,), 0, len(images)))
        params, state, opt_state = step(params, state, opt_state, jnp.asarray(images[index]), jnp.asarray(labels[index]),
                                        dropout_key)
    return {"params": params, **state}


def accuracy(logits_fn: Callable[[jax.Array], jax.Array], images: np.ndarray, labels: np.ndarray,
             batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``logits_fn`` (model inputs -> logits) over ``images`` in batches."""
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = np.asarray(logits_fn(jnp.asarray(images[start:start + batch_size])))
        correct += int(np.sum(logits.argmax(-1) == labels[start:start + batch_size]))
    return correct / len(images)
