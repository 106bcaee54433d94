"""Residual blocks: against a PyTorch reference written from the papers' definitions, with copied weights
(basic, bottleneck v1.5 with groups and width, pre-activation, zero-pad shortcut); shapes of the
ResNeXt / Wide ResNet width rule; zero-initialised last norms make a block ``act(shortcut(x))`` at init.

The reference is functional (``torch.nn.functional`` on our parameter tree) and runs in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.layers import BasicBlock, Bottleneck, ConvNormAct, PreActBlock, PreActBottleneck, zero_pad_shortcut


# The initialisers' random draws compile far faster with the "rbg" generator than with threefry on the CPU.
_FAST_KEY = jax.random.key(0, impl="rbg")


def _randomise(variables, seed):
    """Every parameter and statistic non-trivial (the zero-initialised scales included), magnitudes O(1)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            value = rng.normal(size=leaf.shape) / np.sqrt(fan_in)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, size=leaf.shape)
        else:  # bias, mean
            value = 0.2 * rng.normal(size=leaf.shape)
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, variables)


class _Reference:
    """A block's forward pass in PyTorch (NCHW, float64), reading our parameters by name."""

    def __init__(self, torch, variables, train):
        self.torch, self.functional, self.train = torch, torch.nn.functional, train
        self.params, self.stats = variables["params"], variables.get("batch_stats", {})

    def tensor(self, array):
        return self.torch.from_numpy(np.asarray(array, np.float64).copy())

    def conv(self, x, name, stride=1, groups=1):
        kernel = np.asarray(self.params[name]["conv"]["kernel"], np.float64)
        weight = self.tensor(np.transpose(kernel, (3, 2, 0, 1)))
        return self.functional.conv2d(x, weight, None, stride, kernel.shape[0] // 2, groups=groups)

    def norm(self, x, params, stats):
        return self.functional.batch_norm(
            x, self.tensor(stats["mean"]), self.tensor(stats["var"]), self.tensor(params["scale"]),
            self.tensor(params["bias"]), training=self.train, momentum=0.1, eps=1e-5,
        )

    def conv_norm(self, x, name, stride=1, groups=1):
        return self.norm(self.conv(x, name, stride, groups), self.params[name]["norm"], self.stats[name]["norm"])

    def basic(self, x, stride, shortcut):
        relu = self.torch.relu
        y = self.conv_norm(relu(self.conv_norm(x, "conv1", stride)), "conv2")
        return relu(y + shortcut(x))

    def bottleneck(self, x, stride, groups, shortcut):
        """ResNet v1.5: the stride sits on the 3x3 conv."""
        relu = self.torch.relu
        y = relu(self.conv_norm(x, "conv1"))
        y = relu(self.conv_norm(y, "conv2", stride, groups))
        return relu(self.conv_norm(y, "conv3") + shortcut(x))

    def preact(self, x, stride, groups, bottleneck):
        """He et al. 2016 ("Identity Mappings"): BN-ReLU-conv units; a projection reads the pre-activated input."""
        relu = self.torch.relu
        pre = relu(self.norm(x, self.params["preact"], self.stats["preact"]))
        shortcut = self.conv(pre, "shortcut", stride) if "shortcut" in self.params else x
        if bottleneck:
            y = relu(self.conv_norm(pre, "conv1"))
            y = relu(self.conv_norm(y, "conv2", stride, groups))
            y = self.conv(y, "conv3")
        else:
            y = self.conv(relu(self.conv_norm(pre, "conv1", stride)), "conv2")
        return y + shortcut

    def projection(self, stride):
        return lambda x: self.conv_norm(x, "shortcut", stride)

    def zero_pad(self, stride, features):
        """Option A as the CIFAR ResNet papers' code writes it: subsample, pad channels equally on both sides."""

        def shortcut(x):
            extra = features - x.shape[1]
            return self.functional.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, extra // 2, extra - extra // 2))

        return shortcut


def _apply(block, variables, x, train):
    """One jitted apply (far faster to compile than op-by-op); train mode uses and updates batch statistics."""
    if train:
        return jax.jit(lambda v, inputs: block.apply(v, inputs, train=True, mutable=["batch_stats"])[0])(variables, x)
    return jax.jit(lambda v, inputs: block.apply(v, inputs, train=False))(variables, x)


def _run(torch, block, x, train, seed, reference_fn):
    # Every value is redrawn, so only the shapes of an init are needed.
    variables = _randomise(jax.eval_shape(lambda key: block.init(key, x, train=False), jax.random.key(0)), seed)
    ours = _apply(block, variables, x, train)
    reference = _Reference(torch, variables, train)
    expected = reference_fn(reference, torch.from_numpy(np.moveaxis(np.asarray(x, np.float64), -1, 1).copy()))
    return ours, np.moveaxis(expected.numpy(), 1, -1), variables


def _input(channels, size=8, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(2, size, size, channels)), jnp.float32)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("in_channels,features,strides", [(8, 8, 1), (8, 16, 2), (8, 16, 1)])
def test_basic_block_matches_torch(torch, assert_close, train, in_channels, features, strides):
    block = BasicBlock(features, strides=strides)
    x = _input(in_channels)
    identity = in_channels == features and strides == 1

    def reference(ref, inputs):
        return ref.basic(inputs, strides, (lambda t: t) if identity else ref.projection(strides))

    ours, expected, variables = _run(torch, block, x, train, seed=1, reference_fn=reference)
    assert ("shortcut" in variables["params"]) == (not identity)
    assert_close(ours, expected, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(
    "in_channels,features,strides,groups,base_width",
    [
        (64, 16, 1, 1, 64),  # identity shortcut (4 * 16 = 64)
        (12, 16, 2, 1, 64),  # projection, stride on the 3x3
        (12, 16, 2, 2, 32),  # ResNeXt-style: width int(16 * 32 / 64) * 2 = 16 in 2 groups
        (12, 8, 1, 1, 128),  # Wide ResNet-style: width 16
    ],
)
def test_bottleneck_matches_torch(torch, assert_close, train, in_channels, features, strides, groups, base_width):
    block = Bottleneck(features, strides=strides, groups=groups, base_width=base_width)
    x = _input(in_channels)
    identity = in_channels == 4 * features and strides == 1

    def reference(ref, inputs):
        return ref.bottleneck(inputs, strides, groups, (lambda t: t) if identity else ref.projection(strides))

    ours, expected, _ = _run(torch, block, x, train, seed=2, reference_fn=reference)
    assert ours.shape == (2, 8 // strides, 8 // strides, 4 * features)
    assert_close(ours, expected, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize(
    "block_cls,in_channels,features,strides,groups",
    [
        (PreActBlock, 8, 8, 1, 1),
        (PreActBlock, 8, 16, 2, 1),
        (PreActBottleneck, 32, 8, 1, 1),
        (PreActBottleneck, 12, 8, 2, 1),
        (PreActBottleneck, 12, 16, 2, 2),
    ],
)
def test_preactivation_blocks_match_torch(torch, assert_close, train, block_cls, in_channels, features, strides,
                                          groups):
    bottleneck = block_cls is PreActBottleneck
    block = block_cls(features, strides=strides, groups=groups, base_width=64 // groups if bottleneck else 64)
    x = _input(in_channels)

    def reference(ref, inputs):
        return ref.preact(inputs, strides, groups, bottleneck)

    ours, expected, variables = _run(torch, block, x, train, seed=3, reference_fn=reference)
    # Nothing follows the addition, and the projection (when there is one) is a bare conv.
    assert set(variables["params"].get("shortcut", {"conv": None})) == {"conv"}
    assert "norm" not in variables["params"][("conv3" if bottleneck else "conv2")]
    assert_close(ours, expected, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_zero_pad_shortcut_block_matches_torch(torch, assert_close, train):
    block = BasicBlock(32, strides=2, shortcut="zero_pad")
    x = _input(16)

    def reference(ref, inputs):
        return ref.basic(inputs, 2, ref.zero_pad(2, 32))

    ours, expected, variables = _run(torch, block, x, train, seed=4, reference_fn=reference)
    assert "shortcut" not in variables["params"]
    assert ours.shape == (2, 4, 4, 32)
    assert_close(ours, expected, rtol=1e-5)


@pytest.mark.parametrize("size,strides", [(8, 1), (8, 2), (7, 2)])
def test_zero_pad_shortcut_subsamples_and_pads_channels(size, strides):
    x = _input(16, size=size)
    out = zero_pad_shortcut(x, 32, strides)
    kept = x[:, ::strides, ::strides, :]
    assert out.shape == (2, -(-size // strides), -(-size // strides), 32)
    np.testing.assert_array_equal(out[..., 8:24], kept)
    np.testing.assert_array_equal(out[..., :8], 0.0)
    np.testing.assert_array_equal(out[..., 24:], 0.0)


def test_zero_pad_shortcut_cannot_shrink_channels():
    with pytest.raises(ValueError, match="cannot shrink 16 channels to 8"):
        zero_pad_shortcut(_input(16), 8, 1)


@pytest.mark.parametrize(
    "features,groups,base_width,widths",
    [
        (64, 1, 64, (64, 64)),  # ResNet-50, first stage
        (64, 32, 4, (128, 4)),  # ResNeXt-50 32x4d: 128 channels, 4 per group
        (128, 32, 8, (512, 16)),  # ResNeXt-101 32x8d, second stage
        (64, 1, 128, (128, 128)),  # Wide ResNet-50-2
    ],
)
def test_bottleneck_width_rule(features, groups, base_width, widths):
    """width = int(features * base_width / 64) * groups (torchvision); the output is always 4 * features."""
    width, per_group = widths
    block = Bottleneck(features, groups=groups, base_width=base_width)
    x = jnp.zeros((1, 8, 8, 256))
    variables = jax.eval_shape(lambda: block.init(jax.random.key(0), x, train=False))
    params = variables["params"]
    assert params["conv1"]["conv"]["kernel"].shape == (1, 1, 256, width)
    assert params["conv2"]["conv"]["kernel"].shape == (3, 3, per_group, width)
    assert params["conv3"]["conv"]["kernel"].shape == (1, 1, width, 4 * features)
    assert ("shortcut" in params) == (4 * features != 256)


@pytest.mark.parametrize(
    "block,in_channels,last_norm",
    [
        (BasicBlock(8), 8, "conv2"),
        (BasicBlock(16, strides=2), 8, "conv2"),
        (BasicBlock(16, strides=2, shortcut="zero_pad"), 8, "conv2"),
        (Bottleneck(4), 16, "conv3"),
        (Bottleneck(8, strides=2, groups=2, base_width=32), 12, "conv3"),
    ],
)
def test_zero_init_last_makes_the_block_act_of_shortcut(block, in_channels, last_norm):
    """At init the residual branch is exactly zero: identity blocks give relu(x); the others relu(shortcut(x))."""
    x = _input(in_channels, seed=5)
    projects = not block.keeps_shape(x) and block.shortcut == "projection"

    @jax.jit  # one compilation for the init and every apply below
    def run(key):
        variables = block.init(key, x, train=False)
        # With every scale at one (where zero_init_last=False starts) the branch is no longer zero.
        unit_scale = jax.tree_util.tree_map_with_path(
            lambda path, leaf: jnp.ones_like(leaf) if path[-1].key == "scale" else leaf, variables
        )
        outputs = {}
        for train in (False, True):
            if projects:  # 1x1 conv (stride) + norm, with the block's own shortcut weights
                projection = ConvNormAct(4 * block.features if isinstance(block, Bottleneck) else block.features, 1,
                                         block.strides, padding=0, act=None)
                shortcut_variables = {name: tree["shortcut"] for name, tree in variables.items()}
                shortcut = projection.apply(shortcut_variables, x, train=train, mutable=["batch_stats"])[0]
            elif block.shortcut == "zero_pad":
                shortcut = zero_pad_shortcut(x, block.features, block.strides)
            else:
                shortcut = x
            outputs[train] = (block.apply(variables, x, train=train, mutable=["batch_stats"])[0],
                              block.apply(unit_scale, x, train=train, mutable=["batch_stats"])[0],
                              jax.nn.relu(shortcut))
        return variables, outputs

    variables, outputs = run(_FAST_KEY)
    for name, tree in variables["params"].items():
        np.testing.assert_array_equal(tree["norm"]["scale"], 0.0 if name == last_norm else 1.0, err_msg=name)
    for train, (out, unit_scale_out, expected) in outputs.items():
        if projects:  # the same arithmetic, fused differently by XLA inside the block: equal up to rounding
            np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6, err_msg=f"train={train}")
        else:
            np.testing.assert_array_equal(out, expected, err_msg=f"train={train}")
        assert not np.allclose(unit_scale_out, expected, atol=1e-3)  # so the assertions above can fail


def test_zero_init_last_off_keeps_unit_scales():
    block = BasicBlock(8, zero_init_last=False)
    variables = block.init(_FAST_KEY, _input(8), train=False)
    np.testing.assert_array_equal(variables["params"]["conv2"]["norm"]["scale"], np.ones(8))


def test_basic_block_rejects_groups_and_width():
    with pytest.raises(ValueError, match="groups=1 and base_width=64"):
        jax.eval_shape(lambda key: BasicBlock(8, groups=2).init(key, _input(8), train=False), jax.random.key(0))


def test_unknown_shortcut_is_named():
    with pytest.raises(ValueError, match="shortcut='conv'"):
        block = BasicBlock(16, strides=2, shortcut="conv")
        jax.eval_shape(lambda key: block.init(key, _input(8), train=False), jax.random.key(0))


def test_pre_activation_zero_init_last_starts_the_branch_at_zero():
    import jax
    import numpy as np

    from cnn.layers import PreActBlock, PreActBottleneck

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 16))
    for block in (PreActBlock(16), PreActBottleneck(4)):
        variables = block.init(jax.random.PRNGKey(1), x, train=False)
        np.testing.assert_array_equal(block.apply(variables, x, train=False), x)  # identity at init
        other = block.clone(zero_init_last=False)
        assert not np.allclose(other.apply(other.init(jax.random.PRNGKey(1), x, train=False), x, train=False), x)
