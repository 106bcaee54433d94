"""Every explanation method behind one name: ``heat_maps(method, model, variables, images)`` -> ``[N, *spatial]``
in [0, 1], for the pointing game, the sanity checks and the pictures of ``experiments.explain``."""

from __future__ import annotations

from typing import Any, Optional

import jax
from flax import linen as nn

from cnn.analysis import gradcam, saliency
from cnn.analysis.maps import normalize_maps

METHODS = ("grad_cam", "grad_cam_plus_plus", "vanilla_gradients", "smoothgrad", "integrated_gradients", "occlusion")


def check_methods(methods: Any) -> list:
    """``methods`` (a list or a comma-separated string) as a list, or a one-line error naming the unknown ones."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ValueError(f"unknown explanation method {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"expected some of {', '.join(METHODS)}")
    return names


def heat_maps(method: str, model: nn.Module, variables: Any, images: Any, *, key: Optional[jax.Array] = None,
              target: Any = None, layer: Optional[str] = None, **options: Any) -> jax.Array:
    """``[N, *spatial]`` maps in [0, 1] of ``method`` (one of ``METHODS``) for model inputs ``images``.

    ``key`` is needed by ``smoothgrad`` only; ``layer`` applies to the Grad-CAM methods; ``options``
    go to the method (``samples``, ``steps``, ``baseline``, ``window``, ``stride``, ...).
    """
    check_methods([method])
    if method in ("grad_cam", "grad_cam_plus_plus"):
        return getattr(gradcam, method)(model, variables, images, layer=layer, target=target, **options)
    if layer is not None:
        raise ValueError(f"layer={layer!r} applies to grad_cam and grad_cam_plus_plus, not to {method}")
    if method == "occlusion":
        return normalize_maps(saliency.occlusion(model, variables, images, target=target, **options))
    if method == "smoothgrad":
        if key is None:
            raise ValueError("smoothgrad draws noise: pass key=jax.random.key(...)")
        return saliency.heat_map(saliency.smoothgrad(model, variables, images, key, target=target, **options))
    return saliency.heat_map(getattr(saliency, method)(model, variables, images, target=target, **options))
