"""Running ``python -m experiments.train`` as a user would, in a subprocess with isolated caches, and
checking what it left: one clear error line, the files of a workdir, its checkpoints."""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
SMOKE = "experiments/configs/mnist_simple_cnn.py:smoke"


def env_for(shared, tmp_path, **extra):
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "CNN_PREPARED_DIR": str(shared / "prepared"),
        "CNN_DATA_DIR": str(tmp_path / "no-data"),
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"cnn-tests-xla-cache-{os.getuid()}"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_cli(workdir, args, env, timeout=180):
    command = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def snapshot(folder: pathlib.Path) -> dict:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def checkpoint_steps(workdir: pathlib.Path) -> list:
    folder = workdir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def assert_one_clear_line(result, *needles):
    """Exit status 2, no traceback, and a last stderr line "error: ..." holding every needle."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, f"status {result.returncode}; stderr:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = lines[-1]
    assert last.startswith("error: "), last
    for needle in needles:
        assert needle in last, f"{needle!r} not in {last!r}"
    return last


def finished_run(workdir: pathlib.Path, args, env) -> pathlib.Path:
    """Trains ``args`` in ``workdir`` through the command line and checks that it finished."""
    result = run_cli(workdir, args, env)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def copy_of(workdir: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    """A copy of ``workdir`` in ``tmp_path/run`` to try things on."""
    target = tmp_path / "run"
    shutil.copytree(workdir, target)
    return target
