"""Gradient accumulation follows real optimizer updates: ``accumulate_steps=k`` at batch B is one step at
batch kB (a model without BatchNorm, to 1e-5, with a schedule that would tell micro-steps from updates),
the EMA decays once per update, BatchNorm's running statistics move once towards the mean of the
micro-batches' statistics, and the run's step counter, epochs and checkpoints count updates."""

import functools
import json

import jax
import ml_collections
import numpy as np
import pytest

import cnn.models
from cnn.train import optim
from cnn.train.loop import train_and_evaluate
from cnn.train.state import create_train_state
from cnn.train.steps import StepOptions, one_hot_preprocess, train_step
from experiments.configs import mnist_simple_cnn


def images(size, seed=0, shape=(16, 16, 1)):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (size, *shape), dtype=np.uint8), "label": rng.integers(0, 10, size).astype(np.int32)}


def schedule_tx():
    config = ml_collections.ConfigDict(dict(name="sgd", learning_rate=0.5, momentum=0.9, nesterov=False, weight_decay=0.0,
                                            schedule="warmup_cosine", warmup_steps=2))
    return optim.build(config, steps_per_epoch=4, total_steps=4, global_batch=16)[0]


def run(model, k, batches, *, ema=False, shape):
    """The state after one update per entry of ``batches`` (each of k micro-batches' rows)."""
    options = StepOptions(preprocess=one_hot_preprocess(10), eval_preprocess=one_hot_preprocess(10),
                          accumulate_steps=k, ema_decay=0.9 if ema else None)
    state = jax.jit(functools.partial(create_train_state, model, schedule_tx(), input_shape=shape, ema=ema))(
        jax.random.PRNGKey(0))
    step = jax.jit(functools.partial(train_step, options=options))
    for batch in batches:
        state, metrics = step(state, batch, state.rng)
    return state, metrics


def test_accumulating_k_micro_batches_is_one_step_on_the_whole_batch():
    model = cnn.models.create("lenet5", num_classes=10, padding=0)  # no BatchNorm, no dropout
    batches = [images(16, seed, shape=(16, 16, 1)) for seed in range(3)]
    whole, whole_metrics = run(model, 1, batches, ema=True, shape=(16, 16, 1))
    accumulated, metrics = run(model, 4, batches, ema=True, shape=(16, 16, 1))
    assert int(whole.step) == int(accumulated.step) == 3  # updates, not micro-steps
    for a, b in ((accumulated.params, whole.params), (accumulated.ema_params, whole.ema_params)):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
    assert float(metrics["examples"]) == 16
    assert float(metrics["loss_sum"]) == pytest.approx(float(whole_metrics["loss_sum"]), rel=1e-5)
    # k updates of batch B are not the same thing: the comparison above can fail.
    micro_steps, _ = run(model, 1, [{k: v[j::4] for k, v in b.items()} for b in batches for j in range(4)],
                         shape=(16, 16, 1))
    assert not np.allclose(micro_steps.params["fc3"]["kernel"], whole.params["fc3"]["kernel"], atol=1e-4)


def test_batch_norm_statistics_move_once_per_update_towards_the_micro_batch_mean():
    model = cnn.models.create("resnet20_cifar", num_classes=10, widths=(4, 8, 8), stem_width=4)
    batch = images(8, shape=(8, 8, 3))
    state, _ = run(model, 2, [batch], shape=(8, 8, 3))
    fresh = jax.jit(functools.partial(create_train_state, model, schedule_tx(), input_shape=(8, 8, 3)))(jax.random.PRNGKey(0))
    x = batch["image"].astype(np.float32) / 255.0
    expected = []
    for j in range(2):  # each micro-batch's statistics, from the model's own train-mode apply
        _, updates = model.apply({"params": fresh.params, "batch_stats": fresh.batch_stats}, x[j::2], train=True,
                                 mutable=["batch_stats"])
        expected.append(updates["batch_stats"])
    mean = jax.tree.map(lambda a, b: (a + b) / 2, *expected)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), state.batch_stats, mean)
    # Moved once: momentum 0.9 from the initial statistics, not twice.
    first = jax.tree.leaves(fresh.batch_stats["stem"]["norm"]["mean"])[0]
    moved = jax.tree.leaves(state.batch_stats["stem"]["norm"]["mean"])[0]
    assert np.abs(np.asarray(moved) - np.asarray(first)).max() > 0


def test_a_run_counts_updates(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))
    config = mnist_simple_cnn.get_config("smoke")
    config.optimizer.accumulate_steps = 2  # batch 8 x 2 = 16 of the 64 examples per update: 4 per epoch
    config.training.steps = 0
    config.training.epochs = 1.5
    config.training.eval_every_steps = config.training.checkpoint_every_steps = 0
    results = train_and_evaluate(config, tmp_path / "run")
    assert results["steps"] == 6 and results["global_batch"] == 16 and results["epochs"] == 1.5
    steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [4, 6]  # once per epoch of 4 updates, and at the end
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "train_loss" in r and r["step"] == 4] == [1.0]
    assert all(r["train_examples"] == 16 * (r["step"] - p) for r, p in zip(
        [r for r in records if "train_loss" in r], [0] + [r["step"] for r in records if "train_loss" in r]))
