"""The feeds and multi-step calls change how a run is carried out, not what it computes: the grain feed
and the split held on the device, one or several steps per call, give the same training; a run resumes
across them (its position is its step); the device evaluation counts every test example once."""

import json

import jax
import numpy as np
import pytest

from cnn.analysis.runs import read_checkpoint
from cnn.train.loop import train_and_evaluate
from experiments.configs import mnist_simple_cnn

pytestmark = pytest.mark.xdist_group("feeds")  # one worker builds the module's fixtures (pyproject: --dist loadgroup)

STEPS = 19  # not a multiple of the call sizes below; 8 steps per epoch of the 64 smoke examples


def config(on_device, steps_per_call, steps=STEPS):
    config = mnist_simple_cnn.get_config("smoke")
    config.data.on_device = on_device
    config.training.steps_per_call = steps_per_call
    config.training.steps = steps
    config.training.log_every_steps = 9  # stops at 9, 10, 18, 19: full calls of 4 and 8 steps, and single steps
    config.training.eval_every_steps = 10
    config.training.checkpoint_every_steps = 10
    config.model.overrides.drop_rate = 0.5  # randomness that a wrong key or step number would change
    config.data.augment = "crop(2)"
    return config


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import os

    os.environ.setdefault("CNN_PREPARED_DIR", str(tmp_path_factory.mktemp("prepared")))
    root = tmp_path_factory.mktemp("feeds")
    done = {}
    for name, on_device, per_call in (("grain_1", "off", 1), ("grain_4", "off", 4), ("device_1", "on", 1),
                                      ("device_8", "on", 8)):
        done[name] = (root / name, train_and_evaluate(config(on_device, per_call), root / name))
    return done


# Programs of 1, 4 and 8 written-out steps round float32 differently (XLA fuses and orders each its own way);
# over 19 Adam updates that moves a parameter by up to ~2e-7 (seen on JAX 0.12). A wrong example, key or step
# number changes the parameters by orders of magnitude more.
SAME = dict(rtol=1e-6, atol=1e-6)


def state(workdir, step=STEPS):
    restored = read_checkpoint(workdir, step)
    return {key: restored[key] for key in ("params", "opt_state", "step")}


@pytest.mark.parametrize("name", ["grain_4", "device_1", "device_8"])
def test_every_feed_and_call_size_trains_the_same(runs, name):
    reference_dir, reference = runs["grain_1"]
    workdir, results = runs[name]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **SAME), state(workdir),
                 state(reference_dir))
    assert results["test_loss"] == pytest.approx(reference["test_loss"], rel=1e-6)
    assert results["test_examples"] == reference["test_examples"] == 40
    records = lambda path: [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert [r["step"] for r in records(workdir)] == [r["step"] for r in records(reference_dir)]


def test_a_run_resumes_with_the_other_feed(runs, tmp_path):
    """Trained to step 8 with grain, one step per call; finished on the device, eight per call."""
    workdir = tmp_path / "switched"
    train_and_evaluate(config("off", 1, steps=8), workdir)
    results = train_and_evaluate(config("on", 8), workdir)
    assert results["resumed_from_step"] == 8
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **SAME), state(workdir),
                 state(runs["grain_1"][0]))


def test_calls_are_full_or_single_steps(tmp_path, monkeypatch):
    """Short of a full call before a stop the loop takes single steps: only two programs ever compile."""
    from cnn.train import feed

    sizes = []
    original = feed.DeviceFeed.next
    monkeypatch.setattr(feed.DeviceFeed, "next", lambda self, k: sizes.append(k) or original(self, k))
    run = config("on", 4)
    run.training.log_every_steps = 11
    train_and_evaluate(run, tmp_path / "run")
    assert sizes == [4, 4, 1, 1, 1, 4, 4]  # stops at 10, 11, 19: two steps short before 10


@pytest.mark.parametrize("log_every, train_programs", [(9, 2), (3, 1)])
def test_the_programs_compile_once_in_the_background(tmp_path, caplog, log_every, train_programs):
    """The call, the single step and the evaluation step compile on the start-up thread, never again in the loop;
    a call of 4 steps that no interval leaves room for (logging every 3) is not compiled at all."""
    import logging

    run = config("on", 4)
    run.training.log_every_steps = log_every
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            train_and_evaluate(run, tmp_path / "run")
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [(r.getMessage().split(" ")[1], r.threadName) for r in caplog.records
                if r.getMessage().startswith("Compiling jit(") and ("train_steps" in r.getMessage() or "eval_" in r.getMessage())]
    expected = [("jit(eval_indexed_step)", "cnn-precompile")] + [("jit(train_steps)", "cnn-precompile")] * train_programs
    assert sorted(compiled) == expected
