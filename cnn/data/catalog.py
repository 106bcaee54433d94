"""The datasets this project prepares itself: names, options, and how to make each one's tfds builder.

No tensorflow_datasets import at module level: listing names and checking options works anywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
from typing import Any

from cnn.data import formats
from cnn.data.paths import DataError, UnknownDatasetError

TFDS_PREFIX = "tfds:"


@dataclasses.dataclass(frozen=True)
class Entry:
    name: str
    builder: str  # class name in cnn.data.builders
    description: str
    options: dict = dataclasses.field(default_factory=dict)  # accepted keyword options -> defaults


DATASETS = {
    entry.name: entry
    for entry in [
        Entry("mnist", "Mnist", "MNIST digits, 60k/10k, 28x28x1"),
        Entry("fashion_mnist", "FashionMnist", "Fashion-MNIST, 60k/10k, 28x28x1"),
        Entry("kmnist", "Kmnist", "Kuzushiji-MNIST, 60k/10k, 28x28x1"),
        Entry("cifar10", "Cifar10", "CIFAR-10, 50k/10k, 32x32x3"),
        Entry("cifar100", "Cifar100", "CIFAR-100, 50k/10k, 32x32x3, label (100) and coarse_label (20)"),
        Entry("svhn_cropped", "SvhnCropped", "SVHN cropped digits, 73,257/26,032/531,131 (extra), 32x32x3"),
        Entry("uci_digits", "UciDigits", "UCI optical digits (scikit-learn's load_digits, offline), 1,201/596, 28x28x1"),
        Entry(
            "image_folder",
            "ImageFolder",
            "<folder>/<split>/<class>/*.{jpg,jpeg,png}, resized at preparation",
            {"folder": None, "image_size": None, "channels": 3},
        ),
        Entry(
            "synthetic",
            "Synthetic",
            "class prototypes plus noise, any shape and class count",
            {"image_shape": (32, 32, 3), "num_classes": 10, "num_train": 50_000, "num_test": 10_000, "seed": 0},
        ),
    ]
}


def names() -> list:
    """The dataset names ``cnn.data.source`` prepares itself (``tfds:<name>`` reads tfds's catalog)."""
    return sorted(DATASETS)


def entry(name: str) -> Entry:
    if name not in DATASETS:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known: {', '.join(names())}, or '{TFDS_PREFIX}<name>' for a tfds catalog "
            f"dataset already prepared in array_record"
        )
    return DATASETS[name]


def resolve_options(name: str, options: dict) -> dict:
    """The entry's defaults updated with ``options``; unknown or missing options raise DataError."""
    known = entry(name).options
    unknown = sorted(set(options) - set(known))
    if unknown:
        accepted = ", ".join(known) if known else "none"
        raise DataError(f"{name} takes no option {', '.join(unknown)}; accepted options: {accepted}")
    resolved = {**known, **options}
    missing = [key for key, value in resolved.items() if value is None and key != "folder"]
    if missing:
        raise DataError(f"{name} needs the option(s) {', '.join(missing)} (e.g. image_size=(64, 64))")
    return resolved


def _image_folder_config(folder: pathlib.Path, image_size: Any, channels: int):
    from cnn.data import builders

    if not folder.is_dir():
        raise DataError(f"image_folder: {folder} is not a folder; expected <folder>/<split>/<class>/<image files>")
    if channels not in (1, 3):
        raise DataError(f"image_folder: channels={channels!r}; expected 1 (grey) or 3 (RGB)")
    if isinstance(image_size, int) and not isinstance(image_size, bool):  # a square side, as configs often give
        image_size = (image_size, image_size)
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in image_size) or min(image_size) < 1):
        raise DataError(f"image_folder: image_size={image_size!r}; expected (height, width) or one side, positive integers")
    splits = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not splits:
        raise DataError(f"image_folder: {folder} has no split sub-folders (e.g. train/, test/)")
    classes = formats.image_folder_classes(folder, splits)
    fingerprint = hashlib.sha256(str(folder).encode())
    for split in splits:  # a changed file list or size means a different dataset, prepared afresh
        for path, label in formats.image_folder_files(folder, split, classes):
            fingerprint.update(f"{path.relative_to(folder)}\0{label}\0{path.stat().st_size}\n".encode())
    height, width = (int(v) for v in image_size)
    return builders.ImageFolderConfig(
        name=f"{re.sub(r'[^A-Za-z0-9_.-]', '_', folder.name)}-{height}x{width}x{channels}-{fingerprint.hexdigest()[:12]}",
        folder=str(folder),
        image_size=(height, width),
        channels=int(channels),
        splits=tuple(splits),
        classes=tuple(classes),
    )


def _synthetic_config(image_shape, num_classes, num_train, num_test, seed):
    from cnn.data import builders

    shape = tuple(int(v) for v in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise DataError(f"synthetic: image_shape={image_shape!r}; expected (height, width, channels), all positive")
    if int(num_classes) < 2 or min(int(num_train), int(num_test)) < 1:
        raise DataError(
            f"synthetic: num_classes={num_classes}, num_train={num_train}, num_test={num_test}; expected >= 2, >= 1, >= 1"
        )
    name = f"{'x'.join(map(str, shape))}-{num_classes}classes-{num_train}-{num_test}-seed{seed}"
    return builders.SyntheticConfig(
        name=name, image_shape=shape, num_classes=int(num_classes), num_train=int(num_train), num_test=int(num_test),
        seed=int(seed),
    )


def make_builder(name: str, *, data_dir: pathlib.Path, prepared_dir: pathlib.Path, download: bool, options: dict):
    """The tfds builder for a catalog name; its ``data_path`` is where the prepared files live."""
    from cnn.data import builders

    options = resolve_options(name, options)
    builder_cls = getattr(builders, entry(name).builder)
    common = {"data_dir": os.fspath(prepared_dir), "file_format": "array_record"}
    if name == "image_folder":
        folder = pathlib.Path(options["folder"] or data_dir / "image_folder").expanduser().absolute()
        return builder_cls(config=_image_folder_config(folder, options["image_size"], options["channels"]), **common)
    if name == "synthetic":
        return builder_cls(config=_synthetic_config(**options), **common)
    return builder_cls(raw_dir=data_dir / name, download=download, **common)
