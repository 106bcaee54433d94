r"""CIFAR-10 architecture comparison, the kuangliu/pytorch-cifar table and recipe: SGD 0.1 (momentum 0.9),
weight decay 5e-4, cosine over 200 epochs, batch 128, random crop (pad 4) + flip; one seed by default
(add seeds with --config.seeds=0,1,2). Published (kuangliu/pytorch-cifar README): VGG16 92.64%,
ResNet18 93.02%, ResNet50 93.62%, MobileNetV2 94.43%, DenseNet121 95.04%.

python -m experiments.compare --config experiments/configs/compare_cifar10.py --workdir runs/compare_cifar10 \
    --config.base.parallel=sharded

Smoke (seconds; tiny versions of the five models, 2 steps each, on cifar-10-binary.tar.gz under
$CNN_DATA_DIR/cifar10/, generated files in the official format in the tests):
--config experiments/configs/compare_cifar10.py:smoke
"""

import ml_collections

from experiments.configs import common

KUANGLIU = "kuangliu/pytorch-cifar"
RUNS = (  # name, registry model, published test accuracy
    ("vgg16", "vgg16_cifar", "92.64%"),
    ("resnet18", "resnet18_cifar", "93.02%"),
    ("resnet50", "resnet50_cifar", "93.62%"),
    ("mobilenet_v2", "mobilenet_v2_cifar", "94.43%"),
    ("densenet121", "densenet121_cifar", "95.04%"),
)
SMOKE_OVERRIDES = {  # the same families, a few channels wide, so each runs in seconds on a CPU
    "vgg16": {"layers": (8, "M", 16, "M")},
    "resnet18": {"stage_sizes": (1, 1, 1, 1), "widths": (8, 16, 16, 32), "stem_width": 8},
    "resnet50": {"stage_sizes": (1, 1, 1, 1), "widths": (4, 8, 8, 16), "stem_width": 8},
    "mobilenet_v2": {"stages": ((1, 8, 1, 1), (6, 16, 1, 2)), "last_width": 32},
    "densenet121": {"block_sizes": (1, 1), "growth_rate": 4, "stem_width": 8},
}


def get_config(arg: str = ""):
    base = common.base(model="resnet18_cifar", dataset="cifar10", batch_size=128, epochs=200, learning_rate=0.1)
    base.optimizer.weight_decay = 5e-4
    base.optimizer.schedule = "cosine"
    base.data.augment = "crop(4)|flip"

    config = ml_collections.ConfigDict()
    config.title = "CIFAR-10: architecture comparison (kuangliu/pytorch-cifar recipe)"
    config.base = base
    recipe = "sgd0.1-wd5e-4-cosine-200ep"
    config.runs = [dict(name=name, model=model, recipe=recipe, published=f"{accuracy} ({KUANGLIU})") for name, model, accuracy in RUNS]
    config.seeds = (0,)
    config.plots = ml_collections.ConfigDict(dict(feature_layer="", images=4, confusion_limit=0))
    if arg == "smoke":
        common.smoke_training(base.training, steps=2, every=2, log_every=1, eval_batch_size=16)
        config.runs = [
            dict(run, recipe="smoke", overrides={f"model.overrides.{k}": v for k, v in SMOKE_OVERRIDES[run["name"]].items()})
            for run in config.runs
        ]
        config.plots.confusion_limit = 64
    return config
