"""Pooling against PyTorch: max and average (padding, ``count_include_pad``), global, adaptive
(non-divisible sizes and upsampling), in 1D, 2D and 3D; flatten's order.

Max pooling and flatten are exact; averages are compared at 1e-5 relative to a float64 reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import adaptive_avg_pool, avg_pool, flatten, global_avg_pool, global_max_pool, max_pool

CHANNELS = 3


def _to_torch(torch, x):
    return torch.from_numpy(np.moveaxis(np.asarray(x, np.float64), -1, 1).copy())


def _from_torch(tensor):
    return np.moveaxis(tensor.numpy(), 1, -1)


def _input(shape, seed=0):
    return np.random.default_rng(seed).normal(size=(2,) + shape + (CHANNELS,)).astype(np.float32)


# (spatial shape, window, strides, padding): strides None = the window, padding int or per axis.
WINDOWS = [
    ((9,), 3, 2, 1),
    ((10,), 2, None, 0),
    ((9, 8), 3, 2, 1),
    ((9, 8), (3, 2), (2, 1), (1, 0)),
    ((8, 8), 2, None, 0),
    ((7, 6, 5), 3, 2, 1),
    ((6, 5, 4), (2, 3, 2), (1, 2, 2), (1, 1, 0)),
]


@pytest.mark.parametrize("shape,window,strides,padding", WINDOWS)
def test_max_pool_matches_torch(torch, shape, window, strides, padding):
    x = _input(shape)
    x = x - 10.0  # all negative: a zero-padded border would win, a -inf one never does
    ours = max_pool(jnp.asarray(x), window, strides, padding)
    pool = getattr(torch.nn.functional, f"max_pool{len(shape)}d")
    expected = _from_torch(pool(_to_torch(torch, x), window, strides, padding))
    np.testing.assert_array_equal(np.asarray(ours, np.float64), expected)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("shape,window,strides,padding", WINDOWS)
def test_avg_pool_matches_torch(torch, assert_close, shape, window, strides, padding, count_include_pad):
    x = _input(shape, seed=1)
    ours = avg_pool(jnp.asarray(x), window, strides, padding, count_include_pad=count_include_pad)
    pool = getattr(torch.nn.functional, f"avg_pool{len(shape)}d")
    expected = _from_torch(pool(_to_torch(torch, x), window, strides, padding, count_include_pad=count_include_pad))
    assert_close(ours, expected, rtol=1e-5)


def test_count_include_pad_changes_border_averages():
    """Guards the parametrisation above: the two settings must differ where the window overlaps padding."""
    x = jnp.ones((1, 4, 4, 1))
    included = avg_pool(x, 3, 1, 1, count_include_pad=True)
    excluded = avg_pool(x, 3, 1, 1, count_include_pad=False)
    assert float(included[0, 0, 0, 0]) == pytest.approx(4 / 9)
    np.testing.assert_allclose(excluded, np.ones((1, 4, 4, 1)), rtol=1e-6)


@pytest.mark.parametrize("shape", [(9,), (7, 5), (4, 3, 5)])
def test_global_pools_match_torch(torch, assert_close, shape):
    x = _input(shape, seed=2)
    axes = tuple(range(2, 2 + len(shape)))
    reference = _to_torch(torch, x)
    assert_close(global_avg_pool(jnp.asarray(x)), reference.mean(dim=axes).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(global_max_pool(jnp.asarray(x)), np.float64),
                                  reference.amax(dim=axes).numpy())
    assert global_avg_pool(jnp.asarray(x), keepdims=True).shape == (2,) + (1,) * len(shape) + (CHANNELS,)


def test_global_avg_pool_of_bfloat16_keeps_dtype():
    x = jnp.full((2, 16, 16, CHANNELS), 1.5, jnp.bfloat16)
    out = global_avg_pool(x)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.full((2, CHANNELS), 1.5, np.float32))


# (input spatial shape, output size): divisible, non-divisible (7 -> 3, 10 -> 4), upsampling (1 -> 7, 5 -> 7).
ADAPTIVE = [
    ((7,), 3),
    ((10,), 4),
    ((10,), 5),
    ((7, 10), (3, 4)),
    ((1, 1), 7),
    ((5, 2), (7, 7)),
    ((6, 6), 6),
    ((7, 10, 5), (3, 4, 2)),
]


@pytest.mark.parametrize("shape,output_size", ADAPTIVE)
def test_adaptive_avg_pool_matches_torch(torch, assert_close, shape, output_size):
    x = _input(shape, seed=3)
    ours = jax.jit(adaptive_avg_pool, static_argnums=1)(x, output_size)  # one compilation, not one per cell
    pool = getattr(torch.nn.functional, f"adaptive_avg_pool{len(shape)}d")
    expected = _from_torch(pool(_to_torch(torch, x), output_size))
    assert_close(ours, expected, rtol=1e-5)


def test_adaptive_avg_pool_windows_overlap_for_non_divisible_sizes():
    """7 -> 3 averages rows 0..2, 2..4 and 4..6 (PyTorch's floor/ceil rule): row 2 and row 4 are shared."""
    x = jnp.arange(7.0).reshape(1, 7, 1)
    np.testing.assert_allclose(np.asarray(adaptive_avg_pool(x, 3))[0, :, 0], [1.0, 3.0, 5.0])


def test_flatten_is_row_major_nhwc():
    x = jnp.arange(2 * 2 * 3 * 4).reshape(2, 2, 3, 4)
    out = flatten(x)
    assert out.shape == (2, 24)
    np.testing.assert_array_equal(out[1], np.arange(24, 48))  # channel fastest, then width, then height


def test_pooling_rejects_inputs_without_spatial_axes():
    with pytest.raises(ValueError, match=r"got shape \(4, 3\)"):
        max_pool(jnp.zeros((4, 3)), 2)
