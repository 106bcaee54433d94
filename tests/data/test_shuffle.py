"""The training order: cnn.data.shuffle.index_shuffle against grain's own index_shuffle, position by position."""

from __future__ import annotations

import numpy as np
import pytest

from cnn.data.pipeline import train_plan
from cnn.data.shuffle import index_shuffle

grain_shuffle = pytest.importorskip("grain.experimental").index_shuffle


@pytest.mark.parametrize("size", [1, 2, 3, 17, 256, 257, 1000, 60000, 65536, 65537, 70001, 2**20 + 3])
@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 - 1])
def test_equals_grain_position_by_position(size, seed):
    rng = np.random.default_rng(size + seed)
    positions = np.arange(size) if size <= 2000 else rng.integers(0, size, 1500)
    expected = [grain_shuffle(int(p), max_index=size - 1, seed=seed, rounds=4) for p in positions]
    np.testing.assert_array_equal(index_shuffle(positions, max_index=size - 1, seed=seed), expected)


@pytest.mark.parametrize("rounds", [6, 8, 32])
def test_more_rounds_equal_grain(rounds):
    positions = np.arange(0, 60000, 97)
    expected = [grain_shuffle(int(p), max_index=59999, seed=7, rounds=rounds) for p in positions]
    np.testing.assert_array_equal(index_shuffle(positions, max_index=59999, seed=7, rounds=rounds), expected)


@pytest.mark.parametrize("size", [5, 1000, 60000])
def test_a_permutation(size):
    order = index_shuffle(np.arange(size), max_index=size - 1, seed=3)
    np.testing.assert_array_equal(np.sort(order), np.arange(size))
    assert size < 10 or not np.array_equal(order, np.arange(size))


def test_keeps_the_shape_and_refuses_bad_arguments():
    assert index_shuffle(np.zeros((2, 3), int), max_index=9, seed=0).shape == (2, 3)
    with pytest.raises(ValueError, match="positions"):
        index_shuffle([10], max_index=9, seed=0)
    with pytest.raises(ValueError, match="rounds"):
        index_shuffle([1], max_index=9, seed=0, rounds=5)


def test_plan_steps_equal_step_by_step_indices_across_epochs():
    plan = train_plan(range(1000), global_batch=64, seed=5, process_index=1, process_count=2)
    first = plan.steps_per_epoch - 3  # three steps of epoch 0, four of epoch 1
    np.testing.assert_array_equal(plan.steps(first, 7), np.stack([plan.indices(s) for s in range(first, first + 7)]))
    assert not np.array_equal(plan.indices(0), plan.indices(plan.steps_per_epoch))  # reshuffled every epoch
