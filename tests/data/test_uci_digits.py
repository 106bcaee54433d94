"""``uci_digits``: scikit-learn's 1,797 UCI digits prepared offline as 28x28 MNIST-like images, with a fixed
stratified split; the images are the 8x8 scans resized (checked against a separate numpy bilinear resize)."""

import numpy as np
import pytest

import cnn.data
from cnn.data import uci_digits

sklearn_datasets = pytest.importorskip("sklearn.datasets", reason="uci_digits comes with scikit-learn")

TRAIN_COUNTS = [119, 122, 118, 122, 121, 122, 121, 120, 116, 120]  # docs/data.md
TEST_COUNTS = [59, 60, 59, 61, 60, 60, 60, 59, 58, 60]


def _bilinear(image, size):
    """Half-pixel-centred bilinear with clamped edges, one axis at a time (``np.interp`` clamps)."""
    positions = (np.arange(size) + 0.5) * image.shape[0] / size - 0.5
    grid = np.arange(image.shape[0])
    rows = np.stack([np.interp(positions, grid, column) for column in image.T], axis=1)
    return np.stack([np.interp(positions, grid, row) for row in rows])


def _expected(digit):
    """The 28x28 image of one 8x8 digit, written independently of ``place_like_mnist``."""
    box = _bilinear(digit * 255.0 / 16.0, 20)
    y, x = np.indices(box.shape)
    top = int(np.clip(np.round(13.5 - (box * y).sum() / box.sum()), 0, 8))
    left = int(np.clip(np.round(13.5 - (box * x).sum() / box.sum()), 0, 8))
    field = np.zeros((28, 28))
    field[top:top + 20, left:left + 20] = box
    return field


def test_prepared_splits_are_the_sklearn_digits_resized_and_stratified():
    digits = sklearn_datasets.load_digits()
    train, test = cnn.data.source("uci_digits", "train"), cnn.data.source("uci_digits", "test")
    assert (len(train), len(test)) == (1201, 596) and train.image_shape == (28, 28, 1)
    assert train.num_classes == 10 and train.class_names == [str(d) for d in range(10)]
    read = {name: src.__getitems__(range(len(src))) for name, src in (("train", train), ("test", test))}
    labels = {name: np.asarray([e["label"] for e in examples]) for name, examples in read.items()}
    assert np.bincount(labels["train"]).tolist() == TRAIN_COUNTS
    assert np.bincount(labels["test"]).tolist() == TEST_COUNTS
    assert train.metadata["source"]["digits_sha256"] == uci_digits.source_fingerprint()["digits_sha256"]

    train_index, test_index = uci_digits.split_indices(digits.target)
    assert np.intersect1d(train_index, test_index).size == 0 and len(train_index) + len(test_index) == 1797
    np.testing.assert_array_equal(labels["test"], digits.target[test_index])  # sklearn's order within the split
    for name, index in (("train", train_index), ("test", test_index)):
        for position in (0, 1, 57, len(index) - 1):
            image = read[name][position]["image"][..., 0].astype(np.float64)
            np.testing.assert_allclose(image, _expected(digits.images[index[position]]), atol=1.0)
    mean = np.mean([e["image"] for e in read["train"]])
    np.testing.assert_allclose(train.mean, [mean], rtol=1e-5)  # statistics of the training split


def test_the_split_and_images_are_deterministic():
    first, second = uci_digits.load(), uci_digits.load()
    for split in ("train", "test"):
        np.testing.assert_array_equal(first[split][0], second[split][0])
        np.testing.assert_array_equal(first[split][1], second[split][1])
    labels = sklearn_datasets.load_digits().target
    other = uci_digits.split_indices(labels, seed=1)[1]
    assert not np.array_equal(other, uci_digits.split_indices(labels)[1])  # the seed matters, and it is fixed


def test_a_digit_is_centred_by_mass_in_the_field():
    digit = np.zeros((8, 8))
    digit[0:3, 0:2] = 16  # a blob in the top-left corner: moved towards the centre, as far as the field allows
    image = uci_digits.place_like_mnist(digit).astype(np.float64)
    assert image.shape == (28, 28) and image[:, 20:].sum() == 0 and image[20:, :].sum() == 0 and image.max() == 255
    centred = uci_digits.place_like_mnist(np.pad(np.full((4, 4), 16.0), 2))  # a centred square stays centred
    y, x = np.indices(centred.shape)
    assert abs((centred * y).sum() / centred.sum() - 13.5) <= 0.5 and abs((centred * x).sum() / centred.sum() - 13.5) <= 0.5
