r"""The seed's MNIST network trained adversarially at L-inf eps = 0.3 with FGSM from a random start (Wong et al.
2020, "Fast is better than free": step 1.25 eps = 0.375, a one-cycle learning rate), batch 100, 10 epochs.

CNN_DATA_DIR=../shared/datasets python -m experiments.train \
    --config experiments/configs/mnist_adversarial.py --workdir runs/mnist_adversarial
python -m experiments.robustness --workdir runs/mnist_adversarial --eps 0.1,0.2,0.3 --steps 50 --restarts 10

Madry et al.'s PGD training instead: --config.training.adversarial='pgd(eps=0.3,steps=7)' (about 4x the time).
Smoke (seconds, synthetic data): --config experiments/configs/mnist_adversarial.py:smoke
"""

from experiments.configs import common


def get_config(arg: str = ""):
    config = common.base(model="simple_cnn", dataset="mnist", batch_size=100, epochs=10, learning_rate=5e-3,
                         optimizer="adam")
    config.data.normalize = "none"  # the seed divides by 255; the attack's ball is in those pixels
    config.optimizer.schedule = "one_cycle"
    config.training.adversarial = "fgsm_rs(eps=0.3)"
    config.training.best_metric = ""  # clean accuracy does not pick a robust model: keep the last
    if arg == "smoke":
        common.smoke(config)
    return config
