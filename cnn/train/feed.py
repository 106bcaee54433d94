"""Where the training loop's batches come from, ``k`` steps at a time.

- ``GrainFeed``: the grain pipeline (``cnn.data.train_iterator``): any dataset, read and batched on the
  host, ``k`` batches stacked on a leading axis and sent to the device(s) in one transfer.
- ``DeviceFeed``: the whole training split held on the device(s) as uint8 arrays (datasets that fit in
  memory: MNIST is 47 MB, CIFAR-10 150 MB); the loop sends only each step's example indices, and the step
  gathers its batch on the device. No reading, decoding or copying of images per step.

Both read the examples ``cnn.data.train_plan`` assigns to each step (a seeded permutation per epoch), so
they give the same training, and their position is the number of steps taken: a run may resume with the
other feed. ``DeviceEvaluation`` holds the test split on the device the same way.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cnn.train.parallel import Parallel

SETTINGS = ("auto", "on", "off")


def fits_on_device(source: Any, limit_mb: float) -> bool:
    """Whether the split's images (uint8) take at most ``limit_mb`` megabytes."""
    return len(source) * int(np.prod(source.image_shape)) <= limit_mb * 2**20


def use_device_feed(setting: str, source: Any, parallel: Parallel, limit_mb: float) -> bool:
    """``data.on_device``: ``auto`` holds the split on the device when it fits and the mode is jit (single or
    sharded); ``on`` insists (pmap is refused: its replicas would each hold a copy); ``off`` reads with grain."""
    if setting not in SETTINGS:
        raise ValueError(f"data.on_device={setting!r}; expected one of {', '.join(SETTINGS)}")
    if setting == "off":
        return False
    if setting == "on":
        if parallel.mode == "pmap":
            raise ValueError("data.on_device='on' needs parallel='single' or 'sharded' (under pmap every replica "
                             "would hold its own copy); use 'auto' or 'off'")
        return True
    return parallel.mode != "pmap" and fits_on_device(source, limit_mb)


class GrainFeed:
    """Batches read by grain on the host: ``next(k)`` -> ``{"image": [k, b, ...], "label": [k, b]}``."""

    on_device = False
    data = None

    def __init__(self, source: Any, *, global_batch: int, seed: int, workers: int, prefetch: int):
        from cnn.data import train_iterator

        self.iterator = train_iterator(source, global_batch=global_batch, seed=seed, worker_count=workers,
                                       prefetch=prefetch)

    def next(self, k: int) -> dict:
        batches = [next(self.iterator) for _ in range(k)]
        return {key: np.stack([b[key] for b in batches]) for key in batches[0]}

    def get_state(self) -> dict:
        return self.iterator.get_state()

    def set_state(self, state: dict) -> None:
        self.iterator.set_state(state)


class DeviceFeed:
    """The split on the device(s): ``next(k)`` -> ``{"index": int32 [k, b]}``; ``data`` holds the arrays."""

    on_device = True

    def __init__(self, source: Any, *, global_batch: int, seed: int, parallel: Parallel):
        from cnn.data import in_memory, train_plan

        arrays = in_memory(source)
        self.plan = train_plan(source, global_batch=global_batch, seed=seed)
        self.data = parallel.put_dataset({"image": arrays.images, "label": arrays.labels.astype(np.int32)})
        self.step = 0

    def next(self, k: int) -> dict:
        indices = self.plan.steps(self.step, k).astype(np.int32)
        self.step += k
        return {"index": indices}

    def get_state(self) -> dict:
        return {"next_index": self.step}  # the grain iterator's own form: the steps read so far

    def set_state(self, state: dict) -> None:
        self.step = int(state["next_index"])


class DeviceEvaluation:
    """The test split on the device(s): each evaluation batch is a row of example indices (and a mask)."""

    def __init__(self, source: Any, *, eval_batch: int, parallel: Parallel):
        from cnn.data import in_memory

        arrays = in_memory(source)
        self.data = parallel.put_dataset({"image": arrays.images, "label": arrays.labels.astype(np.int32)})
        count = len(source)
        batches = -(-count // eval_batch)
        padded = np.arange(batches * eval_batch)
        # Every example once; the padding repeats example 0 and is masked out.
        indices = np.where(padded < count, padded, 0).reshape(batches, eval_batch).astype(np.int32)
        mask = (padded < count).reshape(batches, eval_batch)
        self.batches = [parallel.put_global_batch({"index": i, "mask": m}) for i, m in zip(indices, mask)]


# What the feeds hand to the compiled steps, as {key: (shape, dtype)} (cnn.train.precompile compiles from it).
def split_layout(source: Any) -> dict:
    """A split held on the device (``DeviceFeed.data``, ``DeviceEvaluation.data``)."""
    return {"image": ((len(source), *source.image_shape), np.uint8), "label": ((len(source),), np.int32)}


def call_layout(experiment: Any, k: int) -> dict:
    """The batches of a call of ``k`` steps from the run's feed (``next(k)``), global rows."""
    rows = (k, experiment.update_batch)
    if experiment.on_device:
        return {"index": (rows, np.int32)}
    return {"image": ((*rows, *experiment.train_source.image_shape), np.uint8), "label": (rows, np.int32)}


def evaluation_layout(experiment: Any) -> dict:
    """One evaluation batch: indices and mask into the device-held test split, or the grain batch itself."""
    rows = (experiment.eval_batch,)
    if experiment.on_device:
        return {"index": (rows, np.int32), "mask": (rows, np.bool_)}
    return {"image": ((*rows, *experiment.test_source.image_shape), np.uint8), "label": (rows, np.int32),
            "mask": (rows, np.bool_)}


def make_feed(experiment: Any) -> Any:
    """The feed ``config.data.on_device`` chooses for this run."""
    config = experiment.config
    if experiment.on_device:
        return DeviceFeed(experiment.train_source, global_batch=experiment.update_batch, seed=experiment.seed,
                          parallel=experiment.parallel)
    return GrainFeed(experiment.train_source, global_batch=experiment.update_batch, seed=experiment.seed,
                     workers=config.data.workers, prefetch=config.data.prefetch)


def make_evaluation(experiment: Any) -> Optional[DeviceEvaluation]:
    if not experiment.on_device:
        return None
    return DeviceEvaluation(experiment.test_source, eval_batch=experiment.eval_batch, parallel=experiment.parallel)
