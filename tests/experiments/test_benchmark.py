"""experiments/benchmark.py end to end at a tiny size: both sides train, the JSON holds what the docs quote."""

import json

import pytest

from experiments import benchmark

pytest.importorskip("torch", reason="PyTorch is the benchmark's reference (pip install -e '.[dev]')")


def test_benchmark_writes_a_record_per_configuration_against_torch(tmp_path, capsys):
    output = tmp_path / "bench.json"
    status = benchmark.main(["--models", "simple_cnn", "--batch-sizes", "8", "--image-size", "28", "--reference",
                             "torch", "--windows", "2", "--steps-per-window", "1", "--warmup-steps", "1",
                             "--json", str(output)])
    assert status == 0
    (record,) = json.loads(output.read_text())["runs"][-1]["results"]
    assert record["image_shape"] == [28, 28, 1] and record["batch_size"] == 8
    assert record["params"] == record["torch_params"]  # the same network on both sides
    assert record["ours_images_per_s"] > 0 and record["torch_images_per_s"] > 0 and record["ratio"] > 0
    assert len(record["ours_windows"]) == len(record["torch_windows"]) == 2
    assert "simple_cnn" in capsys.readouterr().out


def test_benchmark_refuses_a_model_without_a_torch_twin_before_any_work(capsys):
    assert benchmark.main(["--models", "preact_resnet18", "--reference", "torch"]) == 2
    assert "no PyTorch reference for model 'preact_resnet18'" in capsys.readouterr().err


def test_end_to_end_benchmark_reads_the_bare_step_from_the_benchmark_record():
    """benchmark_e2e's reference: experiments.benchmark run in a fresh process, read back from its JSON."""
    from experiments import benchmark_e2e

    bare = benchmark_e2e.bare_step(windows=2, steps=2)
    assert len(bare["windows"]) == 2 and all(w > 0 for w in bare["windows"])
    assert min(bare["windows"]) <= bare["images_per_second"] <= max(bare["windows"])
