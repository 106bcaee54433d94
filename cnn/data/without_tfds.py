"""Sources read straight into memory where tensorflow-datasets is not installed (an accelerator machine with
JAX alone, say): the IDX datasets (mnist, fashion_mnist, kmnist) from their official, verified files, and
the synthetic data. The arrays are the ones the tfds builders write; only the storage differs (an
``ArraySource`` in memory instead of array_record files). Other datasets need tensorflow-datasets.

Splits accept the names and the slices of tfds's syntax a researcher uses most: ``train``, ``test``,
``train[:5000]``, ``train[-5000:]``, ``train[:90%]``, ``train[10%:]``, ``train[100:200]``.
"""

from __future__ import annotations

import re
from typing import Optional

import numpy as np

from cnn.data import formats, raw_files, synthetic
from cnn.data.paths import DataError, PathLike, resolve_data_dir
from cnn.data.sources import ArraySource
from cnn.data.stats import channel_mean_std

IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
IDX_DATASETS = ("mnist", "fashion_mnist", "kmnist")
SPLIT = re.compile(r"^(?P<name>[a-z]+)(?:\[(?P<start>-?\d+%?)?:(?P<end>-?\d+%?)?\])?$")


def _bound(text: Optional[str], size: int) -> Optional[int]:
    if text is None:
        return None
    if text.endswith("%"):
        return int(round(size * int(text[:-1]) / 100))
    return int(text)


def select(images: np.ndarray, labels: np.ndarray, split: str, name: str, splits: tuple):
    """The rows of ``split`` (``train``, ``train[:90%]``, ...) of the named split's arrays."""
    match = SPLIT.match(split.replace(" ", ""))
    if not match or match.group("name") not in splits:
        raise DataError(f"{name}: bad split {split!r}; splits: {', '.join(splits)}, sliced as in tfds, e.g. "
                        f"'train[:90%]', 'train[-5000:]' (tensorflow-datasets is not installed: these forms only)")
    rows = slice(_bound(match.group("start"), len(images)), _bound(match.group("end"), len(images)))
    return images[rows], labels[rows]


def _idx_splits(name: str, data_dir: Optional[PathLike]) -> dict:
    folder = resolve_data_dir(data_dir) / name
    paths = raw_files.locate_verified(name, folder)  # verified; nothing is downloaded without tfds
    return {split: formats.read_idx_pair(paths[images], paths[labels]) for split, (images, labels) in IDX_FILES.items()}


def _synthetic_splits(image_shape=(32, 32, 3), num_classes=10, num_train=50_000, num_test=10_000, seed=0) -> dict:
    shape = tuple(int(v) for v in image_shape)
    splits = {}
    for split, size in (("train", int(num_train)), ("test", int(num_test))):
        chunks = list(synthetic.iter_chunks(split, size, shape, int(num_classes), int(seed)))
        splits[split] = (np.concatenate([c[1] for c in chunks]), np.concatenate([c[2] for c in chunks]))
    return splits


def source(name: str, split: str, *, data_dir: Optional[PathLike] = None, **options) -> ArraySource:
    """``cnn.data.source`` where tensorflow-datasets is missing: the split read into memory."""
    if name in IDX_DATASETS:
        if options:
            raise DataError(f"{name} takes no options (got {', '.join(sorted(options))})")
        splits, num_classes = _idx_splits(name, data_dir), 10
    elif name == "synthetic":
        splits = _synthetic_splits(**options)
        num_classes = int(options.get("num_classes", 10))
    else:
        raise DataError(f"{name} needs tensorflow-datasets to be prepared (pip install tensorflow-datasets); without "
                        f"it, {', '.join(IDX_DATASETS)} and synthetic are read straight into memory")
    splits = {key: (images if images.ndim == 4 else images[..., None], labels) for key, (images, labels) in splits.items()}
    images, labels = select(*splits.get(split.split("[")[0], splits["train"]), split, name, tuple(splits))
    mean, std = channel_mean_std(splits["train"][0])
    selected = ArraySource(images, labels, name=name, num_classes=num_classes, mean=mean, std=std)
    selected.split = split
    return selected
