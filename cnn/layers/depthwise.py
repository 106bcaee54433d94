"""A depthwise convolution that is fast on XLA's CPU backend, pluggable into ``nn.Conv``.

XLA lowers a grouped convolution with one input channel per group (``feature_group_count ==
channels``) to a slow generic loop on CPU, 5-20x slower than PyTorch for the forward pass and worse
for the gradients (google/flax#4207; measurements in docs/performance.md, "Depthwise convolution
(issue 7)"). ``depthwise_conv_general_dilated`` has ``lax.conv_general_dilated``'s signature and
computes a channels-last depthwise conv as a sum over kernel taps of shifted (strided) slices of the
padded input, each times one weight per channel, which XLA fuses into one loop. Its gradients are
written out (``jax.custom_vjp``): the input gradient is the same kind of sum over the dilated output
gradient with the kernel flipped, and the kernel gradient is one variadic reduction with one output
per tap over row-contiguous views (autodiff's per-tap reductions are 3-5x slower). Any other conv goes to
the library's ``cnn.layers.conv.conv_general_dilated`` (XLA's, or its CPU path for few input channels).

Parameters (``kernel [*window, 1, C * m]``, ``bias``) are ``nn.Conv``'s, so checkpoints and counts do
not change; outputs equal the native conv's up to float32 summation order. The custom gradient
supports reverse-mode differentiation (``grad``, ``vjp``, and reverse-over-reverse), not ``jvp``.

``conv_module(impl)`` returns the conv factory a model injects: ``"auto"`` (the shifted path where the
computation is lowered for the CPU, XLA's grouped conv for GPUs and TPUs, via ``lax.platform_dependent``),
``"xla"`` (always XLA's grouped conv) or ``"shifted"`` (everywhere).
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from cnn.layers.conv import Conv, conv_general_dilated, native_only

DEPTHWISE_IMPLS = ("auto", "xla", "shifted")
Pads = Tuple[Tuple[int, int], ...]


def _tap_slice(x: jax.Array, tap, strides, dilation, out_shape) -> jax.Array:
    """``x[:, tap*d :: s][:out_shape]`` on every spatial axis of ``[N, *S, C]``."""
    rank = x.ndim - 2
    start = (0,) + tuple(tap[a] * dilation[a] for a in range(rank)) + (0,)
    limit = (x.shape[0],) + tuple(start[a + 1] + (out_shape[a] - 1) * strides[a] + 1 for a in range(rank))
    return lax.slice(x, start, limit + (x.shape[-1],), (1,) + tuple(strides) + (1,))


def _correlate(padded: jax.Array, kernel: jax.Array, strides, dilation, out_shape) -> jax.Array:
    """``sum_t slice_t(padded) * kernel[t]`` for ``padded [N, *S, C]``, ``kernel [*window, C]``; float32 sums."""
    accumulate = jnp.promote_types(padded.dtype, jnp.float32)
    out = None
    for tap in itertools.product(*(range(k) for k in kernel.shape[:-1])):
        term = _tap_slice(padded, tap, strides, dilation, out_shape).astype(accumulate) * kernel[tap].astype(accumulate)
        out = term if out is None else out + term
    return out.astype(padded.dtype)


def _output_shape(x, window, strides, pads, dilation):
    return tuple((x.shape[1 + a] + pads[a][0] + pads[a][1] - dilation[a] * (window[a] - 1) - 1) // strides[a] + 1
                 for a in range(len(window)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def shifted_depthwise(x: jax.Array, kernel: jax.Array, strides: Sequence[int], pads: Pads, dilation: Sequence[int]):
    """Depthwise conv ``x [N, *S, C]`` * ``kernel [*window, C]`` -> ``[N, *S_out, C]`` (non-negative padding)."""
    padded = jnp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
    return _correlate(padded, kernel, strides, dilation, _output_shape(x, kernel.shape[:-1], strides, pads, dilation))


def depthwise_kernel_gradient(x, grad_out, window, strides, pads, dilation) -> jax.Array:
    """``[*window, C]``: ``sum_{n, o} slice_t(padded x)[n, o] * grad_out[n, o]`` for every tap ``t``.

    One variadic reduction (one output per tap) over the rows of ``[N * O_1 ... O_(r-1), O_r * C]``
    views, so that every row is a contiguous vector, then a short sum over ``O_r``; float32 sums.
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


def _forward(x, kernel, strides, pads, dilation):
    return shifted_depthwise(x, kernel, strides, pads, dilation), (x, kernel)


def _backward(strides, pads, dilation, residuals, grad_out):
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


shifted_depthwise.defvjp(_forward, _backward)


def _is_channels_last(dimension_numbers, rank: int) -> bool:
    lhs_spec = getattr(dimension_numbers, "lhs_spec", None)
    return lhs_spec is not None and tuple(lhs_spec) == (0, rank + 1) + tuple(range(1, rank + 1))


def _depthwise_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                    feature_group_count, precision, cpu_only, **kwargs):
    rank = lhs.ndim - 2
    dilation = tuple(rhs_dilation or (1,) * rank)
    if isinstance(padding, str) and feature_group_count > 1:
        window = tuple((k - 1) * d + 1 for k, d in zip(rhs.shape[:rank], dilation))
        padding = lax.padtype_to_pads(lhs.shape[1:-1], window, window_strides, padding)
    depthwise = (
        not native_only()
        and feature_group_count == lhs.shape[-1] > 1
        and rhs.shape[-2] == 1
        and all(d == 1 for d in (lhs_dilation or (1,) * rank))
        and _is_channels_last(dimension_numbers, rank)
        and not isinstance(padding, str)
        and all(p >= 0 for pair in padding for p in pair)
        and not kwargs
    )
    if not depthwise:  # the library's conv (its own CPU path for few input channels), else XLA's
        return conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count, precision=precision,
            **kwargs,
        )
    strides, pads = tuple(window_strides), tuple((int(lo), int(hi)) for lo, hi in padding)

    def shifted(lhs, rhs):
        multiplier = rhs.shape[-1] // lhs.shape[-1]
        if multiplier > 1:  # output channel o reads input channel o // m
            lhs = jnp.repeat(lhs, multiplier, axis=-1)
        return shifted_depthwise(lhs, rhs[..., 0, :], strides, pads, dilation)

    def native(lhs, rhs):
        return lax.conv_general_dilated(lhs, rhs, strides, pads, rhs_dilation=dilation,
                                        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                                        precision=precision)

    if not cpu_only:
        return shifted(lhs, rhs)
    return lax.platform_dependent(lhs, rhs, cpu=shifted, default=native)


def depthwise_conv_general_dilated(
    lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
    feature_group_count=1, precision=None, **kwargs,
):
    """``lax.conv_general_dilated`` with the shifted-slice path for every channels-last depthwise conv."""
    return _depthwise_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                           feature_group_count, precision, cpu_only=False, **kwargs)


def cpu_depthwise_conv_general_dilated(
    lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
    feature_group_count=1, precision=None, **kwargs,
):
    """The shifted-slice path where the computation is lowered for the CPU, XLA's grouped conv elsewhere."""
    return _depthwise_conv(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                           feature_group_count, precision, cpu_only=True, **kwargs)


_CONV_MODULES = {
    "auto": functools.partial(nn.Conv, conv_general_dilated=cpu_depthwise_conv_general_dilated),
    "xla": Conv,
    "shifted": functools.partial(nn.Conv, conv_general_dilated=depthwise_conv_general_dilated),
}


def conv_module(impl: str = "auto"):
    """The conv factory for depthwise formulation ``impl`` (one of ``DEPTHWISE_IMPLS``)."""
    if impl not in _CONV_MODULES:
        raise ValueError(f"depthwise implementation {impl!r}; expected one of {', '.join(DEPTHWISE_IMPLS)}")
    return _CONV_MODULES[impl]
