"""Model summary: parameter count, multiply-adds and FLOPs, a per-layer table.

FLOPs mean 2 x multiply-adds of the convolutions and matrix products (the published convention)
everywhere this library prints them; XLA's own count of every operation of the lowered graph is kept
under its own name, ``xla_flops``. Nothing is allocated: shapes come from ``jax.eval_shape`` and
counts from the traced and lowered (not compiled) computation, so a 140M-parameter VGG is summarised
in a second or two.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from cnn.layers import cpu_kernels


@dataclasses.dataclass(frozen=True)
class LayerRow:
    path: str  # "stage1_block1/conv1/conv"
    module_type: str
    output_shape: str
    params: int  # this module's parameters, its children included
    depth: int


@dataclasses.dataclass(frozen=True)
class Summary:
    """What ``summary`` measured. ``str(summary)`` is the per-layer table."""

    params: int
    batch_stats: int
    macs: float  # multiply-adds per example of the convolutions and matrix products (published convention)
    flops: float  # 2 x macs: forward FLOPs per example as papers count them
    xla_flops: float  # XLA's count of every operation of the forward graph per example, padding taps included
    xla_flops_without_padding: float  # XLA's own count, which skips taps over a conv's zero padding
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    rows: Tuple[LayerRow, ...]

    def __str__(self) -> str:
        header = ("layer", "type", "output shape", "params")
        body = [(("  " * r.depth) + r.path.rsplit("/", 1)[-1], r.module_type, r.output_shape, f"{r.params:,}") for r in self.rows]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]
        line = lambda row: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        rule = "-" * len(line(header))
        footer = [
            f"params: {self.params:,}   batch_stats: {self.batch_stats:,}",
            f"multiply-adds per example: {self.macs / 1e9:.3f} G (convolutions and matrix products)",
            f"forward FLOPs per example: {self.flops / 1e9:.3f} G (2 x multiply-adds)",
            f"XLA's count of every operation: {self.xla_flops / 1e9:.3f} G per example",
            f"input {self.input_shape} -> output {self.output_shape}",
        ]
        return "\n".join([line(header), rule, *map(line, body), rule, *footer])


def count(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or ``ShapeDtypeStruct``s."""
    return int(sum(int(jnp.size(leaf)) if not hasattr(leaf, "size") else int(leaf.size) for leaf in jax.tree.leaves(tree)))


def _shape_text(tree: Any) -> str:
    shapes = [tuple(leaf.shape) for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape")]
    return ", ".join(str(list(s)) for s in shapes)


def init_shapes(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1, dtype=jnp.float32):
    """The variables' shapes (no allocation) for one input of ``[batch_size, *input_shape]``."""
    x = jax.ShapeDtypeStruct((batch_size, *input_shape), dtype)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    return jax.eval_shape(lambda x: model.init(rngs, x, train=False), x), x


def _conv_with_explicit_padding(next_fun, args, kwargs, context):
    """Runs an ``nn.Conv`` as zero-padding followed by a VALID conv.

    XLA's cost analysis skips the taps that fall on implicit padding, while published
    multiply-add counts (and dense conv kernels) include them; padding explicitly makes XLA
    count every tap. The result is numerically the same conv.
    """
    module = context.module
    if context.method_name != "__call__" or type(module) is not nn.Conv or isinstance(module.padding, str) and module.padding.upper() == "CIRCULAR":
        return next_fun(*args, **kwargs)
    (x,) = args
    kernel = module.variables["params"]["kernel"]
    rank = kernel.ndim - 2
    as_tuple = lambda v: (v,) * rank if v is None or isinstance(v, int) else tuple(v)
    strides = tuple(1 if s is None else s for s in as_tuple(module.strides))
    dilation = tuple(1 if d is None else d for d in as_tuple(module.kernel_dilation))
    if isinstance(module.padding, str):
        dilated = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
        pads = jax.lax.padtype_to_pads(x.shape[1:-1], dilated, strides, module.padding.upper())
    else:
        pads = [(p, p) if isinstance(p, int) else tuple(p) for p in (as_tuple(module.padding) if isinstance(module.padding, int) else module.padding)]
    x = jnp.pad(x.astype(module.dtype or x.dtype), [(0, 0), *pads, (0, 0)])
    spec = "N" + "DHW"[-rank:] + "C" if rank <= 3 else None
    y = jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), strides, "VALID", rhs_dilation=dilation,
        dimension_numbers=(spec, "DHW"[-rank:] + "IO", spec), feature_group_count=module.feature_group_count,
    )
    if module.use_bias:
        y = y + module.variables["params"]["bias"].astype(y.dtype)
    return y


def forward_flops(model: nn.Module, variables: Any, x: Any, count_padding: bool = True) -> float:
    """Forward FLOPs of ``model.apply(variables, x, train=False)`` per example, from XLA's cost analysis.

    With ``count_padding`` (the convention of published counts) taps over a conv's zero padding count.
    """
    model = cpu_kernels.plain(model)  # XLA's count of the convolution itself, not of a backend's formulation of it
    apply = lambda v, x: model.apply(v, x, train=False)
    if count_padding:
        def apply(v, x):
            with nn.intercept_methods(_conv_with_explicit_padding):
                return model.apply(v, x, train=False)
    lowered = jax.jit(apply).lower(variables, x)
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX returned one dict per computation
        analysis = analysis[0]
    return float(analysis["flops"]) / x.shape[0]


def _sub_jaxprs(params: dict):
    """The jaxprs nested in an equation's parameters (jit, custom_vjp/jvp, remat, cond branches, ...)."""
    for value in params.values():  # by shape, not by class: the classes moved between JAX versions
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns"):  # a Jaxpr
                yield item
            elif hasattr(getattr(item, "jaxpr", None), "eqns"):  # a ClosedJaxpr
                yield item.jaxpr


def _jaxpr_macs(jaxpr) -> int:
    """Multiply-adds of every ``conv_general_dilated`` and ``dot_general`` in ``jaxpr``, nested ones included."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs, out = eqn.invars[1].aval, eqn.outvars[0].aval
            rhs_spec = eqn.params["dimension_numbers"].rhs_spec  # (out features, in features, *spatial)
            taps = int(np.prod([rhs.shape[d] for d in rhs_spec[2:]], dtype=np.int64))
            total += int(np.prod(out.shape, dtype=np.int64)) * taps * int(rhs.shape[rhs_spec[1]])
        elif name == "dot_general":
            lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
            (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
            contracted = int(np.prod([lhs.shape[d] for d in lhs_contracting], dtype=np.int64))
            total += int(np.prod(out.shape, dtype=np.int64)) * contracted
        else:
            nested = [_jaxpr_macs(sub) for sub in _sub_jaxprs(eqn.params)]
            if name == "cond":  # one branch runs
                total += max(nested, default=0)
            else:
                total += sum(nested) * (int(eqn.params["length"]) if name == "scan" else 1)
    return total


def forward_macs(model: nn.Module, variables: Any, x: Any) -> float:
    """Multiply-adds of ``model.apply(variables, x, train=False)`` per example, convs and matrix products only.

    The convention of published counts (torchvision's ``_ops``, the papers): every kernel tap of every
    output, taps over zero padding included; element-wise work (normalisation, activations) left out.
    Counted from the traced computation's ``conv_general_dilated`` and ``dot_general`` shapes.
    """
    model = cpu_kernels.plain(model)  # count convolutions, not a backend's formulation of them
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, x)
    return _jaxpr_macs(closed.jaxpr) / x.shape[0]


def _split_batch(model: nn.Module, input_shape: Tuple[int, ...], batch_size: int) -> Tuple[Tuple[int, ...], int]:
    """``input_shape`` without its batch axis, and the batch size: a zoo model knows its spatial rank, so a
    shape of rank + 2 entries carries the batch axis and one of rank + 1 does not; anything else is refused."""
    rank = getattr(model, "spatial_rank", None)
    if rank is None:  # a module of the user's: input_shape has no batch axis, as documented
        return input_shape, batch_size
    if len(input_shape) == rank + 2:
        return input_shape[1:], input_shape[0]
    if len(input_shape) == rank + 1:
        return input_shape, batch_size
    from cnn.models.layout import LAYOUTS

    raise ValueError(f"{type(model).__name__} takes {LAYOUTS.get(rank, rank)} inputs: give input_shape as one example "
                     f"({rank + 1} entries, e.g. (224, 224, 3)) or with the batch axis ({rank + 2}); got {input_shape}")


def summary(model: nn.Module, input_shape: Sequence[int], *, batch_size: int = 1, dtype=jnp.float32) -> Summary:
    """Summarises ``model`` on ``input_shape``: one example (``(224, 224, 3)``, with ``batch_size`` examples
    traced) or, for a zoo model, a whole batch (``(8, 224, 224, 3)``)."""
    input_shape, batch_size = _split_batch(model, tuple(int(d) for d in input_shape), batch_size)
    variables, x = init_shapes(model, input_shape, batch_size, dtype)
    calls: List[dict] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__" or context.module.scope is None:
            return next_fun(*args, **kwargs)
        entry = {"path": "/".join(context.module.scope.path), "type": type(context.module).__name__}
        calls.append(entry)  # appended before the call: the table is in execution (pre-)order
        out = next_fun(*args, **kwargs)
        entry["output"] = _shape_text(out)
        entry["params"] = count(context.module.variables.get("params", {}))
        return out

    with nn.intercept_methods(record):
        output = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)

    rows = tuple(
        LayerRow(c["path"] or "(model)", c["type"], c["output"], c["params"], c["path"].count("/") + (1 if c["path"] else 0))
        for c in calls
    )
    macs = forward_macs(model, variables, x)
    return Summary(
        params=count(variables.get("params", {})),
        batch_stats=count(variables.get("batch_stats", {})),
        macs=macs,
        flops=2 * macs,
        xla_flops=forward_flops(model, variables, x),
        xla_flops_without_padding=forward_flops(model, variables, x, count_padding=False),
        input_shape=(batch_size, *input_shape),
        output_shape=tuple(jax.tree.leaves(output)[0].shape),
        rows=rows,
    )
