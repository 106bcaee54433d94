"""The per-run pictures and the comparison plots: valid PNGs of a sensible size, and the numbers behind them."""

import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cnn.models
from cnn.analysis import plots, runs
from cnn.data.sources import ArraySource


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, f"{path}: not a PNG with content"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def tiny_run():
    """A LoadedRun of a simple_cnn (4 and 8 filters) at 12x12 on 30 test images of 3 classes."""
    model = cnn.models.create("simple_cnn", num_classes=3, widths=(4, 8), hidden=8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 12, 12, 1)), train=False)
    images = np.random.default_rng(0).integers(0, 256, (30, 12, 12, 1), dtype=np.uint8)
    source = ArraySource(images, np.arange(30) % 3, num_classes=3)
    return runs.LoadedRun(model, variables, 0, source, lambda x: np.asarray(x, np.float32) / 255.0, ["a", "b", "c"])


def test_confusion_matrix_counts_every_test_image_by_its_prediction(tiny_run):
    counts = runs.confusion_matrix(tiny_run, batch_size=7)
    assert counts.shape == (3, 3) and counts.sum() == 30 and (counts.sum(axis=1) == 10).all()
    images, labels = next(tiny_run.batches(30))
    predicted = tiny_run.logits(images).argmax(-1)
    assert np.trace(counts) == (predicted == labels).sum()


def test_first_conv_kernel_is_the_first_layer_applied(tiny_run):
    path, kernel = runs.first_conv_kernel(tiny_run.variables["params"])
    assert path == "conv1/conv" and kernel.shape == (3, 3, 1, 4)
    with pytest.raises(ValueError, match="no 2D convolution"):
        runs.first_conv_kernel({"dense": {"kernel": np.zeros((3, 4))}})


def test_feature_maps_of_the_default_and_of_a_named_layer(tiny_run):
    images, _ = next(tiny_run.batches(2))
    layer, maps = runs.feature_maps(tiny_run, images)
    assert layer == "conv1" and maps.shape == (2, 10, 10, 4)
    layer, maps = runs.feature_maps(tiny_run, images, "conv2")
    assert maps.shape == (2, 3, 3, 8)
    with pytest.raises(ValueError, match="no layer 'conv9'.*conv1"):
        runs.feature_maps(tiny_run, images, "conv9")


def test_each_picture_is_a_png(tmp_path, tiny_run):
    records = [{"step": s, "train_loss": 2.0 / s, "train_top1": 1 - 1.0 / s, "epoch": s / 4} for s in range(1, 9)]
    records += [{"step": 4, "test_loss": 0.6, "test_top1": 0.7}, {"step": 8, "test_loss": 0.4, "test_top1": 0.8}]
    images, _ = next(tiny_run.batches(3))
    layer, maps = runs.feature_maps(tiny_run, images)
    written = [
        plots.plot_curves(records, tmp_path / "curves.png", "tiny"),
        plots.plot_confusion(runs.confusion_matrix(tiny_run), tiny_run.class_names, tmp_path / "confusion.png"),
        plots.plot_filters(runs.first_conv_kernel(tiny_run.variables["params"])[1], tmp_path / "filters.png"),
        plots.plot_filters(np.random.default_rng(0).normal(size=(5, 5, 3, 10)), tmp_path / "rgb_filters.png"),
        plots.plot_feature_maps(images, maps, tmp_path / "maps.png", layer),
    ]
    for path in written:
        width, height = png_size(path)
        assert width >= 100 and height >= 100, (path, width, height)
    assert not list(tmp_path.glob("*.tmp.png"))


def test_comparison_plots(tmp_path):
    rows = [dict(label="a", params=1000, flops=2e6, accuracy_mean=0.9, accuracy_std=0.01),
            dict(label="b", params=50000, flops=9e7, accuracy_mean=0.95, accuracy_std=0.0)]
    curves = {"a": [[{"step": 1, "epoch": 0.5, "train_loss": 1.0}, {"step": 2, "epoch": 1.0, "train_loss": 0.5},
                     {"step": 2, "test_top1": 0.9}]] * 2, "b": [[{"step": 2, "epoch": 1.0, "train_loss": 0.3}, {"step": 2, "test_top1": 0.95}]]}
    for path in (plots.plot_accuracy_against(rows, "params", tmp_path / "p.png", "parameters"),
                 plots.plot_accuracy_against(rows, "flops", tmp_path / "f.png", "FLOPs"),
                 plots.plot_training_curves(curves, tmp_path / "c.png")):
        width, height = png_size(path)
        assert width >= 300 and height >= 200
