"""PNG pictures of runs: curves, confusion matrix, first-layer filters, feature maps, and comparisons.

Per run, ``run_pictures(config, workdir)`` writes into ``workdir/plots/``:
``curves.png`` (train loss/top-1 per logged step, test loss/top-1 per evaluation),
``confusion_matrix.png`` (test split, newest checkpoint), ``first_conv_filters.png`` and
``feature_maps.png`` (a layer's activations for a few test images: where each filter's pattern appears).
For a comparison, ``plot_accuracy_against`` and ``plot_training_curves`` draw every run on shared axes.
matplotlib runs headless (Agg).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

PICTURES = ("curves.png", "confusion_matrix.png", "first_conv_filters.png", "feature_maps.png")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Any) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    tmp.replace(path)  # never a half-written picture
    return path


def _series(records: Sequence[dict], key: str):
    points = [(r["step"], r[key]) for r in records if key in r and "step" in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_curves(records: Sequence[dict], path: Any, title: str = "") -> pathlib.Path:
    """Loss and top-1 against steps: training (per logged window) and test (per evaluation)."""
    plt = _pyplot()
    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, axis, label in (("train_loss", loss_axis, "train"), ("test_loss", loss_axis, "test"),
                             ("train_top1", accuracy_axis, "train"), ("test_top1", accuracy_axis, "test")):
        steps, values = _series(records, key)
        if steps:
            axis.plot(steps, values, marker="o" if label == "test" else None, markersize=3, label=label)
    loss_axis.set(xlabel="step", ylabel="loss", title="loss")
    accuracy_axis.set(xlabel="step", ylabel="top-1 accuracy", title="accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(counts: np.ndarray, class_names: Sequence[str], path: Any, title: str = "") -> pathlib.Path:
    """Rows are true classes, columns predictions; cells coloured by the fraction of the row."""
    plt = _pyplot()
    classes = len(counts)
    size = min(4 + 0.45 * classes, 16)
    fig, axis = plt.subplots(figsize=(size, size * 0.9))
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    image = axis.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=axis, fraction=0.046, label="fraction of the true class")
    if classes <= 20:
        ticks = range(classes)
        axis.set_xticks(ticks, [str(n) for n in class_names], rotation=90 if max(map(len, class_names)) > 2 else 0)
        axis.set_yticks(ticks, [str(n) for n in class_names])
        for i in range(classes):
            for j in range(classes):
                if counts[i, j]:
                    axis.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=7,
                              color="white" if fractions[i, j] > 0.5 else "black")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    axis.set(xlabel="predicted", ylabel="true", title=f"{title + ': ' if title else ''}{accuracy:.2%} of {counts.sum():,} correct")
    return _save(fig, path)


def _grid(count: int, columns: int = 8):
    columns = min(columns, count)
    return int(math.ceil(count / columns)), columns


def plot_filters(kernel: np.ndarray, path: Any, title: str = "") -> pathlib.Path:
    """Each output filter of a ``[kh, kw, in, out]`` kernel: RGB for 3 inputs, grey (first input) otherwise."""
    plt = _pyplot()
    count = kernel.shape[-1]
    rows, columns = _grid(count)
    fig, axes = plt.subplots(rows, columns, figsize=(1.1 * columns, 1.1 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index >= count:
            continue
        weights = kernel[..., index]
        if weights.shape[-1] == 3:
            low, high = weights.min(), weights.max()
            axis.imshow((weights - low) / max(high - low, 1e-12), interpolation="nearest")
        else:
            bound = max(np.abs(weights[..., 0]).max(), 1e-12)
            axis.imshow(weights[..., 0], cmap="bwr", vmin=-bound, vmax=bound, interpolation="nearest")
    fig.suptitle(title or f"first conv filters {kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]}, {count} out")
    return _save(fig, path)


def _show_image(axis, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        axis.imshow(image[..., 0], cmap="gray")
    else:
        axis.imshow(image[..., :3].astype(np.uint8) if image.dtype == np.uint8 else image[..., :3])


def plot_feature_maps(images: np.ndarray, maps: np.ndarray, path: Any, layer: str, channels: int = 8) -> pathlib.Path:
    """One row per image: the image, then the activations of the first ``channels`` filters of ``layer``."""
    plt = _pyplot()
    shown = min(channels, maps.shape[-1])
    rows, columns = len(images), shown + 1
    fig, axes = plt.subplots(rows, columns, figsize=(1.3 * columns, 1.3 * rows + 0.4), squeeze=False)
    for row in range(rows):
        _show_image(axes[row, 0], images[row])
        for channel in range(shown):
            axes[row, channel + 1].imshow(maps[row, ..., channel], cmap="viridis")
            if row == 0:
                axes[row, channel + 1].set_title(f"filter {channel}", fontsize=8)
    for axis in axes.flat:
        axis.axis("off")
    fig.suptitle(f"feature maps of {layer} {tuple(maps.shape[1:])}")
    return _save(fig, path)


def pictures_done(workdir: Any) -> bool:
    """Whether ``workdir/plots`` holds every picture, newer than the run's results."""
    workdir = pathlib.Path(workdir)
    results = workdir / "results.json"
    files = [workdir / "plots" / name for name in PICTURES]
    return results.exists() and all(f.exists() and f.stat().st_mtime >= results.stat().st_mtime for f in files)


def run_pictures(config: Any, workdir: Any, *, layer: str = "", images: int = 4, title: str = "",
                 confusion_limit: Optional[int] = None) -> List[pathlib.Path]:
    """Writes the four pictures of a finished run into ``workdir/plots/`` and returns their paths."""
    from cnn.analysis import runs

    workdir = pathlib.Path(workdir)
    out = workdir / "plots"
    title = title or workdir.name
    written = [plot_curves(runs.read_metrics(workdir), out / "curves.png", title)]
    run = runs.load_run(workdir, config=config)
    written.append(plot_confusion(runs.confusion_matrix(run, limit=confusion_limit), run.class_names,
                                  out / "confusion_matrix.png", title))
    kernel_path, kernel = runs.first_conv_kernel(run.variables["params"])
    written.append(plot_filters(kernel, out / "first_conv_filters.png", f"{title}: {kernel_path} {tuple(kernel.shape)}"))
    sample, _ = next(run.batches(images, limit=images))
    chosen, maps = runs.feature_maps(run, sample, layer)
    written.append(plot_feature_maps(sample, maps, out / "feature_maps.png", chosen))
    return written


def _group_colours(labels: Sequence[str]) -> Dict[str, Any]:
    plt = _pyplot()
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: palette(i % palette.N) for i, label in enumerate(labels)}


def plot_accuracy_against(rows: Sequence[dict], x_key: str, path: Any, xlabel: str) -> pathlib.Path:
    """Mean test accuracy (error bars: std over seeds) against ``x_key`` (params or FLOPs), log x axis."""
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4.5))
    colours = _group_colours([r["label"] for r in rows])
    for row in rows:
        x = row.get(x_key)
        if x is None or not np.isfinite(x) or x <= 0:
            continue
        axis.errorbar(x, 100 * row["accuracy_mean"], yerr=100 * row["accuracy_std"], fmt="o", capsize=3,
                      color=colours[row["label"]], label=row["label"])
        axis.annotate(row["label"], (x, 100 * row["accuracy_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axis.set_xscale("log")
    axis.set(xlabel=xlabel, ylabel="test accuracy (%)", title=f"test accuracy against {xlabel}")
    axis.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_training_curves(curves: Dict[str, List[Sequence[dict]]], path: Any) -> pathlib.Path:
    """Every run's train loss and test accuracy against epochs; one colour per group, one line per seed."""
    plt = _pyplot()
    fig, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    colours = _group_colours(list(curves))
    for label, runs_records in curves.items():
        for index, records in enumerate(runs_records):
            per_epoch = _per_epoch(records)
            train = [(e, r["train_loss"]) for e, r in per_epoch if "train_loss" in r]
            test = [(e, r["test_top1"]) for e, r in per_epoch if "test_top1" in r]
            keyword = dict(color=colours[label], alpha=0.8, label=label if index == 0 else None)
            if train:
                loss_axis.plot(*zip(*train), **keyword)
            if test:
                accuracy_axis.plot([e for e, _ in test], [100 * v for _, v in test], marker="o", markersize=3, **keyword)
    loss_axis.set(xlabel="epoch", ylabel="train loss", title="training loss", yscale="log")
    accuracy_axis.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return _save(fig, path)


def _per_epoch(records: Sequence[dict]) -> List[tuple]:
    """(epoch, record) pairs; a test record (no epoch of its own) takes the epoch of the train record at its step."""
    epoch_at = {r["step"]: r["epoch"] for r in records if "epoch" in r and "step" in r}
    steps_per_epoch = next((s / e for s, e in epoch_at.items() if e), None)
    pairs = []
    for record in records:
        step = record.get("step")
        if step is None:
            continue
        epoch = epoch_at.get(step, step / steps_per_epoch if steps_per_epoch else step)
        pairs.append((epoch, record))
    return pairs
