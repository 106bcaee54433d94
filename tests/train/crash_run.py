"""Runs a smoke config and SIGKILLs itself at a chosen point (for test_crash_safety.py).

python tests/train/crash_run.py WORKDIR POINT STEPS    with POINT one of
  none        no kill
  in_step     right after dispatching the 6th train step (the step is running)
  checkpoint  inside orbax's commit of the checkpoint at step 6 (its files written, not yet committed)
  epoch       after the last step of the first epoch, before the first batch of the second is read
"""

import importlib
import os
import signal
import sys

KILL_AT_STEP = 6


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def main(workdir: str, point: str, steps: int) -> None:
    from cnn.train import loop, parallel

    config = importlib.import_module("experiments.configs.cifar10_resnet20").get_config("smoke")
    config.training.steps = steps
    config.training.checkpoint_every_steps = 3
    config.training.eval_every_steps = 8
    config.training.async_checkpoints = True
    steps_per_epoch = config.data.options.num_train // config.training.batch_size

    if point == "in_step":
        compile_train_step = parallel.Parallel.compile_train_step

        def compile_and_count(self, step):
            compiled, calls = compile_train_step(self, step), []

            def run(*args):
                out = compiled(*args)
                calls.append(1)
                if len(calls) == KILL_AT_STEP:
                    die()  # the step was dispatched and is computing
                return out

            return run

        parallel.Parallel.compile_train_step = compile_and_count
    elif point == "checkpoint":
        from orbax.checkpoint._src.path import atomicity

        finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize_or_die(self, *args, **kwargs):
            if str(self.get_final()).rstrip("/").endswith(f"/{KILL_AT_STEP}"):
                die()
            return await finalize(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die
    elif point == "epoch":
        import cnn.data

        make_iterator = cnn.data.train_iterator

        class Watched:
            def __init__(self, inner):
                self.inner, self.reads = inner, 0

            def __next__(self):
                if self.reads == steps_per_epoch:
                    die()
                self.reads += 1
                return next(self.inner)

            def get_state(self):
                return self.inner.get_state()

            def set_state(self, state):
                return self.inner.set_state(state)

        cnn.data.train_iterator = lambda *a, **k: Watched(make_iterator(*a, **k))
    elif point != "none":
        raise SystemExit(f"unknown point {point!r}")
    loop.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
