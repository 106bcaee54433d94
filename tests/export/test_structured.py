"""Structured pruning: the narrower model has fewer parameters and multiply-adds and computes what the
original computes with the removed filters zeroed."""

import jax
import numpy as np
import pytest
from random_variables import random_variables

import cnn.models
from cnn.analysis import summary
from cnn.export import structured


@pytest.mark.parametrize("name, factor", [("simple_cnn", 4.0), ("lenet5", None)])
def test_shrunk_model_equals_the_masked_original(name, factor):
    model = cnn.models.create(name, num_classes=10)
    variables = random_variables(model, (28, 28, 1))
    keep = structured.keep_for_macs(model, variables["params"], (28, 28, 1), factor) if factor else 0.5
    kept = structured.kept_filters(model, variables["params"], keep)
    small, small_variables = structured.shrink(model, variables, kept)

    full, reduced = summary(model, (28, 28, 1)), summary(small, (28, 28, 1))
    if factor:  # the largest uniform keep with at least 4x fewer multiply-adds: not much more than 4x
        assert 4.0 <= full.macs / reduced.macs < 4.3
    else:  # half the filters of every layer: conv2 and the dense layers shrink on both sides
        assert small.widths == (3, 8) and small.hidden == (60, 42)
        assert 2.0 < full.macs / reduced.macs < 4.0 and reduced.params < full.params / 3
    images = np.asarray(jax.random.normal(jax.random.key(0), (4, 28, 28, 1)))
    expected = np.asarray(model.apply(structured.masked(model, variables, kept), images, train=False))
    actual = np.asarray(small.apply(small_variables, images, train=False))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())

    kernel = np.asarray(variables["params"]["conv2"]["conv"]["kernel"])  # kept: the largest L1 norms
    norms = np.abs(kernel).sum(axis=(0, 1, 2))
    assert norms[kept["conv2"]].min() >= np.delete(norms, kept["conv2"]).max()


def test_only_chain_models_with_width_fields():
    model = cnn.models.create("resnet20_cifar", num_classes=10)
    with pytest.raises(ValueError, match="'widths' and 'hidden' fields"):
        structured.kept_filters(model, {}, 0.5)
    lenet = cnn.models.create("lenet5", num_classes=10)
    with pytest.raises(ValueError, match=r"keep=1.5"):
        structured.kept_filters(lenet, random_variables(lenet, (28, 28, 1))["params"], 1.5)
