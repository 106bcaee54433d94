"""The UCI optical-recognition digits (scikit-learn's ``load_digits``) as 28x28 MNIST-like images.

scikit-learn ships the UCI test set: 1,797 digits by 13 writers, scanned by NIST's form reader, each
size-normalised to a 32x32 bitmap and reduced to 8x8 counts of "on" pixels per 4x4 block (0..16). No
download: the file is part of the scikit-learn package.

Each digit is placed as MNIST places its digits (LeCun et al.: size-normalised into a 20x20 box, then
centred by its centre of mass in a 28x28 field):

1. 0..16 -> 0..255 (``x * 255 / 16``);
2. the 8x8 grid (the whole 32x32 normalised bitmap) -> 20x20, bilinear (half-pixel centres, edges
   clamped: PIL's ``BILINEAR`` for upsampling);
3. the 20x20 box pasted into a zero 28x28 field so that its centre of mass lands on the field's centre
   (13.5, 13.5), shifted by whole pixels and kept inside the field; rounded to uint8.

The train/test split is fixed and stratified: for each digit, a seeded permutation of its examples puts
``count // 3`` in the test split (596 test, 1,201 train; per-digit counts in docs/data.md). Examples keep
scikit-learn's order within each split.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Tuple

import numpy as np

SPLIT_SEED = 0
BOX, FIELD = 20, 28


def _resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """``[h, w] -> [size, size]`` float32, bilinear with half-pixel centres and clamped edges."""
    from PIL import Image

    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))


def place_like_mnist(digit: np.ndarray) -> np.ndarray:
    """One 8x8 digit of 0..16 counts -> uint8 [28, 28]: scaled, resized to a 20x20 box, centred by mass."""
    box = _resize_bilinear(np.asarray(digit, np.float32) * (255.0 / 16.0), BOX)
    box = np.clip(box, 0.0, 255.0)
    mass = box.sum()
    rows, cols = np.arange(BOX), np.arange(BOX)
    centre = ((box.sum(axis=1) @ rows) / mass, (box.sum(axis=0) @ cols) / mass) if mass > 0 else ((BOX - 1) / 2,) * 2
    field_centre = (FIELD - 1) / 2
    top, left = (int(np.clip(np.round(field_centre - c), 0, FIELD - BOX)) for c in centre)
    field = np.zeros((FIELD, FIELD), np.float32)
    field[top:top + BOX, left:left + BOX] = box
    return np.round(field).astype(np.uint8)


def split_indices(labels: np.ndarray, seed: int = SPLIT_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Sorted (train, test) indices: per class, ``count // 3`` of a seeded permutation go to the test split."""
    rng = np.random.default_rng(seed)
    test = []
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        test.append(rng.permutation(members)[: len(members) // 3])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def load() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images uint8 [N, 28, 28, 1], labels int64 [N]), "test": (...)}``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([place_like_mnist(digit) for digit in digits.images])[..., None]
    labels = digits.target.astype(np.int64)
    train, test = split_indices(labels)
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def source_fingerprint() -> Dict[str, str]:
    """What the images are made from: scikit-learn's version and the sha256 of its 8x8 digits."""
    import sklearn
    from sklearn.datasets import load_digits

    digits = load_digits()
    data = np.ascontiguousarray(digits.images, np.float64).tobytes() + np.ascontiguousarray(digits.target, np.int64).tobytes()
    return {"scikit_learn": sklearn.__version__, "digits_sha256": hashlib.sha256(data).hexdigest()}
