"""The EMA of the parameters is evaluated, recorded and checkpointed: on a short real MNIST run the
recorded EMA accuracy equals an independent evaluation of the checkpointed ``ema_params`` and differs
from the raw parameters' accuracy; the best checkpoint can be chosen by it."""

import json
import os
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

import cnn.data
import cnn.models
from cnn.analysis.runs import read_checkpoint
from cnn.train.loop import train_and_evaluate
from experiments.configs import mnist_lenet5

DATA = pathlib.Path(os.environ.get("CNN_DATA_DIR", "")) / "mnist" / "train-images-idx3-ubyte.gz"
pytestmark = [pytest.mark.xdist_group("ema"), pytest.mark.skipif(not DATA.exists(), reason="needs the real MNIST files (CNN_DATA_DIR)")]


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    os.environ.setdefault("CNN_PREPARED_DIR", str(tmp_path_factory.mktemp("prepared")))
    config = mnist_lenet5.get_config()
    config.data.test_split = "test[:1000]"
    config.training.steps = 60
    config.training.eval_every_steps = 30
    config.training.checkpoint_every_steps = 30
    config.training.ema_decay = 0.9
    config.training.best_metric = "test_top1_ema"
    config.training.progress_bar = False
    config.training.async_checkpoints = False
    workdir = tmp_path_factory.mktemp("ema") / "run"
    return config, workdir, train_and_evaluate(config, workdir)


def test_recorded_ema_accuracy_is_the_checkpointed_ema_params_accuracy(ema_run):
    config, workdir, results = ema_run
    state = read_checkpoint(workdir, 60)
    source = cnn.data.source("mnist", "test[:1000]")
    train = cnn.data.source("mnist", "train")
    records = source.__getitems__(range(len(source)))
    x = (np.stack([r["image"] for r in records]).astype(np.float32) - train.mean) / train.std
    labels = np.asarray([r["label"] for r in records])
    model = cnn.models.create("lenet5", num_classes=10)
    accuracy = lambda params: float(np.mean(np.argmax(model.apply({"params": params}, jnp.asarray(x), train=False), -1) == labels))  # noqa: E731
    assert results["test_accuracy_ema"] == pytest.approx(accuracy(state["ema_params"]), abs=1e-6)
    assert results["test_accuracy"] == pytest.approx(accuracy(state["params"]), abs=1e-6)
    assert results["test_accuracy_ema"] != results["test_accuracy"]  # the average really is another model
    assert {"test_loss_ema", "test_top5_ema"} <= set(results)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "test_top1_ema" in r] == [30, 60]


def test_the_best_checkpoint_follows_the_ema_metric(ema_run):
    config, workdir, results = ema_run
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r["test_top1_ema"] for r in records if "test_top1_ema" in r}
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert max(by_step, key=by_step.get) in steps
