r"""Transfer from MNIST to the UCI digits (scikit-learn's 8x8 scans, another source of handwriting) with 10, 50
and all labels per class: LeNet-5 from scratch, a linear probe of the frozen MNIST features, and full fine-tuning.
3 seeds each; one recipe (Adam 1e-3, cosine decay, batch 50, 500 updates); a new head for every pretrained run.

First the pretrained network (LeNet-5 on MNIST, 3 epochs; inputs x / 255 as here), then the 27 runs:

CNN_DATA_DIR=../shared/datasets python -m experiments.train --config experiments/configs/mnist_lenet5.py \
    --workdir runs/mnist_lenet5_pretrain --config.training.epochs=3 --config.data.normalize=none
python -m experiments.compare --config experiments/configs/compare_transfer_digits.py --workdir runs/transfer_digits \
    --config.base.model.init_from=runs/mnist_lenet5_pretrain

The table, the commands as run (workdirs under /tmp), wall time and load: docs/transfer.md.

Smoke (seconds; synthetic 28x28 digits, 2 seeds; the pretrained run of mnist_lenet5.py:smoke):
--config experiments/configs/compare_transfer_digits.py:smoke --config.base.model.init_from=DIR
"""

import ml_collections

from experiments.configs import common

PER_CLASS = ((10, "10-per-class"), (50, "50-per-class"), (0, "all-labels"))  # uci_digits train: 1,201, 116 to 122 a class
MODES = (
    ("scratch", {"model.init_from": "", "model.reinit_head": False}),
    ("linear_probe", {"model.linear_probe": True}),
    ("fine_tune", {}),
)


def get_config(arg: str = ""):
    base = common.base(model="lenet5", dataset="uci_digits", batch_size=50, epochs=1, learning_rate=1e-3, optimizer="adam")
    base.optimizer.schedule = "cosine"
    base.data.normalize = "none"  # x / 255, as the pretrained run: the features see the inputs they were learnt on
    base.training.steps = 500
    base.training.eval_every_steps = 100
    base.training.checkpoint_every_steps = 500
    base.training.log_every_steps = 50
    base.training.eval_batch_size = 596  # the whole test split in one batch
    base.training.progress_bar = False
    base.model.init_from = "runs/mnist_lenet5_pretrain"  # the MNIST run (its newest checkpoint); scratch clears it
    base.model.reinit_head = True  # same ten digits, but every pretrained run learns its head anew

    config = ml_collections.ConfigDict()
    config.title = "MNIST -> UCI digits: scratch, linear probe, fine-tuning"
    config.base = base
    config.runs = [dict(name=mode, model="lenet5", recipe=recipe, overrides={**overrides, "data.train_per_class": count})
                   for count, recipe in PER_CLASS for mode, overrides in MODES]
    config.seeds = (0, 1, 2)
    config.plots = ml_collections.ConfigDict(dict(feature_layer="", images=4, confusion_limit=0))
    if arg == "smoke":
        common.smoke(base)
        base.model.init_from = ""  # set on the command line: a finished run of mnist_lenet5.py:smoke
        base.training.eval_batch_size = 16
        base.data.options.num_train = 100
        config.runs = [dict(run, overrides={**run["overrides"], "data.train_per_class": min(run["overrides"]["data.train_per_class"], 5)})
                       for run in config.runs if run["recipe"] != "50-per-class"]
        config.seeds = (0, 1)
    return config
