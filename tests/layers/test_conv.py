"""ConvNormAct, DepthwiseConv and SeparableConv against PyTorch's convolutions with copied weights.

Inputs and weights are float32; the reference runs in float64 on the same float32 values, so the
tolerance (1e-5 relative) bounds our own rounding error, not the reference's.
"""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import BatchNorm, ConvNormAct, DepthwiseConv, SeparableConv, to_padding, to_tuple

# Per spatial rank: input size (odd and even sides), kernel (an even side too, so SAME pads unevenly),
# and the three explicit padding forms.
CASES = {
    1: dict(size=(11,), kernel=(4,), per_axis=(2,), pairs=((2, 1),)),
    2: dict(size=(9, 8), kernel=(3, 2), per_axis=(1, 2), pairs=((0, 2), (1, 0))),
    3: dict(size=(7, 6, 5), kernel=(2, 3, 3), per_axis=(2, 0, 1), pairs=((1, 0), (0, 2), (2, 1))),
}
PADDINGS = ("SAME", "VALID", "int", "per_axis", "pairs")
IN_CHANNELS, OUT_CHANNELS, BATCH = 4, 6, 2


def _layer_padding(kind, case):
    return {"SAME": "SAME", "VALID": "VALID", "int": 1, "per_axis": case["per_axis"], "pairs": case["pairs"]}[kind]


def _same_pairs(size, kernel, strides, dilation):
    """TensorFlow's SAME rule, written independently: output ceil(n / s), the odd pixel of padding at the end."""
    pairs = []
    for n, k, s, d in zip(size, kernel, strides, dilation):
        total = max((-(-n // s) - 1) * s + d * (k - 1) + 1 - n, 0)
        pairs.append((total // 2, total - total // 2))
    return tuple(pairs)


def _to_torch(torch, array):
    """``[N, *spatial, C]`` float32 -> ``[N, C, *spatial]`` float64 tensor."""
    array = np.asarray(array, dtype=np.float64)
    return torch.from_numpy(np.moveaxis(array, -1, 1).copy())


def _from_torch(tensor):
    return np.moveaxis(tensor.detach().numpy(), 1, -1)


def _kernel_to_torch(torch, kernel):
    """Flax ``[*k, in/groups, out]`` -> PyTorch ``[out, in/groups, *k]``."""
    kernel = np.asarray(kernel, dtype=np.float64)
    rank = kernel.ndim - 2
    return torch.from_numpy(np.transpose(kernel, (rank + 1, rank) + tuple(range(rank))).copy())


def _torch_conv(torch, x, kernel, bias, *, strides, padding, dilation, groups):
    """PyTorch's ``conv{1,2,3}d`` with our padding spelled in its terms (explicit pairs via ``F.pad``)."""
    functional = torch.nn.functional
    rank = x.ndim - 2
    conv = {1: functional.conv1d, 2: functional.conv2d, 3: functional.conv3d}[rank]
    inputs = _to_torch(torch, x)
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):  # (low, high) pairs: pad first
        inputs = functional.pad(inputs, [p for pair in reversed(padding) for p in pair])
        padding = 0
    weight = _kernel_to_torch(torch, kernel)
    bias = None if bias is None else torch.from_numpy(np.asarray(bias, dtype=np.float64))
    out = conv(inputs, weight, bias, stride=strides, padding=padding, dilation=dilation, groups=groups)
    return _from_torch(out)


def _shapes(module, x):
    """The variables ``init`` would make, as shapes only (tracing is cheap; compiling initialisers is not)."""
    return jax.eval_shape(lambda key: module.init(key, x, train=False), jax.random.key(0))


def _random_variables(module, x, seed):
    """Every variable of ``module`` drawn at random (bias and norm parameters included, so copying them is tested)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if path[-1].key == "kernel":
            return jnp.asarray(rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])), jnp.float32)
        if path[-1].key in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 2, size=leaf.shape), jnp.float32)
        return jnp.asarray(rng.normal(size=leaf.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, _shapes(module, x))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("rank", sorted(CASES))
@pytest.mark.parametrize("padding_kind", PADDINGS)
@pytest.mark.parametrize(
    "strides,dilation,groups,use_bias",
    list(itertools.product((1, 2), (1, 2), (1, 2), (False, True))),
)
def test_conv_matches_torch(torch, assert_close, rank, padding_kind, strides, dilation, groups, use_bias):
    case = CASES[rank]
    padding = _layer_padding(padding_kind, case)
    rng = np.random.default_rng([rank, PADDINGS.index(padding_kind), strides, dilation, groups, use_bias])
    x = rng.normal(size=(BATCH,) + case["size"] + (IN_CHANNELS,)).astype(np.float32)
    # Weights are drawn here (init is slow and tested elsewhere); apply checks their shapes against the layer's.
    fan_in = IN_CHANNELS // groups * int(np.prod(case["kernel"]))
    params = {"kernel": (rng.normal(size=case["kernel"] + (IN_CHANNELS // groups, OUT_CHANNELS)) / np.sqrt(fan_in))}
    if use_bias:
        params["bias"] = rng.normal(size=(OUT_CHANNELS,))
    params = jax.tree_util.tree_map(lambda p: jnp.asarray(p, jnp.float32), params)
    layer = ConvNormAct(
        OUT_CHANNELS, case["kernel"], strides, padding, dilation, groups, use_bias=use_bias, norm=None, act=None
    )
    ours = layer.apply({"params": {"conv": params}}, x, train=False)

    strides_t, dilation_t = to_tuple(strides, rank, "strides"), to_tuple(dilation, rank, "dilation")
    if padding_kind == "SAME":
        # PyTorch's padding="same" exists only for stride 1; with strides use the TF rule as explicit pairs.
        torch_padding = "same" if strides == 1 else _same_pairs(case["size"], case["kernel"], strides_t, dilation_t)
    elif padding_kind == "VALID":
        torch_padding = "valid"
    else:
        torch_padding = padding
    expected = _torch_conv(
        torch, x, params["kernel"], params.get("bias"),
        strides=strides_t, padding=torch_padding, dilation=dilation_t, groups=groups,
    )
    assert_close(ours, expected, rtol=1e-5)


def test_same_padding_keeps_ceil_size_under_stride():
    x = jnp.zeros((1, 9, 8, 3))
    out = jax.eval_shape(lambda: ConvNormAct(5, (3, 2), 2, "SAME", norm=None).init_with_output(
        jax.random.key(0), x, train=False)[0])
    assert out.shape == (1, 5, 4, 5)


def test_bias_defaults_off_before_norm_and_on_without():
    x = jnp.zeros((1, 6, 6, 3))
    with_norm = _shapes(ConvNormAct(4), x)
    without = _shapes(ConvNormAct(4, norm=None), x)
    assert set(with_norm["params"]["conv"]) == {"kernel"}
    assert set(with_norm["params"]["norm"]) == {"scale", "bias"}
    assert set(with_norm["batch_stats"]["norm"]) == {"mean", "var"}
    assert set(without["params"]["conv"]) == {"kernel", "bias"}
    assert "batch_stats" not in without


def test_conv_norm_act_train_matches_torch(torch, assert_close):
    """conv -> BatchNorm (batch statistics) -> ReLU, and the running statistics it leaves behind."""
    x = np.random.default_rng(0).normal(size=(4, 8, 7, 3)).astype(np.float32)
    layer = ConvNormAct(5, 3, strides=2, padding=1)
    variables = _random_variables(layer, x, seed=2)
    params = variables["params"]
    ours, updates = layer.apply(variables, x, train=True, mutable=["batch_stats"])

    conv = torch.nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False).double()
    norm = torch.nn.BatchNorm2d(5, momentum=0.1, eps=1e-5).double()
    with torch.no_grad():
        conv.weight.copy_(_kernel_to_torch(torch, params["conv"]["kernel"]))
        norm.weight.copy_(torch.from_numpy(np.asarray(params["norm"]["scale"], np.float64)))
        norm.bias.copy_(torch.from_numpy(np.asarray(params["norm"]["bias"], np.float64)))
        norm.running_mean.copy_(torch.from_numpy(np.asarray(variables["batch_stats"]["norm"]["mean"], np.float64)))
        norm.running_var.copy_(torch.from_numpy(np.asarray(variables["batch_stats"]["norm"]["var"], np.float64)))
    expected = _from_torch(torch.relu(norm.train()(conv(_to_torch(torch, x)))))
    assert_close(ours, expected, rtol=1e-5)
    assert_close(updates["batch_stats"]["norm"]["mean"], norm.running_mean.numpy(), rtol=1e-5)
    assert_close(updates["batch_stats"]["norm"]["var"], norm.running_var.numpy(), rtol=1e-5)


@pytest.mark.parametrize("depth_multiplier", [1, 2])
def test_separable_conv_matches_torch(torch, assert_close, depth_multiplier):
    """Depthwise (groups = channels, ``depth_multiplier`` filters each) then pointwise 1x1, no norm."""
    channels, features = 3, 5
    x = np.random.default_rng(3).normal(size=(2, 9, 9, channels)).astype(np.float32)
    layer = SeparableConv(features, 3, strides=2, padding=1, depth_multiplier=depth_multiplier, norm=None, act=None)
    variables = _random_variables(layer, x, seed=4)
    ours = layer.apply(variables, x, train=False)

    depthwise = variables["params"]["depthwise"]["depthwise"]["conv"]
    pointwise = variables["params"]["pointwise"]["conv"]
    assert depthwise["kernel"].shape == (3, 3, 1, channels * depth_multiplier)
    assert pointwise["kernel"].shape == (1, 1, channels * depth_multiplier, features)
    hidden = _torch_conv(
        torch, x, depthwise["kernel"], depthwise["bias"], strides=2, padding=1, dilation=1, groups=channels
    )
    expected = _torch_conv(torch, hidden, pointwise["kernel"], pointwise["bias"], strides=1, padding=0, dilation=1,
                           groups=1)
    assert_close(ours, expected, rtol=1e-5)


def test_depthwise_conv_has_one_filter_per_channel():
    x = jnp.zeros((1, 8, 8, 6))
    variables = _shapes(DepthwiseConv(3, depth_multiplier=2), x)
    assert variables["params"]["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 12)


def test_bfloat16_compute_keeps_float32_params_and_statistics():
    x = jnp.ones((2, 6, 6, 3), jnp.bfloat16)
    layer = ConvNormAct(4, dtype=jnp.bfloat16)
    variables = _shapes(layer, x)
    out, updates = jax.eval_shape(lambda v: layer.apply(v, x, train=True, mutable=["batch_stats"]), variables)
    assert out.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(updates)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(features=4, groups=3), "groups=3"),
        (dict(features=4, kernel_size=(3, 3, 3)), "kernel_size=(3, 3, 3)"),
        (dict(features=4, padding="FULL"), "'FULL'"),
        (dict(features=4, padding=(1, 1, 1)), "padding=(1, 1, 1)"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _shapes(ConvNormAct(**kwargs), jnp.zeros((1, 6, 6, 4)))


def test_to_padding_forms():
    assert to_padding("same", 2) == "SAME"
    assert to_padding(2, 2) == ((2, 2), (2, 2))
    assert to_padding((1, 0), 2) == ((1, 1), (0, 0))
    assert to_padding(((0, 1), 2), 2) == ((0, 1), (2, 2))


def test_norm_is_injected(assert_close):
    """A custom ``norm`` factory replaces BatchNorm (dependency injection, as the Flax ImageNet example)."""
    x = jnp.ones((2, 5, 5, 3))
    layer = ConvNormAct(4, norm=lambda **kw: BatchNorm(momentum=0.5, **kw))
    variables = _random_variables(layer, x, seed=5)
    variables["batch_stats"] = jax.tree_util.tree_map(jnp.zeros_like, variables["batch_stats"])
    _, updates = layer.apply(variables, x, train=True, mutable=["batch_stats"])
    # With momentum 0.5 the running mean moves halfway from 0 to the batch mean (0.1 of it with the default).
    conv_out = jax.lax.conv_general_dilated(
        x, variables["params"]["conv"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    assert_close(updates["batch_stats"]["norm"]["mean"], 0.5 * np.asarray(conv_out).mean(axis=(0, 1, 2)), rtol=1e-5)
