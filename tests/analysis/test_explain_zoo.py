"""Grad-CAM through every registered model: the default layer is found, the score's gradient reaches it, and
the map has the input's spatial shape (1D, 2D and 3D inputs alike).

Every model is traced (``jax.eval_shape``: no compile) at a small input (the deeper members of a family,
whose blocks a lighter member traces, are ``slow``); one model per unusual structure (1D, video, patch
tokens, residual, plain) is also compiled, with XLA's cheapest CPU options, and run on seeded weights,
where the map must span [0, 1]; the run over every model is ``slow``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from compile_options import fast_compile_options  # tests/helpers

import cnn.analysis
import cnn.models

# Inputs whose last feature map still has more than one position (the map is otherwise constant: zeros).
SMALL = {"cnn1d": (64, 1), "r3d_18": (2, 32, 32, 3), "inception_v3": (107, 107, 3), "alexnet": (64, 64, 3)}
RUN = ["simple_cnn", "resnet20_cifar", "vit_tiny_patch16_224", "r3d_18", "cnn1d"]
# Deeper or wider members of a family whose layers a lighter member already traces; 2-8 s each on 2 cores.
DEEPER = {"resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2",
          "resnet44_cifar", "resnet56_cifar", "resnet110_cifar", "preact_resnet50", "densenet169", "densenet201",
          "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "convnext_small", "vit_small_patch16_224",
          "mobilenet_v3_large", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"}


def _input_shape(name):
    if name in SMALL:
        return SMALL[name]
    native = cnn.models.input_shape(name)
    return native if native[0] <= 32 else (64, 64, 3)


def _model(name):
    return cnn.models.create(name, num_classes=5, **({"aux_logits": False} if name == "inception_v3" else {}))


def _variables(model, images):
    """Seeded weights filled from the shapes (no compiled init): kernels at He scale, unit scales and variances."""
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    noise = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return jnp.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean"):
            return jnp.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) if len(leaf.shape) > 1 else 1
        return jnp.asarray(np.resize(noise, leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in DEEPER else n for n in cnn.models.names()])
def test_grad_cam_traces_through_every_model(name):
    model = _model(name)
    images = jax.ShapeDtypeStruct((2, *_input_shape(name)), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    maps = jax.eval_shape(lambda v, x: cnn.analysis.grad_cam(model, v, x), variables, images)
    assert maps.shape == images.shape[:-1] and maps.dtype == jnp.float32


def _run(name):
    model = _model(name)
    images = jax.random.uniform(jax.random.key(1), (2, *_input_shape(name)))
    variables = _variables(model, images)
    compiled = jax.jit(lambda v, x: cnn.analysis.grad_cam(model, v, x)).lower(variables, images).compile(fast_compile_options())
    maps = np.asarray(compiled(variables, images))
    assert maps.shape == images.shape[:-1]
    assert np.all(np.isfinite(maps)) and maps.min() == 0.0 and maps.max() == pytest.approx(1.0)


@pytest.mark.parametrize("name", RUN)
def test_grad_cam_runs(name):
    _run(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in cnn.models.names() if n not in RUN])
def test_grad_cam_runs_on_every_model(name):
    _run(name)
