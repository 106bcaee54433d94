"""python -m experiments.export: a finished run's checkpoint to ONNX and StableHLO, uint8 images in."""

import jax
import numpy as np
import pytest

from cnn.analysis.runs import load_run
from cnn.export import load_stablehlo, run_onnx
from cnn.train.loop import train_and_evaluate
from experiments import export
from experiments.configs import mnist_lenet5

pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the exported files (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = mnist_lenet5.get_config("smoke")
    train_and_evaluate(config, workdir)
    return config, workdir


def test_onnx_and_stablehlo_files_equal_the_run(finished_run, tmp_path, capsys):
    config, workdir = finished_run
    run = load_run(workdir)
    images = np.stack([r["image"] for r in run.test_source.__getitems__(list(range(5)))])
    expected = run.logits(images)
    assert export.main(["--workdir", str(workdir), "--format", "onnx", "--output", str(tmp_path / "m.onnx"),
                        "--checkpoint", "final"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "m.onnx")  # the path, last
    np.testing.assert_allclose(run_onnx(tmp_path / "m.onnx")(images), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert export.main(["--workdir", str(workdir), "--format", "stablehlo", "--output", str(tmp_path / "m.shlo")]) == 0
    program = load_stablehlo(tmp_path / "m.shlo")
    np.testing.assert_allclose(np.asarray(program(jax.numpy.asarray(images))), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


def test_bad_arguments_exit_2_with_one_line(finished_run, tmp_path, capsys):
    _, workdir = finished_run
    assert export.main(["--workdir", str(tmp_path / "nothing"), "--format", "onnx"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "config.json does not exist" in error and error.count("\n") == 1
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--workdir", str(workdir), "--format", "tflite"])
    assert exit_info.value.code == 2
