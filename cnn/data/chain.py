"""Augmentation chains from strings: ``parse("crop(4)|flip|cutout(8)", mean=..., std=...)``.

Grammar: ops separated by ``|``; an op is ``name`` or ``name(arguments)`` with positional and/or
``key=value`` arguments (numbers, or bare words such as ``reflect``). The empty string (or ``none``)
only normalises. Ops:

- ``crop(padding, mode=zero)``: pad by ``padding`` (``zero`` or ``reflect``), take a random window;
- ``flip`` or ``flip(probability)``: left-right mirror, probability 0.5 by default;
- ``rotate(degrees)``: random angle in [-degrees, degrees] about the centre, bilinear, black outside;
- ``zoom(min_scale, max_scale)``: random scale about the centre (>1 zooms in), black outside;
- ``resized_crop(min_area=0.08, max_area=1, min_ratio=3/4, max_ratio=4/3)``: Inception crop of a random
  area fraction and width/height ratio (log-uniform), resized back to [H, W];
- ``cutout(size)``: a size x size square set to the dataset mean (so 0 after normalising);
- ``mixup(alpha)``: Zhang et al. 2018, weights ~ Beta(alpha, alpha); labels become soft [B, num_classes];
- ``cutmix(alpha)``: Yun et al. 2019; labels become soft, mixed by the fraction of pixels kept.

A chain is ``chain(key, images, labels) -> (images, labels)``: images uint8 or float [B, H, W, C] in
pixel units go through the ops in order and come out normalised per channel as float32
((x - mean) / std with the dataset's statistics, or x / 255 without); labels int [B] come out unchanged,
or as float32 soft labels [B, num_classes] when the chain holds mixup or cutmix. Pure and jit-able.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from cnn.data import augment


def _non_negative_int(op: str, name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{op}: {name}={value!r}; expected a non-negative integer")
    return value


def _number(op: str, name: str, value, low: float, high: float, low_open: bool = False) -> float:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_number and (low < value if low_open else low <= value) and value <= high):
        raise ValueError(f"{op}: {name}={value!r}; expected a number in {'(' if low_open else '['}{low}, {high}]")
    return float(value)


def crop(padding, mode="zero", *, stats):
    padding = _non_negative_int("crop", "padding", padding)
    if mode not in augment.PAD_MODES:
        raise ValueError(f"crop: mode={mode!r}; expected one of {', '.join(augment.PAD_MODES)}")
    return augment.per_example(augment.crop_image, padding=padding, mode=mode)


def flip(probability=0.5, *, stats):
    return augment.per_example(augment.flip_image, probability=_number("flip", "probability", probability, 0, 1))


def rotate(degrees, *, stats):
    return augment.per_example(augment.rotate_image, max_degrees=_number("rotate", "degrees", degrees, 0, 180))


def zoom(min_scale, max_scale, *, stats):
    low = _number("zoom", "min_scale", min_scale, 0, 10, low_open=True)
    high = _number("zoom", "max_scale", max_scale, low, 10)
    return augment.per_example(augment.zoom_image, min_scale=low, max_scale=high)


def resized_crop(min_area=0.08, max_area=1.0, min_ratio=3 / 4, max_ratio=4 / 3, *, stats):
    low = _number("resized_crop", "min_area", min_area, 0, 1, low_open=True)
    high = _number("resized_crop", "max_area", max_area, low, 1)
    low_ratio = _number("resized_crop", "min_ratio", min_ratio, 0, 100, low_open=True)
    high_ratio = _number("resized_crop", "max_ratio", max_ratio, low_ratio, 100)
    return augment.per_example(
        augment.resized_crop_image, min_area=low, max_area=high, min_ratio=low_ratio, max_ratio=high_ratio
    )


def cutout(size, *, stats):
    fill = jnp.asarray(stats[0], jnp.float32) if stats[0] is not None else 0.0
    return augment.per_example(augment.cutout_image, size=_non_negative_int("cutout", "size", size), fill=fill)


def mixup(alpha, *, stats):
    return functools.partial(augment.mixup, alpha=_number("mixup", "alpha", alpha, 0, 1e3, low_open=True))


def cutmix(alpha, *, stats):
    return functools.partial(augment.cutmix, alpha=_number("cutmix", "alpha", alpha, 0, 1e3, low_open=True))


OPS = {fn.__name__: fn for fn in (crop, flip, rotate, zoom, resized_crop, cutout, mixup, cutmix)}
MIXING_OPS = ("mixup", "cutmix")
_OP_PATTERN = re.compile(r"^\s*([a-z_]+)\s*(?:\((.*)\))?\s*$")
_WORD_PATTERN = re.compile(r"^[A-Za-z_]\w*$")


def _usage(name: str) -> str:
    parameters = [p for p in inspect.signature(OPS[name]).parameters.values() if p.kind != p.KEYWORD_ONLY]
    return f"{name}({', '.join(str(p) for p in parameters)})"


def _parse_value(text: str, where: str):
    text = text.strip()
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    if _WORD_PATTERN.match(text):
        return text
    raise ValueError(f"{where}: cannot read argument {text!r}; expected a number or a word")


def _parse_op(text: str) -> tuple:
    match = _OP_PATTERN.match(text)
    if not match:
        raise ValueError(f"cannot read augmentation {text.strip()!r}; expected name or name(arguments), e.g. crop(4)")
    name, arguments = match.group(1), match.group(2)
    if name not in OPS:
        raise ValueError(f"unknown augmentation {name!r}; known: {', '.join(OPS)}")
    args, kwargs = [], {}
    for item in (arguments or "").split(",") if (arguments or "").strip() else []:
        key, equals, value = item.partition("=")
        if equals:
            kwargs[key.strip()] = _parse_value(value, text.strip())
        elif kwargs:
            raise ValueError(f"{text.strip()}: positional argument after keyword argument")
        else:
            args.append(_parse_value(item, text.strip()))
    parameters = [p for p in inspect.signature(OPS[name]).parameters if p != "stats"]
    unknown = [key for key in kwargs if key not in parameters]
    if unknown:
        raise ValueError(f"{text.strip()}: unknown argument {unknown[0]!r}; usage: {_usage(name)}")
    try:
        bound = inspect.signature(OPS[name]).bind(*args, **kwargs, stats=(None, None))
    except TypeError as error:
        raise ValueError(f"{text.strip()}: {error}; usage: {_usage(name)}") from None
    bound.arguments.pop("stats")
    return name, tuple(bound.arguments.items())


@dataclasses.dataclass(frozen=True)
class Chain:
    """A parsed augmentation chain; call it as ``chain(key, images, labels)`` (see the module docstring)."""

    text: str
    steps: tuple  # ((op name, ((argument, value), ...)), ...)
    num_classes: Optional[int] = None
    mean: Optional[tuple] = None
    std: Optional[tuple] = None

    @property
    def soft_labels(self) -> bool:
        """Whether labels come out as float32 [B, num_classes] (the chain mixes examples)."""
        return any(name in MIXING_OPS for name, _ in self.steps)

    def __call__(self, key: jax.Array, images: jax.Array, labels: jax.Array) -> tuple:
        images = jnp.asarray(images, jnp.float32)
        if self.soft_labels and labels.ndim == 1:
            labels = jax.nn.one_hot(labels, self.num_classes, dtype=jnp.float32)
        keys = jax.random.split(key, max(len(self.steps), 1))
        for step_key, (name, arguments) in zip(keys, self.steps):
            op = OPS[name](**dict(arguments), stats=(self.mean, self.std))
            images, labels = op(step_key, images, labels)
        return augment.normalize(images, self.mean, self.std), labels


def parse(
    text: str,
    *,
    num_classes: Optional[int] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> Chain:
    """Parses ``text`` into a Chain; every error names the bad op or value and what is accepted.

    Args:
      text: e.g. ``"crop(4)|flip|cutout(8)"``; ``""`` or ``"none"`` only normalises.
      num_classes: needed when the chain holds mixup or cutmix (soft labels [B, num_classes]).
      mean, std: per-channel statistics in pixel units (``source.mean``, ``source.std``).
    """
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std (pixel units, one value per channel) or neither")
    pieces = [] if text.strip().lower() in ("", "none") else text.split("|")
    steps = tuple(_parse_op(piece) for piece in pieces)
    if any(name in MIXING_OPS for name, _ in steps) and not (isinstance(num_classes, int) and num_classes > 1):
        raise ValueError(f"{text!r} mixes labels, so it needs num_classes (an integer > 1), got {num_classes!r}")
    as_tuple = lambda values: None if values is None else tuple(float(v) for v in values)  # noqa: E731
    if std is not None and min(as_tuple(std)) <= 0:
        raise ValueError(f"std={tuple(std)}; every channel's std must be positive")
    for name, arguments in steps:  # validate values now, not at the first call under jit
        OPS[name](**dict(arguments), stats=(as_tuple(mean), as_tuple(std)))
    return Chain(text, steps, num_classes, as_tuple(mean), as_tuple(std))


def preprocessing(text: str, *, num_classes: int, mean: Optional[Sequence[float]] = None,
                  std: Optional[Sequence[float]] = None):
    """``(key, images, labels) -> (inputs float32, targets float32 [B, num_classes])``: the chain ``text``
    (``""`` for evaluation) with integer labels turned into one-hot targets; ``key=None`` is allowed
    for a chain without randomness."""
    parsed = parse(text, num_classes=num_classes, mean=mean, std=std)

    def preprocess(key, images, labels):
        if key is None:
            key = jax.random.PRNGKey(0)
        inputs, targets = parsed(key, images, labels)
        if targets.ndim == 1:
            targets = jax.nn.one_hot(targets, num_classes, dtype=jnp.float32)
        return inputs, targets

    return preprocess
