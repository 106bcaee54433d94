"""optax optimizers and schedules from a config.

``build(config.optimizer, steps_per_epoch=..., total_steps=..., global_batch=...)`` returns
``(tx, learning_rate_fn)``; steps count optimizer updates and ``global_batch`` is the examples of one
update (micro-batches included). Everything is plain optax: weight decay with a mask that spares
biases and normalisation parameters, gradient clipping, frozen parameters (``frozen``: ``model.freeze``),
a smaller learning rate for everything but the head (``backbone_lr_scale``, ``optax.multi_transform``).
Gradient accumulation is the train step's (``StepOptions.accumulate_steps``), so that every counter follows
real updates.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import jax
import optax

from cnn.export import pruning

OPTIMIZERS = ("sgd", "adam", "adamw", "lamb", "lars")
SCHEDULES = ("constant", "steps", "warmup_cosine", "cosine", "one_cycle")


def param_paths(params: Any) -> Any:
    """A pytree like ``params`` whose leaves are their '/'-joined paths ("stage1_block1/conv1/conv/kernel")."""
    return jax.tree_util.tree_map_with_path(lambda path, _: "/".join(str(getattr(k, "key", k)) for k in path), params)


def decay_mask(params: Any) -> Any:
    """True for weights (kernels, embeddings: rank >= 2), False for biases and norm scales/offsets."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def scaled_learning_rate(base: float, global_batch: int, reference_batch: int | None) -> float:
    """The linear scaling rule (Goyal et al. 2017): ``base * global_batch / reference_batch``."""
    return base if not reference_batch else base * global_batch / reference_batch


def schedule(config: Any, peak: float, steps_per_epoch: int, total_steps: int) -> Callable[[Any], Any]:
    """Learning rate as a function of the update count. Epoch-valued fields are converted to steps."""
    name = config.get("schedule", "constant")
    warmup = int(config.get("warmup_epochs", 0) * steps_per_epoch) or int(config.get("warmup_steps", 0))
    if name == "constant":
        if warmup:
            return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), optax.constant_schedule(peak)], [warmup])
        return optax.constant_schedule(peak)
    if name == "steps":
        boundaries = [int(b * steps_per_epoch) for b in config.get("boundaries_epochs", ())] or list(
            config.get("boundaries_steps", ())
        )
        factor = float(config.get("decay_factor", 0.1))
        decayed = optax.piecewise_constant_schedule(peak, {b - warmup: factor for b in boundaries})
        if warmup:
            return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decayed], [warmup])
        return decayed
    if name in ("warmup_cosine", "cosine"):
        end = peak * float(config.get("end_lr_factor", 0.0))
        return optax.warmup_cosine_decay_schedule(0.0 if warmup else peak, peak, warmup, max(total_steps, warmup + 1), end)
    if name == "one_cycle":
        return optax.cosine_onecycle_schedule(
            total_steps, peak, pct_start=float(config.get("pct_start", 0.3)),
            div_factor=float(config.get("div_factor", 25.0)), final_div_factor=float(config.get("final_div_factor", 1e4)),
        )
    raise ValueError(f"optimizer.schedule={name!r}; expected one of {', '.join(SCHEDULES)}")


def _base_optimizer(config: Any, lr: Callable, mask: Callable) -> optax.GradientTransformation:
    name = config.get("name", "sgd")
    wd = float(config.get("weight_decay", 0.0))
    b1, b2, eps = float(config.get("b1", 0.9)), float(config.get("b2", 0.999)), float(config.get("eps", 1e-8))
    momentum, nesterov = config.get("momentum", 0.9), bool(config.get("nesterov", False))
    coupled = [optax.add_decayed_weights(wd, mask)] if wd else []  # L2 added to the gradient, as torch.optim
    if name == "sgd":
        return optax.chain(*coupled, optax.sgd(lr, momentum=momentum or None, nesterov=nesterov))
    if name == "adam":
        return optax.chain(*coupled, optax.adam(lr, b1=b1, b2=b2, eps=eps))
    if name == "adamw":
        return optax.adamw(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=mask)
    if name == "lamb":
        return optax.lamb(lr, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=mask)
    if name == "lars":
        return optax.lars(
            lr, weight_decay=wd, weight_decay_mask=mask, trust_ratio_mask=mask, momentum=momentum or 0.0,
            nesterov=nesterov, trust_coefficient=float(config.get("trust_coefficient", 0.001)),
        )
    raise ValueError(f"optimizer.name={name!r}; expected one of {', '.join(OPTIMIZERS)}")


def build(
    config: Any, *, steps_per_epoch: int, total_steps: int, global_batch: int,
    frozen: Optional[Callable[[str], bool]] = None, head: Optional[Callable[[str], bool]] = None,
) -> Tuple[optax.GradientTransformation, Callable[[Any], Any]]:
    """``(tx, learning_rate_fn)`` from ``config`` (a ConfigDict or dict), e.g.::

        name="sgd", learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
        schedule="warmup_cosine", warmup_epochs=5, lr_reference_batch=256, clip_norm=None,
        decay_mask="weights",  # or "all"
        backbone_lr_scale=0.1,  # every parameter but the head's at learning_rate * 0.1
        prune="gradual(0.9, start=0, end=2000, every=100)"  # magnitude pruning, cnn.export.pruning

    ``steps_per_epoch`` and ``total_steps`` count optimizer updates; ``global_batch`` is one update's examples.
    ``frozen(path)`` says which parameters (``"stem/conv/kernel"``) never move; ``head(path)`` which ones are
    the head (needed when ``backbone_lr_scale != 1``). Gradient clipping sees the trained parameters only.
    """
    peak = scaled_learning_rate(float(config.learning_rate), global_batch, config.get("lr_reference_batch"))
    lr = schedule(config, peak, max(steps_per_epoch, 1), max(total_steps, 1))
    mask_name = config.get("decay_mask", "weights")
    if mask_name not in ("weights", "all"):
        raise ValueError(f"optimizer.decay_mask={mask_name!r}; expected 'weights' (spare biases and norms) or 'all'")
    mask = decay_mask if mask_name == "weights" else (lambda params: jax.tree.map(lambda _: True, params))

    tx = _base_optimizer(config, lr, mask)
    scale = float(config.get("backbone_lr_scale", 1.0))
    if scale != 1.0:  # two groups, as torch.optim's parameter groups: the head at lr, the rest at lr * scale
        if head is None:
            raise ValueError(f"optimizer.backbone_lr_scale={scale!r} needs to know the model's head")
        backbone = _base_optimizer(config, lambda step: scale * lr(step), mask)
        groups = lambda params: jax.tree.map(lambda p: "head" if head(p) else "backbone", param_paths(params))  # noqa: E731
        tx = optax.multi_transform({"head": tx, "backbone": backbone}, groups)
    clip = config.get("clip_norm")
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(float(clip)), tx)
    if frozen is not None:
        labels = lambda params: jax.tree.map(lambda p: "frozen" if frozen(p) else "trained", param_paths(params))  # noqa: E731
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
    if config.get("prune"):  # last: pruned weights stay at zero whatever the optimizer does
        tx = optax.chain(tx, pruning.prune(pruning.parse_schedule(config.prune)))
    return tx, lr
