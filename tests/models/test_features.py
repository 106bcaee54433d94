"""``cnn.models.features``: stage names in network order, channels-last maps of the expected strides, a chosen
subset, and clear refusals. (Their values equal the twins' intermediate outputs: ``test_torch_twins.py``.)"""

import jax
import jax.numpy as jnp
import pytest

import cnn.models


def _zeros(model, x):
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def test_stages_come_in_network_order_with_their_strides():
    model = cnn.models.create("resnet18", num_classes=3, stage_sizes=(1, 1, 1, 1), widths=(4, 8, 8, 8), stem_width=4)
    x = jnp.zeros((2, 64, 64, 3))
    maps = cnn.models.features(model, _zeros(model, x), x)  # outside jit: the dict keeps the network's order
    assert list(maps) == list(cnn.models.feature_stages(model)) == ["stem", "stage1", "stage2", "stage3", "stage4"]
    assert [m.shape for m in maps.values()] == [(2, 32, 32, 4), (2, 16, 16, 4), (2, 8, 8, 8), (2, 4, 4, 8), (2, 2, 2, 8)]
    assert list(cnn.models.features(model, _zeros(model, x), x, stages=["stage3", "stem"])) == ["stage3", "stem"]


def test_vit_blocks_are_grids_of_patches():
    model = cnn.models.create("vit_tiny_patch16_224", num_classes=3, patch_size=8, dim=12, depth=2, heads=3)
    x = jnp.zeros((1, 32, 48, 3))
    maps = cnn.models.features(model, _zeros(model, x), x)
    assert {stage: m.shape for stage, m in maps.items()} == {"block1": (1, 4, 6, 12), "block2": (1, 4, 6, 12)}


def test_unknown_stages_and_families_are_refused():
    model = cnn.models.create("squeezenet1_1", num_classes=3)
    with pytest.raises(ValueError, match=r"unknown stage\(s\) \['fire1'\] of SqueezeNet; its stages: stem, fire2, fire3"):
        cnn.models.features(model, {}, jnp.zeros((1, 32, 32, 3)), stages=["fire1"])
    with pytest.raises(ValueError, match="no feature stages for a LeNet5; families with stages: AlexNet, ConvNeXt"):
        cnn.models.feature_stages(cnn.models.create("lenet5", num_classes=10))
