"""``train_and_evaluate(config, workdir)``: the whole run, resumable by running it again.

Writes ``metrics.jsonl``, TensorBoard event files, ``checkpoints/`` and, at the end,
``results.json`` into ``workdir``. Configuration fields are documented in
``experiments/configs/README.md``; every config file under ``experiments/configs`` sets them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
import signal
import threading
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

import cnn.models
from cnn.data.chain import preprocessing
from cnn.layers import cpu_kernels
from cnn.train import optim
from cnn.train.parallel import Parallel
from cnn.train.state import create_train_state
from cnn.train.steps import StepOptions, eval_step, summarise, train_step
from cnn.train.workdir import RunError, checkpointer_for, set_aside, unreadable_checkpoints, write_json_atomically
from cnn.train.writer import MetricWriter

log = logging.getLogger(__name__)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class Preempted(RuntimeError):
    """SIGTERM/SIGINT (or ``request_stop``): the current step finished and a checkpoint was written."""

    exit_status = 75  # EX_TEMPFAIL: try again (running the same command resumes)

    def __init__(self, step: int):
        super().__init__(f"preempted at step {step}")
        self.step = step


_stop_requested = threading.Event()


def request_stop(*_signal_args) -> None:
    """Asks a running ``train_and_evaluate`` to checkpoint after the current step and raise ``Preempted``."""
    _stop_requested.set()


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM and SIGINT request a clean stop while training (main thread only); old handlers come back after."""
    _stop_requested.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dtype(name: str):
    if name not in DTYPES:
        raise ValueError(f"training.dtype={name!r}; expected one of {', '.join(DTYPES)}")
    return DTYPES[name]


def build_model(config: Any, num_classes: int, parallel: Parallel):
    """The model of ``config.model`` with the compute dtype, the pmap axis of its BatchNorm and, when
    ``config.model.cpu_kernels`` says so, the CPU kernels: the one place a run's model is made."""
    model = cnn.models.from_config(config.model, num_classes=num_classes, dtype=_dtype(config.training.dtype))
    if parallel.model_axis_name and "axis_name" in {f.name for f in dataclasses.fields(model)}:
        model = model.clone(axis_name=parallel.model_axis_name)
    if cpu_kernels.enabled(config.model.cpu_kernels):
        model = cpu_kernels.use_cpu_kernels(model)
    return model


def _sources(config: Any):
    from cnn.data import source

    data = config.data
    options = dict(data.get("options", {}) or {})
    common = dict(data_dir=data.get("data_dir") or None, prepared_dir=data.get("prepared_dir") or None, **options)
    splits = (data.get("train_split", "train"), data.get("test_split", "test"))
    if jax.process_count() == 1:
        return tuple(source(data.name, split, **common) for split in splits)
    # Processes take turns: the first prepares the files (on a shared or its own disk), the others
    # then find them ready, or prepare their own copy, never racing on one folder.
    from jax.experimental import multihost_utils

    opened = None
    for turn in range(jax.process_count()):
        if turn == jax.process_index():
            opened = tuple(source(data.name, split, **common) for split in splits)
        multihost_utils.sync_global_devices(f"cnn.data.prepare.{turn}")
    return opened


def _run_identity(config: Any, model_params: int, num_classes: int) -> dict:
    return {
        "model": config.model.name,
        "dataset": config.data.name,
        "num_classes": int(num_classes),
        "params": int(model_params),
    }


@dataclasses.dataclass
class _Window:
    """Per-step metrics still on the device, summed when the host needs them."""

    pending: list = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def flush(self, parallel: Parallel, first_step: int) -> Optional[dict]:
        if not self.pending:
            return None
        fetched = [parallel.fetch(m) for m in self.pending]
        for offset, metrics in enumerate(fetched):
            if not math.isfinite(float(metrics["loss_sum"])) and not float(metrics["skipped"]):
                raise RunError(
                    f"non-finite loss at step {first_step + offset + 1}; stopping without saving this state "
                    f"(the last checkpoint is kept). Lower optimizer.learning_rate or set optimizer.clip_norm."
                )
        totals = {k: sum(float(m[k]) for m in fetched) for k in fetched[0]}
        elapsed = time.perf_counter() - self.started
        summary = summarise(totals)
        summary["images_per_second"] = totals["examples"] / max(elapsed, 1e-9)
        self.pending, self.started = [], time.perf_counter()
        return summary


def evaluate(config: Any, parallel: Parallel, state: Any, compiled_eval, test_source, *, use_ema: bool = False) -> dict:
    """Loss, top-1 and top-5 over every test example exactly once (padding masked out)."""
    from cnn.data import eval_iterator

    eval_batch = config.training.get("eval_batch_size") or config.training.batch_size
    parallel.check_batch(eval_batch, "training.eval_batch_size")
    totals = None
    for batch in eval_iterator(test_source, global_batch=eval_batch):
        metrics = compiled_eval(state, parallel.put_batch(batch))
        totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
    return summarise(parallel.fetch(totals))


def train_and_evaluate(config: Any, workdir: Any) -> dict:
    """Trains ``config`` in ``workdir`` (resuming what is there) and returns the results dict."""
    if config.get("distributed", False):
        from cnn.train import distributed

        distributed.initialize(int(config.get("distributed_timeout_seconds", 300)))
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not os.access(workdir, os.W_OK):
        raise RunError(f"workdir {workdir} is not writable; choose another --workdir")
    training = config.training
    parallel = Parallel(config.parallel, per_device_batch_norm=bool(training.per_device_batch_norm),
                        compiler_options=cpu_kernels.compiler_options() if cpu_kernels.enabled(config.model.cpu_kernels) else {})
    global_batch = training.batch_size
    parallel.check_batch(global_batch)
    parallel.check_batch(training.get("eval_batch_size") or global_batch, "training.eval_batch_size")

    train_source, test_source = _sources(config)
    num_classes = train_source.num_classes
    steps_per_epoch = max(len(train_source) // global_batch, 1)
    total_steps = int(training.get("steps") or 0) or int(training.epochs * steps_per_epoch)
    if total_steps < 1:
        raise ValueError(f"training.steps={training.get('steps')!r} and training.epochs={training.epochs!r} make "
                         f"{total_steps} steps; set training.steps > 0, or training.steps=0 and training.epochs > 0")
    model = build_model(config, num_classes, parallel)
    tx, learning_rate = optim.build(config.optimizer, steps_per_epoch=steps_per_epoch, total_steps=total_steps, global_batch=global_batch)

    dtype_name = training.get("dtype", "float32")
    if config.data.get("normalize", "dataset") not in ("dataset", "none"):
        raise ValueError(f"data.normalize={config.data.normalize!r}; expected 'dataset' (per-channel mean/std of the "
                         f"training split) or 'none' (x / 255)")
    mean, std = (train_source.mean, train_source.std) if config.data.get("normalize", "dataset") == "dataset" else (None, None)
    augment = config.data.get("augment", "") or ""
    options = StepOptions(
        preprocess=preprocessing(augment, num_classes=num_classes, mean=mean, std=std),
        eval_preprocess=preprocessing("", num_classes=num_classes, mean=mean, std=std),
        label_smoothing=float(training.get("label_smoothing", 0.0)),
        l2=float(training.get("l2", 0.0)),
        l2_mask=optim.decay_mask,
        ema_decay=training.get("ema_decay"),
        axis_name=parallel.axis_name,
        compute_dtype=_dtype(dtype_name),
    )
    init = functools.partial(
        create_train_state, model, tx, input_shape=train_source.image_shape,
        ema=bool(training.get("ema_decay")), loss_scale=dtype_name == "float16",
    )
    seed = int(training.get("seed", 0))
    state_shapes = jax.eval_shape(init, jax.random.PRNGKey(seed))  # nothing allocated or compiled yet
    param_count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state_shapes.params))
    identity = _run_identity(config, param_count, num_classes)

    checkpointer = checkpointer_for(workdir, training)
    stored_identity = checkpointer.latest_meta()
    if stored_identity is None and checkpointer.steps():  # checkpoints there but none readable: never train over them
        stored_identity = {}  # refused below unless --force, as another experiment's are
    if stored_identity is not None and {k: stored_identity.get(k) for k in identity} != identity:
        checkpointer.close()
        if not config.get("force", False):
            if not stored_identity:
                raise unreadable_checkpoints(checkpointer)
            stored = {k: stored_identity.get(k) for k in identity}
            raise RunError(
                f"workdir {workdir} holds checkpoints of another experiment ({stored}); this run is {identity}. "
                f"Use another --workdir, or --force to start over there"
            )
        set_aside(workdir)
        checkpointer, stored_identity = checkpointer_for(workdir, training), None

    results_path = workdir / "results.json"
    if stored_identity is not None and results_path.exists() and max(checkpointer.steps()) >= total_steps:
        checkpointer.close()  # finished earlier: nothing to compile or run
        return json.loads(results_path.read_text())

    from cnn.data import train_iterator

    train_batches = train_iterator(
        train_source, global_batch=global_batch, seed=seed, worker_count=int(config.data.get("workers", 0)),
        prefetch=int(config.data.get("prefetch", 2)),
    )
    restored = checkpointer.restore(parallel.abstract_state(state_shapes)) if stored_identity is not None else None
    if stored_identity is not None and restored is None:  # identity readable, no state restorable
        checkpointer.close()
        if not config.get("force", False):
            raise unreadable_checkpoints(checkpointer)
        set_aside(workdir)
        checkpointer = checkpointer_for(workdir, training)
    if restored is not None:
        state = parallel.place(restored.state)
        if restored.data_state:
            train_batches.set_state(restored.data_state)
        start_step = restored.step
        log.info("resumed from step %d", start_step)
    else:
        state, start_step = parallel.init(init, jax.random.PRNGKey(seed)), 0

    writer = MetricWriter(workdir, resume_step=start_step)
    compiled_train = parallel.compile_train_step(functools.partial(train_step, options=options))
    compiled_eval = parallel.compile_eval_step(functools.partial(eval_step, options=options))
    log_every = max(int(training.get("log_every_steps", 50)), 1)
    eval_every = int(training.get("eval_every_steps", 0)) or steps_per_epoch
    checkpoint_every = int(training.get("checkpoint_every_steps", 0)) or steps_per_epoch
    base_rng = jax.random.PRNGKey(seed + 1)

    progress = None
    if jax.process_index() == 0 and training.get("progress_bar", True):
        from tqdm import tqdm

        progress = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)
    window = _Window()
    window_start = start_step
    last_test: dict = {}
    run_started = time.perf_counter()

    def log_window(done: int) -> None:
        nonlocal window_start
        summary = window.flush(parallel, window_start)
        window_start = done
        if summary:
            summary["learning_rate"] = float(learning_rate(done - 1))
            summary["epoch"] = done / steps_per_epoch
            writer.write(done, {k if k in ("epoch", "learning_rate") else f"train_{k}": v for k, v in summary.items()})
            if progress is not None:
                progress.set_postfix(loss=f"{summary['loss']:.4f}", top1=f"{summary['top1']:.4f}", img_s=f"{summary['images_per_second']:.0f}")

    try:
        with _stop_on_signals():
            for step in range(start_step, total_steps):
                batch = parallel.put_batch(next(train_batches))
                state, metrics = compiled_train(state, batch, base_rng)
                window.pending.append(metrics)
                done = step + 1
                last = done == total_steps
                evaluating = done % eval_every == 0 or last
                saving = done % checkpoint_every == 0 or last
                if done % log_every == 0 or evaluating or saving:
                    log_window(done)  # raises on a non-finite loss, so no such state is ever saved
                if evaluating:
                    eval_state = parallel.sync_batch_stats(state) if parallel.per_device_batch_norm else state
                    last_test = {f"test_{k}": v for k, v in evaluate(config, parallel, eval_state, compiled_eval, test_source).items()}
                    writer.write(done, last_test)
                    if progress is not None:
                        progress.write(f"step {done}: test loss {last_test['test_loss']:.4f}, top-1 {last_test['test_top1']:.4f}")
                stopping = _stop_requested.is_set() and not last
                if stopping and not saving:
                    log_window(done)
                if saving or stopping:
                    checkpointer.save(
                        done, parallel.unreplicate(state), data_state=train_batches.get_state(), meta=identity,
                        metrics=last_test if evaluating else None,
                    )
                if progress is not None:
                    progress.update(1)
                if stopping:
                    checkpointer.wait()
                    raise Preempted(done)
        train_seconds = time.perf_counter() - run_started
        checkpointer.wait()
    finally:
        if progress is not None:
            progress.close()
        writer.close()
        checkpointer.close()

    if not last_test:  # nothing ran in this invocation (finished earlier, results missing): evaluate now
        compiled_eval = parallel.compile_eval_step(functools.partial(eval_step, options=options))
        last_test = {f"test_{k}": v for k, v in evaluate(config, parallel, state, compiled_eval, test_source).items()}
    results = {
        "model": config.model.name,
        "dataset": config.data.name,
        "parallel": parallel.mode,
        "devices": parallel.num_devices,
        "processes": jax.process_count(),
        "params": param_count,
        "steps": total_steps,
        "epochs": total_steps / steps_per_epoch,
        "global_batch": global_batch,
        "train_seconds": train_seconds,
        "resumed_from_step": start_step,
        "test_accuracy": last_test["test_top1"],
        "test_top5": last_test["test_top5"],
        "test_loss": last_test["test_loss"],
        "test_examples": last_test["test_examples"],
        "dtype": dtype_name,
    }
    if jax.process_index() == 0:
        write_json_atomically(results_path, results)
    return results
