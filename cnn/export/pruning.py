"""Unstructured magnitude pruning: masks, the gradual schedule of Zhu & Gupta (2017), and an optax
transformation that applies them during training.

Prunable weights are the kernels of convs and dense layers (rank >= 2); biases and norm parameters
stay dense. ``magnitude_masks`` keeps the largest ``|w|``, either over all kernels at once ("global")
or within each kernel ("layer"). ``prune(schedule)`` is a ``GradientTransformation`` placed last in an
optax chain: at every ``schedule.every``-th update between ``start`` and ``end`` it recomputes the masks
at the scheduled sparsity from the current weights, and at every update it rewrites the updates so that
masked weights land exactly on zero. Its state is the update count and the masks.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Dict, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCOPES = ("global", "layer")


def prunable(params: Any) -> Any:
    """True for the leaves that pruning touches: kernels (rank >= 2)."""
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def _keep_largest(magnitudes: jax.Array, sparsity: jax.Array) -> jax.Array:
    """A mask keeping ``round((1 - sparsity) * n)`` of the largest ``magnitudes`` (flat, any order on ties)."""
    n = magnitudes.size
    pruned = jnp.clip(jnp.round(sparsity * n).astype(jnp.int32), 0, n)
    order = jnp.argsort(magnitudes.ravel(), stable=True)
    ranks = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return (ranks >= pruned).reshape(magnitudes.shape)


def magnitude_masks(params: Any, sparsity: Any, *, scope: str = "global") -> Any:
    """Boolean masks like ``params`` (True: kept) removing the smallest ``|w|`` at ``sparsity`` in [0, 1).

    ``scope="global"`` ranks all kernels together (layers end up with different sparsities);
    ``"layer"`` prunes every kernel to ``sparsity``. Leaves that are not kernels are all True.
    """
    if scope not in SCOPES:
        raise ValueError(f"pruning scope={scope!r}; expected one of {', '.join(SCOPES)}")
    if isinstance(sparsity, (int, float)) and not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity}; expected a fraction in [0, 1)")
    sparsity = jnp.asarray(sparsity, jnp.float32)
    leaves, tree = jax.tree.flatten(params)
    selected = [i for i, leaf in enumerate(leaves) if jnp.ndim(leaf) >= 2]
    masks = [jnp.ones(jnp.shape(leaf), bool) for leaf in leaves]
    if scope == "layer":
        for i in selected:
            masks[i] = _keep_largest(jnp.abs(leaves[i]), sparsity)
    elif selected:
        flat = jnp.concatenate([jnp.abs(leaves[i]).ravel() for i in selected])
        kept = _keep_largest(flat, sparsity)
        offset = 0
        for i in selected:
            size = int(np.prod(jnp.shape(leaves[i])))
            masks[i] = kept[offset:offset + size].reshape(jnp.shape(leaves[i]))
            offset += size
    return jax.tree.unflatten(tree, masks)


def apply_masks(params: Any, masks: Any) -> Any:
    """``params`` with the masked-out weights set to zero."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Zhu & Gupta's gradual pruning: sparsity ``s(t) = final + (initial - final) * (1 - (t - start) / (end - start))^3``
    for ``start <= t <= end`` (in optimizer updates), masks recomputed every ``every`` updates, fixed after ``end``.
    ``start == end`` prunes once, to ``final``, at that update."""

    final: float
    start: int = 0
    end: int = 0
    every: int = 100
    initial: float = 0.0
    scope: str = "global"

    def __post_init__(self):
        if not 0.0 <= self.initial <= self.final < 1.0:
            raise ValueError(f"pruning sparsities initial={self.initial}, final={self.final}; expected 0 <= initial <= final < 1")
        if not 0 <= self.start <= self.end or self.every < 1:
            raise ValueError(f"pruning start={self.start}, end={self.end}, every={self.every}; expected 0 <= start <= end and every >= 1")
        if self.scope not in SCOPES:
            raise ValueError(f"pruning scope={self.scope!r}; expected one of {', '.join(SCOPES)}")

    def sparsity(self, step: Any) -> jax.Array:
        progress = jnp.clip((jnp.asarray(step, jnp.float32) - self.start) / max(self.end - self.start, 1), 0.0, 1.0)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3

    def updates_masks(self, step: Any) -> jax.Array:
        """Whether the masks are recomputed at update ``step``."""
        step = jnp.asarray(step)
        return (step >= self.start) & (step <= self.end) & (((step - self.start) % self.every == 0) | (step == self.end))


def parse_schedule(text: str) -> Schedule:
    """``"gradual(0.9, start=0, end=2000, every=100, scope='layer')"`` (or ``"oneshot(0.9)"``) -> ``Schedule``."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id not in ("gradual", "oneshot"):
            raise ValueError
        args = [ast.literal_eval(a) for a in call.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        schedule = Schedule(*args, **kwargs)
    except (SyntaxError, ValueError, TypeError) as error:
        detail = str(error) if isinstance(error, ValueError) and str(error) else "expected e.g. \"gradual(0.9, start=0, end=2000, every=100, scope='global')\" or \"oneshot(0.9)\""
        raise ValueError(f"optimizer.prune={text!r}: {detail}") from None
    if call.func.id == "oneshot" and schedule.end != schedule.start:
        raise ValueError(f"optimizer.prune={text!r}: oneshot prunes at one update; use gradual(...) for start < end")
    return schedule


class PruneState(NamedTuple):
    count: jax.Array  # optimizer updates so far
    masks: Any  # bool, like params (True: kept)


def prune(schedule: Schedule) -> optax.GradientTransformation:
    """The optax transformation (last in a chain) that prunes by magnitude on ``schedule`` and keeps
    pruned weights at exactly zero: ``params + updates`` is 0 wherever the mask is False."""

    def init(params):
        return PruneState(jnp.zeros([], jnp.int32), jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params))

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("prune() needs the params: call tx.update(updates, state, params)")
        masks = jax.lax.cond(
            schedule.updates_masks(state.count),
            lambda: magnitude_masks(params, schedule.sparsity(state.count), scope=schedule.scope),
            lambda: state.masks,
        )
        updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, masks)
        return updates, PruneState(state.count + 1, masks)

    return optax.GradientTransformation(init, update)


def layer_sparsity(params: Any) -> Dict[str, float]:
    """``{"conv1/conv/kernel": fraction of zeros, ..., "total": over all kernels}``, kernels in call order."""
    report, zeros, total = {}, 0, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        if np.ndim(leaf) < 2:
            continue
        value = np.asarray(leaf)
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        report[name] = float(np.mean(value == 0))
        zeros, total = zeros + int(np.sum(value == 0)), total + value.size
    report["total"] = zeros / total if total else 0.0
    return report
