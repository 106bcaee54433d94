"""StableHLO export through jax.export: the reloaded program equals the model at any batch size."""

import jax
import numpy as np
import pytest
from random_variables import random_variables

import cnn.export
import cnn.models
from cnn.export.forward import forward


def test_reloaded_program_equals_the_model_at_any_batch(tmp_path):
    model = cnn.models.create("lenet5", num_classes=10)
    variables = random_variables(model, (28, 28, 1))
    path = cnn.export.to_stablehlo(model, variables, tmp_path / "lenet5.stablehlo", input_shape=(28, 28, 1))
    program = cnn.export.load_stablehlo(path)
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    assert str(exported.in_avals[0].shape[0]) == "batch"
    for batch in (1, 4):
        images = jax.random.normal(jax.random.key(batch), (batch, 28, 28, 1))
        expected = np.asarray(forward(model, variables)(images))
        np.testing.assert_allclose(np.asarray(program(images)), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_loading_something_else_is_one_line(tmp_path):
    path = tmp_path / "not.stablehlo"
    path.write_bytes(b"not a program")
    with pytest.raises(ValueError, match="not a serialised jax.export program"):
        cnn.export.load_stablehlo(path)
    with pytest.raises(FileNotFoundError, match="no StableHLO file"):
        cnn.export.load_stablehlo(tmp_path / "missing.stablehlo")
