"""A fixed, seeded, stratified subset of a split: ``per_class(source, count, seed=...)`` keeps ``count`` examples
of every class (few-shot training: 10 or 50 labels per class).

For each class in order, one generator seeded with ``seed`` permutes that class's examples and the first
``count`` are kept, so a smaller subset is part of every larger one with the same seed (10 per class inside
50 per class). The kept examples stay in the split's order. The subset keeps the whole split's statistics
(``mean``, ``std``): normalisation does not change with the subset.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def labels_of(source: Any, batch_size: int = 4096) -> np.ndarray:
    """Every label of ``source`` in order (int64 ``[N]``); reads each example once."""
    if hasattr(source, "labels"):  # an ArraySource holds them
        return np.asarray(source.labels, np.int64)
    labels = []
    for start in range(0, len(source), batch_size):
        labels += [example["label"] for example in source.__getitems__(range(start, min(start + batch_size, len(source))))]
    return np.asarray(labels, np.int64)


def per_class_indices(labels: np.ndarray, count: int, num_classes: int, seed: int, *, what: str = "count") -> np.ndarray:
    """Sorted indices of ``count`` examples of each class, chosen by a permutation seeded with ``seed``."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"{what}={count!r}; expected an integer >= 1 (examples per class)")
    available = np.bincount(labels, minlength=num_classes)
    if available.min() < count:
        short = int(np.argmin(available))
        raise ValueError(f"{what}={count}: class {short} has only {int(available[short])} examples; expected at most "
                         f"{int(available.min())} per class (0 keeps the whole split)")
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:count] for c in range(num_classes)]
    return np.sort(np.concatenate(chosen))


class Subset:
    """Some examples of a source, by index; the same interface (``len``, indexing, ``__getitems__``, shapes,
    classes, statistics). Pickles with its source, so grain's worker processes can read it."""

    def __init__(self, source: Any, indices: Sequence[int], *, split: str):
        self.source, self.indices = source, np.asarray(indices, np.int64)
        self.name, self.split = source.name, split
        self.image_shape, self.num_classes = source.image_shape, source.num_classes
        self.class_names = source.class_names
        self.mean, self.std = source.mean, source.std

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        return self.source[int(self.indices[index])]

    def __getitems__(self, indices: Sequence[int]) -> list:
        return self.source.__getitems__([int(self.indices[i]) for i in indices])

    def __repr__(self) -> str:
        return f"Subset({self.source!r}, split={self.split!r}, examples={len(self)})"


def per_class(source: Any, count: int, *, seed: int = 0, what: str = "count") -> Subset:
    """``count`` examples of every class of ``source``, a fixed stratified choice for each ``seed``; ``what``
    names the setting in errors (a class with fewer examples is refused)."""
    indices = per_class_indices(labels_of(source), count, source.num_classes, seed, what=what)
    return Subset(source, indices, split=f"{source.split}, {count} per class (seed {seed})")
