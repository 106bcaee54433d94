"""Random-access sources: ``source(name, split)`` prepares on first use and reads with ``tfds.data_source``.

A source has ``len`` and indexing, ``source[i] -> {"image": uint8 [H, W, C], "label": int}``, plus
``__getitems__`` (one batched read; grain and the pipeline use it). It pickles as a path, so grain's
worker processes reopen it themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import tempfile
from typing import Optional, Sequence

import numpy as np

from cnn.data import catalog, raw_files
from cnn.data.paths import DataError, PathLike, ensure_writable_dir, resolve_data_dir, resolve_prepared_dir
from cnn.data.stats import channel_mean_std


class Source:
    """One split of a prepared tfds dataset (array_record), read by ``tfds.data_source``.

    Attributes: ``name``, ``split``, ``path`` (the prepared version folder), ``image_shape`` (H, W, C),
    ``num_classes``, ``class_names``, ``mean``/``std`` (float32 [C], pixel units 0..255, of the training
    split; None when the preparer did not record them).
    """

    def __init__(self, path: PathLike, split: str, *, name: str, image_key: str = "image", label_key: str = "label"):
        self.path, self.split, self.name = pathlib.Path(path), split, name
        self.image_key, self.label_key = image_key, label_key
        self._data = None
        self._parse = None  # the fast record parser, found at the first batched read (see _record_parser)
        self._open()
        features = self._info.features
        for key in (image_key, label_key):
            if key not in features:
                raise DataError(f"{name}: no feature {key!r}; features: {', '.join(features.keys())}")
        self.image_shape = tuple(features[image_key].shape)
        self.num_classes = features[label_key].num_classes
        self.class_names = list(features[label_key].names)
        metadata_path = self.path / "metadata.json"
        metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
        self.metadata = metadata
        self.mean = np.asarray(metadata["channel_mean"], np.float32) if "channel_mean" in metadata else None
        self.std = np.asarray(metadata["channel_std"], np.float32) if "channel_std" in metadata else None

    def _open(self) -> None:
        import tensorflow_datasets as tfds

        check_record_sizes(self.path, self.name)
        builder = tfds.builder_from_directory(os.fspath(self.path))
        self._info = builder.info
        try:
            self._data = builder.as_data_source(split=self.split)
        except (ValueError, KeyError, AssertionError) as error:
            available = ", ".join(sorted(builder.info.splits.keys()))
            raise DataError(
                f"{self.name}: bad split {self.split!r} ({error}); splits: {available}; slicing as in tfds, "
                f"e.g. 'train[:90%]', 'train[-5000:]', 'train+test'"
            ) from None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_data"] = state["_info"] = state["_parse"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    @property
    def _source(self):
        if self._data is None:  # unpickled in a worker process
            self._open()
        return self._data

    def __len__(self) -> int:
        return len(self._source)

    def _example(self, record: dict) -> dict:
        return {"image": np.asarray(record[self.image_key]), "label": int(record[self.label_key])}

    def __getitem__(self, index: int) -> dict:
        length = len(self)
        if not -length <= index < length:
            raise IndexError(f"{self.name}[{self.split}] index {index} out of range for {length} examples")
        with self._damage_is_named():
            return self._example(self._source[index % length])

    def __getitems__(self, indices: Sequence[int]) -> list:
        if not len(indices):
            return []
        with self._damage_is_named():
            if self._parse is None:
                self._parse = self._record_parser()
            if self._parse:
                return [self._parse(record) for record in self._source.data_source.__getitems__(list(indices))]
            return [self._example(record) for record in self._source.__getitems__(list(indices))]

    def _record_parser(self):
        """A parser of this split's serialized records straight from their ``tf.train.Example`` protobuf, for
        splits whose image is a raw uint8 tensor and whose label an integer (the builders of ``cnn.data``
        write them so): about 4 us an example against 22 us through tfds's generic decoding. It is used only
        if it reads the split's first record exactly as tfds does; False otherwise (images tfds encodes as
        PNG, other layouts), and then tfds decodes."""
        try:
            from tensorflow_datasets.core import example_parser

            example_type = example_parser.tf_example_pb2.Example
            first = self._source.data_source.__getitems__([0])[0]
        except Exception:  # noqa: BLE001 - another tfds layout: its own decoding is always right
            return False
        shape, image_key, label_key = self.image_shape, self.image_key, self.label_key

        def parse(record: bytes) -> dict:
            feature = example_type.FromString(record).features.feature
            image = np.frombuffer(feature[image_key].bytes_list.value[0], np.uint8).reshape(shape)
            return {"image": image, "label": int(feature[label_key].int64_list.value[0])}

        try:
            fast, slow = parse(first), self._example(self._source[0])
        except Exception:  # noqa: BLE001
            return False
        if fast["image"].dtype != slow["image"].dtype or not np.array_equal(fast["image"], slow["image"]) \
                or fast["label"] != slow["label"]:
            return False
        return parse

    @contextlib.contextmanager
    def _damage_is_named(self):
        """A damaged array_record file (riegeli's RuntimeError) becomes a DataError naming the folder."""
        try:
            yield
        except RuntimeError as error:
            if "riegeli" not in str(error).lower() and "arrayrecord" not in str(error).lower():
                raise
            raise DataError(damaged(self.path, self.name, str(error).splitlines()[0])) from None

    def __repr__(self) -> str:
        return (
            f"Source({self.name!r}, split={self.split!r}, examples={len(self)}, image_shape={self.image_shape}, "
            f"path={str(self.path)!r})"
        )


class ArraySource:
    """An in-memory source over arrays: images uint8 [N, H, W, C], labels int [N]. Same interface as Source."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, name: str = "arrays", num_classes: Optional[int] = None,
                 class_names: Optional[Sequence[str]] = None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images: {images.dtype} {images.shape}; expected uint8 [N, H, W, C]")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels shape {labels.shape}; expected ({len(images)},) to match the images")
        self.images, self.labels, self.name, self.split = images, labels.astype(np.int64), name, "all"
        self.image_shape = tuple(images.shape[1:])
        self.num_classes = int(num_classes if num_classes is not None else labels.max(initial=-1) + 1)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        data_mean, data_std = channel_mean_std(images) if mean is None or std is None else (mean, std)
        self.mean = np.asarray(mean if mean is not None else data_mean, np.float32)
        self.std = np.asarray(std if std is not None else data_std, np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": int(self.labels[index])}

    def __getitems__(self, indices: Sequence[int]) -> list:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return f"ArraySource({self.name!r}, examples={len(self)}, image_shape={self.image_shape})"


def in_memory(source, batch_size: int = 4096) -> ArraySource:
    """The whole source read into RAM as an ArraySource (same examples, order, statistics and class count).

    For splits that fit in memory (MNIST 47 MB, CIFAR 150 MB): reading then costs a copy instead of a
    record lookup and decode, so one process feeds far more images per second.
    """
    images = np.zeros((len(source), *source.image_shape), np.uint8)
    labels = np.zeros((len(source),), np.int64)
    for start in range(0, len(source), batch_size):
        for offset, example in enumerate(source.__getitems__(range(start, min(start + batch_size, len(source))))):
            images[start + offset], labels[start + offset] = example["image"], example["label"]
    return ArraySource(images, labels, name=f"{source.name}[{source.split}]", num_classes=source.num_classes,
                       class_names=source.class_names, mean=source.mean, std=source.std)


def _check_provenance(name: str, path: pathlib.Path) -> None:
    """A prepared dataset must come from the raw files the registry accepts now (tests register fakes)."""
    if name not in raw_files.RAW_FILES:
        return
    metadata_path = path / "metadata.json"
    recorded = json.loads(metadata_path.read_text()).get("raw_files") if metadata_path.exists() else None
    expected = {file.name: file.sha256 for file in raw_files.RAW_FILES[name].values()}
    if recorded != expected:
        raise DataError(
            f"{name}: the prepared data in {path} was made from raw files with other checksums than the "
            f"registered ones; delete that folder (it is prepared again) or use another prepared_dir"
        )


RECORD_SIZES = "array_record_sizes.json"  # written beside the prepared files: their sizes when complete


def damaged(path: pathlib.Path, name: str, detail: str) -> str:
    return (f"{name}: the prepared data in {path} is damaged ({detail}); delete that folder and run again: it is "
            f"prepared anew from the raw files")


def _record_sizes(path: pathlib.Path) -> dict:
    return {p.name: p.stat().st_size for p in sorted(path.glob("*.array_record*"))}


def check_record_sizes(path: pathlib.Path, name: str) -> None:
    """A DataError when a prepared file is missing or has another size than when it was written."""
    recorded_path = path / RECORD_SIZES
    if not recorded_path.exists():  # prepared by an older version: nothing to compare with
        return
    recorded, found = json.loads(recorded_path.read_text()), _record_sizes(path)
    for file_name, size in recorded.items():
        if found.get(file_name) != size:
            now = "missing" if file_name not in found else f"{found[file_name]:,} bytes"
            raise DataError(damaged(path, name, f"{file_name} is {now}, written as {size:,} bytes"))


def prepare(builder) -> pathlib.Path:
    """Runs ``builder.download_and_prepare`` unless done; returns the prepared version folder.

    tfds writes into ``<version>.incomplete<random>`` and renames it when everything is written; on any
    error that folder is removed, so a failed preparation leaves nothing that could be picked up later.
    """
    data_path = pathlib.Path(os.fspath(builder.data_path))
    if (data_path / "dataset_info.json").exists():
        return data_path
    root = ensure_writable_dir(pathlib.Path(os.fspath(builder.data_dir_root)), f"the prepared {builder.name} files")
    with tempfile.TemporaryDirectory(dir=root, prefix=".downloads-") as download_dir:
        try:
            builder.download_and_prepare(download_dir=download_dir)
        except OSError as error:
            if not (data_path / "dataset_info.json").exists():  # not a lost race with another preparer
                raise DataError(f"{builder.name}: preparing {data_path} failed: {error}") from error
    if not (data_path / RECORD_SIZES).exists():
        tmp = data_path / (RECORD_SIZES + ".tmp")
        tmp.write_text(json.dumps(_record_sizes(data_path), indent=1) + "\n")
        os.replace(tmp, data_path / RECORD_SIZES)
    return data_path


def _catalog_source(catalog_name: str, split: str, prepared_dir: pathlib.Path, image_key, label_key) -> Source:
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(catalog_name, data_dir=os.fspath(prepared_dir))
    except Exception as error:  # DatasetNotFoundError and friends
        raise DataError(f"{catalog.TFDS_PREFIX}{catalog_name}: {error}".splitlines()[0]) from error
    path = pathlib.Path(os.fspath(builder.data_path))
    if not (path / "dataset_info.json").exists():
        raise DataError(
            f"{catalog.TFDS_PREFIX}{catalog_name} is not prepared in {prepared_dir}; prepare it where TensorFlow is "
            f"installed: tfds build {catalog_name} --file_format=array_record --data_dir={prepared_dir}"
        )
    supervised = builder.info.supervised_keys or ("image", "label")
    return Source(path, split, name=catalog_name, image_key=image_key or supervised[0], label_key=label_key or supervised[1])


def source(
    name: str,
    split: str,
    *,
    data_dir: Optional[PathLike] = None,
    prepared_dir: Optional[PathLike] = None,
    download: bool = True,
    label_key: Optional[str] = None,
    **options,
):
    """A random-access source of one split; prepares the dataset on first use.

    Args:
      name: one of ``cnn.data.names()`` or ``"tfds:<catalog name>"`` (already prepared in array_record).
      split: a tfds split, slicing included: ``"train"``, ``"train[:90%]"``, ``"train[-5000:]"``, ``"test"``.
      data_dir: raw files folder (``<data_dir>/<name>/<official file>``); default $CNN_DATA_DIR, else the cache.
      prepared_dir: where array_record files are written; default $CNN_PREPARED_DIR, else the cache.
      download: fetch absent raw files from the official address when online.
      label_key: which label feature to serve as "label" (e.g. ``"coarse_label"`` for cifar100).
      **options: dataset options (image_folder: folder, image_size, channels; synthetic: image_shape,
        num_classes, num_train, num_test, seed).

    Without tensorflow-datasets installed, the IDX datasets and ``synthetic`` are read straight into memory
    (``cnn.data.without_tfds``) and the others are a DataError saying so.
    """
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:  # a machine with JAX alone: the datasets we can read ourselves, in memory
        from cnn.data import without_tfds

        catalog.entry(name)
        return without_tfds.source(name, split, data_dir=data_dir, **options)
    prepared_root = resolve_prepared_dir(prepared_dir)
    if name.startswith(catalog.TFDS_PREFIX):
        if options:
            raise DataError(f"{name} takes no options (got {', '.join(sorted(options))})")
        return _catalog_source(name[len(catalog.TFDS_PREFIX):], split, prepared_root, None, label_key)
    catalog.entry(name)  # unknown names fail before anything is touched
    builder = catalog.make_builder(
        name, data_dir=resolve_data_dir(data_dir), prepared_dir=prepared_root, download=download, options=options
    )
    path = prepare(builder)
    _check_provenance(name, path)
    return Source(path, split, name=name, label_key=label_key or "label")
