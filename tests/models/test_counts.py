"""Parameter counts of the zoo against the published ones: the counts on record in the registry (which
``test_registry.py`` proves are the models' own) equal torchvision's, timm's, kuangliu's and He et al.'s;
counts of published variants; the registry's behaviour and the compute dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn.models import create, entry, input_shape, names
from cnn.models.efficientnet import B0_STAGES, SCALING, round_filters, round_repeats

# name: (num_classes, parameters): torchvision's published counts for 1000 classes unless stated.
COUNTS = {
    "simple_cnn": (10, 225_034),
    "lenet5": (10, 61_706),
    "alexnet": (1000, 61_100_840),
    "vgg11": (1000, 132_863_336),
    "vgg13": (1000, 133_047_848),
    "vgg16": (1000, 138_357_544),
    "vgg19": (1000, 143_667_240),
    "vgg11_bn": (1000, 132_868_840),
    "vgg13_bn": (1000, 133_053_736),
    "vgg16_bn": (1000, 138_365_992),
    "vgg19_bn": (1000, 143_678_248),
    "resnet18": (1000, 11_689_512),
    "resnet34": (1000, 21_797_672),
    "resnet50": (1000, 25_557_032),
    "resnet101": (1000, 44_549_160),
    "resnet152": (1000, 60_192_808),
    "resnext50_32x4d": (1000, 25_028_904),
    "wide_resnet50_2": (1000, 68_883_240),
    "resnet18_cifar": (10, 11_173_962),
    "resnet20_cifar": (10, 269_722),
    "resnet56_cifar": (10, 853_018),
    "resnet110_cifar": (10, 1_727_962),
    # Registered beyond the table; torchvision publishes these too.
    "resnext101_32x8d": (1000, 88_791_336),
    "wide_resnet101_2": (1000, 126_886_696),
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

# He et al. 2016, Table 6 (CIFAR-10): parameters in millions as printed.
PAPER_MILLIONS = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7}


def _shapes(name, num_classes):
    model = create(name, num_classes=num_classes)
    x = jax.ShapeDtypeStruct((1,) + input_shape(name), jnp.float32)
    return jax.eval_shape(lambda key, inputs: model.init(key, inputs, train=False), jax.random.key(0), x)


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


# Other configurations torchvision also publishes: (name, overrides, num_classes, parameters).
VARIANTS = [
    ("googlenet", {"aux_logits": True}, 1000, 13_004_888),
    ("inception_v3", {"aux_logits": False}, 1000, 23_834_568),
]


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_recorded_count_is_the_published_one(name):
    num_classes, expected = COUNTS[name]
    assert entry(name).default_num_classes == num_classes
    assert entry(name).params == expected


@pytest.mark.parametrize("name, overrides, num_classes, expected", VARIANTS)
def test_parameter_count_of_published_variants(name, overrides, num_classes, expected):
    model = create(name, num_classes=num_classes, **overrides)
    x = jax.ShapeDtypeStruct((1,) + input_shape(name), jnp.float32)
    shapes = jax.eval_shape(lambda key, inputs: model.init(key, inputs, train=False), jax.random.key(0), x)
    assert _count(shapes["params"]) == expected


def _cifar_resnet_count(depth, num_classes=10):
    """6n+2 layers, widths 16/32/64, 3x3 convs without bias, BatchNorm (2 per channel), parameter-free shortcuts."""
    blocks = (depth - 2) // 6
    total = 3 * 9 * 16 + 2 * 16  # stem conv + norm
    for stage, width in enumerate((16, 32, 64)):
        for index in range(blocks):
            in_width = width // 2 if stage > 0 and index == 0 else width
            total += 9 * in_width * width + 9 * width * width + 2 * 2 * width
    return total + 64 * num_classes + num_classes


@pytest.mark.parametrize("depth", sorted(PAPER_MILLIONS))
def test_cifar_resnets_follow_he_et_al(depth):
    count = _count(_shapes(f"resnet{depth}_cifar", 10)["params"])
    assert count == _cifar_resnet_count(depth)
    digits = 1 if PAPER_MILLIONS[depth] >= 1 else 2
    assert round(count / 1e6, digits) == PAPER_MILLIONS[depth]


def test_batch_stats_are_not_parameters():
    """BatchNorm's running mean and variance live in ``batch_stats``: 2 per channel, never counted above."""
    shapes = _shapes("resnet18", 1000)
    assert set(shapes) == {"params", "batch_stats"}
    # resnet18 has 20 norms over 4800 channels: its 9,600 statistics equal its 9,600 norm scale+bias values.
    assert _count(shapes["batch_stats"]) == 9_600
    plain = _shapes("vgg11", 1000)
    assert set(plain) == {"params"}


def test_names_are_lower_case_sorted_and_cover_the_table():
    registered = names()
    assert registered == sorted(registered)
    assert all(name == name.lower() for name in registered)
    assert set(COUNTS) <= set(registered)


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match="unknown model 'resnet19'") as error:
        create("resnet19", num_classes=10)
    assert "Did you mean" in str(error.value)
    assert "resnet18" in str(error.value).split("Did you mean")[1].split("?")[0]


def test_unknown_override_is_named():
    with pytest.raises(ValueError, match="'dropout'") as error:
        create("resnet18", num_classes=10, dropout=0.5)
    assert "drop_rate" in str(error.value)  # the message lists the fields that do exist


def test_known_override_reaches_the_model():
    model = create("resnet18", num_classes=10, drop_rate=0.25, bn_momentum=0.99)
    assert (model.drop_rate, model.bn_momentum, model.num_classes) == (0.25, 0.99, 10)


@pytest.mark.parametrize("num_classes", [-1, 2.0, True, "10"])
def test_bad_num_classes_is_named(num_classes):
    with pytest.raises(ValueError, match=f"num_classes={num_classes!r}"):
        create("lenet5", num_classes=num_classes)


@pytest.mark.parametrize("name", ["simple_cnn", "lenet5", "alexnet", "vgg11_bn", "resnet18", "resnet20_cifar"])
def test_bfloat16_compute_keeps_float32_variables(name):
    """``dtype=bfloat16``: bfloat16 logits; parameters and (updated) statistics stay float32."""
    model = create(name, num_classes=7, dtype=jnp.bfloat16)
    x = jax.ShapeDtypeStruct((2,) + input_shape(name), jnp.float32)
    variables = jax.eval_shape(lambda key, inputs: model.init(key, inputs, train=False), jax.random.key(0), x)
    logits = jax.eval_shape(lambda v, inputs: model.apply(v, inputs, train=False), variables, x)
    _, updates = jax.eval_shape(
        lambda v, inputs: model.apply(v, inputs, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(1)}),
        variables, x,
    )
    assert logits.shape == (2, 7)
    assert logits.dtype == jnp.bfloat16
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves((variables, updates))} == {jnp.dtype(jnp.float32)}


def test_bfloat16_logits_track_float32_logits():
    """A real bfloat16 run of a small model stays within bfloat16 rounding of the float32 one."""
    x = jax.random.uniform(jax.random.key(2), (4, 28, 28, 1))
    full = create("simple_cnn", num_classes=10)
    half = create("simple_cnn", num_classes=10, dtype=jnp.bfloat16)
    variables = jax.jit(lambda key: full.init(key, x, train=False))(jax.random.key(0, impl="rbg"))
    reference = jax.jit(lambda v: full.apply(v, x, train=False))(variables)
    logits = jax.jit(lambda v: half.apply(v, x, train=False))(variables)
    assert logits.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(reference)))
    np.testing.assert_allclose(np.asarray(logits, np.float32), reference, atol=0.05 * scale)
    assert not np.array_equal(np.asarray(logits, np.float32), np.asarray(reference))  # bfloat16 really ran


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
