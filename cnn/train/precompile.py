"""The training loop's programs compiled from their shapes on a background thread, during the run's start-up
(``cnn.train.loop``): XLA compiles while the data are read and the state is made."""

from __future__ import annotations

import logging
import threading
from typing import Optional

import jax

from cnn.train import feed
from cnn.train.build import Experiment

log = logging.getLogger(__name__)


class Precompile(threading.Thread):
    """Lowers and compiles the loop's programs from their shapes on a background thread: the train call of
    ``training.steps_per_call`` steps (when some interval leaves room for one), the single step (remainders
    before a stop), and the evaluation step.
    XLA compiles outside the GIL, so this overlaps the reading of the data and the state's initialisation;
    the loop's first calls then find the executables in JAX's cache. ``join()`` before the first call (two
    compilations of one program at once would both run). Modes ``single`` and ``sharded`` in one process;
    elsewhere (pmap, several processes) the programs compile at their first call as before. A failure here
    is left for that first call to raise.
    """

    def __init__(self, experiment: Experiment, compiled_train, compiled_eval):
        super().__init__(name="cnn-precompile", daemon=False)  # never killed mid-compilation at exit
        self.programs = abstract_calls(experiment, compiled_train, compiled_eval)
        if self.programs:
            self.start()

    def run(self) -> None:
        try:
            for function, arguments in self.programs:
                function.lower(*arguments).compile()
        except Exception as error:  # noqa: BLE001 - the loop's own call raises it again, where it belongs
            log.debug("background compilation failed (the loop compiles at its first call): %r", error)

    def join(self, timeout: Optional[float] = None) -> None:
        if self.is_alive():  # never started where nothing is precompiled (Thread.join would raise)
            super().join(timeout)


def abstract_calls(experiment: Experiment, compiled_train, compiled_eval) -> list:
    """``(jitted function, abstract arguments)`` of each program the loop will call, or [] where not supported."""
    parallel, training = experiment.parallel, experiment.config.training
    if parallel.mode == "pmap" or jax.process_count() > 1:
        return []
    if parallel.mode == "single":
        stacked = batched = everywhere = jax.sharding.SingleDeviceSharding(parallel.local_devices[0])
    else:
        stacked, batched, everywhere = parallel.stacked_sharding, parallel.data_sharding, parallel.replicated

    def abstract(layout: dict, sharding) -> dict:
        return {key: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for key, (shape, dtype) in layout.items()}

    state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=everywhere, weak_type=s.weak_type),
                         experiment.state_shapes)
    rng = jax.ShapeDtypeStruct(experiment.state_shapes.rng.shape, experiment.state_shapes.rng.dtype)
    k = training.steps_per_call
    # A call of k steps happens only where k steps fit between two stops: never if an interval is shorter.
    shortest = min(training.log_every_steps, training.eval_every_steps or experiment.steps_per_epoch,
                   training.checkpoint_every_steps or experiment.steps_per_epoch, experiment.total_steps)
    sizes = ([k] if k <= shortest else []) + ([1] if k > 1 else [])
    train_data = (abstract(feed.split_layout(experiment.train_source), everywhere),) if experiment.on_device else ()
    calls = [(compiled_train, (state, abstract(feed.call_layout(experiment, size), stacked), rng, *train_data))
             for size in sizes]
    test_data = (abstract(feed.split_layout(experiment.test_source), everywhere),) if experiment.on_device else ()
    calls.append((compiled_eval, (state, abstract(feed.evaluation_layout(experiment), batched), *test_data)))
    return calls
