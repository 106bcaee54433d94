r"""ResNet-18 (CIFAR stem) on CIFAR-10, the kuangliu/pytorch-cifar recipe: SGD 0.1 Nesterov, weight decay 5e-4,
cosine over 200 epochs, batch 128, random crop (pad 4) + flip. Published: 93.02% (kuangliu, SGD momentum).

python -m experiments.train --config experiments/configs/cifar10_resnet18.py --workdir runs/cifar10_resnet18

Smoke: --config experiments/configs/cifar10_resnet18.py:smoke
"""

from experiments.configs import common


def get_config(arg: str = ""):
    config = common.base(model="resnet18_cifar", dataset="cifar10", batch_size=128, epochs=200, learning_rate=0.1)
    config.optimizer.nesterov = True
    config.optimizer.weight_decay = 5e-4
    config.optimizer.schedule = "cosine"
    config.data.augment = "crop(4)|flip"
    config.data.test_split = "test"
    if arg == "smoke":
        common.smoke(config, image_shape=(32, 32, 3), overrides=dict(stage_sizes=(1, 1, 1, 1), widths=(8, 16, 16, 32), stem_width=8))
    return config
