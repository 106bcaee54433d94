"""The seed's worked examples: a 2x2 max pool, a vertical-edge filter, and the output-size rule
``H_out = (H_in + 2p - k) / s + 1`` (floored) checked against the layers' actual output shapes."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import ConvNormAct, avg_pool, conv_output_size, max_pool

VERTICAL_EDGE = np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]], np.float32)


def test_max_pool_2x2_of_1_3_2_4_is_4():
    x = jnp.array([[1.0, 3.0], [2.0, 4.0]]).reshape(1, 2, 2, 1)
    out = max_pool(x, 2)
    assert out.shape == (1, 1, 1, 1)
    assert float(out[0, 0, 0, 0]) == 4.0


def _edge_response(image):
    """The vertical-edge filter as a single-channel VALID conv (cross-correlation, as every CNN layer)."""
    layer = ConvNormAct(1, 3, padding="VALID", norm=None, act=None, use_bias=False)
    kernel = jnp.asarray(VERTICAL_EDGE).reshape(3, 3, 1, 1)
    x = jnp.asarray(image, jnp.float32)[None, :, :, None]
    return np.asarray(layer.apply({"params": {"conv": {"kernel": kernel}}}, x, train=False))[0, :, :, 0]


def test_vertical_edge_filter_fires_on_a_vertical_edge():
    image = np.zeros((6, 6), np.float32)
    image[:, :3] = 1.0  # bright left half, dark right half
    # Windows straddling the edge (columns 1..3 and 2..4) see three bright pixels left, three dark right.
    np.testing.assert_array_equal(_edge_response(image), np.tile([0.0, 3.0, 3.0, 0.0], (4, 1)))


def test_vertical_edge_filter_is_silent_on_flat_and_horizontal_edges():
    np.testing.assert_array_equal(_edge_response(np.full((6, 6), 5.0)), np.zeros((4, 4)))
    horizontal = np.zeros((6, 6), np.float32)
    horizontal[:3] = 1.0
    np.testing.assert_array_equal(_edge_response(horizontal), np.zeros((4, 4)))


# H_in, kernel, stride, padding: every combination with H_in + 2p >= k.
GRID = [
    (size, kernel, stride, padding)
    for size, kernel, stride, padding in itertools.product((5, 7, 28, 32, 224), (1, 2, 3, 5, 7, 11), (1, 2, 3, 4),
                                                          (0, 1, 2, 3))
    if size + 2 * padding >= kernel
]


def _seed_rule(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1


KNOWN = [  # (H_in, kernel, stride, padding, H_out) from the papers and torchvision's docs
    (28, 3, 1, 0, 26),  # the seed's first conv: 28 -> 26
    (224, 11, 4, 2, 55),  # AlexNet's first conv
    (224, 7, 2, 3, 112),  # ResNet's stem
    (112, 3, 2, 1, 56),  # ResNet's max pool
    (32, 5, 1, 0, 28),  # LeNet-5
]


@pytest.mark.parametrize("size, kernel, stride, padding, expected", KNOWN)
def test_known_output_sizes_of_the_layers(size, kernel, stride, padding, expected):
    assert conv_output_size(size, kernel, stride, padding) == expected
    x = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
    conv = ConvNormAct(1, kernel, stride, padding, norm=None, act=None, use_bias=False)
    out = jax.eval_shape(lambda k, inputs: conv.apply({"params": {"conv": {"kernel": k}}}, inputs, train=False),
                         jax.ShapeDtypeStruct((kernel, kernel, 1, 1), jnp.float32), x)
    assert out.shape[1:3] == (expected, expected)
    assert jax.eval_shape(lambda inputs: max_pool(inputs, kernel, stride, padding), x).shape[1:3] == (expected, expected)


def _conv_height(conv, kernel_shape, x):
    """The conv's output height, from shapes alone (tracing, no compilation, no weights)."""
    kernel = jax.ShapeDtypeStruct(kernel_shape, jnp.float32)
    out = jax.eval_shape(lambda k, inputs: conv.apply({"params": {"conv": {"kernel": k}}}, inputs, train=False),
                         kernel, x)
    return out.shape[1]


@pytest.mark.parametrize("stride", [1, 2, 3, 4])
def test_output_size_rule_matches_layer_shapes(stride):
    """For every grid case: the formula, ``conv_output_size``, a conv's and the pools' actual output heights."""
    checked = 0
    for size, kernel, _, padding in (case for case in GRID if case[2] == stride):
        expected = _seed_rule(size, kernel, stride, padding)
        assert conv_output_size(size, kernel, stride, padding) == expected
        x = jax.ShapeDtypeStruct((1, size, 3, 1), jnp.float32)
        conv = ConvNormAct(1, (kernel, 1), (stride, 1), ((padding, padding), (0, 0)), norm=None, act=None,
                           use_bias=False)
        assert _conv_height(conv, (kernel, 1, 1, 1), x) == expected, (size, kernel, stride, padding)
        for pool in (max_pool, avg_pool):
            pooled = jax.eval_shape(lambda inputs: pool(inputs, (kernel, 1), (stride, 1), (padding, 0)), x)
            assert pooled.shape[1] == expected, (pool.__name__, size, kernel, stride, padding)
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("dilation", [2, 3])
def test_dilation_widens_the_kernel_to_d_times_k_minus_1_plus_1(dilation):
    for size, kernel, stride, padding in GRID[::7]:
        effective = dilation * (kernel - 1) + 1
        if size + 2 * padding < effective:
            continue
        expected = _seed_rule(size, effective, stride, padding)
        assert conv_output_size(size, kernel, stride, padding, dilation) == expected
        x = jax.ShapeDtypeStruct((1, size, 1), jnp.float32)
        conv = ConvNormAct(1, kernel, stride, padding, dilation, norm=None, act=None, use_bias=False)
        assert _conv_height(conv, (kernel, 1, 1), x) == expected, (size, kernel, stride, padding, dilation)
