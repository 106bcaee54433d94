"""XLA's cheapest CPU compile options for tests that check what a program computes, not its speed.

No backend optimisation and the classic emitters compile 3-8x faster on the zoo's training graphs; each
option is kept only where the running jaxlib knows it (newer jaxlibs dropped ``xla_cpu_use_fusion_emitters``).
"""

import functools

import jax
import numpy as np

CANDIDATES = {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False}


@functools.lru_cache(maxsize=None)
def _known(name: str, value) -> bool:
    try:
        jax.jit(lambda x: x + 1, compiler_options={name: value}).lower(np.zeros(2, np.float32)).compile()
        return True
    except Exception:  # noqa: BLE001 - an unknown option fails compilation: not this jaxlib's
        return False


def fast_compile_options() -> dict:
    return {name: value for name, value in CANDIDATES.items() if _known(name, value)}
