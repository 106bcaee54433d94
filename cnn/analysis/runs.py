"""Reading what a training run left in its workdir: config, metrics, results and the final state.

``load_run(workdir)`` rebuilds the run's model and test data from its ``config.json`` and restores the
newest (or a given) checkpoint, so pictures, explanations, attacks and exports can be computed after the
fact, for a run that finished long ago as well as for one that just did. Nothing here imports the
training engine.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Iterator, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn


def read_metrics(workdir: Any) -> List[dict]:
    """Every record of ``workdir/metrics.jsonl`` in order (an unfinished last line is skipped)."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.endswith("}"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def read_config(workdir: Any):
    """The run's config (``workdir/config.json``, written when it started) as a ConfigDict."""
    import ml_collections

    path = pathlib.Path(workdir) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {workdir} is not the workdir of a run (or of a run "
                                f"started before runs recorded their config)")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def read_results(workdir: Any) -> Optional[dict]:
    """``workdir/results.json``, or None when the run has not finished."""
    path = pathlib.Path(workdir) / "results.json"
    return json.loads(path.read_text()) if path.exists() else None


def images_per_second(records: List[dict]) -> float:
    """The median training throughput over the logged windows (robust to the compiling first window)."""
    values = [r["train_images_per_second"] for r in records if "train_images_per_second" in r]
    return float(np.median(values)) if values else float("nan")


def checkpoint_steps(workdir: Any) -> List[int]:
    """The steps with a committed checkpoint in ``workdir/checkpoints`` (orbax's temporary folders skipped)."""
    directory = pathlib.Path(workdir) / "checkpoints"
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def read_checkpoint(workdir: Any, step: int) -> dict:
    """The whole state saved at ``step`` in ``workdir/checkpoints`` (params, batch_stats, opt_state, step,
    rng, ...), as arrays on this process's first device whatever sharding wrote it."""
    import orbax.checkpoint as ocp

    directory = (pathlib.Path(workdir) / "checkpoints" / str(step) / "state").absolute()
    checkpointer = ocp.StandardCheckpointer()
    try:
        metadata = checkpointer.metadata(directory)
        tree = getattr(metadata, "item_metadata", metadata)
        tree = getattr(tree, "tree", tree)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), tree)
        return checkpointer.restore(directory, target)
    finally:
        checkpointer.close()


def restore_variables(workdir: Any, step: Optional[int] = None) -> Tuple[int, dict]:
    """``(step, {"params": ..., "batch_stats": ...})`` of the checkpoint at ``step`` (default: the newest)."""
    steps = checkpoint_steps(workdir)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {pathlib.Path(workdir) / 'checkpoints'}; train the run first")
    step = steps[-1] if step is None else step
    restored = read_checkpoint(workdir, step)
    variables = {"params": restored["params"]}
    if restored.get("batch_stats"):
        variables["batch_stats"] = restored["batch_stats"]
    return step, variables


@dataclasses.dataclass
class LoadedRun:
    """A run's model with its restored variables and test split, ready for inspection."""

    model: nn.Module
    variables: dict
    step: int
    test_source: Any
    preprocess: Any  # (images uint8 [N, H, W, C]) -> model inputs float32
    class_names: List[str]
    normalize: Any = None  # (pixels float [N, H, W, C] in 0..255) -> model inputs: jnp, differentiable (attacks, saliency)

    def batches(self, batch_size: int = 500, limit: Optional[int] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """``(images uint8 [B, H, W, C], labels [B])`` over the test split in order."""
        total = len(self.test_source) if limit is None else min(limit, len(self.test_source))
        for start in range(0, total, batch_size):
            records = self.test_source.__getitems__(list(range(start, min(start + batch_size, total))))
            yield np.stack([r["image"] for r in records]), np.asarray([r["label"] for r in records])

    def __post_init__(self):
        model = self.model
        self._forward = jax.jit(lambda variables, inputs: model.apply(variables, inputs, train=False).astype(jnp.float32))
        self._capture = jax.jit(lambda variables, inputs: model.apply(
            variables, inputs, train=False, capture_intermediates=True, mutable=["intermediates"])[1])

    def logits(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._forward(self.variables, jnp.asarray(self.preprocess(images))))

    def intermediates(self, images: np.ndarray) -> dict:
        """``{"path/of/module": output}`` for every module's ``__call__`` on ``images`` (eval mode)."""
        state = self._capture(self.variables, jnp.asarray(self.preprocess(images)))
        flat = {}
        for path, value in jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]:
            keys = [getattr(k, "key", getattr(k, "idx", k)) for k in path]
            if keys and keys[-1] == 0 and len(keys) > 1 and keys[-2] == "__call__":
                flat["/".join(str(k) for k in keys[:-2])] = np.asarray(value)
        return flat


def load_run(workdir: Any, step: Optional[int] = None, *, config: Any = None) -> LoadedRun:
    """The run's model (plain Flax, float32) with the variables of ``workdir``'s newest (or ``step``'s)
    checkpoint, its test split and preprocessing; ``config`` defaults to the run's ``config.json``."""
    config = read_config(workdir) if config is None else config
    import cnn.data
    import cnn.models
    from cnn.data.chain import preprocessing

    data = config.data
    options = dict(data.get("options", {}) or {})
    common = dict(data_dir=data.get("data_dir") or None, prepared_dir=data.get("prepared_dir") or None, **options)
    train_source = cnn.data.source(data.name, data.get("train_split", "train"), **common)
    test_source = cnn.data.source(data.name, data.get("test_split", "test"), **common)
    model = cnn.models.from_config(config.model, num_classes=test_source.num_classes, dtype=jnp.float32)
    step, variables = restore_variables(workdir, step)
    normalize = data.get("normalize", "dataset") == "dataset"
    mean, std = (train_source.mean, train_source.std) if normalize else (None, None)
    transform = preprocessing("", num_classes=test_source.num_classes, mean=mean, std=std)

    def preprocess(images: np.ndarray) -> np.ndarray:
        labels = jnp.zeros(images.shape[:1], jnp.int32)
        return np.asarray(transform(None, jnp.asarray(images), labels)[0])

    names = list(getattr(test_source, "class_names", None) or [str(i) for i in range(test_source.num_classes)])
    normalize_pixels = lambda pixels: transform(None, pixels, jnp.zeros(pixels.shape[:1], jnp.int32))[0]
    return LoadedRun(model, variables, step, test_source, preprocess, names, normalize_pixels)


def confusion_matrix(run: LoadedRun, batch_size: int = 500, limit: Optional[int] = None) -> np.ndarray:
    """``counts[true, predicted]`` over the test split (int64 [classes, classes])."""
    classes = len(run.class_names)
    counts = np.zeros((classes, classes), np.int64)
    for images, labels in run.batches(batch_size, limit):
        predicted = run.logits(images).argmax(-1)
        np.add.at(counts, (labels, predicted), 1)
    return counts


def first_conv_kernel(params: dict) -> Tuple[str, np.ndarray]:
    """``(path, kernel [kh, kw, in, out])`` of the first 2D conv the model applies (parameters keep call order)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [str(getattr(k, "key", k)) for k in path]
        if keys[-1] == "kernel" and np.ndim(leaf) == 4:
            return "/".join(keys[:-1]), np.asarray(leaf)
    raise ValueError("the model has no 2D convolution kernel ([kh, kw, in, out]) among its parameters")


def feature_maps(run: LoadedRun, images: np.ndarray, layer: str = "") -> Tuple[str, np.ndarray]:
    """``(layer, activations [N, H, W, C])`` of ``layer`` (a module path such as ``conv2`` or
    ``stage1_block1``); by default the first top-level module with a spatial output."""
    outputs = run.intermediates(images)
    spatial = {path: value for path, value in outputs.items() if np.ndim(value) == 4}
    if layer:
        if layer not in spatial:
            raise ValueError(f"feature maps: no layer {layer!r} with a [N, H, W, C] output; layers: {', '.join(spatial)}")
        return layer, spatial[layer]
    top = [path for path in spatial if "/" not in path]
    if not (top or spatial):
        raise ValueError("feature maps: the model has no layer with a [N, H, W, C] output")
    chosen = (top or list(spatial))[0]
    return chosen, spatial[chosen]
