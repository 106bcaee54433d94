"""ONNX export: ONNX Runtime's logits equal the JAX model's eval logits at any batch size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from random_variables import random_variables

import cnn.export
import cnn.models
from cnn.export.forward import forward
from cnn.models.efficientnet import B0_STAGES

pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the exported files (pip install -e '.[dev]')")

# Each architecture at a small input, shallower where the model has depth fields (every block kind stays).
CASES = {
    "simple_cnn": ((28, 28, 1), {}),
    "lenet5": ((28, 28, 1), {}),
    "resnet18": ((32, 32, 3), {}),
    "mobilenet_v2": ((32, 32, 3), {"stages": ((1, 16, 1, 1), (6, 24, 1, 2), (6, 32, 1, 2), (6, 64, 1, 2), (6, 96, 1, 1))}),
    "efficientnet_b0": ((32, 32, 3), {"stages": B0_STAGES[:3]}),
    "convnext_tiny": ((32, 32, 3), {"depths": (1, 1, 2, 1), "widths": (16, 32, 64, 96)}),
    "resnet20_cifar": ((16, 16, 3), {}),
}


def relative_error(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def check_export(name, input_shape, overrides, tmp_path):
    model = cnn.models.create(name, num_classes=10, **overrides)
    variables = random_variables(model, input_shape)
    path = cnn.export.to_onnx(model, variables, tmp_path / f"{name}.onnx", input_shape=input_shape)
    run = cnn.export.run_onnx(path)
    images = np.asarray(jax.random.normal(jax.random.key(1), (3, *input_shape)))
    expected = np.asarray(forward(model, variables)(images))
    assert expected.std(0).mean() > 1e-3 * np.abs(expected).max(), "the logits barely depend on the images"
    assert relative_error(run(images), expected) <= 1e-5
    assert relative_error(run(images[:1]), expected[:1]) <= 1e-5  # the batch dimension is dynamic
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_onnx_runtime_logits_equal_the_model(name, tmp_path):
    input_shape, overrides = CASES[name]
    check_export(name, input_shape, overrides, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"])
def test_onnx_full_depth_models(name, tmp_path):
    """At full depth float32 rounding alone passes 1e-5 (JAX's own logits are ~2e-5 from float64 on
    mobilenet_v2): ONNX Runtime must be no further from the float64 logits than JAX's float32 ones."""
    input_shape = (64, 64, 3)
    model = cnn.models.create(name, num_classes=10)
    variables = random_variables(model, input_shape)
    path = cnn.export.to_onnx(model, variables, tmp_path / f"{name}.onnx", input_shape=input_shape)
    images = np.asarray(jax.random.normal(jax.random.key(1), (3, *input_shape)))
    actual, float32 = cnn.export.run_onnx(path)(images), np.asarray(forward(model, variables)(images))
    with jax.enable_x64(True):
        wide = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float64)), variables)
        float64 = np.asarray(model.apply(wide, jnp.asarray(images, jnp.float64), train=False))
    assert relative_error(actual, float64) <= 2 * relative_error(float32, float64) + 1e-6
    assert relative_error(actual, float32) <= 1e-4


def test_the_file_declares_a_dynamic_batch(tmp_path):
    import onnx

    model = cnn.models.create("lenet5", num_classes=10)
    path = cnn.export.to_onnx(model, random_variables(model, (28, 28, 1)), tmp_path / "m.onnx", input_shape=(28, 28, 1))
    graph = onnx.load(str(path)).graph
    (image,), (logits,) = graph.input, graph.output
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["batch", 28, 28, 1]
    assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == ["batch", 10]
    assert not list(tmp_path.glob("*.tmp"))


def test_an_op_without_a_rule_is_named():
    with pytest.raises(NotImplementedError, match="cumsum"):
        cnn.export.export_onnx(lambda x: jnp.cumsum(x, axis=1), input_shape=(4,))


def test_bad_input_shape_is_one_line():
    model = cnn.models.create("lenet5", num_classes=10)
    with pytest.raises(ValueError, match=r"input_shape=\(0, 28\)"):
        cnn.export.to_onnx(model, {}, "unused.onnx", input_shape=(0, 28))
