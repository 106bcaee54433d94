"""Adversarial examples: FGSM, PGD (L-inf and L2, restarts, targeted) and FGSM with a random start.

Every attack is a pure function of ``logits_fn`` (images in [0, 1] -> logits, normalisation inside),
images ``[N, ...]`` in [0, 1] and int labels ``[N]``; it returns adversarial images in the eps ball
around the input and in [0, 1], with no gradient flowing back through the attack. All are jittable
and run inside a train step under ``jax.jit``, ``jax.pmap`` or ``jax.jit`` over a device mesh.

Random starts are drawn per example from ``key``: either one key (split into one per example by
``example_keys``) or int keys ``[N]`` already one per example, so that a batch split over devices
draws, row for row, the noise of the whole batch on one device (see ``example_keys``'s ``offset``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import optax

LogitsFn = Callable[[jax.Array], jax.Array]
NORMS = ("linf", "l2")


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy in float32, ``[N]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def _loss_and_gradient(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """``(per-example loss [N], d loss / d images, logits)``; the loss of each example depends on its row only."""

    def total(x):
        logits = logits_fn(x)
        losses = cross_entropy(logits, labels)
        return jnp.sum(losses), (losses, logits)

    (_, (losses, logits)), gradient = jax.value_and_grad(total, has_aux=True)(images)
    return losses, gradient, logits


def _check(eps: float, norm: str = "linf") -> None:
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}; expected one of {', '.join(NORMS)}")
    if isinstance(eps, (int, float)) and eps < 0:
        raise ValueError(f"eps={eps!r}; expected a radius >= 0")


def _per_example(values: jax.Array, like: jax.Array) -> jax.Array:
    """``[N]`` -> ``[N, 1, ..., 1]`` broadcastable against ``like``."""
    return values.reshape((-1,) + (1,) * (like.ndim - 1))


def _l2_norms(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim))))


def project(perturbation: jax.Array, eps: float, norm: str) -> jax.Array:
    """The closest point of the eps ball: clipped (``linf``) or scaled down per example (``l2``)."""
    if norm == "linf":
        return jnp.clip(perturbation, -eps, eps)
    norms = _l2_norms(perturbation)
    return perturbation * _per_example(jnp.minimum(1.0, eps / jnp.maximum(norms, 1e-12)), perturbation)


def _ascent_direction(gradient: jax.Array, norm: str) -> jax.Array:
    """The unit step that increases the loss fastest to first order: sign (L-inf) or normalised gradient (L2)."""
    if norm == "linf":
        return jnp.sign(gradient)
    return gradient / _per_example(jnp.maximum(_l2_norms(gradient), 1e-12), gradient)


def example_keys(key: jax.Array, count: int, *, offset=0) -> jax.Array:
    """Keys ``[count]`` for examples ``offset, ..., offset + count - 1`` of a batch (``fold_in`` of the index).

    Under ``jax.pmap`` pass ``offset = lax.axis_index(axis) * count``: each device then draws, for its
    rows, exactly what one device draws for the whole batch.
    """
    return jax.vmap(lambda index: jax.random.fold_in(key, index))(offset + jnp.arange(count))


def _keys_for(key: jax.Array, count: int) -> jax.Array:
    keys = jnp.asarray(key)
    single = keys.ndim == 0 if jnp.issubdtype(keys.dtype, jax.dtypes.prng_key) else keys.shape == (2,)
    if single:
        return example_keys(key, count)
    if keys.shape[0] != count:
        raise ValueError(f"key holds {keys.shape[0]} per-example keys for {count} images; pass one key or {count}")
    return keys


def _random_start(keys: jax.Array, images: jax.Array, eps: float, norm: str) -> jax.Array:
    """A uniform draw from each example's eps ball (L2: uniform direction, radius eps * u^(1/d))."""
    shape = images.shape[1:]
    if norm == "linf":
        return jax.vmap(lambda k: jax.random.uniform(k, shape, images.dtype, -eps, eps))(keys)

    def ball(k):
        direction_key, radius_key = jax.random.split(k)
        direction = jax.random.normal(direction_key, shape, images.dtype)
        radius = eps * jax.random.uniform(radius_key, (), images.dtype) ** (1.0 / direction.size)
        return direction * radius / jnp.maximum(jnp.linalg.norm(direction), 1e-12)

    return jax.vmap(ball)(keys)


def fgsm(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, *, eps: float) -> jax.Array:
    """Fast gradient sign method (Goodfellow et al. 2015): ``clip(x + eps * sign(d loss / dx), 0, 1)``."""
    _check(eps)
    images = jnp.asarray(images, jnp.float32)
    _, gradient, _ = _loss_and_gradient(logits_fn, images, labels)
    return jax.lax.stop_gradient(jnp.clip(images + eps * jnp.sign(gradient), 0.0, 1.0))


def fgsm_rs(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, key: jax.Array, *, eps: float,
            step_size: float = None) -> jax.Array:
    """FGSM from a uniform random start in the L-inf ball, one step of ``step_size`` (default ``1.25 eps``),
    projected back: the adversarial training step of Wong et al. 2020 ("Fast is better than free")."""
    _check(eps)
    images = jnp.asarray(images, jnp.float32)
    step_size = 1.25 * eps if step_size is None else step_size
    start = jnp.clip(images + _random_start(_keys_for(key, images.shape[0]), images, eps, "linf"), 0.0, 1.0)
    _, gradient, _ = _loss_and_gradient(logits_fn, start, labels)
    perturbation = project(start + step_size * jnp.sign(gradient) - images, eps, "linf")
    return jax.lax.stop_gradient(jnp.clip(images + perturbation, 0.0, 1.0))


def _success(logits: jax.Array, labels: jax.Array, targeted: bool) -> jax.Array:
    """Where the attack has won: the target predicted (targeted), any other class than the label (untargeted)."""
    predicted = jnp.argmax(logits, axis=-1)
    return (predicted == labels) if targeted else (predicted != labels)


def _keep_worse(best, candidate):
    """Per example, the candidate ``(point, success, attacker's loss)`` replaces the best one when it succeeds where
    that did not, or ties on success with a higher attacker's loss."""
    best_point, best_success, best_loss = best
    point, success, loss = candidate
    better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
    choose = lambda new, old: jnp.where(_per_example(better, new), new, old)
    return choose(point, best_point), choose(success, best_success), choose(loss, best_loss)


class PGDState(NamedTuple):
    """PGD between steps: the restarts' origins and targets ``[restarts * N, ...]``, the current points and,
    per row, the worst point visited so far with its success and attacker's loss."""

    origin: jax.Array
    targets: jax.Array
    point: jax.Array
    best: Tuple[jax.Array, jax.Array, jax.Array]


def pgd_start(images: jax.Array, labels: jax.Array, key: jax.Array, *, eps: float, restarts: int = 1,
              norm: str = "linf") -> PGDState:
    """PGD's random starts: restart r of example n is uniform in the eps ball from ``fold_in(key of n, r)``."""
    _check(eps, norm)
    if restarts < 1:
        raise ValueError(f"restarts={restarts!r}; expected restarts >= 1")
    images = jnp.asarray(images, jnp.float32)
    keys = _keys_for(key, images.shape[0])
    # Restart r of example n draws from fold_in(key of n, r): the same whatever the batch is split into.
    restart_keys = jnp.concatenate([jax.vmap(lambda k: jax.random.fold_in(k, r))(keys) for r in range(restarts)])
    origin = jnp.tile(images, (restarts,) + (1,) * (images.ndim - 1))
    point = jnp.clip(origin + _random_start(restart_keys, origin, eps, norm), 0.0, 1.0)
    best = (origin, jnp.zeros(origin.shape[:1], bool), jnp.full(origin.shape[:1], -jnp.inf))
    return PGDState(origin, jnp.tile(labels, restarts), point, best)


def pgd_step(logits_fn: LogitsFn, state: PGDState, *, eps: float, step_size: float, norm: str = "linf",
             targeted: bool = False) -> PGDState:
    """One PGD step: the current points judged (kept where worse), then moved ``step_size`` and projected."""
    sign = -1.0 if targeted else 1.0
    losses, gradient, logits = _loss_and_gradient(logits_fn, state.point, state.targets)
    best = _keep_worse(state.best, (state.point, _success(logits, state.targets, targeted), sign * losses))
    moved = state.point + sign * step_size * _ascent_direction(gradient, norm)
    point = jnp.clip(state.origin + project(moved - state.origin, eps, norm), 0.0, 1.0)
    return state._replace(point=point, best=best)


def pgd_finish(logits_fn: LogitsFn, state: PGDState, *, restarts: int = 1, targeted: bool = False) -> jax.Array:
    """The last points judged, then each example's worst over its restarts: adversarial images ``[N, ...]``."""
    sign = -1.0 if targeted else 1.0
    logits = logits_fn(state.point)
    best = _keep_worse(state.best, (state.point, _success(logits, state.targets, targeted),
                                    sign * cross_entropy(logits, state.targets)))
    count = state.origin.shape[0] // restarts
    per_restart = [jax.tree.map(lambda x: x[r * count:(r + 1) * count], best) for r in range(restarts)]
    worst = per_restart[0]
    for candidate in per_restart[1:]:
        worst = _keep_worse(worst, candidate)
    return jax.lax.stop_gradient(worst[0])


def pgd(logits_fn: LogitsFn, images: jax.Array, labels: jax.Array, key: jax.Array, *, eps: float, step_size: float,
        steps: int, restarts: int = 1, norm: str = "linf", targeted: bool = False) -> jax.Array:
    """Projected gradient descent (Madry et al. 2018) from a uniform random start in the eps ball.

    Each of ``steps`` steps moves ``step_size`` along the sign (``linf``) or the normalised (``l2``)
    gradient of the cross-entropy, then projects onto the ball and [0, 1]. ``targeted``: ``labels``
    are the targets and the loss is descended. Each example keeps the worst point visited over all
    steps and ``restarts`` (a successful one first, then the highest loss; the lowest when targeted).

    The restarts run side by side, as one batch of ``restarts * N`` (memory grows with them), and the
    steps are a Python loop, unrolled under ``jit``: XLA's CPU backend runs convolution gradients inside a
    ``lax.scan``/``while`` body up to 10x slower than outside one (jax-ml/jax#12868). XLA's CPU backend
    also keeps every unrolled step's activations (its memory grows with ``steps``); for many steps on
    large batches, run ``pgd_start``, ``pgd_step`` and ``pgd_finish`` as separate jitted calls, as
    ``robust_accuracy`` does.
    """
    if steps < 0:
        raise ValueError(f"steps={steps!r}; expected steps >= 0")
    state = pgd_start(images, labels, key, eps=eps, restarts=restarts, norm=norm)
    for _ in range(steps):
        state = pgd_step(logits_fn, state, eps=eps, step_size=step_size, norm=norm, targeted=targeted)
    return pgd_finish(logits_fn, state, restarts=restarts, targeted=targeted)
