r"""ImageNet architecture comparison at 224x224 with the Flax ImageNet recipe (imagenet_resnet50.py: SGD
Nesterov, lr 0.1 x batch / 256, 5 warmup epochs then cosine, label smoothing 0.1, weight decay 1e-4, bfloat16,
90 epochs): ResNet-18, ResNet-50, MobileNetV2, DenseNet-121, VGG-16 (BN). Published top-1 (torchvision's
model card, their own recipes): 69.76%, 76.13%, 71.88%, 74.43%, 73.36%.

Data: an ImageNet-style folder (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG), or
--config.base.data.name=tfds:imagenet2012 --config.base.data.test_split=validation.

python -m experiments.compare --config experiments/configs/compare_imagenet.py --workdir runs/compare_imagenet \
    --config.base.data.options.folder=/data/imagenet

Smoke (seconds; tiny models, 2 steps each, on a generated folder of JPEGs at 32x32):
--config experiments/configs/compare_imagenet.py:smoke --config.base.data.options.folder=DIR
"""

import ml_collections

from experiments.configs import common, imagenet_resnet50

TORCHVISION = "torchvision"
RUNS = (
    ("resnet18", "resnet18", "69.76%"),
    ("resnet50", "resnet50", "76.13%"),
    ("mobilenet_v2", "mobilenet_v2", "71.88%"),
    ("densenet121", "densenet121", "74.43%"),
    ("vgg16_bn", "vgg16_bn", "73.36%"),
)
SMOKE_OVERRIDES = {
    "resnet18": {"stage_sizes": (1, 1, 1, 1), "widths": (8, 8, 16, 16), "stem_width": 8},
    "resnet50": {"stage_sizes": (1, 1, 1, 1), "widths": (4, 4, 8, 8), "stem_width": 8},
    "mobilenet_v2": {"stages": ((1, 8, 1, 1), (6, 16, 1, 2)), "last_width": 32},
    "densenet121": {"block_sizes": (1, 1), "growth_rate": 4, "stem_width": 8},
    "vgg16_bn": {"layers": (8, "M", 16, "M"), "pool_size": 1, "hidden": (16,)},
}


def get_config(arg: str = ""):
    base = imagenet_resnet50.get_config()
    # image_folder takes (height, width); the folder comes from the command line.
    base.data.options = ml_collections.ConfigDict(dict(folder="", image_size=(224, 224), channels=3))
    config = ml_collections.ConfigDict()
    config.title = "ImageNet: architecture comparison (Flax ImageNet recipe)"
    config.base = base
    recipe = "flax-imagenet-90ep"
    config.runs = [dict(name=name, model=model, recipe=recipe, published=f"{accuracy} ({TORCHVISION})") for name, model, accuracy in RUNS]
    config.seeds = (0,)
    config.plots = ml_collections.ConfigDict(dict(feature_layer="", images=4, confusion_limit=10000))
    if arg == "smoke":
        base.parallel = "single"
        base.data.workers = 0
        base.data.options.image_size = (32, 32)
        base.data.augment = "flip"
        base.optimizer.warmup_epochs = 0.0
        base.training.dtype = "float32"
        common.smoke_training(base.training, steps=2, every=2, log_every=1, eval_batch_size=8)
        config.runs = [
            dict(run, recipe="smoke", overrides={f"model.overrides.{k}": v for k, v in SMOKE_OVERRIDES[run["name"]].items()})
            for run in config.runs
        ]
        config.plots.confusion_limit = 64
    return config
