"""``cnn.layers.cpu_kernels.max_pool`` (non-overlapping windows as strided slices) against ``nn.max_pool``.

Values, reverse-mode gradients and forward-mode tangents must be bit-identical, ties included:
each window's gradient goes to its first maximal element, as ``select_and_scatter`` sends it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from cnn.layers.cpu_kernels import max_pool

# (spatial shape, window): divisible and not (floor mode drops the rest), 1D to 3D, uneven windows.
CASES = [
    ((8,), 2),
    ((9,), 3),
    ((26, 26), 2),
    ((11, 11), 2),
    ((12, 9), (3, 2)),
    ((7, 8), (1, 2)),
    ((6, 7, 5), 2),
]


def _reference(x, window):
    window = (window,) * (x.ndim - 2) if isinstance(window, int) else tuple(window)
    return nn.max_pool(x, window, window, "VALID")


def _inputs(shape, dtype, seed=0):
    """Half-integers after a ReLU: many ties within windows (zeros and repeated values)."""
    rng = np.random.default_rng(seed)
    x = np.maximum(np.round(rng.normal(size=(2, *shape, 3)) * 2) / 2, 0.0)
    return jnp.asarray(x, dtype)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape,window", CASES)
def test_values_and_gradients_are_identical(shape, window, dtype):
    x = _inputs(shape, dtype)
    ours, ours_vjp = jax.vjp(lambda x: max_pool(x, window), x)
    expected, expected_vjp = jax.vjp(lambda x: _reference(x, window), x)
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    np.testing.assert_array_equal(np.asarray(ours, np.float32), np.asarray(expected, np.float32))
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=ours.shape), dtype)
    np.testing.assert_array_equal(
        np.asarray(ours_vjp(cotangent)[0], np.float32), np.asarray(expected_vjp(cotangent)[0], np.float32)
    )


@pytest.mark.parametrize("shape,window", CASES[:4])
def test_forward_mode_is_identical(shape, window):
    x = _inputs(shape, jnp.float32)
    tangent = jnp.asarray(np.random.default_rng(2).normal(size=x.shape), jnp.float32)
    _, ours = jax.jvp(lambda x: max_pool(x, window), (x,), (tangent,))
    _, expected = jax.jvp(lambda x: _reference(x, window), (x,), (tangent,))
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(expected))


def test_gradient_of_a_small_network_is_identical():
    """conv -> relu -> pool -> dense: the gradient flowing through ties at zero and at equal values."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(np.round(rng.normal(size=(4, 12, 12, 2)) * 2) / 2, jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 2, 5)), jnp.float32)
    dense = jnp.asarray(rng.normal(size=(5 * 5 * 5, 3)), jnp.float32)

    def loss(params, pool):
        kernel, dense = params
        y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = pool(jax.nn.relu(y), 2)
        return jnp.sum(jnp.tanh(y.reshape(y.shape[0], -1) @ dense))

    ours = jax.grad(loss)((kernel, dense), max_pool)
    expected = jax.grad(loss)((kernel, dense), _reference)
    for a, b in zip(ours, expected):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fast_path_avoids_select_and_scatter():
    x = _inputs((26, 26), jnp.float32)
    fast = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(max_pool(x, 2) ** 2)))(x))
    assert "reduce_window" not in fast and "select_and_scatter" not in fast
    # Overlapping or padded windows keep XLA's reduce_window.
    general = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(max_pool(x, 3, 2, padding=1) ** 2)))(x))
    assert "reduce_window" in general or "select_and_scatter" in general


def test_window_larger_than_input_falls_back():
    x = _inputs((3, 3), jnp.float32)
    np.testing.assert_array_equal(np.asarray(max_pool(x, 4)), np.asarray(_reference(x, 4)))
