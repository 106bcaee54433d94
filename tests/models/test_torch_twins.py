"""The zoo against its twins' real classes (torchvision 0.28, timm): every family's weights load from a state
dict and give the twin's eval logits, train-mode logits (auxiliary heads included), running statistics and
feature maps, and save back into a file the twin loads (``tests/helpers/twin_reference.py``).

One model per code path, with the twin's random weights and random norm statistics, at small and odd input
sizes; where the twin's class takes a layout, a narrower one of the same class keeps the test fast (the
full-size keys and shapes of every twin: ``test_torch_layouts.py``; every twin at full size and native
resolution: ``test_torch_twins_full.py``, slow).
"""

import pytest

import twin_reference as ref  # tests/helpers, on pytest's pythonpath


def _resnext(libs):
    models = libs.torchvision.models
    return models.ResNet(models.resnet.Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4)


def _efficientnet(libs):
    """EfficientNet-B0's first three stages (1, 2, 2 blocks): every kind of block, 1/3 of the compile."""
    models, config = libs.torchvision.models, libs.torchvision.models.efficientnet.MBConvConfig
    stages = [config(1, 3, 1, 32, 16, 1), config(6, 3, 2, 16, 24, 2), config(6, 5, 2, 24, 40, 2)]
    return models.EfficientNet(stages, dropout=0.2)


MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2))  # (t, c, n, s): every kind of block
MOBILENET_V3_BLOCKS = ((3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
                       (5, 96, 40, True, True, 2))  # (kernel, expanded, out, SE, hard-swish, stride): small's first 4


def _mobilenet_v2(libs):
    return libs.torchvision.models.MobileNetV2(inverted_residual_setting=[list(row) for row in MOBILENET_V2_STAGES])


def _mobilenet_v3(libs):
    config = libs.torchvision.models.mobilenetv3.InvertedResidualConfig
    blocks = [config(c_in, kernel, expanded, out, se, "HS" if hs else "RE", stride, 1, 1.0)
              for c_in, (kernel, expanded, out, se, hs, stride) in zip((16, 16, 24, 24), MOBILENET_V3_BLOCKS)]
    return libs.torchvision.models.MobileNetV3(blocks, last_channel=1024)


def _r3d(libs):
    video = libs.torchvision.models.video.resnet
    return video.VideoResNet(video.BasicBlock, [video.Conv3DSimple] * 4, [2, 1, 1, 1], video.BasicStem)


def _densenet(libs):
    return libs.torchvision.models.DenseNet(growth_rate=8, block_config=(2, 3, 2, 2), num_init_features=16)


def _convnext(libs):
    config = libs.torchvision.models.convnext.CNBlockConfig
    return libs.torchvision.models.ConvNeXt([config(16, 32, 1), config(32, 48, 1), config(48, 64, 2), config(64, None, 1)])


def _vgg11_bn(libs):
    """torchvision's VGG-11 (BN) with a 64-64 classifier: the layout of its 25088 x 4096 one, 400 MB less to move."""
    twin, nn = libs.torchvision.models.vgg11_bn(num_classes=10), libs.torch.nn
    twin.classifier[0], twin.classifier[3], twin.classifier[6] = nn.Linear(512 * 7 * 7, 64), nn.Linear(64, 64), nn.Linear(64, 10)
    return twin


def _torchvision(name, **kwargs):
    return lambda libs: libs.torchvision.models.get_model(name, weights=None, **kwargs)


def _timm(name, **kwargs):
    return lambda libs: libs.timm.create_model(name, pretrained=False, **kwargs)


# name: (the twin, our overrides for its layout, check_twin options: eval sizes, train-mode size, ...)
ODD = {"sizes": (97,), "train_size": 64}
CASES = {
    "resnet18": (_torchvision("resnet18"), {}, {"sizes": (224, 97), "train_size": 64}),  # the ImageNet size once
    "resnext50_32x4d": (_resnext, {"stage_sizes": (1, 1, 1, 1)}, ODD),
    "vgg11_bn": (_vgg11_bn, {"hidden": (64, 64)}, ODD),
    "alexnet": (_torchvision("alexnet"), {}, ODD),
    # With torchvision's transform_input, as its ImageNet weights are used (the loader reads aux_logits off the keys).
    "googlenet": (_torchvision("googlenet", aux_logits=True, transform_input=True, init_weights=False),
                  {"transform_input": True}, ODD),
    # Inception-v3 in training (its auxiliary head needs 299 x 299): test_torch_twins_full.py.
    "inception_v3": (_torchvision("inception_v3", aux_logits=True, transform_input=True, init_weights=False),
                     {"transform_input": True}, {"sizes": (97,), "compiler_options": {}}),  # runs faster optimised
    "densenet121": (_densenet, {"block_sizes": (2, 3, 2, 2), "growth_rate": 8, "stem_width": 16}, ODD),
    "mobilenet_v2": (_mobilenet_v2, {"stages": MOBILENET_V2_STAGES}, ODD),
    "mobilenet_v3_small": (_mobilenet_v3, {"blocks": MOBILENET_V3_BLOCKS}, ODD),
    "efficientnet_b0": (_efficientnet, {"stages": ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2))},
                        ODD),
    "convnext_tiny": (_convnext, {"depths": (1, 1, 2, 1), "widths": (16, 32, 48, 64)}, ODD),
    "squeezenet1_1": (_torchvision("squeezenet1_1"), {}, ODD),
    "r3d_18": (_r3d, {"stage_sizes": (2, 1, 1, 1)}, {"sizes": (41,), "train_size": 32, "clip": 4}),
    "vit_tiny_patch16_224": (_timm("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3),
                             {"patch_size": 8, "dim": 48, "depth": 2, "heads": 3}, {"sizes": (32,), "train_size": 32}),
    "mobilenet_v1": (_timm("mobilenetv1_100"), {}, ODD),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_twin_weights_load_and_give_the_twins_outputs(name, twins, tmp_path):
    build, overrides, options = CASES[name]
    twins.torch.manual_seed(0)
    twin = ref.randomise(twins, build(twins), seed=0)
    ref.check_twin(twins, name, twin, tmp_path, overrides=overrides, **options)
