"""N-dimensional convolution followed by normalisation and activation.

The kernel's rank follows the input: ``[N, L, C]`` gives a 1D conv, ``[N, H, W, C]`` 2D and
``[N, D, H, W, C]`` 3D. Padding is ``"SAME"``, ``"VALID"``, an int (the same on both sides of
every spatial axis, PyTorch's ``padding=p``), one int per axis, or explicit ``(low, high)`` pairs.

The conv itself is an injected module (``nn.Conv`` by default, or any subclass of it: weight
standardisation, ``cnn.layers.cpu_kernels.CpuConv``, ...).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
from flax import linen as nn

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
      conv: the conv module (``nn.Conv`` or a class with its fields), injected so that research
        variants (weight standardisation, ...) and backend kernels plug in.
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
    conv: ModuleDef = nn.Conv
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
