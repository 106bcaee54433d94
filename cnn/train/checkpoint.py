"""orbax checkpoints: the train state, the data iterator's position and the run's identity.

Every save is atomic (orbax writes a temporary folder and renames it) and asynchronous; the
manager keeps the last ``keep`` steps and, when ``best_metric`` is set, the best one as well.
A checkpoint that cannot be read is skipped with a warning for the previous good one. A write that
runs out of disk space removes its temporary folder, keeps the previous checkpoints, and says so in
one line (``RunError``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import pathlib
import shutil
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from cnn.train.workdir import RunError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Restored:
    step: int
    state: Any
    data_state: Optional[dict]
    meta: dict


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` with the three items a run needs.

    Args:
      directory: e.g. ``workdir / "checkpoints"`` (absolute or relative).
      keep: how many of the latest checkpoints stay.
      best_metric: key of the metrics passed to ``save`` that ranks checkpoints (e.g.
        ``"test_top1"``); the best one stays besides the latest ``keep``.
      best_mode: ``"max"`` or ``"min"``.
      asynchronous: write in a background thread while training goes on.
    """

    def __init__(
        self,
        directory: Any,
        *,
        keep: int = 3,
        best_metric: Optional[str] = None,
        best_mode: str = "max",
        asynchronous: bool = True,
    ):
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode={best_mode!r}; expected 'max' or 'min'")
        if keep < 1:
            raise ValueError(f"keep={keep}; keep at least the latest checkpoint")
        self.directory = pathlib.Path(directory).absolute()
        policies = [checkpoint_managers.LatestN(n=keep)]
        if best_metric:
            policies.append(
                checkpoint_managers.BestN(
                    get_metric_fn=lambda metrics: metrics[best_metric],
                    reverse=best_mode == "max",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
            enable_async_checkpointing=asynchronous,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

    def save(self, step: int, state: Any, *, data_state: Optional[dict], meta: dict, metrics: Optional[dict] = None) -> None:
        """Starts writing ``step`` (returns before the write ends when asynchronous)."""
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state or {}),
            meta=ocp.args.JsonSave(meta),
        )
        with self._disk_full_is_one_line():
            self.wait()  # the previous write first: its bytes count against the free space below
            self._check_free_space(step, state)
            self.manager.save(int(step), args=args, metrics=metrics, force=True)

    def _check_free_space(self, step: int, state: Any) -> None:
        """Refuses a write that cannot fit before any byte of it is written (the same one line as ENOSPC)."""
        needed = sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(state))  # orbax compresses: at most
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            raise OSError(errno.ENOSPC, f"No space left on device: the checkpoint of step {step} needs about "
                                        f"{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free")

    def steps(self) -> list:
        return sorted(self.manager.all_steps())

    def latest_meta(self) -> Optional[dict]:
        """The run identity stored with the newest checkpoint (None when there is none)."""
        for step in reversed(self.steps()):
            try:
                return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped
                log.warning("checkpoint at step %d has unreadable metadata (%s); trying an earlier one", step, error)
        return None

    def restore(self, abstract_state: Any) -> Optional[Restored]:
        """The newest readable checkpoint, restored into ``abstract_state``'s shapes and shardings."""
        for step in reversed(self.steps()):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract_state),
                        data=ocp.args.JsonRestore(),
                        meta=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as error:  # noqa: BLE001
                log.warning("skipping checkpoint at step %d: cannot be restored (%s)", step, error)
                continue
            data_state = dict(restored["data"]) if restored["data"] else None
            return Restored(step, restored["state"], data_state, dict(restored["meta"]))
        return None

    def wait(self) -> None:
        """Blocks until every asynchronous write has been committed."""
        with self._disk_full_is_one_line():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()

    @contextlib.contextmanager
    def _disk_full_is_one_line(self):
        """A write that runs out of space: its temporary folder removed, one line said (earlier steps kept)."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - orbax wraps the OSError in its own exceptions
            if not _out_of_space(error):
                raise
            for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
            raise RunError(f"no space left on device writing {self.directory}; the checkpoints of earlier steps are "
                           f"kept: free some space and run the same command to resume") from None


def _out_of_space(error: BaseException) -> bool:
    """Whether ``error`` (or one it was raised from) is ENOSPC, however orbax or TensorStore words it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def checkpointer_for(directory: pathlib.Path, training: Any) -> Checkpointer:
    """The checkpointer of a run whose ``config.training`` is ``training``."""
    return Checkpointer(directory, keep=training.keep_checkpoints, best_metric=training.best_metric or None,
                        best_mode=training.best_mode, asynchronous=training.async_checkpoints)


def unreadable_checkpoints(checkpointer: Checkpointer) -> RunError:
    steps = ", ".join(map(str, checkpointer.steps()))
    return RunError(
        f"no checkpoint in {checkpointer.directory} can be restored (step {steps}: corrupt or partial, see the warnings "
        f"above) and there is no earlier one; nothing was changed. Restore them from a copy, or use --force to set "
        f"them aside and start over"
    )
