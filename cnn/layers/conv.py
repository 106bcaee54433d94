"""N-dimensional convolution followed by normalisation and activation.

The kernel's rank follows the input: ``[N, L, C]`` gives a 1D conv, ``[N, H, W, C]`` 2D and
``[N, D, H, W, C]`` 3D. Padding is ``"SAME"``, ``"VALID"``, an int (the same on both sides of
every spatial axis, PyTorch's ``padding=p``), one int per axis, or explicit ``(low, high)`` pairs.

``Conv`` is ``nn.Conv`` (same parameters) whose convolution has a CPU fast path for small convs over
few input channels (a first 3x3 conv on grey images): XLA's CPU conv kernels are slow there, so on
CPU the forward pass is a sum over kernel taps of shifted slices times weights, fused into one loop
with what follows; the derivatives stay XLA's own conv transposes. See docs/performance.md,
"Training throughput on CPU (issue 4)".
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cnn.layers.norm import BatchNorm

Dtype = Any
ModuleDef = Any
IntOrSeq = Union[int, Sequence[int]]
Padding = Union[str, int, Sequence[int], Sequence[Tuple[int, int]]]

# He initialisation scaled by fan-out, as torchvision initialises convolutions before ReLU.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def to_tuple(value: IntOrSeq, rank: int, what: str) -> Tuple[int, ...]:
    """``3 -> (3, 3)`` for rank 2; a sequence must already have ``rank`` entries."""
    if isinstance(value, int):
        return (value,) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise ValueError(f"{what}={value!r} has {len(value)} entries; a {rank}D conv needs an int or {rank} ints")
    return value


def to_padding(padding: Padding, rank: int) -> Union[str, Tuple[Tuple[int, int], ...]]:
    """Normalises every accepted padding form to a string or ``rank`` ``(low, high)`` pairs."""
    if isinstance(padding, str):
        upper = padding.upper()
        if upper not in ("SAME", "VALID", "CIRCULAR"):
            raise ValueError(f"padding={padding!r}; expected 'SAME', 'VALID', 'CIRCULAR', an int, or per-axis ints/pairs")
        return upper
    if isinstance(padding, int):
        return ((padding, padding),) * rank
    padding = tuple(padding)
    if len(padding) != rank:
        raise ValueError(f"padding={padding!r} has {len(padding)} entries; a {rank}D conv needs {rank}")
    return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding)


# The few-input-channel path: at most this many input channels, and kernel taps x input channels.
# XLA fuses the sum into its consumers, the backward pass's too, and so recomputes it there: it pays
# while the sum is short (the seed's 3x3 conv on grey images: 1.4x to 1.7x the whole training step)
# but not for LeNet's 5x5 (25 terms: 0.64x). docs/performance.md has the figures.
FEW_CHANNELS, FEW_CHANNEL_TERMS = 4, 16
_NATIVE_ONLY = contextvars.ContextVar("native_convolutions", default=False)


@contextlib.contextmanager
def native_convolutions():
    """Traces every conv as ``lax.conv_general_dilated`` inside the block (e.g. to count a model's FLOPs).

    A trace-time switch: it affects functions traced inside the block, not ones JAX already cached.
    """
    token = _NATIVE_ONLY.set(True)
    try:
        yield
    finally:
        _NATIVE_ONLY.reset(token)


def native_only() -> bool:
    """Whether the code being traced is inside ``native_convolutions()``."""
    return _NATIVE_ONLY.get()


def _channels_last_specs(rank: int):
    spatial = "DHW"[-rank:] if rank <= 3 else None
    return None if spatial is None else ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")


def _native_conv(x, kernel, strides, pads, dilation):
    return lax.conv_general_dilated(
        x, kernel, strides, pads, rhs_dilation=dilation, dimension_numbers=_channels_last_specs(x.ndim - 2)
    )


def _shifted_slices_conv(x, kernel, strides, pads, dilation):
    """``x [N, *S, Cin]``, ``kernel [*K, Cin, Cout]``: the sum over taps and input channels of slice x weight row."""
    rank = x.ndim - 2
    x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    window, in_channels = kernel.shape[:rank], kernel.shape[-2]
    out = [(x.shape[1 + a] - dilation[a] * (window[a] - 1) - 1) // strides[a] + 1 for a in range(rank)]
    accumulate = jnp.promote_types(x.dtype, jnp.float32)  # bfloat16 inputs accumulate in float32, as a conv does
    total = None
    for tap in itertools.product(*(range(k) for k in window)):
        start = (0, *(t * d for t, d in zip(tap, dilation)), 0)
        limit = (x.shape[0], *(s + (o - 1) * st + 1 for s, o, st in zip(start[1:], out, strides)), in_channels)
        piece = lax.slice(x, start, limit, (1, *strides, 1)).astype(accumulate)
        for channel in range(in_channels):
            term = piece[..., channel : channel + 1] * kernel[(*tap, channel)].astype(accumulate)
            total = term if total is None else total + term
    return total.astype(x.dtype)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _few_channel_conv(x, kernel, strides, pads, dilation):
    return lax.platform_dependent(
        x, kernel,
        cpu=lambda x, kernel: _shifted_slices_conv(x, kernel, strides, pads, dilation),
        default=lambda x, kernel: _native_conv(x, kernel, strides, pads, dilation),
    )


def _few_channel_conv_jvp(strides, pads, dilation, primals, tangents):
    (x, kernel), (x_dot, kernel_dot) = primals, tangents
    y = _few_channel_conv(x, kernel, strides, pads, dilation)
    y_dot = jnp.zeros_like(y)  # the conv is bilinear: XLA's own convs carry the tangents
    if not isinstance(x_dot, SymbolicZero):
        y_dot = y_dot + _native_conv(x_dot, kernel, strides, pads, dilation)
    if not isinstance(kernel_dot, SymbolicZero):
        y_dot = y_dot + _native_conv(x, kernel_dot, strides, pads, dilation)
    return y, y_dot


_few_channel_conv.defjvp(_few_channel_conv_jvp, symbolic_zeros=True)


def conv_general_dilated(
    lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
    feature_group_count=1, precision=None, **kwargs,
):
    """``lax.conv_general_dilated``; channels-last convs over few input channels take the fast path above."""
    rank = lhs.ndim - 2
    specs = _channels_last_specs(rank)
    few = (
        not _NATIVE_ONLY.get()
        and specs is not None
        and feature_group_count == 1
        and not kwargs
        and all(d == 1 for d in (lhs_dilation or (1,) * rank))
        and rhs.shape[-2] <= FEW_CHANNELS
        and int(np.prod(rhs.shape[:-1])) <= FEW_CHANNEL_TERMS
        and dimension_numbers is not None
        and tuple(dimension_numbers) == tuple(lax.conv_dimension_numbers(lhs.shape, rhs.shape, specs))
    )
    if not few:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers, feature_group_count=feature_group_count, precision=precision, **kwargs,
        )
    dilation = tuple(rhs_dilation or (1,) * rank)
    if isinstance(padding, str):
        dilated = tuple((k - 1) * d + 1 for k, d in zip(rhs.shape[:rank], dilation))
        padding = lax.padtype_to_pads(lhs.shape[1:-1], dilated, window_strides, padding)
    pads = tuple((int(low), int(high)) for low, high in padding)
    return _few_channel_conv(lhs, rhs, tuple(window_strides), pads, dilation)


# ``nn.Conv`` with the few-input-channel fast path: the same parameters, the same results up to
# float32 summation order. ``ConvNormAct`` uses it unless another ``conv`` is injected.
Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """``H_out = floor((H_in + 2p - d(k - 1) - 1) / s) + 1``, PyTorch's and XLA's rule."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class ConvNormAct(nn.Module):
    """conv -> norm -> act, any spatial rank.

    Attributes:
      features: output channels.
      kernel_size, strides, dilation: an int (every spatial axis) or one int per axis.
      padding: see the module docstring.
      groups: ``feature_group_count``; ``groups == in_channels`` is a depthwise conv.
      use_bias: ``None`` means "only when there is no norm" (a bias before BatchNorm is wasted).
      norm: a module factory taking ``train`` in ``__call__`` (default ``BatchNorm``), or ``None``.
      act: activation, or ``None`` for a linear output.
      zero_init_norm: start the norm's scale at zero (last norm of a residual branch).
      conv: conv factory, injected so that research variants (weight standardisation, ...) plug in;
        the default is ``Conv`` (``nn.Conv`` with the CPU fast path for few input channels).
    """

    features: int
    kernel_size: IntOrSeq = 3
    strides: IntOrSeq = 1
    padding: Padding = "SAME"
    dilation: IntOrSeq = 1
    groups: int = 1
    use_bias: Optional[bool] = None
    norm: Optional[ModuleDef] = BatchNorm
    act: Optional[Callable[[jax.Array], jax.Array]] = nn.relu
    zero_init_norm: bool = False
    conv: ModuleDef = Conv
    kernel_init: Callable = he_normal_fan_out
    dtype: Optional[Dtype] = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        rank = x.ndim - 2
        if rank < 1:
            raise ValueError(f"ConvNormAct needs [N, *spatial, C] input; got shape {x.shape}")
        if x.shape[-1] % self.groups or self.features % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide input channels {x.shape[-1]} and features {self.features}"
            )
        use_bias = self.norm is None if self.use_bias is None else self.use_bias
        x = self.conv(
            features=self.features,
            kernel_size=to_tuple(self.kernel_size, rank, "kernel_size"),
            strides=to_tuple(self.strides, rank, "strides"),
            padding=to_padding(self.padding, rank),
            kernel_dilation=to_tuple(self.dilation, rank, "dilation"),
            feature_group_count=self.groups,
            use_bias=use_bias,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            name="conv",
        )(x)
        if self.norm is not None:
            norm = self.norm
            if self.zero_init_norm:
                norm = functools.partial(norm, zero_init=True)
            x = norm(dtype=self.dtype, name="norm")(x, train=train)
        if self.act is not None:
            x = self.act(x)
        return x
