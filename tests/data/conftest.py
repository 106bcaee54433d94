"""Fixtures for the data tests: writers of small files in each official format, and isolation.

Every test gets its own CNN_PREPARED_DIR and XDG_CACHE_HOME under tmp_path, so nothing is prepared
into (or read from) a real cache; tests that fake official files register their checksums through
``register_raw_files``, which the monkeypatch undoes after the test.
"""

from __future__ import annotations

import gzip
import io
import pathlib
import tarfile

import numpy as np
import pytest

from cnn.data import raw_files


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(raw_files, "_reachable", lambda url, timeout=3.0: False)  # tests never touch the network


@pytest.fixture
def register_raw_files(monkeypatch):
    """register(dataset, folder): accept the files now in ``folder`` as that dataset's official files."""

    def register(dataset: str, folder: pathlib.Path) -> None:
        entries = {}
        for name, official in raw_files.RAW_FILES[dataset].items():
            path = folder / name
            if path.exists():
                entries[name] = raw_files.RawFile(name, official.urls, path.stat().st_size, raw_files.file_sha256(path))
            else:
                entries[name] = official
        monkeypatch.setitem(raw_files.RAW_FILES, dataset, entries)

    return register


def random_images(seed: int, count: int, shape: tuple) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = np.asarray([magic, *array.shape], dtype=">u4").tobytes()
    return gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_idx_dataset(folder: pathlib.Path, splits: dict) -> None:
    """splits: {"train": (images [N, 28, 28], labels [N]), "test": (...)} -> the four official .gz files."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(idx_bytes(images, 2051))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(idx_bytes(labels, 2049))


def cifar_records(images: np.ndarray, *label_columns: np.ndarray) -> bytes:
    """Label byte(s) then 3072 channel-major pixel bytes per example."""
    pixels = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    labels = np.stack(label_columns, axis=1).astype(np.uint8)
    return np.concatenate([labels, pixels], axis=1).tobytes()


def write_tar_gz(path: pathlib.Path, members: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def write_cifar10(folder: pathlib.Path, train: tuple, test: tuple, class_names: list) -> None:
    train_chunks = np.array_split(np.arange(len(train[0])), 5)  # data_batch_1..5
    members = {
        f"cifar-10-batches-bin/data_batch_{i + 1}.bin": cifar_records(train[0][chunk], train[1][chunk])
        for i, chunk in enumerate(train_chunks)
    }
    members["cifar-10-batches-bin/test_batch.bin"] = cifar_records(*test)
    members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(class_names) + "\n\n").encode()
    write_tar_gz(folder / "cifar-10-binary.tar.gz", members)


def write_cifar100(folder: pathlib.Path, train: tuple, test: tuple, fine_names: list, coarse_names: list) -> None:
    """train/test: (images, fine labels, coarse labels); records hold the coarse byte first."""
    members = {
        "cifar-100-binary/train.bin": cifar_records(train[0], train[2], train[1]),
        "cifar-100-binary/test.bin": cifar_records(test[0], test[2], test[1]),
        "cifar-100-binary/fine_label_names.txt": "\n".join(fine_names).encode(),
        "cifar-100-binary/coarse_label_names.txt": "\n".join(coarse_names).encode(),
    }
    write_tar_gz(folder / "cifar-100-binary.tar.gz", members)


def write_svhn(folder: pathlib.Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """X uint8 [32, 32, 3, N] and y [N, 1] with 10 standing for the digit 0, as the official files."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    stored_labels = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
    scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": images.transpose(1, 2, 3, 0), "y": stored_labels})


def write_image(path: pathlib.Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(path)


@pytest.fixture
def fake_files():
    """The writers above, for tests that need them (``fake_files.write_cifar10(...)``)."""

    class Writers:
        pass

    writers = Writers()
    for function in (random_images, idx_bytes, write_idx_dataset, cifar_records, write_tar_gz, write_cifar10,
                     write_cifar100, write_svhn, write_image):
        setattr(writers, function.__name__, staticmethod(function))
    return writers


def leftover_files(folder: pathlib.Path) -> list:
    """Files under ``folder`` (a failed preparation must leave none)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture
def leftovers():
    return leftover_files
