"""Building blocks of the mobile, Inception, DenseNet and SqueezeNet families on their own: ceil-mode pooling and the activations against PyTorch, the
channel rounding rule, stochastic depth, and the inverted residual's shortcut rules."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import (
    DropPath,
    InvertedResidual,
    ceil_mode_padding,
    gelu_exact,
    hard_sigmoid,
    hard_swish,
    make_divisible,
    max_pool_ceil,
    relu6,
    swish,
)


@pytest.mark.parametrize("size", range(5, 13))
@pytest.mark.parametrize("window, stride, padding", [(3, 2, 0), (2, 2, 0), (3, 1, 1), (3, 2, 1), (3, 3, 1)])
def test_max_pool_ceil_matches_torch(torch, size, window, stride, padding):
    x = np.random.default_rng(size).standard_normal((1, size, size + 1, 2)).astype(np.float32)
    expected = torch.nn.functional.max_pool2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), window, stride, padding, ceil_mode=True
    ).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.asarray(max_pool_ceil(jnp.asarray(x), window, stride, padding)), expected)


def test_ceil_mode_drops_a_window_that_would_start_in_the_padding():
    # 5 + 2*1 - 2 = 5 over stride 2 rounds up to 4 windows, but the 4th would start at 6 = 5 + 1 (padding).
    assert ceil_mode_padding(5, 2, 2, 1) == (1, 1)
    assert ceil_mode_padding(6, 3, 2) == (0, 1)


@pytest.mark.parametrize("ours, theirs", [
    (hard_swish, "hardswish"), (hard_sigmoid, "hardsigmoid"), (swish, "silu"), (relu6, "relu6"), (gelu_exact, "gelu"),
])
def test_activations_match_torch(torch, ours, theirs):
    x = np.linspace(-8, 8, 1601, dtype=np.float32)
    expected = getattr(torch.nn.functional, theirs)(torch.from_numpy(x.astype(np.float64))).numpy()
    np.testing.assert_allclose(np.asarray(ours(jnp.asarray(x))), expected, rtol=1e-6, atol=1e-6)


def test_make_divisible_rounds_to_the_nearest_multiple_but_not_more_than_10_percent_down():
    assert [make_divisible(v) for v in (24.0, 35.2, 36.0, 11.0, 3.0)] == [24, 32, 40, 16, 8]
    assert make_divisible(20, 16) == 32  # 16 would be 20% below 20
    assert make_divisible(3, 8, min_value=4) == 4


def test_drop_path_drops_whole_examples_and_rescales_the_rest():
    x = jnp.ones((4000, 3, 3, 2))
    layer = DropPath(0.25)
    assert layer.apply({}, x, train=False) is x
    y = np.asarray(layer.apply({}, x, train=True, rngs={"dropout": jax.random.key(0)}))
    per_example = y.reshape(4000, -1)
    assert set(np.unique(per_example)) == {0.0, np.float32(1 / 0.75)}
    assert np.all(per_example.min(axis=1) == per_example.max(axis=1))  # all or nothing per example
    assert abs(np.mean(per_example[:, 0] > 0) - 0.75) < 0.03
    with pytest.raises(Exception, match="dropout"):  # randomness is explicit: no rng, no training
        layer.apply({}, x, train=True)




@pytest.mark.parametrize("channels, features, strides, shortcut, has_projection, adds", [
    (16, 16, 1, "identity", False, True),
    (16, 24, 1, "identity", False, False),
    (16, 24, 1, "projection", True, True),
    (16, 16, 2, "projection", False, False),
])
def test_inverted_residual_shortcuts(channels, features, strides, shortcut, has_projection, adds):
    block = InvertedResidual(features, expanded=4 * channels, strides=strides, shortcut=shortcut)
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, channels))
    variables = block.init(jax.random.key(1), x, train=False)
    assert ("shortcut" in variables["params"]) == has_projection
    # With the projection zeroed, the output is the input (identity shortcut) or zero (no shortcut).
    zeroed = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.zeros_like(v) if "project" in jax.tree_util.keystr(path) and "scale" in
        jax.tree_util.keystr(path) else v, variables)
    out = block.apply(zeroed, x, train=False)
    if adds and not has_projection:
        np.testing.assert_allclose(out, x, atol=1e-6)
    elif adds:  # what remains is the projection: 1x1 conv, then BatchNorm in eval mode (mean 0, var 1)
        shortcut = variables["params"]["shortcut"]
        projected = jnp.einsum("nhwc,cd->nhwd", x, shortcut["conv"]["kernel"][0, 0]) / jnp.sqrt(1 + 1e-5)
        expected = projected * shortcut["norm"]["scale"] + shortcut["norm"]["bias"]
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
        assert float(jnp.max(jnp.abs(out))) > 0.1
    else:
        assert float(jnp.max(jnp.abs(out))) < 1e-6
