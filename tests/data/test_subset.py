"""``cnn.data.per_class``: a fixed, seeded, stratified subset of a split (few-shot training)."""

import numpy as np
import pytest

import cnn.data


def split(counts=(7, 5, 9)):
    """An ArraySource whose example ``i`` has every pixel equal to ``i`` (so an example names itself)."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    labels = np.random.default_rng(0).permutation(labels)
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 1), np.uint8)
    return cnn.data.ArraySource(images, labels, name="toy", num_classes=len(counts))


def test_count_examples_of_every_class_in_the_splits_order():
    source = split()
    subset = cnn.data.per_class(source, 4, seed=0)
    labels = np.asarray([subset[i]["label"] for i in range(len(subset))])
    assert len(subset) == 12 and np.bincount(labels).tolist() == [4, 4, 4]
    originals = [int(example["image"][0, 0, 0]) for example in subset.__getitems__(range(len(subset)))]
    assert originals == sorted(originals)  # the split's order
    assert all(source.labels[i] == label for i, label in zip(originals, labels))  # each example is itself
    assert subset.image_shape == source.image_shape and subset.num_classes == 3
    np.testing.assert_array_equal(subset.mean, source.mean)  # the whole split's statistics


def test_fixed_by_its_seed_and_nested():
    source = split()
    small, large = cnn.data.per_class(source, 2, seed=3), cnn.data.per_class(source, 5, seed=3)
    assert set(small.indices) <= set(large.indices)
    np.testing.assert_array_equal(small.indices, cnn.data.per_class(source, 2, seed=3).indices)
    others = [cnn.data.per_class(source, 2, seed=s).indices for s in range(4)]
    assert len({tuple(o) for o in others}) > 1  # the seed chooses


def test_more_than_the_smallest_class_is_refused():
    with pytest.raises(ValueError, match=r"^data.train_per_class=6: class 1 has only 5 examples; expected at most 5 per "
                                         r"class \(0 keeps the whole split\)$"):
        cnn.data.per_class(split(), 6, what="data.train_per_class")
