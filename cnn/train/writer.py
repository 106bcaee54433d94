"""Metrics to ``metrics.jsonl`` (one JSON object per logged step) and TensorBoard event files.

Only process 0 writes. Event files come from tensorboardX, which needs no TensorFlow. On
resume, lines past the restored step (written after the last checkpoint of a killed run) are
dropped so the file tells one consistent history.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Optional

import jax


class MetricWriter:
    def __init__(self, workdir: pathlib.Path, *, resume_step: int = 0, enabled: Optional[bool] = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tensorboard = None
        if not self.enabled:
            return
        self._truncate(resume_step)
        from tensorboardX import SummaryWriter

        self._tensorboard = SummaryWriter(logdir=os.fspath(workdir), flush_secs=30)

    def _truncate(self, resume_step: int) -> None:
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= resume_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: dict) -> None:
        """Appends ``{"step": step, **metrics}``; numbers also go to TensorBoard under their names."""
        if not self.enabled:
            return
        record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._tensorboard.add_scalar(name, value, int(step))

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()


def _plain(value):
    if hasattr(value, "item"):
        value = value.item()
    return value
