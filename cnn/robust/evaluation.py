"""Robust accuracy: the share of examples still classified correctly under attack, for several radii in
one pass over the data (each batch attacked at every eps with one compiled attack)."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from cnn.robust.attacks import LogitsFn, fgsm, pgd

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

    def attack_batch(images, labels, batch_key, radius):
        if attack == "fgsm":
            return fgsm(logits_fn, images, labels, eps=radius)
        size = madry_step_size(radius, steps) if step_size is None else step_size
        return pgd(logits_fn, images, labels, batch_key, eps=radius, step_size=size, steps=steps, restarts=restarts,
                   norm=norm)

    @jax.jit
    def robust_count(images, labels, batch_key, radius):
        """Examples right both clean and attacked at ``radius`` (traced: one compile serves every radius)."""
        clean = jnp.argmax(logits_fn(images), -1) == labels
        attacked = jnp.argmax(logits_fn(attack_batch(images, labels, batch_key, radius)), -1) == labels
        return jnp.sum(clean), jnp.sum(clean & attacked)

    examples, clean_total, robust_total = 0, 0, np.zeros(len(radii), np.int64)
    for index, (images, labels) in enumerate(batches):
        images = np.asarray(images)
        images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        labels = np.asarray(labels, np.int32)
        for position, radius in enumerate(radii):  # a Python loop: no lax.map around the attack (see ``pgd``)
            radius_key = jax.random.fold_in(jax.random.fold_in(key, index), position)
            clean, robust = robust_count(images, labels, radius_key, jnp.float32(radius))
            robust_total[position] += int(robust)
        examples += len(labels)
        clean_total += int(clean)
    if not examples:
        raise ValueError("robust_accuracy: the batches were empty")
    return {"examples": examples, "clean": clean_total / examples,
            "robust": {radius: int(count) / examples for radius, count in zip(radii, robust_total)}}
