"""``experiments.explain`` and ``experiments.robustness`` on a finished smoke run: their files appear and are valid
PNG and JSON; bad flags are one line on stderr and exit status 2."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The seed network's smoke config (6 steps on synthetic 28x28 digits), trained to the end."""
    workdir = tmp_path_factory.mktemp("explain") / "run"
    done = _run("experiments.train", "--config", "experiments/configs/mnist_simple_cnn.py:smoke", "--workdir", str(workdir))
    assert done.returncode == 0, done.stderr[-2000:]
    return workdir


def _is_png(path):
    return path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1000


def test_explain_writes_panels_of_correct_and_misclassified_images(finished_run):
    done = _run("experiments.explain", "--workdir", str(finished_run), "--images", "4", "--method", "grad_cam,smoothgrad")
    assert done.returncode == 0, done.stderr[-2000:]
    folder = finished_run / "plots" / "explain"
    index = json.loads((folder / "index.json").read_text())
    assert index["methods"] == ["grad_cam", "smoothgrad"]
    assert len(index["images"]) == 4
    assert sum(not image["correct"] for image in index["images"]) == 2  # a 6-step model errs often: half are mistakes
    for image in index["images"]:
        assert image["file"] == f"{image['index']:05d}_{'correct' if image['correct'] else 'wrong'}.png"
        assert _is_png(folder / image["file"])
        assert 0 < image["confidence"] <= 1 and (image["predicted"] == image["label"]) == image["correct"]
    assert "4 panels (2 misclassified)" in done.stdout


def test_robustness_writes_the_table_json_and_curve(finished_run):
    done = _run("experiments.robustness", "--workdir", str(finished_run), "--eps", "0.3,0.1", "--steps", "2",
                "--limit", "24", "--batch_size", "16")
    assert done.returncode == 0, done.stderr[-2000:]
    folder = finished_run / "robustness"
    result = json.loads((folder / "robustness.json").read_text())
    assert result["examples"] == 24 and list(result["robust"]) == ["0.1", "0.3"]
    assert result["robust"]["0.3"] <= result["robust"]["0.1"] <= result["clean"]
    assert result["settings"]["attack"] == "pgd" and result["settings"]["steps"] == 2
    assert "| 0.3 |" in (folder / "robustness.md").read_text() and "| 0.3 |" in done.stdout
    assert _is_png(folder / "accuracy_vs_eps.png")


@pytest.mark.parametrize("command, expected", [
    (("experiments.explain", "--method", "gradcam"), "error: --method=gradcam: unknown explanation method 'gradcam'"),
    (("experiments.robustness", "--eps", "0.1,big"), "error: --eps=0.1,big: expected comma-separated radii in [0, 1]"),
])
def test_bad_flags_are_one_line_and_exit_2(finished_run, command, expected):
    done = _run(*command, "--workdir", str(finished_run))
    assert done.returncode == 2
    assert done.stderr.strip().startswith(expected) and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_folder_without_a_run_is_one_line(tmp_path):
    done = _run("experiments.explain", "--workdir", str(tmp_path / "nothing"))
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: --workdir={tmp_path / 'nothing'} holds no run (no config.json); "
                                   "train one with experiments.train first")
