r"""Fine-tune a pretrained torchvision/timm checkpoint on a folder of images (<folder>/<split>/<class>/*.jpg):
ResNet-18 by default, SGD 0.01 with momentum and a cosine decay, the backbone at a tenth of the head's rate,
the stem and first stage frozen (their BatchNorm statistics kept), 10 epochs at 224x224 with flips.

python -m experiments.train --config experiments/configs/finetune_image_folder.py --workdir runs/finetune \
    --config.data.options.folder=/data/my_images --config.model.init_from=resnet18.safetensors

Another model: --config.model.name=efficientnet_b0 --config.model.init_from=efficientnet_b0.pth (docs/transfer.md).
Smoke (seconds; synthetic 32x32 images, 2 classes, a ResNet-18 of one narrow block per stage):
--config experiments/configs/finetune_image_folder.py:smoke
"""

import ml_collections

from experiments.configs import common


def get_config(arg: str = ""):
    config = common.base(model="resnet18", dataset="image_folder", batch_size=32, epochs=10, learning_rate=0.01)
    config.data.options = ml_collections.ConfigDict(dict(folder="", image_size=(224, 224), channels=3))
    config.data.test_split = "val"  # <folder>/train and <folder>/val, as ImageNet's folders
    config.data.augment = "flip"
    config.optimizer.schedule = "cosine"
    config.optimizer.weight_decay = 1e-4
    config.optimizer.backbone_lr_scale = 0.1
    config.model.freeze = ("^stem/", "^stage1_")
    if arg == "smoke":
        common.smoke(config, image_shape=(32, 32, 3), num_classes=2,
                     overrides=dict(stage_sizes=(1, 1, 1, 1), widths=(8, 8, 16, 16), stem_width=8))
    return config
