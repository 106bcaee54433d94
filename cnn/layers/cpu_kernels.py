"""CPU kernels: formulations of convolution and max pooling that XLA's CPU backend runs faster.

Every layer and model of the library uses plain Flax/lax ops (``nn.Conv``, ``nn.max_pool``) and takes
its conv (and, where its max pools tile the input, its ``max_pool``) as a module field. This module
holds the CPU replacements and is the only place they are chosen: ``use_cpu_kernels(model)`` returns
the model with them injected, and ``compiler_options()`` the XLA options CPU steps compile with. The
training loop calls both when ``config.model.cpu_kernels`` is ``"on"``, or ``"auto"`` (the default) and
the backend is the CPU; nothing else switches them. Outputs and parameters are the same as the plain
model's (up to float32 summation order for the convs; pooling is bit-identical).

- ``CpuConv``: ``nn.Conv`` (same fields, same parameters) whose convolution takes a shifted-slice path
  for two cases XLA's CPU kernels handle slowly: convs over few input channels (the first 3x3 conv on
  grey images), and depthwise convs (``feature_group_count == channels``: XLA lowers them to a slow
  generic loop, google/flax#4207). Any other conv is ``lax.conv_general_dilated``.
- ``max_pool``: non-overlapping max pooling (stride = window, no padding) as the max of strided slices,
  with the gradient ``select_and_scatter`` would give; anything else is ``cnn.layers.max_pool``.
- ``compiler_options()``: XLA CPU reductions through YNNPACK, where the running jaxlib knows the option.

The depthwise path has a written-out gradient (``jax.custom_vjp``): it supports reverse-mode
differentiation (``grad``, ``vjp``), not forward mode (``jvp``); the plain model supports both.
Measurements: docs/performance.md, "CPU kernels".
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cnn.layers import pooling

SETTINGS = ("auto", "on", "off")
Pads = Tuple[Tuple[int, int], ...]

# The few-input-channel path: at most this many input channels, and kernel taps x input channels.
# XLA fuses the sum into its consumers, the backward pass's too, and so recomputes it there: it pays
# while the sum is short (the seed's 3x3 conv on grey images) but not for LeNet's 5x5 (25 terms).
FEW_CHANNELS, FEW_CHANNEL_TERMS = 4, 16

# XLA CPU: reductions (pooling gradients, BatchNorm statistics, bias gradients) through YNNPACK, convolutions
# and matrix products through Eigen. Experimental, so only where the running jaxlib accepts it.
COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}


# ----------------------------------------------------------------------------- the switch


def enabled(setting: str) -> bool:
    """Whether ``config.model.cpu_kernels`` = ``setting`` turns the kernels on for the default backend."""
    if setting not in SETTINGS:
        raise ValueError(f"model.cpu_kernels={setting!r}; expected one of {', '.join(SETTINGS)}")
    return setting == "on" or (setting == "auto" and jax.default_backend() == "cpu")


def _fields(model: nn.Module) -> Dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(model)}


def use_cpu_kernels(model: nn.Module) -> nn.Module:
    """``model`` with ``CpuConv`` as its ``conv`` and this ``max_pool`` as its ``max_pool``, where it has them."""
    fields = _fields(model)
    kernels = {"conv": CpuConv, "max_pool": max_pool}
    return model.clone(**{name: kernel for name, kernel in kernels.items() if name in fields})


def plain(model: nn.Module) -> nn.Module:
    """``model`` with its ``conv`` and ``max_pool`` back to their defaults, if the CPU kernels were injected."""
    fields = _fields(model)
    reset = {}
    if "conv" in fields and getattr(model, "conv") is CpuConv:
        reset["conv"] = fields["conv"].default
    if "max_pool" in fields and getattr(model, "max_pool") is max_pool:
        reset["max_pool"] = fields["max_pool"].default
    return model.clone(**reset) if reset else model


@functools.lru_cache(maxsize=None)
def _accepted(options: tuple) -> bool:
    try:  # an unknown option fails compilation with INVALID_ARGUMENT
        jax.jit(lambda x: x.sum(), compiler_options=dict(options)).lower(np.zeros(2, np.float32)).compile()
        return True
    except Exception:  # noqa: BLE001 - any failure means: not this jaxlib
        return False


def compiler_options() -> Dict[str, Any]:
    """``COMPILER_OPTIONS`` where the running jaxlib accepts them (on the CPU backend), else ``{}``."""
    if jax.default_backend() != "cpu":
        return {}
    return dict(COMPILER_OPTIONS) if _accepted(tuple(sorted(COMPILER_OPTIONS.items()))) else {}


# ----------------------------------------------------------------------------- few input channels


def _channels_last_specs(rank: int):
    spatial = "DHW"[-rank:] if rank <= 3 else None
    return None if spatial is None else ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def _native_conv(x, kernel, strides, pads, dilation):
    return lax.conv_general_dilated(
        x, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=_channels_last_specs(x.ndim - 2)
    )


def _tap_slice(x: jax.Array, tap, strides, dilation, out_shape) -> jax.Array:
    """``x[:, tap*d :: s][:out_shape]`` on every spatial axis of ``[N, *S, C]``."""
    rank = x.ndim - 2
    start = (0,) + tuple(tap[a] * dilation[a] for a in range(rank)) + (0,)
    limit = (x.shape[0],) + tuple(start[a + 1] + (out_shape[a] - 1) * strides[a] + 1 for a in range(rank))
    return lax.slice(x, start, limit + (x.shape[-1],), (1,) + tuple(strides) + (1,))


def _output_shape(x, window, strides, pads, dilation):
    return tuple((x.shape[1 + a] + pads[a][0] + pads[a][1] - dilation[a] * (window[a] - 1) - 1) // strides[a] + 1
                 for a in range(len(window)))


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def few_channel_conv(x, kernel, strides, pads, dilation):
    """``x [N, *S, Cin]`` conv ``kernel [*K, Cin, Cout]`` as a sum over taps and input channels of
    slice x weight row, fused by XLA into one loop; derivatives are XLA's own conv transposes."""
    window, in_channels = kernel.shape[:-2], kernel.shape[-2]
    out_shape = _output_shape(x, window, strides, pads, dilation)
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 inputs accumulate in float32, as a conv does
    total = None
    for tap in itertools.product(*(range(k) for k in window)):
        piece = _tap_slice(padded, tap, strides, dilation, out_shape).astype(accumulate)
        for channel in range(in_channels):
            term = piece[..., channel : channel + 1] * kernel[(*tap, channel)].astype(accumulate)
            total = term if total is None else total + term
    return total.astype(x.dtype)


def _few_channel_conv_jvp(strides, pads, dilation, primals, tangents):
    (x, kernel), (x_dot, kernel_dot) = primals, tangents
    y = few_channel_conv(x, kernel, strides, pads, dilation)
    y_dot = jnp.zeros_like(y)  # the conv is bilinear: XLA's own convs carry the tangents
    if not isinstance(x_dot, SymbolicZero):
        y_dot = y_dot + _native_conv(x_dot, kernel, strides, pads, dilation)
    if not isinstance(kernel_dot, SymbolicZero):
        y_dot = y_dot + _native_conv(x, kernel_dot, strides, pads, dilation)
    return y, y_dot


few_channel_conv.defjvp(_few_channel_conv_jvp, symbolic_zeros=True)


# ----------------------------------------------------------------------------- depthwise


def _correlate(padded: jax.Array, kernel: jax.Array, strides, dilation, out_shape) -> jax.Array:
    """``sum_t slice_t(padded) * kernel[t]`` for ``padded [N, *S, C]``, ``kernel [*window, C]``; float32 sums."""
    accumulate = jnp.promote_types(padded.dtype, jnp.float32)
    out = None
    for tap in itertools.product(*(range(k) for k in kernel.shape[:-1])):
        term = _tap_slice(padded, tap, strides, dilation, out_shape).astype(accumulate) * kernel[tap].astype(accumulate)
        out = term if out is None else out + term
    return out.astype(padded.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def shifted_depthwise(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Pads, dilation: Sequence[int]):
    """Depthwise conv ``x [N, *S, C]`` * ``kernel [*window, C]`` -> ``[N, *S_out, C]`` (non-negative padding)."""
    padded = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
    return _correlate(padded, kernel, strides, dilation, _output_shape(x, kernel.shape[:-1], strides, pads, dilation))


def depthwise_kernel_gradient(x, grad_out, window, strides, pads, dilation) -> jax.Array:
    """``[*window, C]``: ``sum_{n, o} slice_t(padded x)[n, o] * grad_out[n, o]`` for every tap ``t``.

    One variadic reduction (one output per tap) over the rows of ``[N * O_1 ... O_(r-1), O_r * C]``
    views, so that every row is a contiguous vector, then a short sum over ``O_r``; float32 sums
    (autodiff's per-tap reductions are 3-5x slower).
    """
    padded = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
    out_shape = grad_out.shape[1:-1]
    accumulate = jnp.promote_types(x.dtype, jnp.float32)
    columns = out_shape[-1] * x.shape[-1]
    taps = list(itertools.product(*(range(k) for k in window)))
    products = tuple(
        (_tap_slice(padded, tap, strides, dilation, out_shape) * grad_out).astype(accumulate).reshape(-1, columns)
        for tap in taps
    )
    sums = lax.reduce(products, (jnp.zeros((), accumulate),) * len(taps),
                      lambda a, b: tuple(u + v for u, v in zip(a, b)), (0,))
    rows = jnp.stack([row.reshape(out_shape[-1], -1).sum(axis=0) for row in sums])
    return rows.reshape(tuple(window) + (x.shape[-1],))


def _depthwise_forward(x, kernel, strides, pads, dilation):
    return shifted_depthwise(x, kernel, strides, pads, dilation), (x, kernel)


def _depthwise_backward(strides, pads, dilation, residuals, grad_out):
    x, kernel = residuals
    rank, window = x.ndim - 2, kernel.shape[:-1]
    padded_shape = tuple(x.shape[1 + a] + pads[a][0] + pads[a][1] for a in range(rank))
    # Input gradient: spread grad_out back onto the stride grid, then correlate with the flipped kernel.
    spread = [(0, 0, 0)] + [((window[a] - 1) * dilation[a],
                             padded_shape[a] - (grad_out.shape[1 + a] - 1) * strides[a] - 1, strides[a] - 1)
                            for a in range(rank)] + [(0, 0, 0)]
    spread_grad = lax.pad(grad_out, jnp.zeros((), grad_out.dtype), spread)
    flipped = kernel[tuple(slice(None, None, -1) for _ in range(rank))]
    grad_padded = _correlate(spread_grad, flipped, (1,) * rank, dilation, padded_shape)
    start = (0,) + tuple(p[0] for p in pads) + (0,)
    grad_x = lax.slice(grad_padded, start, tuple(s + d for s, d in zip(start, x.shape)))
    grad_kernel = depthwise_kernel_gradient(x, grad_out, window, strides, pads, dilation).astype(kernel.dtype)
    return grad_x, grad_kernel


shifted_depthwise.defvjp(_depthwise_forward, _depthwise_backward)


# ----------------------------------------------------------------------------- the conv


def conv_general_dilated(
    lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
    feature_group_count=1, precision=None, **kwargs,
):
    """``lax.conv_general_dilated``'s signature; channels-last depthwise and few-input-channel convs take
    the shifted-slice paths, every other conv is XLA's."""
    rank = lhs.ndim - 2
    specs = _channels_last_specs(rank)
    channels_last = (
        specs is not None and dimension_numbers is not None
        and tuple(dimension_numbers) == tuple(lax.conv_dimension_numbers(lhs.shape, rhs.shape, specs))
    )
    undilated_input = all(d == 1 for d in (lhs_dilation or (1,) * rank))
    dilation = tuple(rhs_dilation or (1,) * rank)
    depthwise = feature_group_count == lhs.shape[-1] > 1 and rhs.shape[-2] == 1
    few = (feature_group_count == 1 and rhs.shape[-2] <= FEW_CHANNELS
           and int(np.prod(rhs.shape[:-1])) <= FEW_CHANNEL_TERMS)
    if channels_last and undilated_input and not kwargs and (depthwise or few):
        if isinstance(padding, str):
            window = tuple((k - 1) * d + 1 for k, d in zip(rhs.shape[:rank], dilation))
            padding = lax.padtype_to_pads(lhs.shape[1:-1], window, window_strides, padding)
        pads = tuple((int(low), int(high)) for low, high in padding)
        if all(p >= 0 for pair in pads for p in pair):
            strides = tuple(window_strides)
            if few:
                return few_channel_conv(lhs, rhs, strides, pads, dilation)
            multiplier = rhs.shape[-1] // lhs.shape[-1]
            if multiplier > 1:  # output channel o reads input channel o // m
                lhs = jnp.repeat(lhs, multiplier, axis=-1)
            return shifted_depthwise(lhs, rhs[..., 0, :], strides, pads, dilation)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count, precision=precision, **kwargs,
    )


class CpuConv(nn.Conv):
    """``nn.Conv`` whose convolution is ``conv_general_dilated`` above: the same fields and parameters."""

    conv_general_dilated: Optional[Callable[..., jax.Array]] = conv_general_dilated


# ----------------------------------------------------------------------------- max pooling


def _window_taps(x: jax.Array, window: Tuple[int, ...]):
    """The window's taps in row-major order, each a strided slice ``[N, *out, C]`` of ``x``."""
    batch, *spatial, channels = x.shape
    out = [size // k for size, k in zip(spatial, window)]
    for tap in itertools.product(*(range(k) for k in window)):
        limit = (batch, *(t + (o - 1) * k + 1 for t, o, k in zip(tap, out, window)), channels)
        yield lax.slice(x, (0, *tap, 0), limit, (1, *window, 1))


def _max_of_taps(x: jax.Array, window: Tuple[int, ...]) -> jax.Array:
    taps = _window_taps(x, window)
    result = next(taps)
    for tap in taps:
        result = lax.max(result, tap)
    return result


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def tiled_max_pool(x: jax.Array, window: Tuple[int, ...]) -> jax.Array:
    """Max over non-overlapping windows of ``x``, whose spatial sizes are multiples of ``window``.

    The derivative sends each window's gradient to its first maximal element in row-major order,
    exactly what XLA's ``select_and_scatter`` does for ``reduce_window`` (slow on the CPU backend).
    """
    return _max_of_taps(x, window)


@tiled_max_pool.defjvp
def _tiled_max_pool_jvp(window, primals, tangents):
    (x,), (tangent,) = primals, tangents
    pooled = _max_of_taps(x, window)
    first, seen = [], None  # the first tap equal to the max wins, as select_and_scatter's ">=" picks
    for tap in _window_taps(x, window):
        hit = tap == pooled
        first.append(hit if seen is None else hit & ~seen)
        seen = hit if seen is None else seen | hit
    # [N, o1, k1, o2, k2, ..., C]: a reshape of x, so that the transpose (the backward pass) is a
    # select and a reshape rather than a sum of interior-padded slices.
    rank = len(window)

    def stack(offset: int, axis: int) -> jax.Array:
        if axis == rank:
            return first[offset]
        inner = int(np.prod(window[axis + 1 :], dtype=np.int64))
        return jnp.stack([stack(offset + i * inner, axis + 1) for i in range(window[axis])], axis=2 + axis)

    batch, *spatial, channels = x.shape
    split = [batch] + [d for size, k in zip(spatial, window) for d in (size // k, k)] + [channels]
    windows = tangent.reshape(split)
    chosen = jnp.where(stack(0, 0), windows, jnp.zeros_like(windows))
    return pooled, jnp.sum(chosen, axis=tuple(2 + 2 * axis for axis in range(rank)))


def max_pool(x: jax.Array, window, strides=None, padding=0) -> jax.Array:
    """``cnn.layers.max_pool``, with ``tiled_max_pool`` for non-overlapping unpadded windows."""
    window_t, strides_t, pads = pooling.pool_args(x, window, strides, padding)
    unpadded = pads == "VALID" or (not isinstance(pads, str) and all(p == (0, 0) for p in pads))
    if strides_t == window_t and unpadded and all(size >= k for size, k in zip(x.shape[1:-1], window_t)):
        # Floor mode drops the trailing rows that do not fill a window (their gradient is zero).
        kept = tuple(slice(0, (size // k) * k) for size, k in zip(x.shape[1:-1], window_t))
        return tiled_max_pool(x[(slice(None), *kept)], window_t)
    return pooling.max_pool(x, window, strides, padding)
