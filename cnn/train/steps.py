"""``train_step`` and ``eval_step``: written once, pure, run under jit, pmap or sharded jit.

Metrics come back as sums (loss, correct top-1/top-5, examples) so that steps, devices and
hosts add up exactly; the loop accumulates them on the device and fetches every few steps.

One call of ``train_step`` is one optimizer update. With ``accumulate_steps = k`` its batch holds ``k``
micro-batches (rows ``j, j + k, j + 2k, ...`` make micro-batch ``j``, so every device holds its share of
each): their gradients are computed one after another (``lax.scan``: the memory of one micro-batch) and
averaged, then applied once. The step counter, the learning-rate schedule, the EMA and BatchNorm's
running statistics all advance once per update: each micro-batch is normalised with its own batch
statistics (as a batch of that size would be), and the running statistics move once, towards the mean of
the micro-batches' statistics.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax

from cnn.robust.attacks import example_keys
from cnn.train.state import TrainState

Batch = dict
# (key, images uint8 [B, H, W, C], labels int [B]) -> (inputs float [B, H, W, C], targets float32 [B, K])
Preprocess = Callable[[jax.Array, jax.Array, jax.Array], tuple]


def cross_entropy(logits: jax.Array, targets: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy in float32; ``targets`` are one-hot or soft ``[B, K]``."""
    logits = logits.astype(jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits, targets)


def correct_top_k(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where ``labels`` (int ``[B]``) is among the ``k`` largest logits, else 0.0."""
    k = min(k, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


def one_hot_preprocess(num_classes: int, mean=None, std=None) -> Preprocess:
    """No augmentation: scale to [0, 1] (or normalise with per-channel ``mean``/``std`` in pixel units)."""

    def preprocess(key, images, labels):
        del key
        x = images.astype(jnp.float32)
        if mean is not None:
            x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
        else:
            x = x / 255.0
        return x, jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)

    return preprocess


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """What a train step needs besides the state and the batch (static under jit).

    Attributes:
      preprocess: on-device augmentation + normalisation for training.
      eval_preprocess: the same without randomness, for evaluation.
      label_smoothing: as in Szegedy et al. 2016 (0.1 for the ImageNet recipe).
      l2: coefficient of ``l2 / 2 * sum(w^2)`` added to the loss over ``l2_mask``-selected params.
      l2_mask: pytree of bools like ``params``, or a function ``params -> mask``; None = all.
      ema_decay: decay of the parameters' moving average, per update (needs ``state.ema_params``).
      accumulate_steps: micro-batches per update (the batch's rows split ``k`` ways).
      axis_name: the pmap axis (gradients and metrics are reduced over it); None under jit.
      compute_dtype: dtype the inputs are cast to (the model's ``dtype``).
      adversarial: adversarial training's attack (``cnn.robust.parse_attack``), or None: each (micro-)batch
        is replaced by its attacked version after augmentation, and the update trains on that.
      pixel_mean, pixel_std: the normalisation the preprocessing applied, in [0, 1] pixel units
        (``inputs = (pixels - mean) / std``), so the attack works in pixel space with its ball in pixels.
    """

    preprocess: Preprocess
    eval_preprocess: Preprocess
    label_smoothing: float = 0.0
    l2: float = 0.0
    l2_mask: Any = None
    ema_decay: Optional[float] = None
    accumulate_steps: int = 1
    axis_name: Optional[str] = None
    compute_dtype: Any = jnp.float32
    adversarial: Optional[Callable] = None
    pixel_mean: Any = 0.0
    pixel_std: Any = 1.0


ATTACK_STREAM = 0x61747461  # folded into an update's key for its attack's random starts


def step_keys(rng: jax.Array, step: jax.Array, axis_name: Optional[str] = None):
    """``(augment_key, dropout_key)`` of update ``step`` from the run's key ``rng`` (one per replica under pmap)."""
    key = jax.random.fold_in(rng, step)
    if axis_name is not None:  # each replica draws its own dropout masks and augmentations
        key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
    return jax.random.split(key)


def _sum_over_replicas(tree, axis_name):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def _l2_penalty(params, mask) -> jax.Array:
    if mask is None:
        mask = jax.tree.map(lambda _: True, params)
    elif callable(mask):
        mask = mask(params)
    leaves = [jnp.sum(jnp.square(p.astype(jnp.float32))) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask)) if m]
    return 0.5 * sum(leaves) if leaves else jnp.zeros((), jnp.float32)


def _attacked(state: TrainState, params, inputs: jax.Array, targets: jax.Array, key: jax.Array,
              dropout_key: jax.Array, options: StepOptions) -> jax.Array:
    """The inputs replaced by ``options.adversarial``'s attack on the model being trained.

    The attack sees the pixels in [0, 1] (the preprocessing's normalisation undone) and the model in training
    mode (BatchNorm on the batch's statistics, which are then discarded; dropout drawn from ``dropout_key``),
    as Madry et al.'s and Wong et al.'s training code do; labels are the targets' dominant class. Random starts
    are drawn per example (``cnn.robust.example_keys``), so pmap draws what one device draws for the batch.
    """
    mean, std = jnp.asarray(options.pixel_mean, jnp.float32), jnp.asarray(options.pixel_std, jnp.float32)
    pixels = jnp.clip(inputs.astype(jnp.float32) * std + mean, 0.0, 1.0)
    count = inputs.shape[0]
    offset = 0 if options.axis_name is None else jax.lax.axis_index(options.axis_name) * count

    def logits_fn(x):
        variables = {"params": params}
        if state.batch_stats:
            variables["batch_stats"] = state.batch_stats
        logits, _ = state.apply_fn(variables, ((x - mean) / std).astype(options.compute_dtype), train=True,
                                   rngs={"dropout": dropout_key}, mutable=["batch_stats"])
        return logits.astype(jnp.float32)

    adversarial = options.adversarial(logits_fn, pixels, jnp.argmax(targets, axis=-1),
                                      example_keys(key, count, offset=offset))
    return (adversarial - mean) / std


def _micro_batches(batch: Batch, k: int) -> Batch:
    """``[k * b, ...] -> [k, b, ...]`` with micro-batch ``j`` = rows ``j, j + k, ...`` (spread over every device)."""
    def split(x):
        if x.shape[0] % k:
            raise ValueError(f"a batch of {x.shape[0]} rows does not split into {k} micro-batches")
        return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)

    return jax.tree.map(split, batch)


def train_step(state: TrainState, batch: Batch, rng: jax.Array, *, options: StepOptions):
    """One optimizer update on ``batch = {"image": uint8 [B, ...], "label": int [B]}``.

    ``rng`` is the run's key (``state.rng``, which the loop passes); the update's keys are drawn from it
    folded with ``state.step``, so a resumed run draws exactly what an uninterrupted one would.
    Returns ``(new_state, metrics)``; metrics are sums over the (global) batch plus the gradient norm,
    and ``skipped`` = 1 when float16 loss scaling found a non-finite gradient.
    """
    augment_key, dropout_key = step_keys(rng, state.step, options.axis_name)
    attack_key = jax.random.fold_in(jax.random.fold_in(rng, state.step), ATTACK_STREAM)  # the same on every replica
    k = options.accumulate_steps

    def micro_step(params, micro_batch, index):
        """Loss, logits, targets, new batch statistics and gradients of one micro-batch."""
        inputs, targets = options.preprocess(jax.random.fold_in(augment_key, index), micro_batch["image"],
                                             micro_batch["label"])
        if options.adversarial is not None:
            inputs = _attacked(state, params, inputs, targets, jax.random.fold_in(attack_key, index),
                               jax.random.fold_in(jax.random.fold_in(dropout_key, index), ATTACK_STREAM), options)
        inputs = inputs.astype(options.compute_dtype)

        def loss_fn(params):
            variables = {"params": params}
            if state.batch_stats:
                variables["batch_stats"] = state.batch_stats
            logits, updates = state.apply_fn(variables, inputs, train=True,
                                             rngs={"dropout": jax.random.fold_in(dropout_key, index)},
                                             mutable=["batch_stats"])
            logits = logits.astype(jnp.float32)
            loss = jnp.mean(cross_entropy(logits, targets, options.label_smoothing))
            if options.l2:
                loss = loss + options.l2 * _l2_penalty(params, options.l2_mask)
            return loss, (logits, updates.get("batch_stats", {}))

        if state.dynamic_scale is not None:
            scaled = state.dynamic_scale.value_and_grad(loss_fn, has_aux=True, axis_name=options.axis_name)
            dynamic_scale, finite, (loss, (logits, batch_stats)), grads = scaled(params)
        else:
            (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            if options.axis_name is not None:
                grads = jax.lax.pmean(grads, options.axis_name)
            dynamic_scale, finite = None, jnp.array(True)
        return loss, logits, targets, batch_stats, grads, dynamic_scale, finite

    if k == 1:
        loss, logits, targets, batch_stats, grads, dynamic_scale, finite = micro_step(state.params, batch, 0)
        labels = jnp.argmax(targets, axis=-1)  # soft targets (mixup) count their dominant class
        sums = {
            "loss_sum": loss * labels.shape[0],
            "top1_sum": jnp.sum(correct_top_k(logits, labels, 1)),
            "top5_sum": jnp.sum(correct_top_k(logits, labels, 5)),
            "examples": jnp.asarray(labels.shape[0], jnp.float32),
        }
    else:
        def body(carry, scanned):
            grad_sum, stats_sum, sums, finite_all = carry
            micro_batch, index = scanned
            loss, logits, targets, batch_stats, grads, _, finite = micro_step(state.params, micro_batch, index)
            labels = jnp.argmax(targets, axis=-1)
            sums = {
                "loss_sum": sums["loss_sum"] + loss * labels.shape[0],
                "top1_sum": sums["top1_sum"] + jnp.sum(correct_top_k(logits, labels, 1)),
                "top5_sum": sums["top5_sum"] + jnp.sum(correct_top_k(logits, labels, 5)),
                "examples": sums["examples"] + labels.shape[0],
            }
            add = lambda a, b: jax.tree.map(jnp.add, a, b)  # noqa: E731
            return (add(grad_sum, grads), add(stats_sum, batch_stats), sums, finite_all & finite), None

        zeros = lambda tree: jax.tree.map(jnp.zeros_like, tree)  # noqa: E731
        sums = {"loss_sum": 0.0, "top1_sum": 0.0, "top5_sum": 0.0, "examples": 0.0}
        sums = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), sums)
        carry = (zeros(state.params), zeros(state.batch_stats), sums, jnp.array(True))
        (grad_sum, stats_sum, sums, finite), _ = jax.lax.scan(body, carry, (_micro_batches(batch, k), jnp.arange(k)))
        grads = jax.tree.map(lambda g: g / k, grad_sum)
        batch_stats = jax.tree.map(lambda s: s / k, stats_sum)  # one move, towards the micro-batches' mean
        dynamic_scale = state.dynamic_scale
        if dynamic_scale is not None:  # the scale adjusts once per update, from the update's finiteness
            dynamic_scale = _next_scale(dynamic_scale, finite)

    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if state.dynamic_scale is not None:  # a non-finite update changes nothing but the loss scale
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        params, opt_state, batch_stats = keep(params, state.params), keep(opt_state, state.opt_state), keep(batch_stats, state.batch_stats)
    ema_params = state.ema_params
    if ema_params is not None:
        decay = options.ema_decay if options.ema_decay is not None else 0.999
        ema_params = jax.tree.map(lambda e, p: jnp.where(finite, decay * e + (1 - decay) * p, e), ema_params, params)

    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats,
        opt_state=opt_state,
        ema_params=ema_params,
        dynamic_scale=dynamic_scale,
    )
    metrics = _sum_over_replicas(sums, options.axis_name)
    metrics["grad_norm_sum"] = optax.tree.norm(grads)
    metrics["steps"] = jnp.ones((), jnp.float32)
    metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
    return new_state, metrics


def _next_scale(dynamic_scale, finite):
    """flax's ``DynamicScale`` rule, applied once to an update whose gradients were ``finite`` or not."""
    grow = dynamic_scale.fin_steps == dynamic_scale.growth_interval
    grown = jnp.minimum(dynamic_scale.scale * dynamic_scale.growth_factor, jnp.finfo(jnp.float32).max)
    backed_off = dynamic_scale.scale * dynamic_scale.backoff_factor
    if dynamic_scale.minimum_scale is not None:
        backed_off = jnp.maximum(backed_off, dynamic_scale.minimum_scale)
    scale = jnp.where(finite, jnp.where(grow, grown, dynamic_scale.scale), backed_off)
    return dynamic_scale.replace(fin_steps=jnp.where(grow | ~finite, 0, dynamic_scale.fin_steps + 1), scale=scale)


def gather(batch: Batch, data: Optional[dict]) -> Batch:
    """A batch of example indices into the device-held split ``data`` -> the batch itself (on the device)."""
    if data is None:
        return batch
    gathered = {key: jnp.take(data[key], batch["index"], axis=0) for key in ("image", "label")}
    if "mask" in batch:
        gathered["mask"] = batch["mask"]
    return gathered


def train_steps(state: TrainState, batches: Batch, rng: jax.Array, data: Optional[dict] = None, *,
                options: StepOptions, unroll: bool = False):
    """``k`` updates in one call: ``train_step`` scanned over the leading axis of ``batches`` (``[k, B, ...]``,
    or example indices ``[k, B]`` into ``data``). Returns the state and every update's metrics, stacked ``[k]``.

    ``unroll`` writes the ``k`` steps out one after the other instead of a loop: XLA's CPU backend runs a
    loop body's convolutions 20x slower than the same ops outside a loop (docs/performance.md), so the
    training loop unrolls on the CPU backend (with or without the CPU kernels: a ``lax.scan`` of the plain
    model's steps ran 7.5x slower than the bare step there).
    """
    def step(state, batch):
        return train_step(state, gather(batch, data), rng, options=options)

    if not unroll:
        return jax.lax.scan(step, state, batches)
    metrics = []
    for index in range(jax.tree.leaves(batches)[0].shape[0]):  # written out: no loop in the program
        state, step_metrics = step(state, jax.tree.map(lambda x: x[index], batches))
        metrics.append(step_metrics)
    return state, jax.tree.map(lambda *values: jnp.stack(values), *metrics)


def eval_indexed_step(state: TrainState, batch: Batch, data: dict, *, options: StepOptions) -> dict:
    """``eval_step`` on a batch of example indices (and mask) into the device-held split ``data``."""
    return eval_step(state, gather(batch, data), options=options)


def eval_step(state: TrainState, batch: Batch, *, options: StepOptions):
    """Sums of loss and correct predictions over the examples whose ``batch["mask"]`` is set.

    With an EMA kept (``state.ema_params``) the same sums for the averaged parameters come back too,
    under names ending in ``_ema`` (both use the running BatchNorm statistics of ``state.batch_stats``).
    """
    inputs, targets = options.eval_preprocess(None, batch["image"], batch["label"])
    inputs = inputs.astype(options.compute_dtype)
    mask = batch.get("mask")
    mask = jnp.ones(inputs.shape[:1], jnp.float32) if mask is None else mask.astype(jnp.float32)
    labels = batch["label"]

    def sums(use_ema: bool) -> dict:
        logits = state.apply_fn(state.variables(use_ema), inputs, train=False).astype(jnp.float32)
        return {
            "loss_sum": jnp.sum(cross_entropy(logits, targets) * mask),
            "top1_sum": jnp.sum(correct_top_k(logits, labels, 1) * mask),
            "top5_sum": jnp.sum(correct_top_k(logits, labels, 5) * mask),
        }

    metrics = {**sums(False), "examples": jnp.sum(mask)}
    if state.ema_params is not None:
        metrics.update({f"{name}_ema": value for name, value in sums(True).items()})
    return _sum_over_replicas(metrics, options.axis_name)


def summarise(metric_sums: dict) -> dict:
    """Sums (possibly added over many steps) -> means: loss, top1, top5 (and their ``_ema``), grad_norm."""
    examples = max(float(metric_sums["examples"]), 1.0)
    out = {"examples": int(round(float(metric_sums["examples"])))}
    for suffix in ("", "_ema"):
        if f"loss_sum{suffix}" in metric_sums:
            for name in ("loss", "top1", "top5"):
                out[f"{name}{suffix}"] = float(metric_sums[f"{name}_sum{suffix}"]) / examples
    if "steps" in metric_sums:
        steps = max(float(metric_sums["steps"]), 1.0)
        out["grad_norm"] = float(metric_sums["grad_norm_sum"]) / steps
        out["skipped_steps"] = int(round(float(metric_sums["skipped"])))
    return out
