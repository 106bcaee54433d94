"""Two processes x 4 CPU devices joined by jax.distributed train like one process x 8 devices."""

import json
import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.xdist_group("multiprocess")  # one worker builds the module's fixtures (pyproject: --dist loadgroup)

COMPILE_CACHE = {  # the session's XLA compile cache (tests/conftest.py), shared with subprocesses
    "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"cnn-tests-xla-cache-{os.getuid()}"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
}
ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIG = ROOT / "experiments" / "configs" / "cifar10_resnet20.py"
STEPS = 20  # 2.5 epochs of the smoke data (64 examples, global batch 8): crosses epoch boundaries


def train_command(workdir, steps=STEPS, distributed=False):
    return [
        sys.executable, "-m", "experiments.train", f"--config={CONFIG}:smoke", f"--workdir={workdir}",
        "--config.parallel=sharded", f"--config.training.steps={steps}", "--config.training.checkpoint_every_steps=10",
        "--config.training.eval_every_steps=10", f"--config.distributed={distributed}",
    ]


def environment(tmp_path, devices):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(CNN_PREPARED_DIR=str(tmp_path / "prepared"), JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices))
    env.update(COMPILE_CACHE)
    return env


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("multiprocess")
    cluster = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "cpu_cluster.py"), "--processes=2", "--devices-per-process=4",
         f"--log-dir={tmp_path / 'logs'}", "--timeout=600", "--", *train_command(tmp_path / "cluster", distributed=True)],
        cwd=ROOT, env=environment(tmp_path, 4), capture_output=True, text=True, timeout=700,
    )
    assert cluster.returncode == 0, (cluster.stderr[-2000:], (tmp_path / "logs" / "process1.log").read_text()[-2000:])
    single = subprocess.run(train_command(tmp_path / "single"), cwd=ROOT, env=environment(tmp_path, 8),
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    return tmp_path


def test_two_processes_match_one_process(runs, saved_state):
    cluster = json.loads((runs / "cluster" / "results.json").read_text())
    single = json.loads((runs / "single" / "results.json").read_text())
    assert (cluster["processes"], cluster["devices"]) == (2, 8)
    assert (single["processes"], single["devices"]) == (1, 8)
    a, b = saved_state(runs / "cluster", STEPS), saved_state(runs / "single", STEPS)
    assert int(a["step"]) == STEPS
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), a, b)
    assert cluster["test_loss"] == pytest.approx(single["test_loss"], rel=1e-5)
    # Only process 0 wrote the logs: one record per logged step, not two.
    steps = [json.loads(line)["step"] for line in (runs / "cluster" / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len(set((s, i) for i, s in enumerate(steps)))
    assert sorted(set(steps)) == sorted(set(json.loads(l)["step"] for l in (runs / "single" / "metrics.jsonl").read_text().splitlines()))
    assert len(steps) == (runs / "single" / "metrics.jsonl").read_text().count("\n")


def test_one_process_resumes_the_checkpoint_two_processes_wrote(runs):
    resumed = subprocess.run(train_command(runs / "cluster", steps=STEPS + 4), cwd=ROOT, env=environment(runs, 8),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    results = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert results["resumed_from_step"] == STEPS and results["processes"] == 1 and results["steps"] == STEPS + 4
