"""Data: tfds builders from the official raw files, grain pipelines, JAX augmentation, synthetic data.

    train = cnn.data.source("cifar10", "train[:90%]")          # prepares on first use
    batches = cnn.data.train_iterator(train, global_batch=128, seed=0)
    augment = cnn.data.augmentation("crop(4)|flip", mean=train.mean, std=train.std)
    images, labels = augment(key, batch["image"], batch["label"])   # inside jit, on the accelerator

``import cnn.data`` and the augmentation need only JAX and numpy: tensorflow_datasets and grain are
imported when a source or pipeline is first made, so machines without them can still augment.
See docs/data.md.
"""

from cnn.data.augment import normalize
from cnn.data.catalog import names
from cnn.data.chain import Chain
from cnn.data.chain import parse as augmentation
from cnn.data.paths import DataError, UnknownDatasetError, resolve_data_dir, resolve_prepared_dir
from cnn.data.pipeline import (
    eval_dataset,
    eval_iterator,
    eval_steps,
    steps_per_epoch,
    train_dataset,
    train_iterator,
    train_plan,
)
from cnn.data.sources import ArraySource, Source, in_memory, source
from cnn.data.subset import Subset, per_class

__all__ = [
    "ArraySource",
    "Chain",
    "DataError",
    "Source",
    "Subset",
    "UnknownDatasetError",
    "augmentation",
    "eval_dataset",
    "eval_iterator",
    "eval_steps",
    "in_memory",
    "names",
    "normalize",
    "per_class",
    "resolve_data_dir",
    "resolve_prepared_dir",
    "source",
    "steps_per_epoch",
    "train_dataset",
    "train_iterator",
    "train_plan",
]
