"""The MNIST -> UCI digits comparison config: nine runs (scratch, linear probe, fine-tuning x 10, 50 and all labels
per class) whose training configs say what their names say (its smoke runs them end to end: docs/transfer.md)."""

import pytest

from cnn import compare
from cnn.train import validate
from experiments.configs import compare_transfer_digits


def test_every_run_is_the_mode_and_the_labels_it_names(tmp_path):
    (tmp_path / "config.json").write_text('{"model": {"name": "lenet5"}}')
    (tmp_path / "results.json").write_text("{}")
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    config = compare_transfer_digits.get_config()
    config.base.model.init_from = str(tmp_path)  # a finished LeNet-5 run, as far as validation can tell
    trials = compare.plan(config)
    compare.validate(config, trials)
    assert len(trials) == 27 and {t.seed for t in trials} == {0, 1, 2}
    for trial in trials:
        run = compare.trial_config(config, trial)
        validate.check(run)
        model, data = run.model, run.data
        assert data.name == "uci_digits" and data.normalize == "none" and run.training.steps == 500
        assert data.train_per_class == {"10-per-class": 10, "50-per-class": 50, "all-labels": 0}[trial.recipe]
        assert model.linear_probe == (trial.name == "linear_probe")
        assert bool(model.init_from) == model.reinit_head == (trial.name != "scratch")
        assert not model.freeze


def test_the_smoke_needs_a_pretrained_run():
    config = compare_transfer_digits.get_config("smoke")
    run = compare.trial_config(config, compare.plan(config)[-1])
    with pytest.raises(ValueError, match="model.reinit_head=True re-initialises the head of loaded weights, but "
                                         "model.init_from is ''"):
        validate.check(run)
