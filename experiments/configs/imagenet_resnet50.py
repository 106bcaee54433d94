r"""ResNet-50 on ImageNet, the Flax ImageNet example's recipe: SGD Nesterov, lr 0.1 x batch / 256, 5 warmup
epochs then cosine, label smoothing 0.1, weight decay 1e-4 (biases and norms spared), bfloat16, 90 epochs.

Data: an ImageNet-style folder (train/<class>/*.JPEG, val/<class>/*.JPEG) prepared at 224x224, or a tfds
catalog build in array_record (--config.data.name=tfds:imagenet2012 --config.data.test_split=validation).

python -m experiments.train --config experiments/configs/imagenet_resnet50.py --workdir runs/imagenet_resnet50 \
    --config.data.options.folder=/data/imagenet --config.parallel=sharded

Smoke: --config experiments/configs/imagenet_resnet50.py:smoke
"""

import ml_collections

from experiments.configs import common


def get_config(arg: str = ""):
    config = common.base(model="resnet50", dataset="image_folder", batch_size=1024, epochs=90, learning_rate=0.1)
    config.parallel = "sharded"
    config.data.options = ml_collections.ConfigDict(dict(folder="", image_size=224, channels=3))
    config.data.test_split = "val"
    config.data.augment = "resized_crop(0.08,1.0)|flip"
    config.data.workers = 8
    config.optimizer.nesterov = True
    config.optimizer.lr_reference_batch = 256
    config.optimizer.weight_decay = 1e-4
    config.optimizer.schedule = "warmup_cosine"
    config.optimizer.warmup_epochs = 5.0
    config.training.label_smoothing = 0.1
    config.training.dtype = "bfloat16"
    config.training.log_every_steps = 100
    if arg == "smoke":
        config.parallel = "single"
        config.data.workers = 0
        config.optimizer.warmup_epochs = 0.0
        config.optimizer.warmup_steps = 2
        common.smoke(
            config, image_shape=(32, 32, 3),
            overrides=dict(stage_sizes=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8),
        )
    return config
