r"""LeNet-5 on MNIST: Adam 1e-3 with a cosine decay, batch 64, 10 epochs (LeCun et al. 1998 report 0.95% error).

CNN_DATA_DIR=../shared/datasets python -m experiments.train \
    --config experiments/configs/mnist_lenet5.py --workdir runs/mnist_lenet5

Smoke: --config experiments/configs/mnist_lenet5.py:smoke
"""

from experiments.configs import common


def get_config(arg: str = ""):
    config = common.base(model="lenet5", dataset="mnist", batch_size=64, epochs=10, learning_rate=1e-3, optimizer="adam")
    config.optimizer.schedule = "cosine"
    if arg == "smoke":
        common.smoke(config)
    return config
