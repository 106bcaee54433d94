"""Nothing lost, whatever the user does, through the real command line: a workdir holds one experiment
(finished results are never trained over or replaced), one run at a time (a lock that a killed run does
not leave behind), torn and corrupt files are named, Ctrl-C stops a run at any moment, and a full disk is
one line that keeps the last checkpoint. docs/training.md lists the messages."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cli_runs import (  # tests/helpers
    SMOKE, assert_one_clear_line, checkpoint_steps, copy_of, env_for, finished_run, run_cli, snapshot,
)

pytestmark = pytest.mark.xdist_group("workdir_rules")  # one worker builds the module's fixtures (pyproject: --dist loadgroup)

ROOT = pathlib.Path(__file__).resolve().parents[2]
MNIST = pathlib.Path(os.environ.get("CNN_DATA_DIR", "")) / "mnist" / "train-images-idx3-ubyte.gz"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("shared")


@pytest.fixture(scope="module")
def finished(shared, tmp_path_factory):
    """A finished 6-step smoke run (checkpoints at 3 and 6)."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    return finished_run(workdir, [f"--config={SMOKE}"], env_for(shared, workdir.parent))


def test_a_finished_run_is_never_trained_over_or_replaced(finished, shared, tmp_path):
    workdir = copy_of(finished, tmp_path)
    shutil.rmtree(workdir / "checkpoints")  # to save space, as a user would
    before = snapshot(workdir)
    other = run_cli(workdir, [f"--config={SMOKE}", "--config.model.name=lenet5"], env_for(shared, tmp_path))
    assert_one_clear_line(other, f"workdir {workdir} holds another experiment", "model.name: 'simple_cnn' -> 'lenet5'",
                          "--force")
    assert snapshot(workdir) == before
    same = run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path))
    assert same.returncode == 0, same.stderr[-3000:]
    assert json.loads(same.stdout.strip().splitlines()[-1]) == json.loads((workdir / "results.json").read_text())
    assert snapshot(workdir) == before and checkpoint_steps(workdir) == []  # returned, not retrained
    longer = run_cli(workdir, [f"--config={SMOKE}", "--config.training.steps=9"], env_for(shared, tmp_path))
    assert_one_clear_line(longer, "finished at step 6 whose checkpoints are gone", "cannot go on to step 9")


def test_force_sets_the_other_experiment_aside(finished, shared, tmp_path):
    workdir = copy_of(finished, tmp_path)
    old_results = (workdir / "results.json").read_text()
    result = run_cli(workdir, [f"--config={SMOKE}", "--config.model.name=lenet5", "--force"], env_for(shared, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["model"] == "lenet5"
    (aside,) = workdir.glob("replaced-*")
    assert (aside / "results.json").read_text() == old_results and checkpoint_steps(aside) == [3, 6]


def test_a_finished_run_goes_on_when_made_longer(finished, shared, tmp_path):
    workdir = copy_of(finished, tmp_path)
    result = run_cli(workdir, [f"--config={SMOKE}", "--config.training.steps=9"], env_for(shared, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["steps"] == 9 and results["resumed_from_step"] == 6


def hold_the_lock(workdir: pathlib.Path) -> subprocess.Popen:
    """Another process that holds the workdir's lock, as a running training run does."""
    code = ("import sys, time; from cnn.train.workdir import Workdir\n"
            "folder = Workdir(sys.argv[1]); folder.prepare()\n"
            "with folder.lock():\n    print('locked', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(workdir)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_run_is_refused_at_once_and_a_killed_holder_blocks_nothing(shared, tmp_path):
    workdir = tmp_path / "run"
    holder = hold_the_lock(workdir)
    try:
        started = time.monotonic()
        refused = run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path))
        assert_one_clear_line(refused, f"workdir {workdir} is in use by another run", f"pid {holder.pid} on ")
        assert time.monotonic() - started < 60 and not (workdir / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # as a crash or a reboot would end it
        holder.wait()
    assert (workdir / ".lock").exists()  # the holder's note is left behind; its lock is not
    result = run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (workdir / ".lock").exists()


def test_two_runs_started_together_write_one_history(shared, tmp_path):
    workdir = tmp_path / "run"
    args = [f"--config={SMOKE}", "--config.training.steps=300", "--config.training.log_every_steps=1"]
    first = subprocess.Popen([sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *args], cwd=ROOT,
                             env=env_for(shared, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = run_cli(workdir, args, env_for(shared, tmp_path))
        assert_one_clear_line(second, "is in use by another run", f"pid {first.pid}")
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    steps = [json.loads(line)["step"] for line in (workdir / "metrics.jsonl").read_text().splitlines()
             if "train_loss" in line]
    assert steps == list(range(1, 301))


def test_a_torn_last_metrics_line_is_dropped_and_the_run_resumes(finished, shared, tmp_path):
    workdir = copy_of(finished, tmp_path)
    (workdir / "results.json").unlink()
    shutil.rmtree(workdir / "checkpoints" / "6")  # killed after logging step 6, before its checkpoint committed
    with (workdir / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 6, "train_loss": 2.30')  # what a SIGKILL in the middle of an append leaves
    result = run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dropped a torn last line" in result.stderr and "metrics.jsonl" in result.stderr
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], name) for r in records for name in r if name != "step"]
    assert len(logged) == len(set(logged)) and max(step for step, _ in logged) == 6


def test_an_unreadable_line_before_the_last_is_named(finished, shared, tmp_path):
    workdir = copy_of(finished, tmp_path)
    (workdir / "results.json").unlink()
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    (workdir / "metrics.jsonl").write_text("\n".join([lines[0], "garbage{", *lines[1:]]) + "\n")
    before = snapshot(workdir)
    result = run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path))
    assert_one_clear_line(result, f"{workdir / 'metrics.jsonl'} line 2 is unreadable")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "a directory"])
def test_a_corrupt_results_file_is_named(damage, finished, shared, tmp_path):
    workdir = copy_of(finished, tmp_path)
    path = workdir / "results.json"
    if damage == "truncated":
        path.write_text(path.read_text()[:40])
    elif damage == "random bytes":
        path.write_bytes(os.urandom(300))
    else:
        path.unlink()
        path.mkdir()
    before = snapshot(workdir)
    result = run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path))
    assert_one_clear_line(result, f"{path} (the finished run's results) is unreadable", "delete it")
    assert snapshot(workdir) == before


@pytest.mark.parametrize("damage", ["truncated", "overwritten"])
def test_a_damaged_prepared_file_is_named(damage, finished, shared, tmp_path):
    prepared = tmp_path / "prepared"
    shutil.copytree(shared / "prepared", prepared)
    (record,) = prepared.glob("synthetic/28x28x1-*/1.0.0/synthetic-train.array_record*")
    data = record.read_bytes()
    record.write_bytes(data[:70000] if damage == "truncated" else data[:1000] + bytes(2000) + data[3000:])
    result = run_cli(tmp_path / "run", [f"--config={SMOKE}"], env_for(shared, tmp_path, CNN_PREPARED_DIR=prepared))
    assert_one_clear_line(result, f"the prepared data in {record.parent} is damaged", "delete that folder")


@pytest.mark.skipif(not MNIST.exists(), reason="needs the real MNIST files (CNN_DATA_DIR) to prepare")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_preparation_stops_the_run_cleanly(signum, shared, tmp_path):
    env = env_for(shared, tmp_path, CNN_DATA_DIR=MNIST.parent.parent, CNN_PREPARED_DIR=tmp_path / "prepared")
    args = ["--config=experiments/configs/mnist_simple_cnn.py", "--config.training.steps=2"]
    run = subprocess.Popen([sys.executable, "-m", "experiments.train", f"--workdir={tmp_path / 'run'}", *args],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in run.stderr:  # wait until the preparation has begun
        lines.append(line)
        if "Generating splits" in line:  # tfds's progress, on stderr
            break
    run.send_signal(signum)
    sent = time.monotonic()
    _, rest = run.communicate(timeout=60)
    assert run.returncode == 75, "".join(lines) + rest
    assert time.monotonic() - sent < 20
    assert "preempted before training started" in rest
    assert not list((tmp_path / "prepared").rglob("*incomplete*")) and not list((tmp_path / "prepared").rglob("*.json"))
    assert not (tmp_path / "run" / "config.json").exists()
    again = run_cli(tmp_path / "run", args, env)
    assert again.returncode == 0, again.stderr[-3000:]


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: room for one smoke checkpoint (2.7 MB of arrays, 2 MB written), not for two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()[:80]})")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(small_disk, shared, tmp_path):
    workdir = small_disk / "run"
    result = run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path))
    assert_one_clear_line(result, f"no space left on device writing {workdir / 'checkpoints'}",
                          "checkpoints of earlier steps are kept")
    assert checkpoint_steps(workdir) == [3]
    assert not list((workdir / "checkpoints").glob("*orbax-checkpoint-tmp*"))
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space freed
    resumed = run_cli(workdir, [f"--config={SMOKE}"], env_for(shared, tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((workdir / "results.json").read_text())["resumed_from_step"] == 3
