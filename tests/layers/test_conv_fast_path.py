"""``cnn.layers.conv.conv_general_dilated`` (the few-input-channel CPU path) against ``lax.conv_general_dilated``.

The forward pass sums the same products in another order (equal to float32 rounding); the
derivatives are XLA's own conv transposes, so gradients for the same cotangent are bit-identical.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import export, lax

from cnn.layers import ConvNormAct
from cnn.layers.conv import Conv, conv_general_dilated

SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}
# (spatial, kernel, in channels, strides, padding, dilation): every one takes the fast path.
CASES = [
    ((28, 28), (3, 3), 1, (1, 1), "VALID", (1, 1)),
    ((28, 28), (4, 4), 1, (1, 1), ((2, 1), (1, 2)), (1, 1)),
    ((16, 15), (2, 2), 3, (2, 1), "SAME", (1, 1)),
    ((12, 12), (3, 2), 2, (1, 1), ((1, 0), (2, 1)), (2, 1)),
    ((11,), (4,), 4, (1,), "SAME", (1,)),
    ((7, 6, 5), (2, 2, 2), 2, (1, 2, 1), "VALID", (1, 1, 1)),
]


def _conv(fn, x, kernel, strides, padding, dilation):
    rank = x.ndim - 2
    numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, SPECS[rank])
    return fn(x, kernel, strides, padding, rhs_dilation=dilation, dimension_numbers=numbers)


def _arrays(spatial, kernel_shape, channels, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(2, *spatial, channels)), dtype)
    kernel = jnp.asarray(rng.normal(size=(*kernel_shape, channels, 8)) * 0.3, dtype)
    return x, kernel


@pytest.mark.parametrize("spatial,kernel_shape,channels,strides,padding,dilation", CASES)
def test_values_close_and_gradients_identical(spatial, kernel_shape, channels, strides, padding, dilation):
    x, kernel = _arrays(spatial, kernel_shape, channels)
    args = (strides, padding, dilation)
    assert "platform_index" in str(jax.make_jaxpr(lambda x, k: _conv(conv_general_dilated, x, k, *args))(x, kernel))
    ours, ours_vjp = jax.vjp(lambda x, k: _conv(conv_general_dilated, x, k, *args), x, kernel)
    expected, expected_vjp = jax.vjp(lambda x, k: _conv(lax.conv_general_dilated, x, k, *args), x, kernel)
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=ours.shape), jnp.float32)
    for a, b in zip(ours_vjp(cotangent), expected_vjp(cotangent)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_forward_mode_matches():
    x, kernel = _arrays((10, 10), (3, 3), 1)
    tangents = _arrays((10, 10), (3, 3), 1, seed=5)
    conv = lambda fn: (lambda x, k: _conv(fn, x, k, (1, 1), "SAME", (1, 1)))
    _, ours = jax.jvp(conv(conv_general_dilated), (x, kernel), tangents)
    _, expected = jax.jvp(conv(lax.conv_general_dilated), (x, kernel), tangents)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_bfloat16_accumulates_in_float32():
    x, kernel = _arrays((14, 14), (4, 4), 1, dtype=jnp.bfloat16)
    ours = _conv(conv_general_dilated, x, kernel, (1, 1), "VALID", (1, 1))
    exact = _conv(lax.conv_general_dilated, x.astype(jnp.float32), kernel.astype(jnp.float32), (1, 1), "VALID", (1, 1))
    assert ours.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(exact), rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("channels,kernel_shape,groups,fast", [(1, (3, 3), 1, True), (1, (4, 4), 1, True),
                                                               (1, (5, 5), 1, False), (3, (3, 3), 1, False),
                                                               (8, (1, 1), 1, False), (4, (2, 2), 4, False)])
def test_which_convs_take_the_fast_path(channels, kernel_shape, groups, fast):
    x = jnp.zeros((1, 9, 9, channels))
    kernel = jnp.zeros((*kernel_shape, channels // groups, 4))
    numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, SPECS[2])
    conv = lambda x, k: conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=numbers, feature_group_count=groups)
    assert ("platform_index" in str(jax.make_jaxpr(conv)(x, kernel))) == fast


def test_accelerators_keep_the_native_convolution():
    """Lowered for CUDA or TPU the forward is XLA's convolution; on CPU it is the shifted-slice sum."""
    x, kernel = _arrays((12, 12), (3, 3), 1)
    forward = jax.jit(lambda x, k: _conv(conv_general_dilated, x, k, (1, 1), "VALID", (1, 1)))
    for platform, count in (("cpu", 0), ("cuda", 1), ("tpu", 1)):
        module = export.export(forward, platforms=[platform])(x, kernel).mlir_module()
        assert module.count("stablehlo.convolution") == count, platform


def test_conv_module_has_nn_conv_parameters():
    x = jnp.ones((2, 8, 8, 3))
    ours = Conv(6, (3, 3)).init(jax.random.PRNGKey(0), x)
    native = nn.Conv(6, (3, 3)).init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, native)
    np.testing.assert_allclose(
        np.asarray(Conv(6, (3, 3)).apply(native, x)), np.asarray(nn.Conv(6, (3, 3)).apply(native, x)), rtol=1e-5, atol=1e-5
    )
    assert ConvNormAct(4).conv is Conv


def test_native_convolutions_switches_the_fast_path_off():
    from cnn.layers.conv import native_convolutions

    x, kernel = jnp.zeros((1, 9, 9, 1)), jnp.zeros((3, 3, 1, 4))
    numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, SPECS[2])
    conv = lambda x, k: conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=numbers)
    traced = lambda: str(jax.make_jaxpr(lambda x, k: conv(x, k))(x, kernel))  # a new function each time
    with native_convolutions():  # a trace-time switch
        assert "platform_index" not in traced()
    assert "platform_index" in traced()
