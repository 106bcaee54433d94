"""Where is the evidence? Cluttered digits with a known box, and the pointing game.

``cluttered_digits`` pastes one digit at a random position of a larger canvas strewn with fragments of
other digits' strokes (cluttered MNIST, as in Mnih et al. 2014), and returns the box of the pasted
digit's ink. The fragments come from random digits of any class, so they carry nothing about the label.
``pointing_game`` (Zhang et al. 2016) scores a heat map as a hit when its peak falls inside the box; a
uniformly random point hits with probability the box's area fraction, the canvas centre where the box
happens to cover it.
"""

from __future__ import annotations

import functools
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

BOX = "(top, left, bottom, right), bottom and right exclusive"


@functools.partial(jax.jit, static_argnames=("count", "canvas", "fragments", "fragment_size", "margin"))
def cluttered_digits(key: jax.Array, digits: jax.Array, labels: jax.Array, *, count: int, canvas: int = 64,
                     fragments: int = 8, fragment_size: int = 9, margin: int = 4) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """``count`` canvases ``uint8 [count, canvas, canvas, 1]``, their labels ``[count]`` and digit boxes ``int32
    [count, 4]`` (top, left, bottom, right; exclusive ends) from ``digits`` ``uint8 [M, h, w]`` (or ``[M, h, w, 1]``).

    Each canvas holds one digit, placed uniformly, and ``fragments`` crops of ``fragment_size`` squared taken
    at least ``margin`` pixels inside other random digits (where the strokes are), placed uniformly anywhere
    (over the digit too); overlaps keep the brighter pixel. The box is the pasted digit's ink (pixels > 0).
    """
    digits = digits.reshape(digits.shape[:3])
    total, height, width = digits.shape
    if height > canvas or width > canvas:
        raise ValueError(f"digits of {height}x{width} do not fit a canvas of {canvas}")
    if fragment_size + 2 * margin > min(height, width):
        raise ValueError(f"fragment_size={fragment_size} with margin={margin} does not fit in a {height}x{width} digit")

    def one(example_key):
        digit_key, place_key, source_key, crop_key, spot_key = jax.random.split(example_key, 5)
        index = jax.random.randint(digit_key, (), 0, total)
        corner = jax.random.randint(place_key, (2,), 0, jnp.array([canvas - height + 1, canvas - width + 1]))
        sources = jax.random.randint(source_key, (fragments,), 0, total)
        crops = jax.random.randint(crop_key, (fragments, 2), margin,
                                   jnp.array([height - fragment_size - margin + 1, width - fragment_size - margin + 1]))
        spots = jax.random.randint(spot_key, (fragments, 2), 0, canvas - fragment_size + 1)
        blank = jnp.zeros((canvas, canvas), jnp.uint8)

        def paste(image, fragment):
            piece = jax.lax.dynamic_slice(digits[sources[fragment]], crops[fragment], (fragment_size, fragment_size))
            return jnp.maximum(image, jax.lax.dynamic_update_slice(blank, piece, spots[fragment])), None

        image = jax.lax.scan(paste, blank, jnp.arange(fragments))[0] if fragments else blank
        image = jnp.maximum(image, jax.lax.dynamic_update_slice(blank, digits[index], corner))
        ink = digits[index] > 0
        rows, cols = jnp.any(ink, axis=1), jnp.any(ink, axis=0)
        top, left = jnp.argmax(rows), jnp.argmax(cols)
        bottom, right = height - jnp.argmax(rows[::-1]), width - jnp.argmax(cols[::-1])
        box = jnp.stack([top, left, bottom, right]).astype(jnp.int32) + jnp.tile(corner, 2).astype(jnp.int32)
        return image[..., None], labels[index], box

    return jax.vmap(one)(jax.random.split(key, count))


def peaks(maps: np.ndarray) -> np.ndarray:
    """int ``[N, 2]``: (row, column) of each ``[N, H, W]`` map's maximum (the first in row-major order on ties)."""
    maps = np.asarray(maps)
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return np.stack(np.unravel_index(flat, maps.shape[1:]), axis=1)


def inside(points: np.ndarray, boxes: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """bool ``[N]``: each (row, column) point within its box (``BOX``) grown by ``tolerance`` pixels."""
    points, boxes = np.asarray(points), np.asarray(boxes)
    return ((points[:, 0] >= boxes[:, 0] - tolerance) & (points[:, 0] < boxes[:, 2] + tolerance)
            & (points[:, 1] >= boxes[:, 1] - tolerance) & (points[:, 1] < boxes[:, 3] + tolerance))


def pointing_game(maps: np.ndarray, boxes: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """bool ``[N]``: whether each heat map's peak falls inside its box (``BOX``, grown by ``tolerance``)."""
    return inside(peaks(maps), boxes, tolerance)


def centre_hits(boxes: np.ndarray, shape: Tuple[int, int], tolerance: int = 0) -> np.ndarray:
    """bool ``[N]``: the pointing game of a map that always peaks at the canvas centre ``(H // 2, W // 2)``."""
    centre = np.tile(np.array([[shape[0] // 2, shape[1] // 2]]), (len(boxes), 1))
    return inside(centre, boxes, tolerance)


def area_fractions(boxes: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """float ``[N]``: each box's share of the canvas: the hit probability of a uniformly random point."""
    boxes = np.asarray(boxes)
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / float(shape[0] * shape[1])
