"""Attacks inside a train step give the same result on one device, under pmap and sharded over 8 CPU devices."""

import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).with_name("parallel_attack_step.py")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_attack_train_step_matches_across_parallel_modes():
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "8", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "agree under jit, pmap and sharded on 8 devices" in done.stdout
