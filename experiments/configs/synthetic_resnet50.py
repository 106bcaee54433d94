r"""ResNet-50 training throughput on synthetic 224x224 data (no files needed): the ImageNet recipe's step,
bfloat16, batch 256, 500 steps.

python -m experiments.train --config experiments/configs/synthetic_resnet50.py --workdir runs/synthetic_resnet50

Smoke: --config experiments/configs/synthetic_resnet50.py:smoke
"""

import ml_collections

from experiments.configs import common, imagenet_resnet50


def get_config(arg: str = ""):
    config = imagenet_resnet50.get_config()
    config.data.name = "synthetic"
    config.data.options = ml_collections.ConfigDict(
        dict(image_shape=(224, 224, 3), num_classes=1000, num_train=256 * 20, num_test=1024, seed=0)
    )
    config.data.test_split = "test"
    config.data.workers = 0
    config.training.batch_size = 256
    config.training.steps = 500
    config.training.eval_every_steps = 500
    config.training.checkpoint_every_steps = 500
    if arg == "smoke":
        config.parallel = "single"
        config.optimizer.warmup_epochs = 0.0
        common.smoke(config, image_shape=(32, 32, 3), num_classes=10,
                     overrides=dict(stage_sizes=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8))
    return config
