"""Grad-CAM and Grad-CAM++: class activation maps from any module's output, for any model.

A layer's activations and their gradient are read without touching the model: a Flax method
interceptor adds a zero perturbation to the chosen module's output, and the gradient of the class
score with respect to that perturbation is the gradient with respect to the activations. Layers are
named by module path (``"stage3_block2"``, ``"conv2"``), as ``receptive_field`` names them.

Grad-CAM (Selvaraju et al. 2017): ``relu(sum_c mean_xy(dS/dA_c) * A_c)``. Grad-CAM++ (Chattopadhay
et al. 2018) weighs each position's positive gradient by the closed-form ``alpha`` of the paper for
an exponentiated score. Both are resized (linear interpolation) to the input's spatial shape and
scaled per example to [0, 1].
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from cnn.analysis.maps import class_scores, explained_classes, normalize_maps, resize_maps


def _path(module: nn.Module) -> str:
    return "/".join(module.scope.path)


def feature_layers(model: nn.Module, variables: Any, images: Any) -> Dict[str, Tuple[int, ...]]:
    """``{module path: output shape}`` of every feature map, in the order the outputs are produced.

    A feature map is the output of a submodule that has the input's rank (``[N, *spatial, C]``) and
    that, like every module around it, was called on an input of that rank: so attention weights
    ``[N, heads, L, L]`` computed from tokens do not count. ``images`` may be an array or a
    ``jax.ShapeDtypeStruct``: only shapes are computed. A module called several times keeps its last.
    """
    rank = len(images.shape)
    found: Dict[str, Tuple[int, ...]] = {}
    on_feature_maps = [True]  # per open module call: it and all around it were called on input-rank arrays

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        first = args[0] if args else None
        on_feature_maps.append(on_feature_maps[-1] and getattr(first, "ndim", None) == rank)
        try:
            out = next_fun(*args, **kwargs)
        finally:
            inside = on_feature_maps.pop()
        path = _path(context.module)
        if inside and path and getattr(out, "ndim", None) == rank:
            found.pop(path, None)
            found[path] = tuple(out.shape)
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    return found


def default_layer(layers: Dict[str, Tuple[int, ...]]) -> str:
    """The last feature map the model produces."""
    if not layers:
        raise ValueError("the model has no submodule whose output keeps the input's rank [N, *spatial, C]")
    return list(layers)[-1]


def resolve_layer(model: nn.Module, variables: Any, images: Any, layer: Optional[str]) -> Tuple[str, Tuple[int, ...]]:
    """``(layer, its output shape)``: the named layer, checked, or the default one."""
    layers = feature_layers(model, variables, images)
    if layer is None:
        layer = default_layer(layers)
    elif layer not in layers:
        raise ValueError(f"layer={layer!r} is not a feature map of {type(model).__name__}; layers: {', '.join(layers)}")
    return layer, layers[layer]


def activations_and_gradients(model: nn.Module, variables: Any, images: jax.Array, *, layer: str,
                              shape: Tuple[int, ...], target: Any = None) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """``(A, dS/dA, logits)`` for module ``layer`` (output ``shape``): its activations, the gradient of
    each example's class score with respect to them (float32, like ``A``) and the float32 logits."""

    def score(perturbation):
        captured = {}

        def perturb(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if context.method_name == "__call__" and _path(context.module) == layer:
                if "activations" in captured:
                    raise ValueError(f"layer={layer!r} is called more than once per forward pass; choose another layer")
                out = out + perturbation.astype(out.dtype)
                captured["activations"] = out
            return out

        with nn.intercept_methods(perturb):
            logits = model.apply(variables, images, train=False).astype(jnp.float32)
        return jnp.sum(class_scores(logits, explained_classes(logits, target))), (captured["activations"], logits)

    gradients, (activations, logits) = jax.grad(score, has_aux=True)(jnp.zeros(shape, jnp.float32))
    return activations.astype(jnp.float32), gradients, logits


def _grad_cam_weights(activations: jax.Array, gradients: jax.Array) -> jax.Array:
    spatial = tuple(range(1, activations.ndim - 1))
    return jnp.mean(gradients, axis=spatial)


def _grad_cam_plus_plus_weights(activations: jax.Array, gradients: jax.Array) -> jax.Array:
    # Chattopadhay et al. 2018, eq. 19 with an exponentiated score: alpha = g^2 / (2 g^2 + sum_xy(A) g^3).
    spatial = tuple(range(1, activations.ndim - 1))
    squared, cubed = gradients**2, gradients**3
    denominator = 2 * squared + jnp.sum(activations, axis=spatial, keepdims=True) * cubed
    alpha = jnp.where(gradients != 0, squared / jnp.where(denominator != 0, denominator, 1.0), 0.0)
    return jnp.sum(alpha * jax.nn.relu(gradients), axis=spatial)


_WEIGHTS = {"grad_cam": _grad_cam_weights, "grad_cam_plus_plus": _grad_cam_plus_plus_weights}


@functools.partial(jax.jit, static_argnames=("model", "layer", "shape", "method"))
def _class_activation_maps(model, variables, images, target, *, layer, shape, method):
    activations, gradients, _ = activations_and_gradients(model, variables, images, layer=layer, shape=shape, target=target)
    weights = _WEIGHTS[method](activations, gradients)
    maps = jax.nn.relu(jnp.einsum("n...c,nc->n...", activations, weights))
    return normalize_maps(resize_maps(maps, images.shape[1:-1]))


def _maps(method: str, model, variables, images, layer, target) -> jax.Array:
    images = jnp.asarray(images)
    layer, shape = resolve_layer(model, variables, images, layer)
    target = None if target is None else jnp.broadcast_to(jnp.asarray(target, jnp.int32), images.shape[:1])
    return _class_activation_maps(model, variables, images, target, layer=layer, shape=shape, method=method)


def grad_cam(model: nn.Module, variables: Any, images: Any, *, layer: Optional[str] = None, target: Any = None) -> jax.Array:
    """Grad-CAM heat maps ``[N, *spatial]`` in [0, 1] at the input's resolution (``[N, H, W]`` for images).

    Args:
      images: model inputs ``[N, *spatial, C]`` (already normalised as the model expects).
      layer: module path of the feature map; default: the last one with more than one position.
      target: class explained, an int or int ``[N]``; default: each example's predicted class.
    """
    return _maps("grad_cam", model, variables, images, layer, target)


def grad_cam_plus_plus(model: nn.Module, variables: Any, images: Any, *, layer: Optional[str] = None,
                       target: Any = None) -> jax.Array:
    """Grad-CAM++ heat maps ``[N, *spatial]`` in [0, 1]; arguments as ``grad_cam``."""
    return _maps("grad_cam_plus_plus", model, variables, images, layer, target)
