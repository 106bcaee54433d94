"""Downloads go through tfds's DownloadManager (here from a local HTTP server standing in for the official host)."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest

import cnn.data
from cnn.data import raw_files

REAL_REACHABLE = raw_files._reachable


@pytest.fixture
def http_folder(tmp_path):
    """(folder, base URL): files put in ``folder`` are served at ``http://127.0.0.1:<port>/``."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_absent_files_are_downloaded_verified_and_prepared(tmp_path, fake_files, monkeypatch, http_folder):
    served, base_url = http_folder
    splits = {
        "train": (fake_files.random_images(1, 4, (28, 28)), np.asarray([3, 1, 4, 1], np.uint8)),
        "test": (fake_files.random_images(2, 2, (28, 28)), np.asarray([5, 9], np.uint8)),
    }
    fake_files.write_idx_dataset(served, splits)
    registry = {
        name: raw_files.RawFile(name, (base_url + name,), (served / name).stat().st_size, raw_files.file_sha256(served / name))
        for name in raw_files.RAW_FILES["kmnist"]
    }
    monkeypatch.setitem(raw_files.RAW_FILES, "kmnist", registry)
    monkeypatch.setattr(raw_files, "_reachable", REAL_REACHABLE)
    raw = tmp_path / "raw"
    test = cnn.data.source("kmnist", "test", data_dir=raw)  # nothing in raw/kmnist yet: downloaded
    assert [test[i]["label"] for i in range(2)] == [5, 9]
    np.testing.assert_array_equal(test[1]["image"][..., 0], splits["test"][0][1])
    assert sorted(p.name for p in (raw / "kmnist").iterdir()) == sorted(registry)  # official names, no temp files
    for name in registry:
        assert (raw / "kmnist" / name).read_bytes() == (served / name).read_bytes()
    assert not list((tmp_path / "prepared").glob(".downloads-*"))


def test_a_corrupt_download_is_not_kept(tmp_path, fake_files, monkeypatch, http_folder, leftovers):
    served, base_url = http_folder
    fake_files.write_idx_dataset(served, {
        "train": (fake_files.random_images(1, 2, (28, 28)), np.asarray([0, 1], np.uint8)),
        "test": (fake_files.random_images(2, 1, (28, 28)), np.asarray([2], np.uint8)),
    })
    registry = {
        name: raw_files.RawFile(name, (base_url + name,), (served / name).stat().st_size, raw_files.file_sha256(served / name))
        for name in raw_files.RAW_FILES["mnist"]
    }
    monkeypatch.setitem(raw_files.RAW_FILES, "mnist", registry)
    monkeypatch.setattr(raw_files, "_reachable", REAL_REACHABLE)
    shutil.copy(served / "t10k-images-idx3-ubyte.gz", served / "t10k-labels-idx1-ubyte.gz")  # served bytes now differ
    message = r"mnist: t10k-labels-idx1-ubyte.gz downloaded from http://127.0.0.1:\d+/t10k-labels-idx1-ubyte.gz has [\d,]+ bytes"
    with pytest.raises(cnn.data.DataError, match=message + r", expected [\d,]+ .*; it was not kept"):
        cnn.data.source("mnist", "test", data_dir=tmp_path / "raw")
    assert not (tmp_path / "raw" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert leftovers(tmp_path / "prepared") == []


def test_catalog_names_read_array_record_datasets_in_tfds_layout(tmp_path):
    """``tfds:<name>`` reads a catalog dataset already prepared (with TensorFlow) in array_record."""
    with pytest.raises(cnn.data.DataError, match=r"tfds:mnist is not prepared in .*; prepare it where TensorFlow is installed: "
                                                 r"tfds build mnist --file_format=array_record --data_dir="):
        cnn.data.source("tfds:mnist", "test")
    with pytest.raises(cnn.data.DataError, match=r"tfds:no_such_dataset_anywhere"):
        cnn.data.source("tfds:no_such_dataset_anywhere", "test")
    # Stand-in for a TensorFlow-prepared catalog dataset: array_record files in the catalog's folder layout.
    ours = cnn.data.source("synthetic", "test", image_shape=(28, 28, 1), num_classes=10, num_train=4, num_test=6)
    import tensorflow_datasets as tfds

    version = str(tfds.builder_cls("mnist").VERSION)
    copy = tmp_path / "prepared" / "mnist" / version
    copy.mkdir(parents=True)
    for path in ours.path.iterdir():  # files are named after the dataset: synthetic-test... -> mnist-test...
        if path.name != "array_record_sizes.json":  # our own preparer's record, which tfds does not write
            shutil.copy(path, copy / path.name.replace("synthetic-", "mnist-"))
    info = json.loads((copy / "dataset_info.json").read_text())
    (copy / "dataset_info.json").write_text(json.dumps({**info, "name": "mnist", "version": version, "configName": ""}))
    catalog = cnn.data.source("tfds:mnist", "test")
    assert len(catalog) == 6 and catalog.num_classes == 10
    np.testing.assert_array_equal(catalog[5]["image"], ours[5]["image"])
