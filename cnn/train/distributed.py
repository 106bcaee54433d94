"""Joining a multi-process run through JAX's own distributed runtime (nothing home-made).

``initialize()`` is called by the loop when ``config.distributed`` is set, before JAX touches a
device. Where the launcher gave explicit coordinates (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``: the ``launch/cpu_cluster.py`` way) they are used;
otherwise JAX detects the cluster itself (SLURM, TPU VM pods, Open MPI, Kubernetes).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Optional

import jax

_initialized = False


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}; expected an integer") from None


def _give_up(message: str) -> None:
    """JAX ends a process whose peers never arrive with a C++ abort and a stack trace: say why first, in one line."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def initialize(timeout_seconds: int = 300) -> None:
    """Joins the run (once per process); an error names what is missing or who did not arrive.

    If not every process has joined after ``timeout_seconds``, the process prints one line
    ("error: could not join the distributed run within ...") and exits with status 2: JAX itself
    would abort it a little later with a stack trace, so there is nothing left to return to.
    """
    global _initialized
    if _initialized:
        return
    num_processes, process_id = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
    if (num_processes is None) != (process_id is None):
        raise ValueError("set both JAX_NUM_PROCESSES and JAX_PROCESS_ID, or neither (to let JAX detect the cluster)")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"JAX_PROCESS_ID={process_id} must be in [0, JAX_NUM_PROCESSES={num_processes})")
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    late = (
        f"could not join the distributed run within {timeout_seconds}s: not all {num_processes or 'the requested'} "
        f"processes reached JAX_COORDINATOR_ADDRESS={address!r}; start every process (launch/cpu_cluster.py does) "
        f"or raise config.distributed_timeout_seconds"
    )
    watchdog = threading.Timer(timeout_seconds, _give_up, args=(late,))
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_seconds + 60,  # JAX's own abort comes after the watchdog's line
        )
    except ValueError as error:  # JAX found no cluster to join
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"distributed=True but no cluster was found ({first}); set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
            f"JAX_PROCESS_ID (launch/cpu_cluster.py does) or run where JAX detects one (SLURM, TPU VM, Open MPI, Kubernetes)"
        ) from None
    except Exception as error:  # noqa: BLE001 - surfaced as one clear line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConnectionError(f"{late} ({first})") from None
    finally:
        watchdog.cancel()
    _initialized = True
