"""cnn.analysis.receptive_field, measured from gradients, against the analytic rule."""

import flax.linen as nn
import numpy as np
import pytest

import cnn.models
from cnn.analysis import receptive_field
from cnn.layers import ConvNormAct, max_pool


class Stack(nn.Module):
    depth: int = 3
    kernel: int = 3
    dilation: int = 1
    pool_after_first: bool = False

    @nn.compact
    def __call__(self, x, train):
        for i in range(self.depth):
            x = ConvNormAct(4, self.kernel, padding="SAME", dilation=self.dilation)(x, train)
            if i == 0 and self.pool_after_first:
                x = max_pool(x, 2)
        return x


def test_three_stacked_3x3_convs_see_7x7():
    field = receptive_field(Stack(depth=3), (32, 32, 1))
    assert field.size == (7, 7)
    assert field.mask.sum() == 49  # the whole square, not just its bounding box


@pytest.mark.parametrize("depth,kernel,dilation,expected", [(1, 3, 1, 3), (2, 5, 1, 9), (2, 3, 2, 9), (4, 3, 1, 9)])
def test_stacked_convs_follow_the_rule(depth, kernel, dilation, expected):
    # r = 1 + depth * dilation * (kernel - 1) for stride-1 convs.
    assert receptive_field(Stack(depth, kernel, dilation), (40, 40, 2)).size == (expected, expected)


def test_pooling_multiplies_later_growth():
    # conv3 (3) -> pool2 (4) -> conv3 (+2*2 = 8) -> conv3 (+4 = 12)
    assert receptive_field(Stack(depth=3, pool_after_first=True), (48, 48, 1)).size == (12, 12)


def test_1d_and_3d_inputs():
    assert receptive_field(Stack(depth=2), (30, 1)).size == (5,)
    assert receptive_field(Stack(depth=2), (12, 12, 12, 1)).size == (5, 5, 5)


def test_resnet_stage_from_a_layer_path():
    model = cnn.models.create("resnet18", num_classes=10, widths=(8, 8, 8, 8), stem_width=8)  # narrow: same field
    # stem 7x7/2 -> 7; max pool 3x3/2 -> 11; two 3x3 convs at stride 4 -> 27
    assert receptive_field(model, (64, 64, 3), layer="stage1_block1").size == (27, 27)
    # Zero-initialised residual scales do not hide the branch: weights are redrawn.
    assert receptive_field(model, (64, 64, 3), layer="stage1_block2").size == (43, 43)


def test_given_zero_init_weights_show_only_the_shortcut_path():
    model = cnn.models.create("resnet20_cifar", num_classes=10)
    import jax
    import jax.numpy as jnp

    variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(jnp.zeros((1, 32, 32, 3)))
    architectural = receptive_field(model, (32, 32, 3), layer="stage1_block1")
    at_init = receptive_field(model, (32, 32, 3), layer="stage1_block1", variables=variables, weights="given")
    assert architectural.size == (7, 7)
    assert at_init.size == (3, 3)  # the branch's last scale is zero: only the stem is seen


def test_classifier_sees_its_whole_valid_input():
    # simple_cnn's VALID convs and floor pooling never read the last two rows and columns.
    field = receptive_field(cnn.models.create("simple_cnn", num_classes=10), (28, 28, 1))
    assert field.size == (26, 26) and field.start == (0, 0)
    assert not np.asarray(field.mask)[26:, :].any()


def test_bad_layer_and_position_are_errors():
    with pytest.raises(ValueError, match="not a submodule path"):
        receptive_field(Stack(), (16, 16, 1), layer="nope")
    with pytest.raises(ValueError, match="outside the output"):
        receptive_field(Stack(), (16, 16, 1), position=(99, 0))
