"""``train_and_evaluate(config, workdir)``: a whole run, resumable by running it again.

It reads as the run's phases:

1. **prepare**: check every config value, join a multi-process run, take the workdir (``workdir.py``:
   its lock and its one-experiment rule), build the experiment (``build.py``: data, model, optimizer),
   and return the results of a run that finished earlier;
2. **start**: restore the newest checkpoint (or initialise), put the data iterator where it was,
   compile the steps;
3. **train**: the step loop, with logging, evaluation (the EMA too, when one is kept), checkpoints and
   stop requests (SIGTERM/SIGINT: checkpoint after the current step, exit 75);
4. **finish**: ``results.json``.

The workdir then holds ``config.json``, ``metrics.jsonl``, TensorBoard event files, ``checkpoints/`` and
``results.json``; the config's fields are documented in ``experiments/configs/common.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import threading
import time
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from cnn.train import transfer, validate
from cnn.train.build import Experiment, build, build_model
from cnn.train.checkpoint import Checkpointer, checkpointer_for, unreadable_checkpoints
from cnn.train.feed import make_evaluation, make_feed
from cnn.train.precompile import Precompile
from cnn.train.steps import eval_indexed_step, eval_step, summarise, train_steps
from cnn.train.workdir import RunError, Workdir
from cnn.train.writer import MetricWriter

log = logging.getLogger(__name__)
__all__ = ["Preempted", "RunError", "build_model", "evaluate", "request_stop", "train_and_evaluate"]


class Preempted(BaseException):
    """SIGTERM/SIGINT (or ``request_stop``): stopped cleanly; running the same command resumes.

    In training, the current step finished and a checkpoint was written (``step`` is its step);
    before training (data preparation, compilation) nothing was written (``step`` is None). A
    ``BaseException``, as ``KeyboardInterrupt``, so that no ``except Exception`` on the way swallows it.
    """

    exit_status = 75  # EX_TEMPFAIL: try again

    def __init__(self, step: Optional[int]):
        where = f"at step {step}" if step is not None else "before training started (nothing was written)"
        super().__init__(f"preempted {where}")
        self.step = step


_stop_requested = threading.Event()
_training = threading.Event()  # set while the step loop runs: a signal then waits for the step's end


def request_stop(*_signal_args) -> None:
    """Asks a running ``train_and_evaluate`` to stop: after the current step with a checkpoint while
    training, at once before."""
    _stop_requested.set()
    if _signal_args and not _training.is_set():
        raise Preempted(None)


@contextlib.contextmanager
def _stop_on_signals():
    """SIGTERM and SIGINT stop the run (main thread only); the old handlers come back after."""
    _stop_requested.clear()
    _training.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------------------- prepare


def train_and_evaluate(config: Any, workdir: Any) -> dict:
    """Trains ``config`` in ``workdir`` (resuming what is there) and returns the results dict."""
    validate.check(config)
    if config.distributed:
        from cnn.train import distributed

        distributed.initialize(int(config.distributed_timeout_seconds))
    folder = Workdir(workdir, lead=jax.process_index() == 0)
    folder.prepare()
    with _stop_on_signals(), folder.lock():
        experiment = build(config)
        starts_fresh = config.force or not any(p.name.isdigit() for p in folder.checkpoints.glob("*"))
        initial = _load_initial(experiment) if starts_fresh else None  # a bad file fails before anything is written
        folder.claim(config, force=bool(config.force))
        finished = _finished_results(folder, experiment)
        if finished is not None:
            log.info("%s holds the finished run; returning its results", folder.path)
            return finished
        run = _start(experiment, folder, initial)
        try:
            _train(run)
        finally:
            run.close()
        return _finish(run)


def _finished_results(folder: Workdir, experiment: Experiment) -> Optional[dict]:
    """The results of a run that finished at this length; None if it must (and can) train on."""
    results = folder.results()
    if results is None or results.get("steps") == experiment.total_steps:
        return results
    finished_steps, steps = results.get("steps"), experiment.total_steps
    if not isinstance(finished_steps, int) or finished_steps > steps:
        raise RunError(f"workdir {folder.path} holds a run finished at step {finished_steps}, past this run's "
                       f"{steps} steps; use another --workdir, or --force to start over")
    if not any(p.name.isdigit() for p in folder.checkpoints.glob("*")):
        raise RunError(f"workdir {folder.path} holds a run finished at step {finished_steps} whose checkpoints are "
                       f"gone, so it cannot go on to step {steps}; use another --workdir, or --force to start over")
    return None  # longer now: train on from the newest checkpoint


# ----------------------------------------------------------------------------------------- start


@dataclasses.dataclass
class _Run:
    """A started run: its experiment, workdir, state and the things the step loop uses."""

    experiment: Experiment
    workdir: Workdir
    checkpointer: Checkpointer
    writer: MetricWriter
    feed: Any  # cnn.train.feed: GrainFeed or DeviceFeed
    evaluation: Any  # DeviceEvaluation, or None to evaluate through grain
    state: Any
    start_step: int
    compiled_train: Any
    compiled_eval: Any
    progress: Any = None
    precompile: Any = None  # Precompile
    last_test: dict = dataclasses.field(default_factory=dict)
    train_seconds: float = 0.0

    def close(self) -> None:
        if self.precompile is not None:
            self.precompile.join()
        if self.progress is not None:
            self.progress.close()
        self.writer.close()
        self.checkpointer.close()


def _load_initial(experiment: Experiment) -> Optional[transfer.Initial]:
    """The values ``model.init_from`` gives the model (None without one)."""
    if not experiment.config.model.init_from:
        return None
    return transfer.load_initial(experiment.config, experiment.model, experiment.train_source.image_shape,
                                 experiment.head)


def _restore_or_init(experiment: Experiment, checkpointer: Checkpointer, feed, workdir: Workdir,
                     initial: Optional[transfer.Initial]):
    """``(state, step)`` from the newest readable checkpoint, else a fresh state at step 0 (with the values of
    ``model.init_from``, recorded in ``init_from.json``, when it names any)."""
    parallel = experiment.parallel
    if checkpointer.steps():
        restored = checkpointer.restore(parallel.abstract_state(experiment.state_shapes))
        if restored is None:
            raise unreadable_checkpoints(checkpointer)
        if restored.step > experiment.total_steps:
            raise RunError(f"{checkpointer.directory} holds a run already at step {restored.step}, past this run's "
                           f"{experiment.total_steps} steps; use another --workdir, or --force to start over")
        feed.set_state(restored.data_state or {"next_index": restored.step})
        log.info("resumed from step %d", restored.step)
        return parallel.place(restored.state), restored.step
    if not experiment.config.model.init_from:
        return parallel.init(experiment.init, jax.random.PRNGKey(experiment.seed)), 0
    initial = initial or _load_initial(experiment)
    log.warning("%s", initial.summary)
    workdir.write_init_record(initial.record)
    fresh = jax.device_get(jax.jit(experiment.init)(jax.random.PRNGKey(experiment.seed)))
    return parallel.place(transfer.start_state(fresh, initial)), 0


def _start(experiment: Experiment, workdir: Workdir, initial: Optional[transfer.Initial] = None) -> _Run:
    config, parallel = experiment.config, experiment.parallel
    options = experiment.options
    compiled_train = parallel.compile_train_steps(
        functools.partial(train_steps, options=options, unroll=experiment.unroll_calls), with_data=experiment.on_device)
    if experiment.on_device:
        compiled_eval = parallel.compile_indexed_eval_step(functools.partial(eval_indexed_step, options=options))
    else:
        compiled_eval = parallel.compile_eval_step(functools.partial(eval_step, options=options))
    # XLA compiles the loop's programs in the background while the data are read and the state is made.
    precompile = Precompile(experiment, compiled_train, compiled_eval)
    checkpointer = checkpointer_for(workdir.checkpoints, config.training)
    try:
        feed, evaluation = make_feed(experiment), make_evaluation(experiment)
        state, start_step = _restore_or_init(experiment, checkpointer, feed, workdir, initial)
        writer = MetricWriter(workdir.path, resume_step=start_step)
    except BaseException:
        precompile.join()  # a process must not exit while XLA compiles on another thread
        checkpointer.close()
        raise
    progress = None
    if jax.process_index() == 0 and config.training.progress_bar:
        from tqdm import tqdm

        progress = tqdm(total=experiment.total_steps, initial=start_step, unit="step", dynamic_ncols=True, mininterval=1.0)
    return _Run(experiment, workdir, checkpointer, writer, feed, evaluation, state, start_step, compiled_train,
                compiled_eval, progress, precompile)


# ----------------------------------------------------------------------------------------- train


@dataclasses.dataclass
class _Window:
    """Per-step metrics still on the device, summed when the host needs them."""

    first_step: int
    pending: list = dataclasses.field(default_factory=list)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def flush(self, run: _Run) -> Optional[dict]:
        """Mean training metrics since the last flush (None if there were no steps); raises on a non-finite loss."""
        if not self.pending:
            return None
        fetched = [run.experiment.parallel.fetch(m) for m in self.pending]  # each call's metrics, [k] per name
        steps = {k: np.concatenate([np.atleast_1d(m[k]) for m in fetched]) for k in fetched[0]}
        bad = np.flatnonzero(~np.isfinite(steps["loss_sum"]) & (steps["skipped"] == 0))
        if bad.size:
            raise RunError(
                f"non-finite loss at step {self.first_step + int(bad[0]) + 1} (the loss or its gradients overflowed); "
                f"stopping without saving this state (the last checkpoint is kept). Lower optimizer.learning_rate, "
                f"set optimizer.clip_norm, or train in float32"
            )
        totals = {k: float(v.sum()) for k, v in steps.items()}
        summary = summarise(totals)
        summary["images_per_second"] = totals["examples"] / max(time.perf_counter() - self.started, 1e-9)
        self.first_step += len(steps["loss_sum"])
        self.pending, self.started = [], time.perf_counter()
        return summary


def _log_window(run: _Run, window: _Window, done: int) -> None:
    summary = window.flush(run)
    if not summary:
        return
    experiment = run.experiment
    summary["learning_rate"] = float(experiment.learning_rate(done - 1))
    summary["epoch"] = done / experiment.steps_per_epoch
    run.writer.write(done, {k if k in ("epoch", "learning_rate") else f"train_{k}": v for k, v in summary.items()})
    if run.progress is not None:
        run.progress.set_postfix(loss=f"{summary['loss']:.4f}", top1=f"{summary['top1']:.4f}",
                                 img_s=f"{summary['images_per_second']:.0f}")


def evaluate(run: _Run, state: Any) -> dict:
    """Loss, top-1 and top-5 (and their ``_ema`` twins) over every test example exactly once."""
    from cnn.data import eval_iterator

    parallel = run.experiment.parallel
    totals = None
    if run.evaluation is not None:  # the test split on the device: only indices travel
        for batch in run.evaluation.batches:
            metrics = run.compiled_eval(state, batch, run.evaluation.data)
            totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
        return summarise(parallel.fetch(totals))
    for batch in eval_iterator(run.experiment.test_source, global_batch=run.experiment.eval_batch):
        metrics = run.compiled_eval(state, parallel.put_batch(batch))
        totals = metrics if totals is None else jax.tree.map(jnp.add, totals, metrics)
    return summarise(parallel.fetch(totals))


def _evaluate_and_log(run: _Run, done: int) -> dict:
    parallel = run.experiment.parallel
    state = parallel.sync_batch_stats(run.state) if parallel.per_device_batch_norm else run.state
    test = {f"test_{k}": v for k, v in evaluate(run, state).items()}
    run.writer.write(done, test)
    if run.progress is not None:
        ema = f", EMA top-1 {test['test_top1_ema']:.4f}" if "test_top1_ema" in test else ""
        run.progress.write(f"step {done}: test loss {test['test_loss']:.4f}, top-1 {test['test_top1']:.4f}{ema}")
    return test


def _next_stop(step: int, total: int, *intervals: int) -> int:
    """The first step after ``step`` at which the loop must act (log, evaluate, checkpoint, end)."""
    return min([total] + [(step // every + 1) * every for every in intervals])


def _train(run: _Run) -> None:
    """The step loop from ``run.start_step`` to the last step, ``training.steps_per_call`` steps per call;
    checkpoints, evaluates, logs, and stops on request."""
    experiment = run.experiment
    config, parallel, total = experiment.config, experiment.parallel, experiment.total_steps
    training = config.training
    eval_every = training.eval_every_steps or experiment.steps_per_epoch
    checkpoint_every = training.checkpoint_every_steps or experiment.steps_per_epoch
    rng = parallel.fetch(run.state.rng)  # the run's key: every step folds its number into it
    data = (run.feed.data,) if run.feed.on_device else ()
    window = _Window(run.start_step)
    started = time.perf_counter()
    if run.precompile is not None:  # its unfinished compilation counts in the training time
        run.precompile.join()
    _training.set()
    try:
        if _stop_requested.is_set():  # asked while the run started: nothing new to save
            raise Preempted(run.start_step)
        step = run.start_step
        while step < total:
            calls = min(training.steps_per_call,
                        _next_stop(step, total, training.log_every_steps, eval_every, checkpoint_every) - step)
            if calls < training.steps_per_call:
                calls = 1  # short of a full call before a stop: single steps, so only two programs ever compile
            batches = parallel.put_batches(run.feed.next(calls))
            run.state, metrics = run.compiled_train(run.state, batches, rng, *data)
            window.pending.append(metrics)
            done = step + calls
            last = done == total
            evaluating = done % eval_every == 0 or last
            saving = done % checkpoint_every == 0 or last
            if done % training.log_every_steps == 0 or evaluating or saving:
                _log_window(run, window, done)  # raises on a non-finite loss, so no such state is ever saved
            if evaluating:
                run.last_test = _evaluate_and_log(run, done)
            stopping = _stop_requested.is_set() and not last
            if saving or stopping:
                _checkpoint(run, done, window, metrics=run.last_test if evaluating else None)
            if run.progress is not None:
                run.progress.update(calls)
            if stopping:
                run.checkpointer.wait()
                raise Preempted(done)
            step = done
        run.checkpointer.wait()
    finally:
        _training.clear()
    run.train_seconds = time.perf_counter() - started


def _checkpoint(run: _Run, done: int, window: _Window, *, metrics: Optional[dict]) -> None:
    _log_window(run, window, done)
    run.checkpointer.save(done, run.experiment.parallel.unreplicate(run.state),
                          data_state=run.feed.get_state(), meta=run.experiment.identity, metrics=metrics)


# ----------------------------------------------------------------------------------------- finish


def _finish(run: _Run) -> dict:
    experiment = run.experiment
    config, parallel = experiment.config, experiment.parallel
    test = run.last_test
    if not test:  # nothing ran in this invocation (finished earlier, results missing): evaluate now
        test = {f"test_{k}": v for k, v in evaluate(run, run.state).items()}
    results = {
        "model": config.model.name,
        "dataset": config.data.name,
        "parallel": parallel.mode,
        "devices": parallel.num_devices,
        "processes": jax.process_count(),
        "params": experiment.params,
        "steps": experiment.total_steps,
        "epochs": experiment.total_steps / experiment.steps_per_epoch,
        "global_batch": experiment.update_batch,
        "train_seconds": run.train_seconds,
        "resumed_from_step": run.start_step,
        "test_accuracy": test["test_top1"],
        "test_top5": test["test_top5"],
        "test_loss": test["test_loss"],
        "test_examples": test["test_examples"],
        "dtype": config.training.dtype,
    }
    if "test_top1_ema" in test:
        results.update(test_accuracy_ema=test["test_top1_ema"], test_top5_ema=test["test_top5_ema"],
                       test_loss_ema=test["test_loss_ema"], ema_decay=config.training.ema_decay)
    run.workdir.write_results(results)
    return results
