"""Metrics to ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard event files.

Only process 0 writes. Event files come from tensorboardX, which needs no TensorFlow.
``metrics.jsonl`` is the record every scalar goes to first; on resume, the records past the restored
step (written after the last checkpoint of a killed run) are dropped, and so is a torn last line (what a
kill in the middle of an append leaves), with a warning. The TensorBoard files are then rewritten from
the records kept, so that TensorBoard too shows every step once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
from typing import List, Optional

import jax

from cnn.train.workdir import RunError

log = logging.getLogger(__name__)


def read_records(path: pathlib.Path) -> List[dict]:
    """The records of ``metrics.jsonl``; a torn last line is dropped with a warning, any other bad line is an error."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except ValueError as error:
            if number == len(lines):
                log.warning("%s: dropped a torn last line (%d characters) left by an interrupted write", path, len(line))
                break
            raise RunError(f"{path} line {number} is unreadable ({error}); repair or delete the line, or use --force "
                           f"to start over") from None
        records.append(record)
    return records


def _scalars(record: dict):
    for name, value in record.items():
        if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            yield name, value


class MetricWriter:
    def __init__(self, workdir: pathlib.Path, *, resume_step: int = 0, enabled: Optional[bool] = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.workdir = pathlib.Path(workdir)
        self.path = self.workdir / "metrics.jsonl"
        self._tensorboard = None
        if not self.enabled:
            return
        kept = [r for r in read_records(self.path) if r.get("step", 0) <= resume_step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        os.replace(tmp, self.path)
        from tensorboardX import SummaryWriter

        for events in self.workdir.glob("events.out.tfevents.*"):  # rewritten below from the records kept
            events.unlink()
        self._tensorboard = SummaryWriter(logdir=os.fspath(self.workdir), flush_secs=30)
        for record in kept:
            for name, value in _scalars(record):
                self._tensorboard.add_scalar(name, value, int(record["step"]))

    def write(self, step: int, metrics: dict) -> None:
        """Appends ``{"step": step, **metrics}``; numbers also go to TensorBoard under their names."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        for name, value in _scalars(record):
            self._tensorboard.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return value
