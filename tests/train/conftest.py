"""Fixtures of the training tests."""

import pytest

from cnn.analysis.runs import read_checkpoint


def read_state(workdir, step):
    """The state saved at ``step`` in ``workdir/checkpoints`` as arrays on this process's first device."""
    restored = read_checkpoint(workdir, step)
    return {key: restored[key] for key in ("params", "batch_stats", "opt_state", "step", "rng")}


@pytest.fixture
def saved_state():
    """``saved_state(workdir, step)``: the train state saved there, on this process's first device."""
    return read_state
