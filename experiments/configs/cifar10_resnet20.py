r"""ResNet-20 on CIFAR-10 (He et al. 2016, section 4.2: 91.25% test accuracy): SGD 0.1 Nesterov, weight decay
5e-4, cosine, batch 128, 200 epochs, random crop (pad 4) + flip.

python -m experiments.train --config experiments/configs/cifar10_resnet20.py --workdir runs/cifar10_resnet20

Smoke: --config experiments/configs/cifar10_resnet20.py:smoke
"""

from experiments.configs import common


def get_config(arg: str = ""):
    config = common.base(model="resnet20_cifar", dataset="cifar10", batch_size=128, epochs=200, learning_rate=0.1)
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "cosine"
    config.data.augment = "crop(4)|flip"
    if arg == "smoke":
        common.smoke(config, image_shape=(32, 32, 3), overrides=dict(stage_sizes=(1, 1, 1)))
    return config
