"""The real MNIST files from $CNN_DATA_DIR (e.g. ../shared/datasets), prepared once per session into tmp."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

import cnn.data
from cnn.data import raw_files

MNIST_FILES = list(raw_files.RAW_FILES["mnist"])
TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _data_dir() -> pathlib.Path:
    if not os.environ.get("CNN_DATA_DIR"):
        pytest.skip("CNN_DATA_DIR is not set; point it at the folder holding mnist/ (e.g. ../shared/datasets)")
    folder = pathlib.Path(os.environ["CNN_DATA_DIR"])
    missing = [name for name in MNIST_FILES if not (folder / "mnist" / name).is_file()]
    if missing:
        pytest.skip(f"CNN_DATA_DIR={folder} lacks mnist/{', mnist/'.join(missing)}")
    return folder


@pytest.fixture(scope="session")
def mnist_prepared(tmp_path_factory):
    """(data_dir, prepared_dir) with MNIST prepared from the real files (a few seconds, once)."""
    data_dir = _data_dir()
    prepared_dir = tmp_path_factory.mktemp("mnist_prepared")
    cnn.data.source("mnist", "test", data_dir=data_dir, prepared_dir=prepared_dir, download=False)
    return data_dir, prepared_dir


def _labels(source) -> np.ndarray:
    return np.asarray([example["label"] for example in source.__getitems__(range(len(source)))])


def test_sizes_and_class_counts(mnist_prepared):
    data_dir, prepared_dir = mnist_prepared
    train = cnn.data.source("mnist", "train", data_dir=data_dir, prepared_dir=prepared_dir)
    test = cnn.data.source("mnist", "test", data_dir=data_dir, prepared_dir=prepared_dir)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert np.bincount(_labels(train), minlength=10).tolist() == TRAIN_CLASS_COUNTS
    assert np.bincount(_labels(test), minlength=10).tolist() == TEST_CLASS_COUNTS
    assert train.image_shape == (28, 28, 1) and train.num_classes == 10


def test_first_test_labels_and_pixel_sum(mnist_prepared):
    data_dir, prepared_dir = mnist_prepared
    test = cnn.data.source("mnist", "test", data_dir=data_dir, prepared_dir=prepared_dir)
    assert [test[i]["label"] for i in range(10)] == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    examples = test.__getitems__(range(len(test)))
    assert all(e["image"].dtype == np.uint8 and e["image"].shape == (28, 28, 1) for e in examples)
    assert sum(int(e["image"].sum(dtype=np.int64)) for e in examples) == 264_923_200


def test_split_slicing_and_statistics(mnist_prepared):
    data_dir, prepared_dir = mnist_prepared
    first = cnn.data.source("mnist", "train[:90%]", data_dir=data_dir, prepared_dir=prepared_dir)
    last = cnn.data.source("mnist", "train[90%:]", data_dir=data_dir, prepared_dir=prepared_dir)
    assert (len(first), len(last)) == (54_000, 6_000)
    full = cnn.data.source("mnist", "train", data_dir=data_dir, prepared_dir=prepared_dir)
    np.testing.assert_array_equal(last[0]["image"], full[54_000]["image"])
    # Mean and std of all 47,040,000 training pixels, recorded at preparation.
    np.testing.assert_allclose(full.mean, [33.318421], atol=1e-4)
    np.testing.assert_allclose(full.std, [78.567490], atol=1e-4)


def test_prepared_once_and_reused(mnist_prepared):
    data_dir, prepared_dir = mnist_prepared
    version_dir = prepared_dir / "mnist" / "1.0.0"
    stamp = (version_dir / "dataset_info.json").stat().st_mtime_ns
    cnn.data.source("mnist", "train", data_dir=data_dir, prepared_dir=prepared_dir)
    assert (version_dir / "dataset_info.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (prepared_dir / "mnist").iterdir()) == ["1.0.0"]  # no incomplete.* left


def test_prepared_data_from_other_raw_files_is_refused(mnist_prepared, monkeypatch):
    data_dir, prepared_dir = mnist_prepared
    entries = dict(raw_files.RAW_FILES["mnist"])
    name = "t10k-labels-idx1-ubyte.gz"
    entries[name] = raw_files.RawFile(name, entries[name].urls, entries[name].size, "0" * 64)
    monkeypatch.setitem(raw_files.RAW_FILES, "mnist", entries)
    with pytest.raises(cnn.data.DataError, match="other checksums"):
        cnn.data.source("mnist", "test", data_dir=data_dir, prepared_dir=prepared_dir)
