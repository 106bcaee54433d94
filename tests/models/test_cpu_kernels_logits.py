"""Whole models give the same logits with the CPU kernels injected (``cnn.layers.cpu_kernels``): the depthwise
convs of MobileNetV3 and ConvNeXt take the shifted-slice path, with the same parameters."""

import math

import jax
import numpy as np
import pytest

from cnn.layers import cpu_kernels
from cnn.models import create

pytest.importorskip("torch", reason="the random variables come from the PyTorch reference helpers")
import torch_blocks as ref  # noqa: E402  (tests/helpers, on the path through pytest's `pythonpath`)


@pytest.mark.parametrize("name, overrides, size", [
    ("mobilenet_v3_small", {}, 64),
    ("convnext_tiny", {"depths": (1, 1, 1, 1), "widths": (16, 24, 32, 40)}, 64),
])
def test_cpu_kernels_give_the_same_logits(name, overrides, size):
    """Same parameters, same logits (to float32 summation order) with the CPU kernels injected."""
    native = create(name, num_classes=10, **overrides)
    shifted = cpu_kernels.use_cpu_kernels(native)
    assert shifted.conv is not native.conv
    x = ref.image((2, size, size, 3))
    variables = ref.random_variables(native, x)
    expected = jax.jit(lambda v: native.apply(v, x, train=False))(variables)
    actual = jax.jit(lambda v: shifted.apply(v, x, train=False))(variables)
    scale = float(np.max(np.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)
    assert math.isfinite(scale) and scale > 0
