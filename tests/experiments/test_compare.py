"""Comparisons and sweeps end to end on tiny data: every file written, finished runs skipped, an
interrupted comparison resumed from its checkpoint, grid and optuna sweeps, and bad sweeps refused early."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from cnn.analysis import plots
from cnn import compare
from cnn.compare import search

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPARISON_FILES = ("results.csv", "results.md", "trials.csv", *compare.COMPARISON_PLOTS)


def _environment(tmp_path):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "CNN_PREPARED_DIR": os.environ["CNN_PREPARED_DIR"],
        "JAX_PLATFORMS": "cpu",
        "JAX_COMPILATION_CACHE_DIR": os.path.join(tempfile.gettempdir(), f"cnn-tests-xla-cache-{os.getuid()}"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2",
    }


def test_compare_writes_every_file_and_a_rerun_trains_nothing(tmp_path, comparison, assert_png):
    config = comparison(seeds=(0, 1))
    groups = compare.compare(config, tmp_path)
    for name in COMPARISON_FILES:
        assert (tmp_path / name).exists(), name
    for name in compare.COMPARISON_PLOTS:
        assert_png(tmp_path / name)
    trials = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert trials == ["tiny_cnn-adam-seed0", "tiny_cnn-adam-seed1"]
    for trial in trials:
        for picture in plots.PICTURES:
            assert_png(tmp_path / "runs" / trial / "plots" / picture)
    # simple_cnn with widths (4, 8) and 16 hidden units on 12x12x1: 650 parameters; multiply-adds
    # 10*10*4*9 + 3*3*8*36 + 8*16 + 16*10 = 6,480, so 12,960 FLOPs (2 x multiply-adds).
    assert len(groups) == 1 and groups[0]["seeds"] == 2
    assert groups[0]["params"] == 650 and groups[0]["flops"] == 12_960
    table = (tmp_path / "results.md").read_text()
    assert "| `tiny_cnn` (simple_cnn) | adam | 650 | 12.96 K |" in table and " ± " in table
    # The table's mean and standard deviation are those of the two runs' results.
    accuracies = [json.loads((tmp_path / "runs" / t / "results.json").read_text())["test_accuracy"] for t in trials]
    assert groups[0]["accuracy_mean"] == pytest.approx(sum(accuracies) / 2)
    assert groups[0]["accuracy_std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2 ** 0.5)
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("group,") and len(csv_lines) == 2

    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    calls = []

    def train(config, workdir):
        from cnn.train.loop import train_and_evaluate

        calls.append(workdir)
        return train_and_evaluate(config, workdir)

    compare.compare(config, tmp_path, train=train)
    assert len(calls) == 2
    changed = [str(p) for p, stamp in stamps.items() if p.stat().st_mtime_ns != stamp]
    assert not changed, f"a finished run was touched: {changed}"  # no step trained, no checkpoint or picture rewritten


def test_a_killed_comparison_resumes_its_interrupted_run(tmp_path, comparison, interruptible):
    """SIGTERM mid-run: exit 75 with a checkpoint; the same command resumes that run from it."""
    config_file = tmp_path / "tiny_compare.py"
    config_file.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('compare_fixtures', {str(pathlib.Path(__file__).with_name('conftest.py'))!r})\n"
        "fixtures = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(fixtures)\n\n"
        "def get_config(arg=''):\n    return fixtures.interruptible(fixtures.tiny_comparison(seeds=(0,), steps=300))\n"
    )
    command = [sys.executable, "-m", "experiments.compare", f"--config={config_file}", f"--workdir={tmp_path / 'out'}"]
    run = tmp_path / "out" / "runs" / "tiny_cnn-adam-seed0"
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=_environment(tmp_path), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("train_loss") >= 3):
                assert process.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
                assert time.monotonic() < deadline, "no training progress"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
    stderr_text = (tmp_path / "stderr.txt").read_text()
    assert status == 75, stderr_text[-2000:]
    assert "run the same command to resume" in stderr_text.strip().splitlines()[-1]
    assert not (run / "results.json").exists()
    stopped = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert 0 < stopped < 300

    from cnn.analysis import runs

    compare.compare(interruptible(comparison(seeds=(0,), steps=300)), tmp_path / "out")  # the same command's call
    results = runs.read_results(run)
    assert results["resumed_from_step"] == stopped and results["steps"] == 300
    steps = [r["step"] for r in runs.read_metrics(run) if "train_loss" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 300  # every step logged once, none trained twice


def test_grid_sweep_runs_the_cross_product_and_summarises(tmp_path, comparison, assert_png):
    groups = compare.compare(comparison(seeds=(0,), steps=2), tmp_path,
                             sweeps=["optimizer.learning_rate=0.01,0.001", "training.batch_size=8,16"])
    trials = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert trials == [
        "tiny_cnn-adam-learning_rate=0.001,batch_size=16-seed0", "tiny_cnn-adam-learning_rate=0.001,batch_size=8-seed0",
        "tiny_cnn-adam-learning_rate=0.01,batch_size=16-seed0", "tiny_cnn-adam-learning_rate=0.01,batch_size=8-seed0",
    ]
    assert json.loads((tmp_path / "runs" / trials[0] / "results.json").read_text())["global_batch"] == 16
    assert len(groups) == 4 and {g["sweep"] for g in groups} == {
        "learning_rate=0.01,batch_size=8", "learning_rate=0.01,batch_size=16",
        "learning_rate=0.001,batch_size=8", "learning_rate=0.001,batch_size=16"}
    assert "| sweep |" in (tmp_path / "results.md").read_text()
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 5
    for name in compare.COMPARISON_PLOTS:
        assert_png(tmp_path / name)


def test_optuna_search_runs_its_trials_and_goes_on_where_it_stopped(tmp_path, comparison):
    config = comparison(seeds=(0,), steps=2)
    search.search(config, tmp_path, ["optimizer.learning_rate=log:1e-4:1e-1"], trials=2, algorithm="tpe")
    trials = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(trials) == 2 and all(t.startswith("tiny_cnn-adam-learning_rate=") for t in trials)
    lines = (tmp_path / "search.csv").read_text().splitlines()
    assert lines[0] == "number,state,objective,optimizer.learning_rate" and len(lines) == 3
    assert all(",COMPLETE," in line for line in lines[1:])
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 3
    search.search(config, tmp_path, ["optimizer.learning_rate=log:1e-4:1e-1"], trials=3, algorithm="tpe")
    assert len(list((tmp_path / "runs").iterdir())) == 3  # one more trial, the first two kept
    assert len((tmp_path / "search.csv").read_text().splitlines()) == 4


def test_random_search_over_a_choice(tmp_path, comparison):
    search.search(comparison(seeds=(0,), steps=2), tmp_path, ["training.batch_size=choice:8,16"], trials=1,
                  algorithm="random", seed=3)
    (trial,) = [p.name for p in (tmp_path / "runs").iterdir()]
    assert trial in ("tiny_cnn-adam-batch_size=8-seed0", "tiny_cnn-adam-batch_size=16-seed0")
    assert (tmp_path / "results.md").exists() and (tmp_path / "search.csv").exists()


def test_an_unknown_sweep_field_is_one_line_before_any_run(tmp_path):
    workdir = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.compare", "--config=experiments/configs/compare_mnist.py:smoke",
         f"--workdir={workdir}", "--sweep", "optimizer.learning_rate=0.1,0.01", "--sweep", "training.batch_sise=8,16"],
        cwd=ROOT, env=_environment(tmp_path), capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2, completed.stderr[-2000:]
    last = completed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --sweep training.batch_sise=8,16: the config has no field training.batch_sise; "
                           "did you mean training.batch_size?"), last
    assert not workdir.exists()


@pytest.mark.parametrize("text, message", [
    ("optimizer.learning_rate", "expected FIELD=VALUE,VALUE"),
    ("training.batch_size=8,x", "training.batch_size=x: training.batch_size takes an int like 8"),
    ("model.name=simple_cnn,resnet_nope", "unknown model 'resnet_nope'"),
    ("model.overrides.depth=3", "model 'simple_cnn' has no field 'depth'"),
])
def test_bad_sweeps_are_refused_before_any_run(tmp_path, comparison, text, message):
    with pytest.raises(ValueError, match=message):
        compare.compare(comparison(), tmp_path / "out", sweeps=[text])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("optimizer.learning_rate=log:0:1", "LOW > 0"),
    ("optimizer.learning_rate=cubic:1:2", "expected FIELD=KIND"),
    ("optimizer.learnig_rate=log:1e-4:1e-1", "did you mean optimizer.learning_rate"),
])
def test_bad_search_ranges_are_refused_before_any_run(tmp_path, comparison, text, message):
    with pytest.raises(ValueError, match=message):
        search.search(comparison(), tmp_path / "out", [text], trials=2)
    assert not (tmp_path / "out").exists()


def test_a_comparison_killed_outright_resumes_from_the_last_checkpoint(tmp_path, comparison):
    """SIGKILL (no chance to save) during the second seed's run: the rerun skips the finished first run
    and continues the second from its last periodic checkpoint."""
    config_file = tmp_path / "tiny_compare.py"
    config_file.write_text(
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('compare_fixtures', {str(pathlib.Path(__file__).with_name('conftest.py'))!r})\n"
        "fixtures = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(fixtures)\n\n"
        "def get_config(arg=''):\n"
        "    config = fixtures.tiny_comparison(seeds=(0, 1), steps=1000)\n"
        "    config.base.training.checkpoint_every_steps = 50\n"
        "    config.base.training.async_checkpoints = False\n"
        "    return config\n"
    )
    command = [sys.executable, "-m", "experiments.compare", f"--config={config_file}", f"--workdir={tmp_path / 'out'}"]
    first, second = (tmp_path / "out" / "runs" / f"tiny_cnn-adam-seed{seed}" for seed in (0, 1))
    with open(tmp_path / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=_environment(tmp_path), stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 180
            while not ((second / "checkpoints").is_dir()
                       and any(p.name.isdigit() and int(p.name) >= 50 for p in (second / "checkpoints").iterdir())):
                assert process.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
                assert time.monotonic() < deadline, "no checkpoint of the second run"
                time.sleep(0.02)
            process.kill()
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == -signal.SIGKILL
    assert (first / "results.json").is_file() and not (second / "results.json").exists()
    finished = (first / "results.json").stat().st_mtime_ns

    config = comparison(seeds=(0, 1), steps=1000)
    config.base.training.checkpoint_every_steps = 50
    config.base.training.async_checkpoints = False
    compare.compare(config, tmp_path / "out")  # the same command's call
    from cnn.analysis import runs

    assert (first / "results.json").stat().st_mtime_ns == finished  # not trained again
    results = runs.read_results(second)
    assert results["steps"] == 1000 and 50 <= results["resumed_from_step"] < 1000
    assert results["resumed_from_step"] % 50 == 0  # a periodic checkpoint, the newest the kill left
