"""Each builder on a few examples written in the official format: prepared, then read back exactly."""

from __future__ import annotations

import numpy as np
import pytest

import cnn.data
from cnn.data import synthetic


def _read_all(source):
    examples = source.__getitems__(range(len(source)))
    return np.stack([e["image"] for e in examples]), np.asarray([e["label"] for e in examples])


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "kmnist"])
def test_idx_datasets(dataset, tmp_path, fake_files, register_raw_files):
    splits = {
        "train": (fake_files.random_images(1, 7, (28, 28)), np.arange(7, dtype=np.uint8) % 10),
        "test": (fake_files.random_images(2, 3, (28, 28)), np.asarray([9, 0, 4], np.uint8)),
    }
    fake_files.write_idx_dataset(tmp_path / "raw" / dataset, splits)
    register_raw_files(dataset, tmp_path / "raw" / dataset)
    for split, (images, labels) in splits.items():
        source = cnn.data.source(dataset, split, data_dir=tmp_path / "raw", download=False)
        read_images, read_labels = _read_all(source)
        np.testing.assert_array_equal(read_images, images[..., None])
        np.testing.assert_array_equal(read_labels, labels)
    assert source.image_shape == (28, 28, 1) and source.num_classes == 10
    expected_mean = splits["train"][0].mean()
    np.testing.assert_allclose(source.mean, [expected_mean], rtol=1e-6)  # statistics of the training split


def test_cifar10(tmp_path, fake_files, register_raw_files):
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    train = (fake_files.random_images(3, 12, (32, 32, 3)), np.arange(12, dtype=np.uint8) % 10)
    test = (fake_files.random_images(4, 4, (32, 32, 3)), np.asarray([3, 8, 8, 0], np.uint8))
    fake_files.write_cifar10(tmp_path / "raw" / "cifar10", train, test, names)
    register_raw_files("cifar10", tmp_path / "raw" / "cifar10")
    for split, (images, labels) in {"train": train, "test": test}.items():
        source = cnn.data.source("cifar10", split, data_dir=tmp_path / "raw", download=False)
        read_images, read_labels = _read_all(source)
        np.testing.assert_array_equal(read_images, images)
        np.testing.assert_array_equal(read_labels, labels)
    assert source.class_names == names


def test_cifar10_channel_major_layout(tmp_path, fake_files, register_raw_files):
    """One record with R=1, G=2, B=3 everywhere except pixel (0, 1) -> the layout is decoded, not just round-tripped."""
    record = np.zeros(1 + 3072, np.uint8)
    record[0] = 5
    record[1:1025], record[1025:2049], record[2049:] = 1, 2, 3
    record[1 + 1] = 200  # red plane, row 0, column 1
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": record.tobytes() for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = record.tobytes()
    members["cifar-10-batches-bin/batches.meta.txt"] = "\n".join("abcdefghij").encode()
    fake_files.write_tar_gz(tmp_path / "raw" / "cifar10" / "cifar-10-binary.tar.gz", members)
    register_raw_files("cifar10", tmp_path / "raw" / "cifar10")
    example = cnn.data.source("cifar10", "test", data_dir=tmp_path / "raw", download=False)[0]
    assert example["label"] == 5
    assert example["image"][0, 1].tolist() == [200, 2, 3] and example["image"][5, 5].tolist() == [1, 2, 3]


def test_cifar100_fine_and_coarse_labels(tmp_path, fake_files, register_raw_files):
    fine_names = [f"fine{i}" for i in range(100)]
    coarse_names = [f"coarse{i}" for i in range(20)]
    train = (
        fake_files.random_images(5, 6, (32, 32, 3)),
        np.asarray([0, 99, 50, 1, 2, 3], np.uint8),  # fine
        np.asarray([0, 19, 10, 1, 2, 3], np.uint8),  # coarse
    )
    test = (fake_files.random_images(6, 2, (32, 32, 3)), np.asarray([42, 7], np.uint8), np.asarray([4, 5], np.uint8))
    fake_files.write_cifar100(tmp_path / "raw" / "cifar100", train, test, fine_names, coarse_names)
    register_raw_files("cifar100", tmp_path / "raw" / "cifar100")
    fine = cnn.data.source("cifar100", "train", data_dir=tmp_path / "raw", download=False)
    coarse = cnn.data.source("cifar100", "train", data_dir=tmp_path / "raw", download=False, label_key="coarse_label")
    images, fine_labels = _read_all(fine)
    np.testing.assert_array_equal(images, train[0])
    np.testing.assert_array_equal(fine_labels, train[1])
    np.testing.assert_array_equal(_read_all(coarse)[1], train[2])
    assert fine.num_classes == 100 and coarse.num_classes == 20 and coarse.class_names[19] == "coarse19"
    test_source = cnn.data.source("cifar100", "test", data_dir=tmp_path / "raw", download=False)
    np.testing.assert_array_equal(_read_all(test_source)[1], test[1])


def test_svhn_cropped_maps_label_10_to_0(tmp_path, fake_files, register_raw_files):
    folder = tmp_path / "raw" / "svhn_cropped"
    splits = {
        "train": (fake_files.random_images(7, 5, (32, 32, 3)), np.asarray([0, 1, 9, 0, 5])),
        "test": (fake_files.random_images(8, 2, (32, 32, 3)), np.asarray([0, 3])),
        "extra": (fake_files.random_images(9, 3, (32, 32, 3)), np.asarray([7, 0, 2])),
    }
    for split, (images, labels) in splits.items():
        fake_files.write_svhn(folder, split, images, labels)
    register_raw_files("svhn_cropped", folder)
    for split, (images, labels) in splits.items():
        read_images, read_labels = _read_all(cnn.data.source("svhn_cropped", split, data_dir=tmp_path / "raw", download=False))
        np.testing.assert_array_equal(read_images, images)
        np.testing.assert_array_equal(read_labels, labels)


def test_image_folder_png_and_jpeg_resized(tmp_path, fake_files):
    from PIL import Image

    folder = tmp_path / "flowers"
    images = fake_files.random_images(10, 4, (8, 8, 3))
    fake_files.write_image(folder / "train" / "rose" / "a.png", images[0])
    fake_files.write_image(folder / "train" / "tulip" / "b.png", images[1])
    fake_files.write_image(folder / "train" / "tulip" / "c.JPEG", images[2])
    big = np.repeat(np.repeat(images[3], 2, axis=0), 2, axis=1)  # 16x16, resized back to 8x8
    fake_files.write_image(folder / "test" / "rose" / "d.png", big)
    train = cnn.data.source("image_folder", "train", folder=folder, image_size=(8, 8))
    assert len(train) == 3 and train.class_names == ["rose", "tulip"] and train.image_shape == (8, 8, 3)
    np.testing.assert_array_equal(train[0]["image"], images[0])
    np.testing.assert_array_equal(train[1]["image"], images[1])
    np.testing.assert_array_equal(train[2]["image"], np.asarray(Image.open(folder / "train" / "tulip" / "c.JPEG").convert("RGB")))
    assert [train[i]["label"] for i in range(3)] == [0, 1, 1]
    test = cnn.data.source("image_folder", "test", folder=folder, image_size=(8, 8))
    expected = np.asarray(Image.fromarray(big).resize((8, 8), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(test[0]["image"], expected)
    grey = cnn.data.source("image_folder", "train", folder=folder, image_size=(4, 4), channels=1)
    assert grey[0]["image"].shape == (4, 4, 1)
    square = cnn.data.source("image_folder", "train", folder=folder, image_size=8)  # one side: a square
    assert square.image_shape == (8, 8, 3)
    np.testing.assert_array_equal(square[0]["image"], images[0])
    for bad in ((8,), (8, 0), (8.0, 8), "8"):
        with pytest.raises(cnn.data.DataError, match=r"image_size=.*expected \(height, width\) or one side"):
            cnn.data.source("image_folder", "train", folder=folder, image_size=bad)


def test_image_folder_changes_make_a_new_dataset(tmp_path, fake_files):
    folder = tmp_path / "shapes"
    fake_files.write_image(folder / "train" / "a" / "0.png", fake_files.random_images(0, 1, (4, 4, 3))[0])
    assert len(cnn.data.source("image_folder", "train", folder=folder, image_size=(4, 4))) == 1
    fake_files.write_image(folder / "train" / "b" / "1.png", fake_files.random_images(1, 1, (4, 4, 3))[0])
    changed = cnn.data.source("image_folder", "train", folder=folder, image_size=(4, 4))
    assert len(changed) == 2 and changed.num_classes == 2


def test_synthetic_matches_in_memory_arrays_and_is_learnable():
    options = dict(image_shape=(6, 5, 2), num_classes=3, num_train=40, num_test=9, seed=3)
    train = cnn.data.source("synthetic", "train", **options)
    images, labels = _read_all(train)
    expected_images, expected_labels = synthetic.arrays("train", num_examples=40, image_shape=(6, 5, 2), num_classes=3, seed=3)
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_array_equal(labels, expected_labels)
    assert train.image_shape == (6, 5, 2) and train.num_classes == 3
    assert len(cnn.data.source("synthetic", "test", **options)) == 9
    # Learnable: the nearest class mean (from train) classifies a bigger held-out sample well above chance.
    big_images, big_labels = synthetic.arrays("train", num_examples=600, image_shape=(6, 5, 2), num_classes=3, seed=3)
    test_images, test_labels = synthetic.arrays("test", num_examples=300, image_shape=(6, 5, 2), num_classes=3, seed=3)
    means = np.stack([big_images[big_labels == c].mean(0) for c in range(3)]).reshape(3, -1)
    distances = ((test_images.reshape(300, 1, -1).astype(np.float64) - means[None]) ** 2).sum(-1)
    assert (distances.argmin(1) == test_labels).mean() > 0.9


def test_source_pickles_as_a_path_and_reopens(tmp_path, fake_files):
    """grain's worker processes receive the source pickled: it must not carry open files, and must reopen."""
    import pickle

    folder = tmp_path / "my photos"  # spaces in the folder name are fine
    fake_files.write_image(folder / "train" / "x" / "0.png", fake_files.random_images(0, 1, (4, 4, 3))[0])
    source = cnn.data.source("image_folder", "train[:1]", folder=folder, image_size=(4, 4))
    payload = pickle.dumps(source)
    assert len(payload) < 4096
    copy = pickle.loads(payload)
    np.testing.assert_array_equal(copy[0]["image"], source[0]["image"])
    assert copy.split == "train[:1]" and copy.mean is not None and len(copy) == 1


def test_in_memory_copy_is_the_same_source():
    source = cnn.data.source("synthetic", "train[2:]", image_shape=(5, 5, 3), num_classes=4, num_train=30, num_test=2)
    memory = cnn.data.in_memory(source, batch_size=7)
    assert len(memory) == 28 and memory.num_classes == 4 and memory.image_shape == (5, 5, 3)
    np.testing.assert_array_equal(memory.images, _read_all(source)[0])
    np.testing.assert_array_equal(memory.labels, _read_all(source)[1])
    np.testing.assert_array_equal(memory.mean, source.mean)  # the training split's statistics, not recomputed
    assert memory.class_names == source.class_names
