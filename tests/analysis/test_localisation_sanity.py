"""The cluttered-digit generator, the pointing-game scoring and the sanity-check tools on cases worked by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import cnn.models
from cnn.analysis import localisation, sanity

INK = (6, 9, 21, 18)  # the ink box of every synthetic digit: rows 6-20, columns 9-17


def _digits(count=5):
    """Digit k is a rectangle of value 100 + k over ``INK``; its label is k."""
    digits = np.zeros((count, 28, 28), np.uint8)
    for k in range(count):
        digits[k, INK[0]:INK[2], INK[1]:INK[3]] = 100 + k
    return digits, np.arange(count)


def test_cluttered_digits_paste_the_labelled_digit_inside_its_box():
    digits, labels = _digits()
    key = jax.random.key(0)
    clean, clean_labels, boxes = (np.asarray(a) for a in localisation.cluttered_digits(
        key, digits, labels, count=16, canvas=48, fragments=0))
    assert clean.shape == (16, 48, 48, 1) and clean.dtype == np.uint8
    assert np.all(boxes[:, 2] - boxes[:, 0] == 15) and np.all(boxes[:, 3] - boxes[:, 1] == 9)
    for image, label, (top, left, bottom, right) in zip(clean[..., 0], clean_labels, boxes):
        expected = np.zeros((48, 48), np.uint8)
        expected[top:bottom, left:right] = 100 + label
        np.testing.assert_array_equal(image, expected)
    assert len({tuple(b) for b in boxes}) > 8  # positions vary

    cluttered, cluttered_labels, cluttered_boxes = (np.asarray(a) for a in localisation.cluttered_digits(
        key, digits, labels, count=16, canvas=48, fragments=3, fragment_size=7))
    np.testing.assert_array_equal(cluttered_labels, clean_labels)  # the same digits at the same places, plus clutter
    np.testing.assert_array_equal(cluttered_boxes, boxes)
    assert np.all(cluttered >= clean)
    added = np.sum((cluttered != clean)[..., 0], axis=(1, 2))
    assert np.all(added <= 3 * 7 * 7) and added.sum() > 0
    again = np.asarray(localisation.cluttered_digits(key, digits, labels, count=16, canvas=48, fragments=3, fragment_size=7)[0])
    np.testing.assert_array_equal(again, cluttered)
    with pytest.raises(ValueError, match="fragment_size=21 with margin=4 does not fit in a 28x28 digit"):
        localisation.cluttered_digits(key, digits, labels, count=2, fragment_size=21)
    with pytest.raises(ValueError, match="digits of 28x28 do not fit a canvas of 20"):
        localisation.cluttered_digits(key, digits, labels, count=2, canvas=20)


def test_pointing_game_scores_the_peak_against_the_box():
    boxes = np.array([[10, 20, 30, 40], [10, 20, 30, 40], [0, 0, 5, 5], [40, 40, 64, 64]])
    maps = np.zeros((4, 64, 64))
    maps[0, 10, 39] = 1.0  # inside (the last column)
    maps[1, 30, 25] = 1.0  # one row below the box: a miss, a hit with a tolerance of 1
    maps[2, 2, 2] = 0.5
    maps[2, 60, 60] = 0.7  # the peak is elsewhere: a miss
    maps[3] = 0.3  # constant: the first position, (0, 0), a miss
    np.testing.assert_array_equal(localisation.peaks(maps), [[10, 39], [30, 25], [60, 60], [0, 0]])
    np.testing.assert_array_equal(localisation.pointing_game(maps, boxes), [True, False, False, False])
    np.testing.assert_array_equal(localisation.pointing_game(maps, boxes, tolerance=1), [True, True, False, False])
    np.testing.assert_array_equal(localisation.centre_hits(boxes, (64, 64)), [False, False, False, False])
    np.testing.assert_array_equal(localisation.centre_hits(np.array([[32, 32, 33, 33], [31, 31, 32, 32]]), (64, 64)),
                                  [True, False])
    np.testing.assert_allclose(localisation.area_fractions(boxes, (64, 64)), [400 / 4096, 400 / 4096, 25 / 4096, 576 / 4096])


def test_spearman_matches_scipy_and_edges_need_no_model():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 6, 6))
    b = a + rng.normal(scale=[[[0.1]], [[1.0]], [[3.0]], [[0.5]]], size=a.shape)
    b[3, :3] = 0.0  # ties
    expected = [scipy.stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b)]
    np.testing.assert_allclose(sanity.spearman(a, b), expected, rtol=1e-12)
    np.testing.assert_allclose(sanity.spearman(a, -a), -1.0)
    assert sanity.spearman(a[:1], np.ones((1, 6, 6)))[0] == 0.0
    step = np.zeros((1, 8, 8, 1))
    step[:, :, 4:] = 1.0  # a vertical edge between columns 3 and 4
    edges = sanity.edge_maps(step)[0]
    assert np.all(edges[:, 3:5] > 0) and np.all(edges[:, :2] == 0) and np.all(edges[:, 6:] == 0)


def test_cascading_randomisation_replaces_layers_from_the_output_down():
    model = cnn.models.create("simple_cnn", num_classes=10, widths=(4, 8), hidden=16)
    sample = jnp.zeros((1, 28, 28, 1))
    variables = model.init(jax.random.key(0), sample, train=False)
    steps = list(sanity.cascading_randomisation(model, variables, jax.random.key(1), sample))
    order = ["fc2", "fc1", "conv2", "conv1"]
    assert [layer for layer, _ in steps] == order
    for count, (_, randomised) in enumerate(steps, 1):
        for position, layer in enumerate(order):
            same = jax.tree.leaves(jax.tree.map(np.array_equal, randomised["params"][layer], variables["params"][layer]))
            assert all(same) == (position >= count), (count, layer)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: a.shape == b.shape, steps[-1][1]["params"], variables["params"])))
