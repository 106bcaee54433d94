"""Fixtures of the comparison tests: isolated caches, tiny comparison configs, PNG checks, official-format files."""

from __future__ import annotations

import io
import pathlib
import struct
import tarfile

import ml_collections
import numpy as np
import pytest

from cnn.data import raw_files
from experiments.configs import common


@pytest.fixture(autouse=True)
def isolated_caches(tmp_path_factory, monkeypatch):
    """One prepared-data folder for the module's tests (synthetic data is prepared once), no network."""
    prepared = tmp_path_factory.getbasetemp() / "compare-prepared"
    monkeypatch.setenv("CNN_PREPARED_DIR", str(prepared))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "compare-cache"))
    monkeypatch.setattr(raw_files, "_reachable", lambda url, timeout=3.0: False)


def tiny_comparison(seeds=(0, 1), steps=4) -> ml_collections.ConfigDict:
    """simple_cnn (a few channels) on 12x12 synthetic data, ``steps`` steps of batch 8, per seed."""
    base = common.base(model="simple_cnn", dataset="synthetic", batch_size=8, epochs=1, learning_rate=1e-3, optimizer="adam")
    common.smoke(base, image_shape=(12, 12, 1))
    base.training.steps = steps
    base.training.eval_every_steps = steps
    base.training.checkpoint_every_steps = 2
    config = ml_collections.ConfigDict()
    config.title = "tiny"
    config.base = base
    config.runs = [dict(name="tiny_cnn", model="simple_cnn", recipe="adam",
                        overrides={"model.overrides.widths": (4, 8), "model.overrides.hidden": 16})]
    config.seeds = tuple(seeds)
    config.plots = ml_collections.ConfigDict(dict(feature_layer="", images=2, confusion_limit=0))
    return config


def interruptible(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Logs every step and checkpoints only at the end (or when stopped), so a stop lands mid-run."""
    config.base.training.log_every_steps = 1
    config.base.training.checkpoint_every_steps = 100000
    config.base.training.eval_every_steps = 100000
    return config


@pytest.fixture(name="interruptible")
def interruptible_fixture():
    return interruptible


@pytest.fixture
def comparison():
    """``comparison(seeds=(0, 1), steps=4)``: a tiny comparison config."""
    return tiny_comparison


def png_size(path: pathlib.Path) -> tuple:
    """(width, height) of a PNG, after checking its signature and that it is not trivially small."""
    data = pathlib.Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert len(data) > 2000, f"{path} has only {len(data)} bytes"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 100 and height >= 100, f"{path} is {width}x{height}"
    return width, height


@pytest.fixture
def assert_png():
    return png_size


def _cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    pixels = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return np.concatenate([labels.astype(np.uint8)[:, None], pixels], axis=1).tobytes()


@pytest.fixture
def cifar10_files(monkeypatch):
    """``write(data_dir)``: a cifar-10-binary.tar.gz in the official layout (tiny), accepted as the official file."""

    def write(data_dir: pathlib.Path, train_count: int = 40, test_count: int = 20) -> pathlib.Path:
        rng = np.random.default_rng(0)
        folder = pathlib.Path(data_dir) / "cifar10"
        folder.mkdir(parents=True, exist_ok=True)
        members = {}
        images = rng.integers(0, 256, (train_count, 32, 32, 3), dtype=np.uint8)
        labels = np.arange(train_count) % 10
        for i, chunk in enumerate(np.array_split(np.arange(train_count), 5)):
            members[f"cifar-10-batches-bin/data_batch_{i + 1}.bin"] = _cifar_records(images[chunk], labels[chunk])
        test_images = rng.integers(0, 256, (test_count, 32, 32, 3), dtype=np.uint8)
        members["cifar-10-batches-bin/test_batch.bin"] = _cifar_records(test_images, np.arange(test_count) % 10)
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        members["cifar-10-batches-bin/batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
        path = folder / "cifar-10-binary.tar.gz"
        with tarfile.open(path, "w:gz") as archive:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        entries = dict(raw_files.RAW_FILES["cifar10"])
        official = entries[path.name]
        entries[path.name] = raw_files.RawFile(path.name, official.urls, path.stat().st_size, raw_files.file_sha256(path))
        monkeypatch.setitem(raw_files.RAW_FILES, "cifar10", entries)
        return path

    return write


@pytest.fixture
def imagenet_folder():
    """``write(folder)``: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG, as ImageNet's folders are laid out (tiny)."""

    def write(folder: pathlib.Path, classes=("n01440764", "n01443537", "n01484850"), per_class=(4, 2)) -> pathlib.Path:
        from PIL import Image

        rng = np.random.default_rng(0)
        for split, count in zip(("train", "val"), per_class):
            for wnid in classes:
                (folder / split / wnid).mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / split / wnid / f"{wnid}_{i}.JPEG", format="JPEG")
        return folder

    return write
