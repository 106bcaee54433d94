"""Exporting a finished training run: its config (``RUN/config.json``), its best or final checkpoint, a file.

The exported program takes what a camera or a file gives, ``images uint8 [N, H, W, C]``, and applies the
run's evaluation preprocessing (``/ 255``, and the training split's mean and std where the run used them)
before the model, so a deployment feeds raw pixels.

The best checkpoint is the checkpointed step with the best ``config.training.best_metric`` (e.g.
``test_top1``, ``best_mode`` max or min) in ``RUN/metrics.jsonl``; the final one is the newest.
"""

from __future__ import annotations

import pathlib
from typing import Any, Optional

import jax.numpy as jnp
import numpy as np

import cnn.data
from cnn.analysis import runs
from cnn.data.chain import preprocessing
from cnn.export import onnx_model, stablehlo
from cnn.export.forward import forward

FORMATS = {"onnx": ".onnx", "stablehlo": ".stablehlo"}
CHECKPOINTS = ("best", "final")


def chosen_step(workdir: Any, config: Any, checkpoint: str) -> int:
    """The step of the run's ``checkpoint`` ("best" or "final") among its saved checkpoints."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint={checkpoint!r}; expected one of {', '.join(CHECKPOINTS)}")
    steps = runs.checkpoint_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {pathlib.Path(workdir) / 'checkpoints'}; train the run first")
    metric = config.training.get("best_metric", "test_top1") if "training" in config else "test_top1"
    scored = {r["step"]: r[metric] for r in runs.read_metrics(workdir) if metric and metric in r and r.get("step") in steps}
    if checkpoint == "final" or not scored:
        return steps[-1]
    sign = -1.0 if config.training.get("best_mode", "max") == "min" else 1.0
    return max(scored, key=lambda step: (sign * scored[step], step))


def run_preprocessing(config: Any):
    """``images uint8 [N, H, W, C] -> model inputs float32``: the run's evaluation preprocessing, traceable."""
    data = config.data
    options = dict(data.get("options", {}) or {})
    source = cnn.data.source(data.name, data.get("train_split", "train"), data_dir=data.get("data_dir") or None,
                             prepared_dir=data.get("prepared_dir") or None, **options)
    normalize = data.get("normalize", "dataset") == "dataset"
    transform = preprocessing("", num_classes=source.num_classes, mean=source.mean if normalize else None,
                              std=source.std if normalize else None)
    return lambda images: transform(None, images, jnp.zeros(images.shape[:1], jnp.int32))[0]


def export_run(workdir: Any, *, format: str, output: Optional[Any] = None, checkpoint: str = "best") -> pathlib.Path:
    """Writes the run's ``checkpoint`` as ``format`` (onnx, stablehlo) to ``output`` (default: in ``workdir``):
    ``images uint8 [N, H, W, C] -> logits float32 [N, classes]``."""
    if format not in FORMATS:
        raise ValueError(f"format={format!r}; expected one of {', '.join(FORMATS)}")
    config = runs.read_config(workdir)
    step = chosen_step(workdir, config, checkpoint)
    run = runs.load_run(workdir, step, config=config)
    input_shape = tuple(int(d) for d in run.test_source.image_shape)
    output = pathlib.Path(output) if output else pathlib.Path(workdir) / f"model_{checkpoint}_step{step}{FORMATS[format]}"
    model, prepare = forward(run.model, run.variables), run_preprocessing(config)
    function = lambda images: model(prepare(images))
    if format == "onnx":
        proto = onnx_model.export_onnx(function, input_shape=input_shape, dtype=np.uint8, name=config.model.name)
        return onnx_model.write(proto, output)
    return stablehlo.write(stablehlo.export_stablehlo(function, input_shape=input_shape, dtype=jnp.uint8), output)
