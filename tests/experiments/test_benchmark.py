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


def test_profile_step_tells_the_convolutions_apart_and_reads_the_trace(tmp_path, capsys):
    """LeNet-5 has two convolutions: two forward passes, two weight gradients, one input gradient (the first
    convolution's input needs none); the profile of its step is read back by kind of work."""
    from experiments import profile_step

    args = benchmark.parse_args(["--models", "lenet5"])
    batch = benchmark.synthetic_batch(4, (28, 28, 1), 10, 0)
    ours = benchmark.Ours(args, "lenet5", 4, "single", batch, 10, {})
    kinds = profile_step.convolution_kinds(ours.step.as_text())
    assert sorted(kinds.values()) == ["forward", "forward", "input gradient", "weight gradient", "weight gradient"]
    path = tmp_path / "profile.json"
    assert profile_step.main(["--model", "lenet5", "--batch-size", "4", "--steps", "1", "--reference", "none",
                              "--threads", "0", "--json", str(path)]) == 0
    record = json.loads(path.read_text())
    categories = record["ours"]["categories_ms"]
    assert {"convolution, forward", "convolution, weight gradient"} <= set(categories)
    assert sum(categories.values()) == pytest.approx(record["ours"]["profiled_ms"], abs=0.05)
