"""Joining a multi-process run through JAX's own distributed runtime (nothing home-made).

``initialize()`` is called by the loop when ``config.distributed`` is set, before JAX touches a
device. Where the launcher gave explicit coordinates (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``: the ``launch/cpu_cluster.py`` way) they are used;
otherwise JAX detects the cluster itself (SLURM, TPU VM pods, Open MPI, Kubernetes).
"""

from __future__ import annotations

import os
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


def initialize(timeout_seconds: int = 300) -> None:
    """Joins the run (once per process); an error names what is missing or who did not arrive."""
    global _initialized
    if _initialized:
        return
    num_processes, process_id = _env_int("JAX_NUM_PROCESSES"), _env_int("JAX_PROCESS_ID")
    if (num_processes is None) != (process_id is None):
        raise ValueError("set both JAX_NUM_PROCESSES and JAX_PROCESS_ID, or neither (to let JAX detect the cluster)")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"JAX_PROCESS_ID={process_id} must be in [0, JAX_NUM_PROCESSES={num_processes})")
    try:
        jax.distributed.initialize(
            coordinator_address=os.environ.get("JAX_COORDINATOR_ADDRESS"),
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_seconds,
        )
    except Exception as error:  # noqa: BLE001 - surfaced as one clear line
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(
            f"could not join the distributed run within {timeout_seconds}s ({first}); check that all "
            f"{num_processes or 'the requested'} processes were started and reach JAX_COORDINATOR_ADDRESS="
            f"{os.environ.get('JAX_COORDINATOR_ADDRESS')!r}"
        ) from None
    _initialized = True
