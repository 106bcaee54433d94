"""Adversarial training's attack, written as text in a config: ``"pgd(eps=0.3,steps=7)"``,
``"fgsm_rs(eps=0.3)"``, ``"fgsm(eps=0.1)"``; ``""`` for none.

``parse(text)`` returns a ``TrainingAttack``: called with ``(logits_fn, pixels [N, ...] in [0, 1], labels [N],
keys [N])`` it returns the adversarial pixels, through ``cnn.robust.fgsm``, ``fgsm_rs`` or ``pgd``. The
train step (``cnn.train.steps``) calls it on each batch after augmentation and trains on what it returns
(Madry et al. 2018: PGD; Wong et al. 2020: FGSM from a random start).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

import jax

from cnn.robust.attacks import NORMS, LogitsFn, fgsm, fgsm_rs, pgd
from cnn.robust.evaluation import madry_step_size

# The keyword arguments each attack accepts, with their defaults (None: the attack's own default).
FIELDS = {
    "fgsm": {"eps": None},
    "fgsm_rs": {"eps": None, "step_size": None},
    "pgd": {"eps": None, "steps": 7, "step_size": None, "restarts": 1, "norm": "linf"},
}
_CALL = re.compile(r"^\s*(?P<name>\w+)\s*\((?P<args>[^()]*)\)\s*$")
_EXAMPLE = "e.g. 'pgd(eps=0.3,steps=7)', 'fgsm_rs(eps=0.3)' or 'fgsm(eps=0.1)'"


@dataclasses.dataclass(frozen=True)
class TrainingAttack:
    """One attack with its settings; ``eps`` and ``step_size`` in pixel / 255 units (images in [0, 1])."""

    name: str
    eps: float
    steps: int = 1
    step_size: Optional[float] = None
    restarts: int = 1
    norm: str = "linf"

    def __call__(self, logits_fn: LogitsFn, pixels: jax.Array, labels: jax.Array, keys: jax.Array) -> jax.Array:
        """Adversarial pixels ``[N, ...]`` (no gradient flows back); ``keys``: one per example ``[N]``."""
        if self.name == "fgsm":
            return fgsm(logits_fn, pixels, labels, eps=self.eps)
        if self.name == "fgsm_rs":
            return fgsm_rs(logits_fn, pixels, labels, keys, eps=self.eps, step_size=self.step_size)
        step_size = madry_step_size(self.eps, self.steps) if self.step_size is None else self.step_size
        return pgd(logits_fn, pixels, labels, keys, eps=self.eps, step_size=step_size, steps=self.steps,
                   restarts=self.restarts, norm=self.norm)

    @property
    def gradients_per_step(self) -> int:
        """Input-gradient passes per batch: the attack's cost in forward-backward passes of the model."""
        return self.steps * self.restarts if self.name == "pgd" else 1


def _value(text: str, key: str):
    """One keyword's value: a number, or (``norm``) a name."""
    if key == "norm":
        if text not in NORMS:
            raise ValueError(f"norm={text}; expected one of {', '.join(NORMS)}")
        return text
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{key}={text} is not a number") from None
    if key in ("steps", "restarts"):
        if number != int(number) or number < 1:
            raise ValueError(f"{key}={text}; expected a whole number >= 1")
        return int(number)
    if key == "eps" and not 0 < number <= 1:
        raise ValueError(f"eps={text}; expected a radius in (0, 1] (pixels / 255)")
    if key == "step_size" and number <= 0:
        raise ValueError(f"step_size={text}; expected a positive step")
    return number


def parse(text: str) -> Optional[TrainingAttack]:
    """``"pgd(eps=0.3,steps=7)"`` -> ``TrainingAttack``; ``""`` -> None. One-line ValueError otherwise."""
    if not text or not text.strip():
        return None
    match = _CALL.match(text)
    if not match or match.group("name") not in FIELDS:
        raise ValueError(f"adversarial attack {text!r}: expected one of {', '.join(FIELDS)} with its settings, {_EXAMPLE}")
    name, accepted = match.group("name"), FIELDS[match.group("name")]
    settings = {}
    for part in filter(None, (p.strip() for p in match.group("args").split(","))):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or key not in accepted:
            raise ValueError(f"adversarial attack {text!r}: {part!r} is not a setting of {name} "
                             f"(settings: {', '.join(accepted)})")
        try:
            settings[key] = _value(value, key)
        except ValueError as error:
            raise ValueError(f"adversarial attack {text!r}: {error}") from None
    if "eps" not in settings:
        raise ValueError(f"adversarial attack {text!r}: eps is required, {_EXAMPLE}")
    defaults = {key: value for key, value in accepted.items() if value is not None}
    return TrainingAttack(name=name, **{**defaults, **settings})
