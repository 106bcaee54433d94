"""Robust accuracy: the share of examples still classified correctly under attack, for several radii in
one pass over the data (each batch attacked at every eps with one compiled attack)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cnn.robust.attacks import LogitsFn, fgsm, pgd_finish, pgd_start, pgd_step

ATTACKS = ("fgsm", "pgd")


def madry_step_size(eps: Any, steps: int) -> Any:
    """``2.5 eps / steps``: enough for PGD to cross the ball and back (Madry et al. 2018, appendix)."""
    return 2.5 * eps / max(steps, 1)


def robust_accuracy(logits_fn: LogitsFn, batches: Iterable[Tuple[Any, Any]], key: jax.Array, *,
                    eps: Sequence[float], attack: str = "pgd", steps: int = 10, restarts: int = 1,
                    step_size: Optional[float] = None, norm: str = "linf") -> Dict[str, Any]:
    """Clean and robust top-1 accuracy of ``logits_fn`` over ``batches`` of ``(images, labels)``.

    Images are floats in [0, 1] or uint8 (divided by 255). An example counts as robust at a radius when
    it is classified correctly both clean and attacked. PGD's ``step_size`` defaults to
    ``madry_step_size(eps, steps)``. Returns ``{"examples", "clean", "robust": {eps: accuracy}}``.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack={attack!r}; expected one of {', '.join(ATTACKS)}")
    radii = [float(e) for e in np.atleast_1d(eps)]

    restarts = restarts if attack == "pgd" else 1
    correct = lambda x, labels: jnp.argmax(logits_fn(x), -1) == labels  # noqa: E731

    @jax.jit
    def fgsm_count(images, labels, radius):
        """Examples right both clean and under FGSM at ``radius`` (traced: one compile serves every radius)."""
        clean = correct(images, labels)
        return jnp.sum(clean), jnp.sum(clean & correct(fgsm(logits_fn, images, labels, eps=radius), labels))

    # PGD: its start, each step and its end are separate compiled calls (XLA's CPU backend would keep every
    # step's activations of one unrolled program); the radius and step size are traced, so one compile each.
    start = jax.jit(lambda images, labels, key, radius: pgd_start(images, labels, key, eps=radius, restarts=restarts,
                                                                  norm=norm))
    step = jax.jit(lambda state, radius, size: pgd_step(logits_fn, state, eps=radius, step_size=size, norm=norm))

    @jax.jit
    def pgd_count(state, images, labels):
        clean = correct(images, labels)
        attacked = pgd_finish(logits_fn, state, restarts=restarts)
        return jnp.sum(clean), jnp.sum(clean & correct(attacked, labels))

    def robust_count(images, labels, batch_key, radius):
        if attack == "fgsm":
            return fgsm_count(images, labels, jnp.float32(radius))
        size = jnp.float32(madry_step_size(radius, steps) if step_size is None else step_size)
        state = start(images, labels, batch_key, jnp.float32(radius))
        for _ in range(steps):
            state = step(state, jnp.float32(radius), size)
        return pgd_count(state, images, labels)

    examples, clean_total, robust_total = 0, 0, np.zeros(len(radii), np.int64)
    for index, (images, labels) in enumerate(batches):
        images = np.asarray(images)
        images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        labels = np.asarray(labels, np.int32)
        for position, radius in enumerate(radii):  # a Python loop: no lax.map around the attack (see ``pgd``)
            radius_key = jax.random.fold_in(jax.random.fold_in(key, index), position)
            clean, robust = robust_count(images, labels, radius_key, radius)
            robust_total[position] += int(robust)
        examples += len(labels)
        clean_total += int(clean)
    if not examples:
        raise ValueError("robust_accuracy: the batches were empty")
    return {"examples": examples, "clean": clean_total / examples,
            "robust": {radius: int(count) / examples for radius, count in zip(radii, robust_total)}}
