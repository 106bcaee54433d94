"""Fixtures of the training tests."""

import pathlib

import jax
import orbax.checkpoint as ocp
import pytest


def read_state(workdir, step):
    """The state saved at ``step`` in ``workdir/checkpoints`` as arrays on this process's first device."""
    directory = pathlib.Path(workdir).absolute() / "checkpoints" / str(step) / "state"
    checkpointer = ocp.StandardCheckpointer()
    metadata = checkpointer.metadata(directory)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), tree)
    restored = checkpointer.restore(directory, target)
    return {key: restored[key] for key in ("params", "batch_stats", "opt_state", "step", "rng")}


@pytest.fixture
def saved_state():
    """``saved_state(workdir, step)``: the train state saved there, on this process's first device."""
    return read_state
