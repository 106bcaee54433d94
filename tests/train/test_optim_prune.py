"""The training config's pruning hook: a smoke run with optimizer.prune ends with its kernels at the final sparsity."""

import pytest

from cnn.analysis.runs import restore_variables
from cnn.export import pruning
from cnn.train import optim, validate
from cnn.train.loop import train_and_evaluate
from experiments.configs import mnist_simple_cnn


def test_a_run_with_optimizer_prune_ends_at_the_final_sparsity(tmp_path):
    config = mnist_simple_cnn.get_config("smoke")
    config.optimizer.prune = "gradual(0.75, start=1, end=4, every=1, scope='layer')"
    train_and_evaluate(config, tmp_path)
    _, variables = restore_variables(tmp_path)
    report = pruning.layer_sparsity(variables["params"])
    assert report["total"] == pytest.approx(0.75, abs=1e-3)
    assert all(value == pytest.approx(0.75, abs=0.01) for value in report.values())


def test_a_bad_prune_setting_fails_before_training():
    config = mnist_simple_cnn.get_config("smoke")
    config.optimizer.prune = "gradual(0.9, every=0)"
    with pytest.raises(ValueError, match=r"optimizer.prune='gradual\(0.9, every=0\)'"):
        optim.build(config.optimizer, steps_per_epoch=10, total_steps=100, global_batch=8)


def test_validation_names_a_bad_prune_setting():
    config = mnist_simple_cnn.get_config("smoke")
    config.optimizer.prune = "gradual(0.9, scope='rows')"
    with pytest.raises(ValueError, match=r"optimizer.prune=.*scope='rows'; expected one of global, layer"):
        validate.check(config)
