"""Bad input: a clear one-line error, and no half-prepared dataset left behind to be picked up later."""

from __future__ import annotations

import gzip
import pathlib

import numpy as np
import pytest

import cnn.data
from cnn.data import raw_files


def _write_mnist(fake_files, folder: pathlib.Path) -> dict:
    splits = {
        "train": (fake_files.random_images(1, 5, (28, 28)), np.arange(5, dtype=np.uint8)),
        "test": (fake_files.random_images(2, 2, (28, 28)), np.asarray([1, 2], np.uint8)),
    }
    fake_files.write_idx_dataset(folder, splits)
    return splits


def _prepared(tmp_path) -> pathlib.Path:
    return tmp_path / "prepared"


def test_wrong_checksum_then_fixed_file(tmp_path, fake_files, register_raw_files, leftovers):
    folder = tmp_path / "raw" / "mnist"
    _write_mnist(fake_files, folder)
    register_raw_files("mnist", folder)
    path = folder / "t10k-labels-idx1-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))  # same size, other bytes
    with pytest.raises(cnn.data.DataError, match=r"t10k-labels-idx1-ubyte.gz has sha256 [0-9a-f]{64}, expected") as error:
        cnn.data.source("mnist", "test", data_dir=tmp_path / "raw", download=False)
    assert "\n" not in str(error.value) and raw_files.RAW_FILES["mnist"][path.name].sha256 in str(error.value)
    assert leftovers(_prepared(tmp_path)) == []
    path.write_bytes(good)
    fixed = cnn.data.source("mnist", "test", data_dir=tmp_path / "raw", download=False)
    assert [fixed[0]["label"], fixed[1]["label"]] == [1, 2]


def test_wrong_size_is_reported_before_hashing(tmp_path, fake_files, register_raw_files, leftovers):
    folder = tmp_path / "raw" / "mnist"
    _write_mnist(fake_files, folder)
    register_raw_files("mnist", folder)
    with open(folder / "train-images-idx3-ubyte.gz", "ab") as stream:
        stream.write(b"extra")
    with pytest.raises(cnn.data.DataError, match=r"train-images-idx3-ubyte.gz has [\d,]+ bytes, expected"):
        cnn.data.source("mnist", "train", data_dir=tmp_path / "raw", download=False)
    assert leftovers(_prepared(tmp_path)) == []


def test_truncated_gzip_with_matching_checksum(tmp_path, fake_files, register_raw_files, leftovers):
    """Even a registered (checksum-matching) truncated file fails cleanly while parsing, leaving nothing."""
    folder = tmp_path / "raw" / "mnist"
    _write_mnist(fake_files, folder)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    register_raw_files("mnist", folder)
    for _ in range(2):  # the second call must not find anything half-prepared by the first
        with pytest.raises(cnn.data.DataError, match="train-images-idx3-ubyte.gz: not a readable gzip file"):
            cnn.data.source("mnist", "train", data_dir=tmp_path / "raw", download=False)
        assert leftovers(_prepared(tmp_path)) == []


def test_idx_with_too_few_bytes(tmp_path, fake_files, register_raw_files):
    folder = tmp_path / "raw" / "kmnist"
    _write_mnist(fake_files, folder)
    header_and_short_data = np.asarray([2051, 5, 28, 28], ">u4").tobytes() + bytes(100)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header_and_short_data))
    register_raw_files("kmnist", folder)
    with pytest.raises(cnn.data.DataError, match=r"100 data bytes, expected 3920"):
        cnn.data.source("kmnist", "train", data_dir=tmp_path / "raw", download=False)


def test_missing_file_names_file_folder_and_address(tmp_path, fake_files, register_raw_files, leftovers):
    folder = tmp_path / "raw" / "fashion_mnist"
    _write_mnist(fake_files, folder)
    register_raw_files("fashion_mnist", folder)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    official = raw_files.RAW_FILES["fashion_mnist"]["t10k-images-idx3-ubyte.gz"].urls[0]
    for download in (False, True):  # True: the network is unreachable in tests (conftest)
        with pytest.raises(cnn.data.DataError) as error:
            cnn.data.source("fashion_mnist", "train", data_dir=tmp_path / "raw", download=download)
        message = str(error.value)
        assert "\n" not in message and "missing t10k-images-idx3-ubyte.gz" in message
        assert f"{folder}/" in message and official in message
        assert ("offline" in message) == download
    assert leftovers(_prepared(tmp_path)) == []


def test_download_through_the_manager_lands_verified_under_the_official_name(tmp_path, monkeypatch):
    payload = tmp_path / "downloaded.bin"
    payload.write_bytes(b"official bytes")
    size, sha256 = payload.stat().st_size, raw_files.file_sha256(payload)
    expected = raw_files.RawFile("data.bin", ("https://example.org/data.bin",), size, sha256)
    monkeypatch.setitem(raw_files.RAW_FILES, "toy", {"data.bin": expected})
    monkeypatch.setattr(raw_files, "_reachable", lambda url, timeout=3.0: True)

    class Manager:  # stands in for tfds.download.DownloadManager
        def __init__(self, path):
            self.path, self.urls = path, []

        def download(self, url):
            self.urls.append(url)
            return self.path

    manager = Manager(payload)
    paths = raw_files.locate_verified("toy", tmp_path / "raw" / "toy", download_manager=manager)
    assert manager.urls == ["https://example.org/data.bin"]
    assert paths["data.bin"].read_bytes() == b"official bytes"
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(b"official bytez")
    with pytest.raises(cnn.data.DataError, match="sha256"):
        raw_files.locate_verified("toy", tmp_path / "raw2" / "toy", download_manager=Manager(corrupt))
    assert not (tmp_path / "raw2" / "toy" / "data.bin").exists()


def test_unknown_dataset_split_and_option():
    with pytest.raises(cnn.data.UnknownDatasetError, match=r"unknown dataset 'mnsit'; known: cifar10, cifar100, .*mnist"):
        cnn.data.source("mnsit", "train")
    with pytest.raises(cnn.data.DataError, match=r"mnist takes no option image_size; accepted options: none"):
        cnn.data.source("mnist", "train", image_size=(8, 8))
    with pytest.raises(cnn.data.DataError, match=r"needs the option\(s\) image_size"):
        cnn.data.source("image_folder", "train", folder="/nonexistent")
    synthetic = dict(image_shape=(4, 4, 1), num_classes=2, num_train=4, num_test=2)
    with pytest.raises(cnn.data.DataError, match=r"bad split 'validation'.*splits: test, train"):
        cnn.data.source("synthetic", "validation", **synthetic)
    with pytest.raises(cnn.data.DataError, match=r"bad split 'train\[:200%\]'"):
        cnn.data.source("synthetic", "train[:200%]", **synthetic)


def test_unreadable_image_in_folder(tmp_path, fake_files, leftovers):
    folder = tmp_path / "pets"
    fake_files.write_image(folder / "train" / "cat" / "ok.png", fake_files.random_images(0, 1, (4, 4, 3))[0])
    (folder / "train" / "dog").mkdir()
    (folder / "train" / "dog" / "broken.png").write_bytes(b"not a png at all")
    for _ in range(2):
        with pytest.raises(cnn.data.DataError, match=r"image_folder: cannot decode .*dog/broken.png"):
            cnn.data.source("image_folder", "train", folder=folder, image_size=(4, 4))
        assert leftovers(_prepared(tmp_path)) == []
    (folder / "train" / "dog" / "broken.png").unlink()
    (folder / "train" / "dog" / "notes.txt").write_text("hello")
    with pytest.raises(cnn.data.DataError, match=r"notes.txt is not a .jpg/.jpeg/.png file"):
        cnn.data.source("image_folder", "train", folder=folder, image_size=(4, 4))


def test_corrupt_cifar_archive_and_records(tmp_path, fake_files, register_raw_files, leftovers):
    folder = tmp_path / "raw" / "cifar10"
    folder.mkdir(parents=True)
    (folder / "cifar-10-binary.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    register_raw_files("cifar10", folder)
    with pytest.raises(cnn.data.DataError, match=r"cifar-10-binary.tar.gz: (not a readable .tar.gz archive|corrupt archive)"):
        cnn.data.source("cifar10", "train", data_dir=tmp_path / "raw", download=False)
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": bytes(3073) for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = bytes(3072)  # one byte short of a record
    members["cifar-10-batches-bin/batches.meta.txt"] = b"a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
    fake_files.write_tar_gz(folder / "cifar-10-binary.tar.gz", members)
    register_raw_files("cifar10", folder)
    with pytest.raises(cnn.data.DataError, match=r"3072 bytes is not a whole number of 3073-byte CIFAR records"):
        cnn.data.source("cifar10", "train", data_dir=tmp_path / "raw", download=False)
    assert leftovers(_prepared(tmp_path)) == []


def test_svhn_file_that_is_not_matlab(tmp_path, register_raw_files):
    folder = tmp_path / "raw" / "svhn_cropped"
    folder.mkdir(parents=True)
    for split in ("train", "test", "extra"):
        (folder / f"{split}_32x32.mat").write_bytes(b"MATLAB? no.")
    register_raw_files("svhn_cropped", folder)
    with pytest.raises(cnn.data.DataError, match=r"train_32x32.mat: not a readable MATLAB file"):
        cnn.data.source("svhn_cropped", "train", data_dir=tmp_path / "raw", download=False)
