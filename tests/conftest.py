"""Shared fixtures: the PyTorch reference and the twins' real classes (skipped when absent), one closeness rule.

Compiled XLA programs are cached on disk for the session (and shared by xdist workers), so a
program that several tests compile, such as one config's train step in a run and its resume, is
compiled once.
"""

import importlib.util
import os
import tempfile

import jax
import numpy as np
import pytest

jax.config.update("jax_compilation_cache_dir", os.path.join(tempfile.gettempdir(), f"cnn-tests-xla-cache-{os.getuid()}"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


@pytest.fixture
def torch():
    """PyTorch, seeded; tests that take this fixture are skipped with a reason when it is not installed."""
    torch = pytest.importorskip("torch", reason="PyTorch is the numerical reference (pip install -e '.[dev]')")
    torch.manual_seed(0)
    return torch


@pytest.fixture(scope="session")
def twins():
    """torch, torchvision and timm: the real classes of the zoo's twins (``tests/helpers/twin_reference.py``).

    Skipped with the reason when one is not installed. ``torch.library.register_fake`` is replaced by a
    no-op before torchvision is imported: its wheel registers fake ops that the CPU build of PyTorch rejects.
    """
    pytest.importorskip("torch", reason="PyTorch is the numerical reference (pip install -e '.[dev]')")
    for module in ("torchvision", "timm"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed: the twins' real classes come from torchvision 0.28.0 and timm "
                        "(pip install --no-deps torchvision==0.28.0 timm==1.0.31, after pip install -e '.[dev]')")
    import twin_reference  # tests/helpers, on pytest's pythonpath

    return twin_reference.import_libraries()


@pytest.fixture
def assert_close():
    """``assert_close(actual, expected, rtol)``: elementwise ``rtol``, plus an ``atol`` of ``rtol * max|expected|``.

    The absolute part covers outputs near zero, where float32 rounding of a sum of O(max) terms is
    not small relative to the output itself.
    """

    def check(actual, expected, rtol=1e-5):
        actual = np.asarray(actual, dtype=np.float64)
        expected = np.asarray(expected, dtype=np.float64)
        assert actual.shape == expected.shape, f"shape {actual.shape} != reference {expected.shape}"
        atol = rtol * float(np.max(np.abs(expected))) if expected.size else 0.0
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)

    return check


RUN_SLOW = os.environ.get("CNN_RUN_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(items):
    """Every test that uses the PyTorch reference carries the ``torch`` marker (``-m "not torch"`` skips them);
    tests marked ``slow`` (too long for the suite's 15 minutes on 2 cores) run only with ``CNN_RUN_SLOW=1``."""
    skip_slow = pytest.mark.skip(reason="slow: runs with CNN_RUN_SLOW=1 (beyond the suite's time budget)")
    for item in items:
        if {"torch", "twins"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.torch)
        if "slow" in item.keywords and not RUN_SLOW:
            item.add_marker(skip_slow)
