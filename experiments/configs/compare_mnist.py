r"""MNIST architecture comparison: simple_cnn, LeNet-5, a small VGG and a small ResNet, 3 seeds each,
one recipe (Adam 1e-3, cosine decay, batch 128, 2 epochs); runs on a 2-core CPU in about half an hour.

CNN_DATA_DIR=../shared/datasets python -m experiments.compare \
    --config experiments/configs/compare_mnist.py --workdir runs/compare_mnist

Smoke (seconds, synthetic 12x12 data, 2 models x 2 seeds): --config experiments/configs/compare_mnist.py:smoke
"""

import ml_collections

from experiments.configs import common

# The small variants are registry models with create() overrides (the models take any input channels):
# a VGG of 16-32-64-64 3x3 conv-BN-ReLU with three pools, global pool, one dense layer; and a ResNet of
# three stages of one basic block (8-16-32 wide, the CIFAR ResNet's layout at n=1: "ResNet-8"). Its last
# BatchNorm per block starts at one, not zero: with Adam at 1e-3 zero-initialised branches take hundreds of
# steps to open (train loss 2.01 vs 1.13 after 200 steps), which two epochs cannot afford.
VGG_SMALL = {"model.overrides.layers": (16, "M", 32, "M", 64, 64, "M")}
RESNET_SMALL = {"model.overrides.stage_sizes": (1, 1, 1), "model.overrides.widths": (8, 16, 32), "model.overrides.stem_width": 8,
                "model.overrides.zero_init_last": False}


def get_config(arg: str = ""):
    base = common.base(model="simple_cnn", dataset="mnist", batch_size=128, epochs=2, learning_rate=1e-3, optimizer="adam")
    base.optimizer.schedule = "cosine"
    base.training.log_every_steps = 50

    config = ml_collections.ConfigDict()
    config.title = "MNIST: architecture comparison"
    config.base = base
    recipe = "adam-cosine-2ep"
    config.runs = [
        dict(name="simple_cnn", model="simple_cnn", recipe=recipe),
        dict(name="lenet5", model="lenet5", recipe=recipe),
        dict(name="vgg_small", model="vgg16_cifar", recipe=recipe, overrides=VGG_SMALL),
        dict(name="resnet8_small", model="resnet20_cifar", recipe=recipe, overrides=RESNET_SMALL),
    ]
    config.seeds = (0, 1, 2)
    config.plots = ml_collections.ConfigDict(dict(feature_layer="", images=4, confusion_limit=0))
    if arg == "smoke":
        common.smoke(base, image_shape=(12, 12, 1))
        config.runs = [
            dict(name="simple_cnn", model="simple_cnn", recipe="smoke", overrides={"model.overrides.widths": (4, 8), "model.overrides.hidden": 16}),
            dict(name="resnet8_small", model="resnet20_cifar", recipe="smoke",
                 overrides={**RESNET_SMALL, "model.overrides.widths": (4, 4, 8), "model.overrides.stem_width": 4}),
        ]
        config.seeds = (0, 1)
    return config
