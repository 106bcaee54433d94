"""Runs a smoke config and SIGKILLs itself at a chosen point (for test_crash_safety.py).

python tests/train/crash_run.py WORKDIR POINT STEPS [ON_DEVICE]    with POINT one of
  none        no kill
  in_step     right after dispatching the call that holds the 6th train step (it is running)
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


def main(workdir: str, point: str, steps: int, on_device: str = "auto") -> None:
    from cnn.train import loop, parallel

    config = importlib.import_module("experiments.configs.cifar10_resnet20").get_config("smoke")
    config.training.steps = steps
    config.training.checkpoint_every_steps = 3
    config.training.eval_every_steps = 8
    config.training.async_checkpoints = True
    config.data.on_device = on_device
    steps_per_epoch = config.data.options.num_train // config.training.batch_size

    if point == "in_step":
        compile_train_steps = parallel.Parallel.compile_train_steps

        def compile_and_count(self, steps, **kwargs):
            compiled, done = compile_train_steps(self, steps, **kwargs), []

            def run(state, batches, *args):
                out = compiled(state, batches, *args)
                done.append(len(next(iter(batches.values()))))  # steps in this call
                if sum(done) >= KILL_AT_STEP:
                    die()  # the call was dispatched and is computing
                return out

            return run

        parallel.Parallel.compile_train_steps = compile_and_count
    elif point == "checkpoint":
        from orbax.checkpoint._src.path import atomicity

        finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize_or_die(self, *args, **kwargs):
            if str(self.get_final()).rstrip("/").endswith(f"/{KILL_AT_STEP}"):
                die()
            return await finalize(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize_or_die
    elif point == "epoch":
        from cnn.train import feed

        for kind in (feed.GrainFeed, feed.DeviceFeed):  # whichever the run uses (data.on_device)
            def watched(self, k, _next=kind.next):
                self.delivered = getattr(self, "delivered", 0)
                if self.delivered == steps_per_epoch:
                    die()
                self.delivered += k
                return _next(self, k)

            kind.next = watched
    elif point != "none":
        raise SystemExit(f"unknown point {point!r}")
    loop.train_and_evaluate(config, workdir)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:])
