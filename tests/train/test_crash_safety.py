"""A run killed with SIGKILL (inside a step, during a checkpoint write, between epochs) and restarted
ends bit-identical to an uninterrupted run, and its metrics and TensorBoard files show every step once."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile

import jax
import numpy as np
import pytest
from event_files import scalars  # tests/helpers

pytestmark = pytest.mark.xdist_group("crash_safety")  # one worker builds the module's fixtures (pyproject: --dist loadgroup)

HERE = pathlib.Path(__file__).resolve().parent
COMPILE_CACHE = {  # the session's XLA compile cache (tests/conftest.py), shared with subprocesses
    "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"cnn-tests-xla-cache-{os.getuid()}"),
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
}
ROOT = HERE.parents[1]
STEPS = 12  # the smoke data has 8 steps per epoch


def run(workdir, point, prepared, on_device="auto"):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env.update(CNN_PREPARED_DIR=str(prepared), JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.update(COMPILE_CACHE)
    return subprocess.run([sys.executable, str(HERE / "crash_run.py"), str(workdir), point, str(STEPS), on_device],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("crash")
    done = run(tmp / "straight", "none", tmp / "prepared")
    assert done.returncode == 0, done.stderr[-2000:]
    return tmp


@pytest.mark.parametrize("point,on_device", [("in_step", "auto"), ("checkpoint", "auto"), ("epoch", "auto"),
                                             ("epoch", "off")])
def test_killed_and_restarted_run_is_bit_identical(point, on_device, uninterrupted, saved_state):
    """The smoke data fits on the device (data.on_device=auto holds it there); "off" reads it with grain."""
    workdir = uninterrupted / f"{point}-{on_device}"
    killed = run(workdir, point, uninterrupted / "prepared", on_device)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (workdir / "results.json").exists()
    committed = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert all(step < STEPS for step in committed)  # an asynchronous write may not have committed yet
    if point == "checkpoint":
        assert committed[-1] == 3  # step 6's files were written but never committed
    if point == "epoch":
        assert committed and committed[-1] in (3, 6)  # step 8 ended the epoch; its checkpoint was not due
    restarted = run(workdir, "none", uninterrupted / "prepared", on_device)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    results = json.loads((workdir / "results.json").read_text())
    assert results["resumed_from_step"] == (committed[-1] if committed else 0)
    a, b = saved_state(uninterrupted / "straight", STEPS), saved_state(workdir, STEPS)
    assert int(b["step"]) == STEPS
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # Every logged scalar once, in metrics.jsonl and in TensorBoard, as in the uninterrupted run.
    events = [(tag, step) for tag, step, _ in scalars(workdir)]
    assert len(events) == len(set(events))
    assert set(events) == {(tag, step) for tag, step, _ in scalars(uninterrupted / "straight")}
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    logged = [(name, r["step"]) for r in records for name, value in r.items() if name != "step"]
    assert len(logged) == len(set(logged)) and set(events) <= set(logged)
