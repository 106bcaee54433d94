"""Synthetic images of any shape and class count with a learnable signal, for benchmarks and tests.

Each class owns a smooth random prototype (a coarse 4x4 pattern per channel, upsampled, pixel values
128 +- 64); an example is its class prototype plus uniform per-pixel noise, so a small network learns
it in a few hundred steps while no single pixel gives the answer away. Everything is a pure function
of (seed, split, number of examples, index).
"""

from __future__ import annotations

import numpy as np

SPLIT_IDS = {"train": 0, "test": 1}
_PROTOTYPE_GRID = 4


def class_prototypes(image_shape: tuple, num_classes: int, seed: int) -> np.ndarray:
    """float32 [num_classes, H, W, C] in [-1, 1]: one smooth pattern per class."""
    height, width, channels = image_shape
    rng = np.random.default_rng([seed, 7919])
    coarse = rng.uniform(-1.0, 1.0, size=(num_classes, _PROTOTYPE_GRID, _PROTOTYPE_GRID, channels))
    rows = np.minimum(np.arange(height) * _PROTOTYPE_GRID // height, _PROTOTYPE_GRID - 1)
    cols = np.minimum(np.arange(width) * _PROTOTYPE_GRID // width, _PROTOTYPE_GRID - 1)
    return coarse[:, rows][:, :, cols].astype(np.float32)


def labels_for(split: str, num_examples: int, num_classes: int, seed: int) -> np.ndarray:
    """int64 [N]: balanced labels (each class num_examples // num_classes times, +1 for the first few), shuffled."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], 1])
    return rng.permutation(np.arange(num_examples) % num_classes).astype(np.int64)


CHUNK = 1024  # examples drawn per noise stream; fixed so that values never depend on how they are read
NOISE = 80  # uniform integer noise in [-NOISE, NOISE] (std about 46) on each pixel


def iter_chunks(split: str, num_examples: int, image_shape: tuple, num_classes: int, seed: int):
    """Yields (start, images uint8 [n, H, W, C], labels int64 [n]) for consecutive chunks of the split."""
    if split not in SPLIT_IDS:
        raise ValueError(f"synthetic split {split!r}; expected one of {sorted(SPLIT_IDS)}")
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape={image_shape!r}; expected (height, width, channels), all positive")
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}; expected at least 2")
    labels = labels_for(split, num_examples, num_classes, seed)
    prototypes = class_prototypes(tuple(image_shape), num_classes, seed)
    prototype_pixels = np.rint(128.0 + 64.0 * prototypes).astype(np.int16)
    for start in range(0, num_examples, CHUNK):
        chunk_labels = labels[start : start + CHUNK]
        rng = np.random.default_rng([seed, SPLIT_IDS[split], 2, start // CHUNK])
        signal = prototype_pixels[chunk_labels]
        noise = rng.integers(-NOISE, NOISE + 1, size=signal.shape, dtype=np.int16)
        yield start, np.clip(signal + noise, 0, 255).astype(np.uint8), chunk_labels


def arrays(
    split: str = "train",
    *,
    num_examples: int = 1024,
    image_shape: tuple = (32, 32, 3),
    num_classes: int = 10,
    seed: int = 0,
) -> tuple:
    """(images uint8 [N, H, W, C], labels int64 [N]) held in memory; the same values the tfds builder writes."""
    chunks = list(iter_chunks(split, num_examples, tuple(image_shape), num_classes, seed))
    if not chunks:
        return np.zeros((0, *image_shape), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate([c[1] for c in chunks]), np.concatenate([c[2] for c in chunks])
