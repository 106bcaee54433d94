"""``cnn.layers.cpu_kernels``: the CPU conv against ``lax.conv_general_dilated``, and the one switch.

The few-input-channel path sums the same products in another order (equal to float32 rounding) and
differentiates through XLA's own conv transposes, so gradients for the same cotangent are
bit-identical. The depthwise path has a written-out gradient, checked against autodiff of XLA's conv
to first and second order.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

import cnn.models
from cnn.layers import ConvNormAct, cpu_kernels
from cnn.layers.cpu_kernels import CpuConv, conv_general_dilated

SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}
# (spatial, kernel, in channels, strides, padding, dilation): every one takes the few-channel path.
FEW_CHANNEL_CASES = [
    ((28, 28), (3, 3), 1, (1, 1), "VALID", (1, 1)),
    ((28, 28), (4, 4), 1, (1, 1), ((2, 1), (1, 2)), (1, 1)),
    ((16, 15), (2, 2), 3, (2, 1), "SAME", (1, 1)),
    ((12, 12), (3, 2), 2, (1, 1), ((1, 0), (2, 1)), (2, 1)),
    ((11,), (4,), 4, (1,), "SAME", (1,)),
    ((7, 6, 5), (2, 2, 2), 2, (1, 2, 1), "VALID", (1, 1, 1)),
]


def _conv(fn, x, kernel, strides, padding, dilation, groups=1):
    rank = x.ndim - 2
    numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, SPECS[rank])
    return fn(x, kernel, strides, padding, rhs_dilation=dilation, dimension_numbers=numbers, feature_group_count=groups)


def _arrays(spatial, kernel_shape, channels, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(2, *spatial, channels)), dtype)
    kernel = jnp.asarray(rng.normal(size=(*kernel_shape, channels, 8)) * 0.3, dtype)
    return x, kernel


def _path(x, kernel, groups=1):
    """Which formulation the CPU conv traces: "few", "depthwise" or "xla"."""
    jaxpr = str(jax.make_jaxpr(lambda x, k: _conv(conv_general_dilated, x, k, (1,) * (x.ndim - 2), "SAME",
                                                  (1,) * (x.ndim - 2), groups))(x, kernel))
    if "custom_jvp_call" in jaxpr:
        return "few"
    if "custom_vjp_call" in jaxpr:
        return "depthwise"
    assert "conv_general_dilated" in jaxpr
    return "xla"


@pytest.mark.parametrize("spatial,kernel_shape,channels,strides,padding,dilation", FEW_CHANNEL_CASES)
def test_few_channel_values_close_and_gradients_identical(spatial, kernel_shape, channels, strides, padding, dilation):
    x, kernel = _arrays(spatial, kernel_shape, channels)
    assert _path(x, kernel) == "few"
    args = (strides, padding, dilation)
    ours, ours_vjp = jax.vjp(lambda x, k: _conv(conv_general_dilated, x, k, *args), x, kernel)
    expected, expected_vjp = jax.vjp(lambda x, k: _conv(lax.conv_general_dilated, x, k, *args), x, kernel)
    assert ours.shape == expected.shape and ours.dtype == expected.dtype
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=ours.shape), jnp.float32)
    for a, b in zip(ours_vjp(cotangent), expected_vjp(cotangent)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_few_channel_forward_mode_matches():
    x, kernel = _arrays((10, 10), (3, 3), 1)
    tangents = _arrays((10, 10), (3, 3), 1, seed=5)
    conv = lambda fn: (lambda x, k: _conv(fn, x, k, (1, 1), "SAME", (1, 1)))  # noqa: E731
    _, ours = jax.jvp(conv(conv_general_dilated), (x, kernel), tangents)
    _, expected = jax.jvp(conv(lax.conv_general_dilated), (x, kernel), tangents)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=1e-5, atol=1e-5)


def test_bfloat16_sums_in_float32():
    """1 channel, 4x4 kernel (16 terms): a bfloat16 running sum would be off by about 2^-8 of the
    largest partial sum; summed in float32 and rounded once, the result equals the float32 conv of the
    same bfloat16 inputs rounded to bfloat16 up to one bfloat16 step."""
    x, kernel = _arrays((14, 14), (4, 4), 1, dtype=jnp.bfloat16)
    assert _path(x, kernel) == "few"
    ours = _conv(conv_general_dilated, x, kernel, (1, 1), "VALID", (1, 1))
    exact = _conv(lax.conv_general_dilated, x.astype(jnp.float32), kernel.astype(jnp.float32), (1, 1), "VALID", (1, 1))
    assert ours.dtype == jnp.bfloat16
    rounded = np.asarray(exact.astype(jnp.bfloat16), np.float32)
    one_step = np.abs(rounded) * 2.0**-7 + 1e-30
    assert np.all(np.abs(np.asarray(ours, np.float32) - rounded) <= one_step)
    # Summing in bfloat16 instead really is worse: the check above can tell the two apart.
    products = [x[:, i:i + 11, j:j + 11, :1] * kernel[i, j, 0] for i in range(4) for j in range(4)]
    bf16_sum = functools.reduce(lambda a, b: (a + b).astype(jnp.bfloat16), products)
    assert not np.all(np.abs(np.asarray(bf16_sum, np.float32) - rounded) <= one_step)


@pytest.mark.parametrize("channels,kernel_shape,groups,path", [
    (1, (3, 3), 1, "few"), (1, (4, 4), 1, "few"), (1, (5, 5), 1, "xla"), (3, (3, 3), 1, "xla"),
    (8, (1, 1), 1, "xla"), (4, (2, 2), 4, "depthwise"), (6, (3, 3), 2, "xla"),
])
def test_which_convs_take_which_path(channels, kernel_shape, groups, path):
    x = jnp.zeros((1, 9, 9, channels))
    kernel = jnp.zeros((*kernel_shape, channels // groups, 4 if groups == 1 else channels))
    assert _path(x, kernel, groups) == path


DEPTHWISE_CASES = [  # (input shape, kernel, strides, padding, dilation, depth multiplier)
    ((2, 9, 11, 6), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ((2, 9, 11, 6), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 1),
    ((2, 14, 14, 4), (7, 7), (1, 1), ((3, 3), (3, 3)), (1, 1), 1),
    ((1, 10, 10, 5), (5, 5), (2, 2), ((2, 2), (2, 2)), (1, 1), 2),
    ((1, 12, 12, 3), (3, 3), (1, 1), ((2, 2), (2, 2)), (2, 2), 1),
    ((1, 10, 9, 4), (3, 3), (2, 2), "SAME", (1, 1), 1),
    ((3, 17, 4), (5,), (1,), ((2, 2),), (1,), 1),  # 1D
    ((1, 4, 6, 6, 3), (3, 3, 3), (2, 1, 2), ((1, 1),) * 3, (1, 1, 1), 1),  # 3D
]


@pytest.mark.parametrize("shape, kernel, strides, padding, dilation, multiplier", DEPTHWISE_CASES)
def test_depthwise_matches_xla_values_and_gradients(shape, kernel, strides, padding, dilation, multiplier):
    channels = shape[-1]
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), kernel + (1, channels * multiplier))
    conv = lambda f, x, w: _conv(f, x, w, strides, padding, dilation, channels)  # noqa: E731
    native = functools.partial(conv, lax.conv_general_dilated)
    shifted = functools.partial(conv, conv_general_dilated)
    assert "custom_vjp_call" in str(jax.make_jaxpr(shifted)(x, w))
    np.testing.assert_allclose(jax.jit(shifted)(x, w), jax.jit(native)(x, w), rtol=1e-5, atol=1e-5)
    grad = lambda f: jax.jit(jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), (0, 1)))  # noqa: E731
    for ours, theirs in zip(grad(shifted)(x, w), grad(native)(x, w)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_depthwise_second_order_gradients_match_xla():
    """Reverse over reverse (e.g. a gradient penalty) differentiates the written-out backward pass correctly."""
    x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 1, 3))

    def penalty(fn):
        def input_grad_norm(w):
            g = jax.grad(lambda x: jnp.sum(jnp.tanh(_conv(fn, x, w, (2, 2), ((1, 1), (1, 1)), (1, 1), 3))))(x)
            return jnp.sum(g**2)
        return jax.jit(jax.grad(input_grad_norm))(w)

    np.testing.assert_allclose(penalty(conv_general_dilated), penalty(lax.conv_general_dilated), rtol=1e-4, atol=1e-5)


def test_cpu_conv_is_an_nn_conv_with_the_same_parameters_and_outputs():
    x = jax.random.normal(jax.random.key(0), (2, 10, 10, 1))  # 1 channel, 3x3: the few-channel path
    variables = nn.Conv(6, (3, 3)).init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, CpuConv(6, (3, 3)).init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
    assert "custom_jvp_call" in str(jax.make_jaxpr(lambda x: CpuConv(6, (3, 3)).apply(variables, x))(x))
    np.testing.assert_allclose(CpuConv(6, (3, 3)).apply(variables, x), nn.Conv(6, (3, 3)).apply(variables, x),
                               rtol=1e-5, atol=1e-5)
    assert issubclass(CpuConv, nn.Conv) and ConvNormAct(4).conv is nn.Conv


def test_a_subclass_of_the_conv_is_injected_like_any_conv():
    """big_vision's weight-standardised conv overrides one method of an ordinary conv class."""

    class StdConv(nn.Conv):
        def param(self, name, *args, **kwargs):
            value = super().param(name, *args, **kwargs)
            if name == "kernel":
                value = (value - value.mean(axis=(0, 1, 2))) / (value.std(axis=(0, 1, 2)) + 1e-5)
            return value

    model = cnn.models.create("resnet20_cifar", num_classes=10, conv=StdConv)
    x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
    variables = model.init(jax.random.key(1), x, train=False)
    plain = cnn.models.create("resnet20_cifar", num_classes=10)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, plain.init(jax.random.key(1), x, train=False))
    assert not np.allclose(model.apply(variables, x, train=False), plain.apply(variables, x, train=False))


def test_the_switch_injects_the_kernels_where_a_model_has_the_fields_and_takes_them_back():
    simple = cnn.models.create("simple_cnn", num_classes=10)
    assert simple.conv is nn.Conv
    fast = cpu_kernels.use_cpu_kernels(simple)
    assert fast.conv is CpuConv and fast.max_pool is cpu_kernels.max_pool
    assert cpu_kernels.plain(fast) == simple
    resnet = cpu_kernels.use_cpu_kernels(cnn.models.create("resnet18", num_classes=10))  # no max_pool field
    assert resnet.conv is CpuConv and not hasattr(resnet, "max_pool")
    assert cpu_kernels.enabled("on") and not cpu_kernels.enabled("off")
    assert cpu_kernels.enabled("auto") == (jax.default_backend() == "cpu")
    with pytest.raises(ValueError, match="model.cpu_kernels='fast'; expected one of auto, on, off"):
        cpu_kernels.enabled("fast")


def test_forward_mode_differentiation_through_a_default_model():
    """Every model is plain Flax by default, so jvp (and Hessian-vector products) work on the CPU."""
    model = cnn.models.create("mobilenet_v2", num_classes=10, width_multiplier=0.35)
    x = jax.random.normal(jax.random.key(0), (1, 32, 32, 3))
    variables = model.init(jax.random.key(1), x, train=False)
    _, tangent = jax.jvp(lambda x: model.apply(variables, x, train=False), (x,), (jnp.ones_like(x),))
    assert tangent.shape == (1, 10) and bool(jnp.all(jnp.isfinite(tangent)))
    with pytest.raises(TypeError, match="custom_vjp"):  # the CPU depthwise kernel is reverse-mode only
        fast = cpu_kernels.use_cpu_kernels(model)
        jax.jvp(lambda x: fast.apply(variables, x, train=False), (x,), (jnp.ones_like(x),))


def test_compiler_options_are_used_where_the_jaxlib_accepts_them():
    assert cpu_kernels.compiler_options() == cpu_kernels.COMPILER_OPTIONS  # this jaxlib knows them
    # An option another jaxlib does not know is detected and left out rather than failing every step.
    assert not cpu_kernels._accepted((("xla_cpu_no_such_option", "1"),))
