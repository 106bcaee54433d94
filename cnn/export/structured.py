"""Structured pruning: whole conv filters and dense units removed by L1 norm, into a smaller model.

For chain models whose layer widths are fields (``simple_cnn``: ``widths``/``hidden``; ``lenet5``:
``widths``/``hidden``): every conv and hidden dense layer keeps its filters (output channels or units)
with the largest L1 norms; the next layer keeps the matching input channels (after a flatten, the
matching ``(h, w, c)`` rows). ``shrink`` returns the narrower model with the surviving weights copied
in; its logits equal those of the original with the removed filters zeroed (``masked``), because a
zeroed filter with a zeroed bias outputs act(0) = 0 everywhere, which adds nothing downstream.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple, Union

import jax
import numpy as np
from flax import linen as nn

from cnn.analysis import summary

Keep = Union[float, Sequence[float]]


def _layers(model: nn.Module, params: Any) -> List[Tuple[str, dict]]:
    """``[(name, {"kernel", "bias"}), ...]``: the model's conv and dense layers in call order."""
    fields = {f for f in ("widths", "hidden") if hasattr(model, f)}
    if fields != {"widths", "hidden"}:
        raise ValueError(f"structured pruning needs a chain model with 'widths' and 'hidden' fields "
                         f"(simple_cnn, lenet5); {type(model).__name__} has {sorted(fields) or 'neither'}")
    layers = []
    for name in sorted(params, key=_call_order):
        module = params[name]
        inner = module.get("conv", module)  # ConvNormAct keeps its conv under "conv"
        if "kernel" not in inner:
            raise ValueError(f"structured pruning: layer {name!r} has no kernel; expected a chain of convs and dense layers")
        layers.append((name, inner))
    return layers


def _call_order(name: str) -> Tuple[int, int]:
    """conv1, conv2, ..., fc1, fc2, ...: the chain's order whatever order a restored checkpoint's dict has."""
    digits = "".join(c for c in name if c.isdigit())
    return (0 if name.startswith("conv") else 1, int(digits or 0))


def _keep_list(keep: Keep, count: int) -> List[float]:
    fractions = [float(keep)] * count if np.isscalar(keep) else [float(k) for k in keep]
    if len(fractions) != count or not all(0.0 < k <= 1.0 for k in fractions):
        raise ValueError(f"keep={keep}; expected one fraction in (0, 1] or {count} of them (one per pruned layer)")
    return fractions


def kept_filters(model: nn.Module, params: Any, keep: Keep) -> Dict[str, np.ndarray]:
    """``{layer: sorted indices of its kept filters}`` for every layer but the last (the classifier)."""
    layers = _layers(model, params)[:-1]
    kept = {}
    for (name, layer), fraction in zip(layers, _keep_list(keep, len(layers))):
        kernel = np.asarray(layer["kernel"])
        norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0)
        count = max(1, int(round(fraction * kernel.shape[-1])))
        kept[name] = np.sort(np.argsort(-norms, kind="stable")[:count])
    return kept


def _input_rows(kernel: np.ndarray, previous_width: int, channels: np.ndarray) -> np.ndarray:
    """The rows (dense) or input channels (conv) of ``kernel`` fed by the kept ``channels`` of the layer before."""
    if kernel.ndim > 2:
        return kernel[..., channels, :]
    positions = kernel.shape[0] // previous_width  # a flatten of [h, w, c]: rows in (h, w, c) order
    rows = kernel.reshape(positions, previous_width, kernel.shape[-1])[:, channels, :]
    return rows.reshape(positions * len(channels), kernel.shape[-1])


def masked(model: nn.Module, variables: Any, kept: Dict[str, np.ndarray]) -> Any:
    """``variables`` with every filter not in ``kept`` zeroed (its kernel slice and bias): same shapes."""
    params = jax.tree.map(np.array, variables["params"])
    for name, layer in _layers(model, params):
        if name in kept:
            removed = np.setdiff1d(np.arange(layer["kernel"].shape[-1]), kept[name])
            layer["kernel"][..., removed] = 0.0
            if "bias" in layer:
                layer["bias"][removed] = 0.0
    return dict(variables, params=params)


def shrink(model: nn.Module, variables: Any, kept: Dict[str, np.ndarray]) -> Tuple[nn.Module, Any]:
    """``(smaller model, its variables)``: only the ``kept`` filters, and the inputs they feed, survive."""
    params = jax.tree.map(np.asarray, variables["params"])
    layers = _layers(model, params)
    new_params, widths, previous = {}, [], None
    for name, layer in layers:
        kernel, bias = layer["kernel"], layer.get("bias")
        if previous is not None:
            kernel = _input_rows(kernel, *previous)
        if name in kept:
            kernel, bias = kernel[..., kept[name]], (None if bias is None else bias[kept[name]])
            previous = (layer["kernel"].shape[-1], kept[name])
            widths.append((name, len(kept[name]), layer["kernel"].ndim > 2))
        new_layer = {"kernel": kernel} if bias is None else {"kernel": kernel, "bias": bias}
        new_params[name] = {"conv": new_layer} if "conv" in params[name] else new_layer
    conv_widths = tuple(w for _, w, is_conv in widths if is_conv)
    dense_widths = tuple(w for _, w, is_conv in widths if not is_conv)
    hidden = dense_widths[0] if isinstance(model.hidden, int) else dense_widths
    small = model.clone(widths=conv_widths, hidden=hidden)
    return small, dict(variables, params=jax.tree.map(np.asarray, new_params))


def keep_for_macs(model: nn.Module, params: Any, input_shape: Sequence[int], factor: float) -> float:
    """The largest keep fraction (every pruned layer alike) whose shrunk model has at least ``factor`` x fewer multiply-adds."""
    target = summary(model, input_shape).macs / factor
    layers = _layers(model, params)[:-1]

    def macs(fraction: float) -> float:
        widths = [max(1, int(round(fraction * layer["kernel"].shape[-1]))) for _, layer in layers]
        convs = tuple(w for w, (_, layer) in zip(widths, layers) if layer["kernel"].ndim > 2)
        dense = tuple(w for w, (_, layer) in zip(widths, layers) if layer["kernel"].ndim == 2)
        hidden = dense[0] if isinstance(model.hidden, int) else dense
        return summary(model.clone(widths=convs, hidden=hidden), input_shape).macs

    low, high = 0.0, 1.0
    for _ in range(12):  # bisection: macs grows with the fraction
        middle = (low + high) / 2
        low, high = (middle, high) if macs(middle) < target else (low, middle)
    return low  # the largest fraction with at least ``factor`` x fewer multiply-adds
