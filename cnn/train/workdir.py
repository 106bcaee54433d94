"""A run's workdir and its rules: one experiment and one run at a time, nothing lost.

A workdir holds ``config.json`` (the experiment it holds, written when a run starts), ``metrics.jsonl``,
TensorBoard event files, ``checkpoints/``, ``results.json`` (when finished), ``plots/`` and, for a run that
started from other weights (``model.init_from``), ``init_from.json`` (what it loaded: a file's size and
sha256, or a run's checkpoint step). Its rules:

- **One run at a time.** A run holds an exclusive lock on ``.lock`` (``fcntl.flock``) from start to end;
  a second run on the same workdir is refused at once, naming the holder (pid, host, start time). The
  kernel releases the lock when its process dies, however it dies, so a killed run never blocks the next.
  In a multi-process run, process 0 holds it for all.
- **One experiment.** ``config.json`` records the config; a run whose experiment differs (any field but the
  ``RUNTIME_FIELDS``, which change how a run is carried out but not what it computes) is refused, whether or
  not checkpoints remain, unless ``--force``, which moves every file of the old experiment to
  ``replaced-<time>/`` (nothing is deleted).
- **Finished means finished.** The same experiment with ``results.json`` returns those results without
  training, checkpoints or not. Its length (``LENGTH_FIELDS``) may grow: the run then goes on from its
  newest checkpoint to the new end (a schedule that depends on the length changes with it).
- **Unreadable files are named.** A corrupt ``config.json``/``results.json`` is an error naming the file and
  what to do; nothing is overwritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import logging
import os
import pathlib
import socket
import time
from typing import Any, Dict, Iterator, Optional

log = logging.getLogger(__name__)

# Fields that change how a run is carried out, not what it computes: a run may resume with other values.
RUNTIME_FIELDS = frozenset({
    "force", "distributed", "distributed_timeout_seconds", "parallel", "model.cpu_kernels",
    "data.data_dir", "data.prepared_dir", "data.workers", "data.prefetch", "data.on_device", "data.device_memory_mb",
    "training.eval_batch_size", "training.log_every_steps", "training.eval_every_steps",
    "training.checkpoint_every_steps", "training.keep_checkpoints", "training.best_metric", "training.best_mode",
    "training.async_checkpoints", "training.progress_bar", "training.steps_per_call",
})
LENGTH_FIELDS = frozenset({"training.steps", "training.epochs"})  # may grow between invocations
RUN_FILES = ("config.json", "checkpoints", "metrics.jsonl", "results.json", "plots", "init_from.json")


class RunError(RuntimeError):
    """A run cannot go on (bad workdir, non-finite loss, ...); the message says why and what to do."""


def write_json_atomically(path: pathlib.Path, payload: dict) -> None:
    """Writes ``path`` through a temporary file and a rename: a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if error.errno == errno.ENOSPC:
            raise RunError(f"no space left on device writing {path}; free some space and run the same command "
                           f"again (the last checkpoint is kept)") from None
        raise


def flatten_config(config: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"optimizer.learning_rate": 0.001, ...}``: every leaf of a (nested) config as JSON values."""
    items = config.items() if hasattr(config, "items") else []
    flat = {}
    for key, value in items:
        path = f"{prefix}{key}"
        if hasattr(value, "items"):
            nested = flatten_config(value, path + ".")
            flat.update(nested if nested else {path: {}})
        else:
            flat[path] = json.loads(json.dumps(value, default=str))  # tuples become lists, as in config.json
    return flat


def experiment_fields(config: Any) -> Dict[str, Any]:
    """The fields that define an experiment: every field but ``RUNTIME_FIELDS`` and ``LENGTH_FIELDS``."""
    return {k: v for k, v in flatten_config(config).items() if k not in RUNTIME_FIELDS | LENGTH_FIELDS}


def _differences(stored: Dict[str, Any], current: Dict[str, Any], limit: int = 4) -> str:
    keys = sorted(k for k in set(stored) | set(current) if stored.get(k, "<absent>") != current.get(k, "<absent>"))
    shown = [f"{k}: {stored.get(k, '<absent>')!r} -> {current.get(k, '<absent>')!r}" for k in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclasses.dataclass
class Workdir:
    """The files of one run's folder. ``lead`` (process 0) is the one process that writes them."""

    path: pathlib.Path
    lead: bool = True

    def __post_init__(self):
        self.path = pathlib.Path(self.path)

    @property
    def checkpoints(self) -> pathlib.Path:
        return self.path / "checkpoints"

    @property
    def config_path(self) -> pathlib.Path:
        return self.path / "config.json"

    @property
    def results_path(self) -> pathlib.Path:
        return self.path / "results.json"

    @property
    def metrics_path(self) -> pathlib.Path:
        return self.path / "metrics.jsonl"

    def prepare(self) -> None:
        """Creates the folder, or says in one line why it cannot be used."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"workdir {self.path} is a file, not a folder; choose another --workdir")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunError(f"workdir {self.path} cannot be created ({error.strerror}: {error.filename}); "
                           f"choose a folder you can write to") from None
        if not os.access(self.path, os.W_OK):
            raise RunError(f"workdir {self.path} is not writable; choose a folder you can write to")

    # --- one run at a time ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds the workdir's lock for the block (process 0 only); refuses at once if another run holds it.

        The lock is ``flock`` on the folder itself, so the kernel drops it with its process however that
        ends; ``.lock`` only tells who holds it, and is removed when the block ends.
        """
        if not self.lead:
            yield
            return
        import fcntl

        holder = self.path / ".lock"
        folder = os.open(self.path, os.O_RDONLY)
        try:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    log.warning("cannot lock %s (%s): this filesystem has no locks, so nothing stops a second run "
                                "on it", self.path, error.strerror)
                else:
                    try:
                        who = holder.read_text().strip()
                    except OSError:
                        who = "a process that has not said who it is yet"
                    raise RunError(f"workdir {self.path} is in use by another run ({who}); wait for it to end or use "
                                   f"another --workdir") from None
            started = datetime.datetime.now().isoformat(timespec="seconds")
            holder.write_text(f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n")
            try:
                yield
            finally:
                holder.unlink(missing_ok=True)
        finally:
            os.close(folder)  # releases the lock

    # --- one experiment ---------------------------------------------------------------------------------
    def _read_json(self, path: pathlib.Path, what: str, remedy: str) -> Optional[dict]:
        if not path.exists():
            return None
        try:
            value = json.loads(path.read_text())
            if not isinstance(value, dict):
                raise ValueError(f"a JSON {type(value).__name__}, not an object")
            return value
        except (OSError, UnicodeDecodeError, ValueError) as error:
            reason = " ".join(str(error).split())[:120]
            raise RunError(f"{path} ({what}) is unreadable ({reason}); {remedy}") from None

    def stored_config(self) -> Optional[dict]:
        """The flattened config of the experiment this workdir holds, or None for a new workdir."""
        stored = self._read_json(self.config_path, "the config of the run there",
                                 "restore it from a copy, or use --force to set this workdir's files aside and start over")
        return None if stored is None else flatten_config(stored)

    def results(self) -> Optional[dict]:
        """``results.json`` of a finished run, or None."""
        return self._read_json(self.results_path, "the finished run's results",
                               "delete it to evaluate the newest checkpoint again, or use --force to start over")

    def has_run_files(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES) or any(self.path.glob("events.out.tfevents.*"))

    def claim(self, config: Any, *, force: bool) -> None:
        """Makes this workdir hold ``config``'s experiment: checks what it holds, sets it aside with ``force``,
        and records the config. Raises RunError for another experiment without ``force``."""
        current = experiment_fields(config)
        stored = self.stored_config()
        if stored is not None:
            stored = {k: v for k, v in stored.items() if k not in RUNTIME_FIELDS | LENGTH_FIELDS}
            if stored == current:
                if self.lead and self.stored_config() != flatten_config(config):  # this invocation's runtime fields
                    write_json_atomically(self.config_path, config.to_dict())
                return
            reason = f"another experiment ({_differences(stored, current)})"
        elif self.has_run_files():
            reason = "the files of a run with no config.json (an unknown experiment)"
        else:
            reason = None
        if reason is not None:
            if not force:
                raise RunError(f"workdir {self.path} holds {reason}; use another --workdir, or --force to set its files "
                               f"aside (nothing is deleted) and start over")
            self.set_aside()
        if self.lead:
            write_json_atomically(self.config_path, config.to_dict())

    def set_aside(self) -> pathlib.Path:
        """Moves every file of the experiment here to ``replaced-<time>/`` (nothing is deleted)."""
        aside = self.path / time.strftime("replaced-%Y%m%d-%H%M%S")
        while aside.exists():
            aside = aside.with_name(aside.name + "-1")
        if self.lead:
            aside.mkdir()
            for name in RUN_FILES:
                if (self.path / name).exists():
                    os.replace(self.path / name, aside / name)
            for events in self.path.glob("events.out.tfevents.*"):
                os.replace(events, aside / events.name)
            log.warning("--force: moved the previous experiment's files to %s", aside)
        return aside

    def write_results(self, results: dict) -> None:
        if self.lead:
            write_json_atomically(self.results_path, results)

    def write_init_record(self, record: dict) -> None:
        """``init_from.json``: what the run's starting weights were (written when it starts from scratch)."""
        if self.lead:
            write_json_atomically(self.path / "init_from.json", record)
