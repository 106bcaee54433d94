"""grain input pipelines: per-epoch shuffling, sharding by process, batching, workers, checkpointable state.

The pipeline is a ``grain.MapDataset`` over *steps*: element ``s`` is this process's part of global
batch ``s``. Step ``s`` of epoch ``e`` covers positions ``[s * global_batch, (s + 1) * global_batch)`` of
epoch ``e``'s order (a permutation of the source, grain's ``index_shuffle`` computed for many positions
at once by ``cnn.data.shuffle``, seeded from (seed, e), or the identity for evaluation), and process ``p`` takes the ``p``-th contiguous block
of ``global_batch / process_count`` of them, read in one batched ``__getitems__`` call.

- training drops each epoch's last partial global batch, so every example is seen at most once per
  epoch and exactly ``steps_per_epoch * global_batch`` examples are;
- evaluation keeps the order, visits every example exactly once over all processes, pads the last
  batch with zeros and marks real examples in ``mask``; every process yields the same number of batches.

Iterators are grain ``DatasetIterator``s: ``get_state()`` returns a small JSON-able dict and
``set_state(state)`` continues with exactly the batch that would have come next, workers or not; the
train engine saves it with orbax through ``grain.checkpoint.CheckpointSave``/``CheckpointRestore``.
Batches are numpy: {"image": uint8 [B, H, W, C], "label": int32 [B]} (+ "mask": bool [B] in evaluation).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Optional

import numpy as np

from cnn.data.shuffle import index_shuffle


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Training steps in one epoch (the last partial global batch is dropped)."""
    return num_examples // global_batch


def eval_steps(num_examples: int, global_batch: int) -> int:
    """Evaluation batches that cover every example once (the last one padded)."""
    return -(-num_examples // global_batch)


def _process(process_index: Optional[int], process_count: Optional[int]) -> tuple:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} is outside [0, process_count={process_count})")
    return process_index, process_count


def _per_process_batch(global_batch: int, process_count: int) -> int:
    if global_batch < 1 or global_batch % process_count:
        raise ValueError(
            f"global_batch={global_batch} must be a positive multiple of process_count={process_count} "
            f"(e.g. {max(1, global_batch // process_count) * process_count})"
        )
    return global_batch // process_count


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit shuffle seed per (seed, epoch); hashed so that (seed, epoch + 1) and (seed + 1, epoch) differ."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """Which source indices make up this process's part of each global batch."""

    num_examples: int
    per_process_batch: int
    process_index: int
    process_count: int
    steps_per_epoch: int
    seed: Optional[int]  # None keeps the source order (evaluation)

    def indices(self, step: int) -> np.ndarray:
        """int64 [<= per_process_batch]: source indices of this process's examples at global ``step``."""
        if self.seed is not None:
            return self.steps(step, 1)[0]
        start = ((step % self.steps_per_epoch) * self.process_count + self.process_index) * self.per_process_batch
        return np.arange(start, min(start + self.per_process_batch, self.num_examples))  # the last one may be short

    def steps(self, first: int, count: int) -> np.ndarray:
        """int64 [count, per_process_batch]: ``indices(s)`` for the ``count`` training steps from ``first``."""
        if self.seed is None:
            raise ValueError("steps() is for a training plan (one with a seed)")
        rows = np.arange(first, first + count)
        epochs, in_epoch = np.divmod(rows, self.steps_per_epoch)
        starts = (in_epoch * self.process_count + self.process_index) * self.per_process_batch
        positions = starts[:, None] + np.arange(self.per_process_batch)
        out = np.empty(positions.shape, np.int64)
        for epoch in np.unique(epochs):  # one cipher call per epoch the steps touch
            where = epochs == epoch
            out[where] = index_shuffle(positions[where], max_index=self.num_examples - 1,
                                       seed=_epoch_seed(self.seed, int(epoch)))
        return out


class ReadBatch:
    """grain map: global step -> this process's batch as numpy arrays (picklable for worker processes)."""

    def __init__(self, source: Any, plan: BatchPlan, pad: bool):
        self.source, self.plan, self.pad = source, plan, pad
        self.image_shape = tuple(getattr(source, "image_shape", None) or np.shape(source[0]["image"]))

    def __call__(self, step: int) -> dict:
        indices = self.plan.indices(int(step)).tolist()
        read_many = getattr(self.source, "__getitems__", None)
        examples = read_many(indices) if read_many else [self.source[i] for i in indices]
        size = self.plan.per_process_batch if self.pad else len(examples)
        images = np.zeros((size, *self.image_shape), np.uint8)
        labels = np.zeros((size,), np.int32)
        for row, example in enumerate(examples):
            images[row] = example["image"]
            labels[row] = example["label"]
        batch = {"image": images, "label": labels}
        if self.pad:
            batch["mask"] = np.arange(size) < len(examples)
        return batch


def _to_iter_dataset(steps, read: ReadBatch, worker_count: int, prefetch: int, read_threads: int):
    import grain

    dataset = grain.MapDataset.range(steps).map(read)
    dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))
    if worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside absl.app use their defaults
            flags.FLAGS.mark_as_parsed()
        options = grain.MultiprocessingOptions(num_workers=worker_count, per_worker_buffer_size=prefetch)
        dataset = dataset.mp_prefetch(options)
    return dataset


def train_plan(
    source: Any,
    *,
    global_batch: int,
    seed: int,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
) -> BatchPlan:
    """Which examples this process reads at every training step: ``plan.indices(step)``. The grain pipeline
    and the on-device feed of the training loop read the same examples at the same step."""
    process_index, process_count = _process(process_index, process_count)
    per_process = _per_process_batch(global_batch, process_count)
    steps = steps_per_epoch(len(source), global_batch)
    if steps == 0:
        raise ValueError(
            f"global_batch={global_batch} is larger than the {len(source)} examples of {source!r}; "
            f"use a batch of at most {len(source)}"
        )
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}; expected a non-negative integer")
    return BatchPlan(len(source), per_process, process_index, process_count, steps, int(seed))


def train_dataset(
    source: Any,
    *,
    global_batch: int,
    seed: int,
    num_epochs: Optional[int] = None,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    worker_count: int = 0,
    prefetch: int = 2,
    read_threads: int = 1,
):
    """A ``grain.IterDataset`` of training batches for this process; ``iter()`` it to read.

    Args:
      source: random access with ``len``, ``[i]`` and ideally ``__getitems__`` (``cnn.data.source(...)``).
      global_batch: examples per step over all processes; each process yields ``global_batch / process_count``.
      seed: shuffle seed; epoch ``e`` uses a permutation drawn from (seed, e).
      num_epochs: None repeats forever.
      process_index, process_count: default ``jax.process_index()`` and ``jax.process_count()``.
      worker_count: grain worker processes (0 reads in this process).
      prefetch: batches buffered (per worker when there are workers).
      read_threads: threads reading batches in each process.
    """
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs}; expected None (forever) or a positive number")
    plan = train_plan(source, global_batch=global_batch, seed=seed, process_index=process_index,
                      process_count=process_count)
    total = sys.maxsize if num_epochs is None else plan.steps_per_epoch * num_epochs
    return _to_iter_dataset(total, ReadBatch(source, plan, pad=False), worker_count, prefetch, read_threads)


def eval_dataset(
    source: Any,
    *,
    global_batch: int,
    process_index: Optional[int] = None,
    process_count: Optional[int] = None,
    worker_count: int = 0,
    prefetch: int = 2,
    read_threads: int = 1,
):
    """A ``grain.IterDataset`` of one in-order pass with padded last batch and ``mask``; arguments as train."""
    process_index, process_count = _process(process_index, process_count)
    per_process = _per_process_batch(global_batch, process_count)
    steps = eval_steps(len(source), global_batch)
    plan = BatchPlan(len(source), per_process, process_index, process_count, max(steps, 1), None)
    return _to_iter_dataset(steps, ReadBatch(source, plan, pad=True), worker_count, prefetch, read_threads)


def train_iterator(source: Any, **kwargs):
    """``iter(train_dataset(source, **kwargs))``: a grain DatasetIterator with get_state/set_state."""
    return iter(train_dataset(source, **kwargs))


def eval_iterator(source: Any, **kwargs):
    """``iter(eval_dataset(source, **kwargs))``: one pass over every example, padded, with a mask."""
    return iter(eval_dataset(source, **kwargs))
