"""int8 through qwix: weights and activation scales against numpy, what XLA runs in int8, the int8
model's ONNX file against the JAX int8 model, and one QAT gradient step."""

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import optax
import pytest
from random_variables import random_variables

import cnn.export
import cnn.models
from cnn.export import quantize

pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the exported files (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def int8_simple_cnn():
    model = cnn.models.create("simple_cnn", num_classes=10)
    variables = random_variables(model, (28, 28, 1))
    batches = [np.asarray(jax.random.uniform(jax.random.key(i), (16, 28, 28, 1), maxval=1.0 + i)) for i in range(3)]
    stats = quantize.calibrate(model, variables, batches)
    int8_model, int8_variables = quantize.ptq(model, variables, stats, input_shape=(28, 28, 1))
    return model, variables, batches, int8_model, int8_variables


def leaves_with_paths(tree):
    return {"/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_weights_are_int8_per_channel_and_activation_scales_are_calibrated(int8_simple_cnn):
    model, variables, batches, _, int8_variables = int8_simple_cnn
    flat = leaves_with_paths(int8_variables["params"])
    values = flat["conv2/conv/kernel/array/qvalue"]
    scales = flat["conv2/conv/kernel/array/scale"]
    kernel = np.asarray(variables["params"]["conv2"]["conv"]["kernel"])
    assert values.dtype == np.int8
    np.testing.assert_allclose(scales.ravel(), np.abs(kernel).max(axis=(0, 1, 2)) / 127.5, rtol=1e-6)  # absmax per channel over qwix's 127.5
    np.testing.assert_allclose(values * scales, kernel, atol=float(scales.max()) / 2 + 1e-7)  # rounding error only
    # the first conv's input is the image: its scale is the mean over images of each image's max |x|, over 127.5
    image_scale = flat["conv1/conv/conv_general_dilated0_lhs_scale/array"]
    assert float(image_scale.ravel()[0]) == pytest.approx(np.mean([np.abs(b).max(axis=(1, 2, 3)).mean() for b in batches]) / 127.5, rel=1e-6)
    assert quantize.weight_bytes(int8_variables) < 0.27 * quantize.weight_bytes(variables)


def test_xla_runs_the_products_in_int8(int8_simple_cnn):
    _, _, batches, int8_model, int8_variables = int8_simple_cnn
    products = quantize.int8_products(lambda x: int8_model.apply(int8_variables, x, train=False), jnp.asarray(batches[0]))
    assert ("dot", "s8", "s8", "s32") in products and len(products) == 4  # two convs, two dense layers


def test_int8_onnx_equals_the_int8_model(int8_simple_cnn, tmp_path):
    model, variables, batches, int8_model, int8_variables = int8_simple_cnn
    path = cnn.export.to_onnx(int8_model, int8_variables, tmp_path / "int8.onnx", input_shape=(28, 28, 1))
    assert {"ConvInteger", "MatMulInteger"} <= {node.op_type for node in onnx.load(str(path)).graph.node}
    images = jnp.asarray(batches[1][:5])
    expected = np.asarray(int8_model.apply(int8_variables, images, train=False))
    actual = cnn.export.run_onnx(path)(np.asarray(images))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    float_logits = np.asarray(model.apply(variables, images, train=False))
    assert 0 < np.abs(expected - float_logits).max() < 0.2 * np.abs(float_logits).max()  # quantised, and close


def test_a_qat_step_trains_through_the_fake_quantisation():
    model = cnn.models.create("simple_cnn", num_classes=10, widths=(4, 8), hidden=16)
    variables = random_variables(model, (28, 28, 1))
    qat = quantize.qat_model(model, quantize.int8_rules(activations=True))
    images = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
    labels = jnp.arange(8) % 10
    quant_stats = quantize.calibrate(model, variables, [images])

    def loss(params):
        logits, _ = qat.apply({"params": params, "quant_stats": quant_stats}, images, train=True, mutable=["quant_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    float_value = optax.softmax_cross_entropy_with_integer_labels(model.apply(variables, images, train=False), labels).mean()
    assert np.isfinite(value) and value != float_value  # the forward pass is quantised
    norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and min(norms) > 0  # straight-through gradients reach every layer
