"""cnn.analysis.summary: params, FLOPs against published counts, the per-layer table."""

import flax.linen as nn
import jax.numpy as jnp
import pytest

import cnn.models
from cnn.analysis import summary
from cnn.layers import ConvNormAct

# Published multiply-adds at 224x224 (torchvision's model docs; the papers), in G.
PUBLISHED_MULT_ADDS = {"alexnet": 0.71, "vgg16": 15.47, "resnet18": 1.81, "resnet50": 4.09}


@pytest.mark.parametrize("name", sorted(PUBLISHED_MULT_ADDS))
def test_flops_match_published_multiply_adds(name):
    result = summary(cnn.models.create(name, num_classes=1000), (224, 224, 3))
    # FLOPs are 2 x multiply-adds, and the multiply-adds equal the published figure at its printed precision.
    assert result.flops == 2 * result.macs
    assert round(result.macs / 1e9, 2) == PUBLISHED_MULT_ADDS[name]
    # XLA's count of the whole graph adds element-wise work; skipping taps on zero padding, it is smaller.
    ratio = result.xla_flops / result.flops
    assert 1.0 <= ratio < 1.05, f"{name}: XLA counts {ratio:.3f}x 2 x multiply-adds"
    assert result.xla_flops_without_padding < result.xla_flops


def test_conv_flops_are_exact():
    class OneConv(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            return ConvNormAct(8, 3, strides=2, padding=1, norm=None, act=None, use_bias=False)(x, train)

    result = summary(OneConv(), (16, 16, 3))
    # 8x8 outputs x 8 channels x (3*3*3) taps, x 2.
    assert result.macs == 8 * 8 * 8 * 27 and result.flops == 2 * result.macs
    assert result.xla_flops == pytest.approx(8 * 8 * 8 * 27 * 2, abs=4)  # (+1 for the padding constant)
    assert result.params == 8 * 27
    # Without padding taps: rows/cols 0 of the output lose one kernel row/col each.
    assert result.xla_flops_without_padding == (8 * 3 - 1) ** 2 * 8 * 3 * 2


def test_multiply_adds_count_matrix_products_and_grouped_convs():
    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            x = nn.Conv(6, (3, 3), feature_group_count=3, padding="SAME")(x)  # 2 input channels per group
            x = x.reshape(x.shape[0], -1, 6)  # [N, 64, 6]
            attention = jnp.einsum("nqc,nkc->nqk", x, x)  # a batched matrix product
            return nn.Dense(4)(attention.reshape(x.shape[0], -1))

    result = summary(Mixed(), (8, 8, 6))
    assert result.macs == 8 * 8 * 6 * 9 * 2 + 64 * 64 * 6 + 64 * 64 * 4


def test_flops_are_per_example():
    model = cnn.models.create("simple_cnn", num_classes=10)
    assert summary(model, (28, 28, 1), batch_size=4).flops == pytest.approx(summary(model, (28, 28, 1)).flops)


def test_summary_table_and_counts():
    result = summary(cnn.models.create("resnet18", num_classes=10), (32, 32, 3))
    assert result.params == 11_181_642
    assert result.batch_stats == 2 * sum(  # mean and var of every BatchNorm
        [64] + [64] * 4 + [128] * 4 + [128] + [256] * 4 + [256] + [512] * 4 + [512]
    )
    assert result.output_shape == (1, 10)
    text = str(result)
    assert "stage4_block2" in text and "BatchNorm" in text and "11,181,642" in text
    rows = {row.path: row for row in result.rows}
    assert rows["stem/conv"].params == 7 * 7 * 3 * 64
    assert rows["stage2_block1/shortcut"].output_shape == "[1, 4, 4, 128]"
    assert rows["head/fc"].params == 512 * 10 + 10


def test_summary_of_bfloat16_model_keeps_float32_param_count():
    model = cnn.models.create("simple_cnn", num_classes=10, dtype=jnp.bfloat16)
    assert summary(model, (28, 28, 1)).params == 225_034


def test_a_zoo_models_summary_takes_the_shape_with_or_without_the_batch_axis():
    model = cnn.models.create("resnet18", num_classes=10)
    one, batch = summary(model, (32, 32, 3)), summary(model, (4, 32, 32, 3))
    assert one.params == batch.params == 11_181_642 and one.macs == batch.macs
    assert batch.input_shape == (4, 32, 32, 3) and batch.output_shape == (4, 10)
    for shape in ((32, 32), (1, 1, 32, 32, 3)):  # a 1-D or 3-D network would be built from these before
        with pytest.raises(ValueError, match=r"ResNet takes \[N, H, W, C\] \(NHWC\) inputs"):
            summary(model, shape)
