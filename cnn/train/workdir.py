"""The files of a workdir: its checkpoint manager, setting another run's files aside, atomic JSON."""

from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from typing import Any

from cnn.train.checkpoint import Checkpointer

log = logging.getLogger(__name__)


class RunError(RuntimeError):
    """A run cannot go on (bad workdir, non-finite loss, ...); the message says why and what to do."""


def checkpointer_for(workdir: pathlib.Path, training: Any) -> Checkpointer:
    return Checkpointer(
        workdir / "checkpoints",
        keep=int(training.get("keep_checkpoints", 3)),
        best_metric=training.get("best_metric", "test_top1") or None,
        best_mode=training.get("best_mode", "max"),
        asynchronous=bool(training.get("async_checkpoints", True)),
    )


def unreadable_checkpoints(checkpointer: Checkpointer) -> RunError:
    steps = ", ".join(map(str, checkpointer.steps()))
    return RunError(
        f"no checkpoint in {checkpointer.directory} can be restored (step {steps}: corrupt or partial, see the warnings "
        f"above) and there is no earlier one; nothing was changed. Restore them from a copy, or use --force to set "
        f"them aside and start over"
    )


def set_aside(workdir: pathlib.Path) -> pathlib.Path:
    """--force: moves another experiment's checkpoints and logs to ``replaced-<time>/`` (nothing is deleted)."""
    aside = workdir / time.strftime("replaced-%Y%m%d-%H%M%S")
    aside.mkdir()
    for name in ("checkpoints", "metrics.jsonl", "results.json"):
        if (workdir / name).exists():
            os.replace(workdir / name, aside / name)
    for events in workdir.glob("events.out.tfevents.*"):
        os.replace(events, aside / events.name)
    log.warning("--force: moved the previous experiment's files to %s", aside)
    return aside


def write_json_atomically(path: pathlib.Path, payload: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
