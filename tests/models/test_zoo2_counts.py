"""Model zoo II (issue 7): exact parameter counts from shapes alone (``jax.eval_shape``, nothing
allocated), against torchvision's and timm's published ``num_params`` and, for the CIFAR variants,
the counts of kuangliu/pytorch-cifar's models (checked independently by the PyTorch builds in
``test_cifar_and_1d_references.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.models import create, input_shape, names
from cnn.models.efficientnet import B0_STAGES, SCALING, round_filters, round_repeats

# name: (num_classes, parameters).
COUNTS = {
    "googlenet": (1000, 6_624_904),  # torchvision, no auxiliary heads
    "inception_v3": (1000, 27_161_264),  # torchvision, with the auxiliary head
    "densenet121": (1000, 7_978_856),
    "densenet169": (1000, 14_149_480),
    "densenet201": (1000, 20_013_928),
    "mobilenet_v1": (1000, 4_231_976),
    "mobilenet_v2": (1000, 3_504_872),
    "mobilenet_v3_small": (1000, 2_542_856),
    "mobilenet_v3_large": (1000, 5_483_032),
    "efficientnet_b0": (1000, 5_288_548),
    "efficientnet_b1": (1000, 7_794_184),
    "efficientnet_b2": (1000, 9_109_994),
    "efficientnet_b3": (1000, 12_233_232),
    "convnext_tiny": (1000, 28_589_128),
    "convnext_small": (1000, 50_223_688),
    "squeezenet1_1": (1000, 1_235_496),
    "vit_tiny_patch16_224": (1000, 5_717_416),  # timm
    "vit_small_patch16_224": (1000, 22_050_664),  # timm
    "r3d_18": (400, 33_371_472),  # torchvision video, Kinetics-400
    # kuangliu/pytorch-cifar, 10 classes.
    "mobilenet_v2_cifar": (10, 2_296_922),
    "densenet121_cifar": (10, 6_956_298),
    "vgg16_cifar": (10, 14_728_266),
}

# Other configurations torchvision also publishes: (name, overrides, num_classes, parameters).
VARIANTS = [
    ("googlenet", {"aux_logits": True}, 1000, 13_004_888),
    ("inception_v3", {"aux_logits": False}, 1000, 23_834_568),
]


def _count(name, num_classes, **overrides):
    model = create(name, num_classes=num_classes, **overrides)
    x = jax.ShapeDtypeStruct((1,) + input_shape(name), jnp.float32)
    shapes = jax.eval_shape(lambda key, inputs: model.init(key, inputs, train=False), jax.random.key(0), x)
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes["params"]))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_count(name):
    num_classes, expected = COUNTS[name]
    assert _count(name, num_classes) == expected


@pytest.mark.parametrize("name, overrides, num_classes, expected", VARIANTS)
def test_parameter_count_of_published_variants(name, overrides, num_classes, expected):
    assert _count(name, num_classes, **overrides) == expected


def test_every_zoo2_model_is_registered():
    assert set(COUNTS) | {"cnn1d"} <= set(names())


def test_efficientnet_widths_and_depths_follow_compound_scaling():
    """B3 (width 1.2, depth 1.4): stage widths ``make_divisible(c * 1.2, 8)`` and ``ceil(n * 1.4)`` blocks."""
    width, depth, _, _ = SCALING["b3"]
    assert [round_filters(stage[4], width) for stage in B0_STAGES] == [24, 32, 48, 96, 136, 232, 384]
    assert [round_repeats(stage[5], depth) for stage in B0_STAGES] == [2, 3, 3, 5, 5, 6, 2]
    assert round_filters(32, 1.1) == 32 and round_filters(320, 1.1) == 352  # B2 stem and last stage


def test_cnn1d_counts_its_layers():
    """Embedding 100 x 16, convs 16->8->12 (kernel 3, no bias) with BatchNorm, dense 12 -> 4."""
    model = create("cnn1d", num_classes=4, vocab_size=100, embed_dim=16, widths=(8, 12), kernel_size=3)
    x = jax.ShapeDtypeStruct((1, 50), jnp.int32)
    shapes = jax.eval_shape(lambda key, inputs: model.init(key, inputs, train=False), jax.random.key(0), x)
    count = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(shapes["params"]))
    assert count == 100 * 16 + (3 * 16 * 8 + 2 * 8) + (3 * 8 * 12 + 2 * 12) + (12 * 4 + 4)
