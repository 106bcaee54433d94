"""Stopping and resuming gives bit-identical training; the CLI writes every file the DESIGN names."""

import importlib
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from cnn.train import loop
from cnn.train.loop import Preempted, RunError, train_and_evaluate

ROOT = pathlib.Path(__file__).resolve().parents[2]


def smoke_config(name="cifar10_resnet20", **training):
    config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
    config.training.checkpoint_every_steps = 2
    config.training.eval_every_steps = 4
    for key, value in training.items():
        config.training[key] = value
    return config


def final_state(workdir, step):
    restored = ocp.StandardCheckpointer().restore(pathlib.Path(workdir).absolute() / "checkpoints" / str(step) / "state")
    return {k: restored[k] for k in ("params", "batch_stats", "opt_state", "step", "rng")}


def stop_when_step_is_logged(monkeypatch, stop_step):
    """Requests a stop (as SIGTERM would) while step ``stop_step`` is being logged."""
    write = loop.MetricWriter.write

    def write_then_stop(self, step, metrics):
        write(self, step, metrics)
        if step == stop_step:
            loop.request_stop()

    monkeypatch.setattr(loop.MetricWriter, "write", write_then_stop)


@pytest.mark.parametrize("mode", ["single", "sharded"])
def test_stop_and_resume_is_bit_identical(mode, tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))
    config = smoke_config(steps=8, log_every_steps=1)  # cosine schedule over 8 steps, random crops and flips
    config.parallel = mode
    train_and_evaluate(config, tmp_path / "straight")

    with monkeypatch.context() as patch:
        stop_when_step_is_logged(patch, 3)
        with pytest.raises(Preempted, match="preempted at step 3"):
            train_and_evaluate(config, tmp_path / "resumed")
    assert sorted(int(p.name) for p in (tmp_path / "resumed" / "checkpoints").iterdir() if p.name.isdigit())[-1] == 3
    results = train_and_evaluate(config, tmp_path / "resumed")
    assert results["resumed_from_step"] == 3

    a, b = final_state(tmp_path / "straight", 8), final_state(tmp_path / "resumed", 8)
    assert int(a["step"]) == 8
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # The history reads as one run: every step logged once, in order.
    records = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if "train_loss" in r]
    assert train_steps == list(range(1, 9))


def test_another_experiments_workdir_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))
    train_and_evaluate(smoke_config(steps=2), tmp_path / "run")
    other = smoke_config(steps=2)
    other.model.name = "resnet32_cifar"
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    with pytest.raises(RunError, match="holds another experiment"):
        train_and_evaluate(other, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == before


# Training configs; compare_* configs describe several runs each (tested in tests/experiments).
CONFIGS = sorted(p.stem for p in (ROOT / "experiments" / "configs").glob("*.py")
                 if p.stem not in ("__init__", "common") and not p.stem.startswith("compare_"))


def check_workdir(workdir, steps):
    results = json.loads((workdir / "results.json").read_text())
    for field in ("test_accuracy", "test_loss", "steps", "train_seconds", "params", "model", "dataset", "parallel", "devices"):
        assert field in results
    assert results["steps"] == steps
    assert results["test_examples"] == 40  # every test example once: 40 = 2 batches of 16 + a padded one of 8
    assert (workdir / "metrics.jsonl").read_text().count("\n") >= 3
    assert list(workdir.glob("events.out.tfevents.*"))
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())[-1] == steps
    return results


@pytest.mark.parametrize("name", [c for c in CONFIGS if c != "mnist_simple_cnn"])
def test_every_config_smoke_runs_end_to_end_and_resumes(name, tmp_path, monkeypatch):
    config_file = ROOT / "experiments" / "configs" / f"{name}.py"
    assert "python -m experiments.train" in config_file.read_text().split('"""')[1], "the command is at the top"
    monkeypatch.setenv("CNN_PREPARED_DIR", str(tmp_path / "prepared"))
    config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
    results = train_and_evaluate(config, tmp_path / "run")
    assert check_workdir(tmp_path / "run", 6) == results
    assert train_and_evaluate(config, tmp_path / "run") == results  # finished: returned as it is


def test_cli_main_job_smoke_writes_every_file_and_resumes(tmp_path):
    """The README's main job, shrunk by its config's smoke switch, through the command line."""
    config_file = ROOT / "experiments" / "configs" / "mnist_simple_cnn.py"
    env = {"CNN_PREPARED_DIR": str(tmp_path / "prepared"), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "experiments.train", f"--config={config_file}:smoke", f"--workdir={tmp_path / 'run'}"]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    results = check_workdir(tmp_path / "run", 6)
    assert json.loads(first.stdout.strip().splitlines()[-1]) == results
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.strip().splitlines()[-1]) == results


def test_cli_bad_input_is_one_line_and_non_zero(tmp_path):
    env = {"CNN_PREPARED_DIR": str(tmp_path / "prepared"), "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    config_file = ROOT / "experiments" / "configs" / "mnist_simple_cnn.py"
    bad = subprocess.run(
        [sys.executable, "-m", "experiments.train", f"--config={config_file}:smoke", f"--workdir={tmp_path / 'run'}",
         "--config.model.name=resnet_nope"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error: unknown model 'resnet_nope'")
    assert not (tmp_path / "run" / "results.json").exists()
