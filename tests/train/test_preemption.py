"""SIGTERM or SIGINT mid-run through the command line: the step finishes, a checkpoint is written, the
CLI says "preempted at step N; run the same command to resume" and exits 75; the same command resumes
from step N and finishes, with every step logged once."""

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 400
PREEMPTED = 75  # cnn.train.loop.Preempted.exit_status (EX_TEMPFAIL)


def command(workdir):
    return [
        sys.executable, "-m", "experiments.train", "--config=experiments/configs/mnist_simple_cnn.py:smoke",
        f"--workdir={workdir}", f"--config.training.steps={STEPS}", "--config.training.log_every_steps=1",
        "--config.training.checkpoint_every_steps=100000", "--config.training.eval_every_steps=100000",
    ]


def environment(tmp_path):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "CNN_PREPARED_DIR": str(tmp_path / "prepared"),
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"cnn-tests-xla-cache-{os.getuid()}"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
    }


def logged_train_steps(workdir) -> list:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return [r["step"] for r in records if "train_loss" in r]


def wait_for_progress(process, workdir, at_least=3, deadline_seconds=300):
    """Polls metrics.jsonl until step ``at_least`` is logged (the loop and its signal handlers are running)."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) before it was signalled")
        steps = logged_train_steps(workdir)
        if steps and steps[-1] >= at_least:
            return steps[-1]
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"no training progress in metrics.jsonl within {deadline_seconds}s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_exits_75_and_the_same_command_resumes(signum, tmp_path):
    workdir, env = tmp_path / "run", environment(tmp_path)
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(command(workdir), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            seen = wait_for_progress(process, workdir)
            process.send_signal(signum)
            status = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    stderr_text = stderr_path.read_text()
    assert status == PREEMPTED, stderr_text[-3000:]
    last = stderr_text.strip().splitlines()[-1]
    match = re.fullmatch(r"preempted at step (\d+); run the same command to resume", last)
    assert match, last
    step = int(match.group(1))
    assert seen <= step < STEPS  # the step under way when the signal came was finished, not the whole run
    checkpoints = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert checkpoints == [step]  # checkpoint_every_steps is far away: this one is the preemption's
    assert (workdir / "checkpoints" / str(step) / "state").is_dir()
    assert not (workdir / "results.json").exists()
    assert logged_train_steps(workdir) == list(range(1, step + 1))

    again = subprocess.run(command(workdir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert json.loads(again.stdout.strip().splitlines()[-1]) == results
    assert results["resumed_from_step"] == step
    assert results["steps"] == STEPS
    assert logged_train_steps(workdir) == list(range(1, STEPS + 1))  # one history: every step once, in order
