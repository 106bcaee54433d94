"""One rule per JAX primitive: the ONNX nodes that compute it (opset 18).

A rule is ``rule(graph, eqn, inputs) -> output name(s)``: ``graph`` builds nodes and constants
(``cnn.export.onnx_graph.Graph``), ``eqn`` is the jaxpr equation (its avals give shapes and dtypes) and
``inputs`` the names of its operands. The rules cover the primitives the model zoo's CNNs use in
evaluation, plus those of int8 models quantised with qwix: an ``int8 x int8 -> int32`` convolution or
matrix product becomes ``ConvInteger`` / ``MatMulInteger``, so the ONNX model computes in int8 too.
Anything else fails with the primitive's name, never silently.
"""

from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
from onnx import helper

INT64_MAX = np.iinfo(np.int64).max


def is_symbolic(dim: Any) -> bool:
    return not isinstance(dim, (int, np.integer))


def has_symbolic(shape: Sequence[Any]) -> bool:
    return any(is_symbolic(d) for d in shape)


def _onnx_type(dtype: Any) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _unsupported(eqn: Any, what: str) -> NotImplementedError:
    return NotImplementedError(f"ONNX export: {eqn.primitive.name} with {what} is not supported")


def _out_aval(eqn: Any):
    return eqn.outvars[0].aval


# ----------------------------------------------------------------------------- elementwise


def _simple(op: str):
    return lambda graph, eqn, inputs: graph.node(op, inputs)


def _rsqrt(graph, eqn, inputs):
    return graph.node("Reciprocal", [graph.node("Sqrt", inputs)])


def _erfc(graph, eqn, inputs):
    one = graph.const(1, _out_aval(eqn).dtype)
    return graph.node("Sub", [one, graph.node("Erf", inputs)])


def _square(graph, eqn, inputs):
    return graph.node("Mul", [inputs[0], inputs[0]])


def _integer_pow(graph, eqn, inputs):
    power = int(eqn.params["y"])
    if power == 2:
        return graph.node("Mul", [inputs[0], inputs[0]])
    return graph.node("Pow", [inputs[0], graph.const(power, _out_aval(eqn).dtype)])


def _log1p(graph, eqn, inputs):
    return graph.node("Log", [graph.node("Add", [inputs[0], graph.const(1, _out_aval(eqn).dtype)])])


def _round(graph, eqn, inputs):
    if int(eqn.params.get("rounding_method", 0)) == 1:  # to nearest even: ONNX Round
        return graph.node("Round", inputs)
    # away from zero: sign(x) * floor(|x| + 0.5)
    dtype = _out_aval(eqn).dtype
    shifted = graph.node("Floor", [graph.node("Add", [graph.node("Abs", inputs), graph.const(0.5, dtype)])])
    return graph.node("Mul", [graph.node("Sign", inputs), shifted])


def _convert_element_type(graph, eqn, inputs):
    source, target = np.dtype(eqn.invars[0].aval.dtype), np.dtype(eqn.params["new_dtype"])
    if source == target:
        return graph.node("Identity", inputs)
    value = inputs[0]
    if source.kind == "f" and target.kind in "iu":  # XLA saturates float -> int conversions
        info = np.iinfo(target)
        value = graph.node("Clip", [value, graph.const(info.min, source), graph.const(info.max, source)])
    if target == np.bool_:
        return graph.node("Not", [graph.node("Equal", [value, graph.const(0, source)])])
    return graph.node("Cast", [value], to=_onnx_type(target))


def _clamp(graph, eqn, inputs):
    low, x, high = inputs
    return graph.node("Clip", [x, low, high])


def _select_n(graph, eqn, inputs):
    if len(inputs) != 3:
        raise _unsupported(eqn, f"{len(inputs) - 1} cases")
    predicate, when_false, when_true = inputs
    if np.dtype(eqn.invars[0].aval.dtype) != np.bool_:
        predicate = graph.node("Cast", [predicate], to=_onnx_type(np.bool_))
    return graph.node("Where", [predicate, when_true, when_false])


def _not_equal(graph, eqn, inputs):
    return graph.node("Not", [graph.node("Equal", inputs)])


# ----------------------------------------------------------------------------- shapes


def _reshape(graph, eqn, inputs):
    if eqn.params.get("dimensions") is not None:
        raise _unsupported(eqn, "dimensions (a transposing reshape)")
    return graph.node("Reshape", [inputs[0], graph.shape(_out_aval(eqn).shape)])


def _squeeze(graph, eqn, inputs):
    return graph.node("Reshape", [inputs[0], graph.shape(_out_aval(eqn).shape)])


def _broadcast_in_dim(graph, eqn, inputs):
    shape = _out_aval(eqn).shape
    operand = eqn.invars[0].aval.shape
    kept = list(eqn.params["broadcast_dimensions"])
    expanded = [operand[kept.index(axis)] if axis in kept else 1 for axis in range(len(shape))]
    value = inputs[0]
    if tuple(expanded) != tuple(operand):
        value = graph.node("Reshape", [value, graph.shape(expanded)])
    if tuple(expanded) == tuple(shape):
        return value
    return graph.node("Expand", [value, graph.shape(shape)])


def _transpose(graph, eqn, inputs):
    return graph.node("Transpose", inputs, perm=[int(p) for p in eqn.params["permutation"]])


def _concatenate(graph, eqn, inputs):
    return graph.node("Concat", inputs, axis=int(eqn.params["dimension"]))


def _pad(graph, eqn, inputs):
    config = eqn.params["padding_config"]
    if any(interior for _, _, interior in config) or any(lo < 0 or hi < 0 for lo, hi, _ in config):
        raise _unsupported(eqn, f"interior or negative padding {config}")
    pads = [lo for lo, _, _ in config] + [hi for _, hi, _ in config]
    return graph.node("Pad", [inputs[0], graph.const(pads, np.int64), inputs[1]], mode="constant")


def _slice(graph, eqn, inputs):
    starts = [int(s) for s in eqn.params["start_indices"]]
    limits = [INT64_MAX if is_symbolic(s) else int(s) for s in eqn.params["limit_indices"]]
    strides = eqn.params.get("strides") or (1,) * len(starts)
    axes = list(range(len(starts)))
    return graph.node("Slice", [inputs[0], graph.const(starts, np.int64), graph.const(limits, np.int64),
                                graph.const(axes, np.int64), graph.const([int(s) for s in strides], np.int64)])


def _split(graph, eqn, inputs):
    sizes = [int(s) for s in eqn.params["sizes"]]
    return list(graph.node("Split", [inputs[0], graph.const(sizes, np.int64)], outputs=len(sizes),
                           axis=int(eqn.params["axis"])))


def _gather(graph, eqn, inputs):
    """A gather whose constant indices pick a grid of positions along some axes (``x[:, ::2, ::2]``
    under a symbolic batch): one ONNX ``Gather`` per picked axis."""
    indices = graph.constants.get(inputs[1])
    numbers = eqn.params["dimension_numbers"]
    axes = list(numbers.start_index_map)
    operand = eqn.invars[0].aval.shape
    if (indices is None or numbers.operand_batching_dims or list(numbers.collapsed_slice_dims) != axes
            or indices.ndim != len(axes) + 1 or indices.shape[-1] != len(axes)):
        raise _unsupported(eqn, "indices that are not a constant grid over collapsed axes")
    if any(size != 1 if axis in axes else size != dim for axis, (size, dim) in enumerate(zip(eqn.params["slice_sizes"], operand))):
        raise _unsupported(eqn, f"slice sizes {eqn.params['slice_sizes']}")
    picks = []
    for k, axis in enumerate(axes):  # a grid: index k varies along grid axis k only, and stays in bounds
        flat = np.moveaxis(indices[..., k], k, 0).reshape(indices.shape[k], -1)
        if not (flat == flat[:, :1]).all() or flat.min() < 0 or flat.max() >= operand[axis]:
            raise _unsupported(eqn, "indices that are not an in-bounds grid")
        picks.append(flat[:, 0])
    value = inputs[0]
    for axis, pick in zip(axes, picks):  # each picked axis keeps its place
        value = graph.node("Gather", [value, graph.const(pick.astype(np.int64))], axis=int(axis))
    # output axes in offset_dims take the operand's other axes in order; the rest take the grid axes in order
    others, grid = iter(a for a in range(len(operand)) if a not in axes), iter(axes)
    order = [next(others) if p in numbers.offset_dims else next(grid) for p in range(len(_out_aval(eqn).shape))]
    if order != sorted(order):
        value = graph.node("Transpose", [value], perm=order)
    return value


# ----------------------------------------------------------------------------- reductions and pooling


def _reduce(op: str):
    def rule(graph, eqn, inputs):
        axes = graph.const([int(a) for a in eqn.params["axes"]], np.int64)
        return graph.node(op, [inputs[0], axes], keepdims=0)

    return rule


def _argmax(graph, eqn, inputs):
    (axis,) = eqn.params["axes"]
    value = graph.node("ArgMax", inputs, axis=int(axis), keepdims=0)
    return graph.node("Cast", [value], to=_onnx_type(eqn.params["index_dtype"]))


def _window_attributes(eqn: Any):
    """``(spatial axes, attributes)`` of a reduce_window over ``[N, *S, C]`` with the window on ``S``."""
    params = eqn.params
    window, strides, padding = params["window_dimensions"], params["window_strides"], params["padding"]
    rank = len(window)
    if any(d != 1 for d in params.get("base_dilation", (1,) * rank)):
        raise _unsupported(eqn, "base dilation")
    edges = (0, rank - 1)
    if any(window[a] != 1 or strides[a] != 1 or tuple(padding[a]) != (0, 0) for a in edges):
        raise _unsupported(eqn, f"a window over the batch or channel axis ({window})")
    spatial = list(range(1, rank - 1))
    attributes = dict(
        kernel_shape=[int(window[a]) for a in spatial], strides=[int(strides[a]) for a in spatial],
        pads=[int(padding[a][0]) for a in spatial] + [int(padding[a][1]) for a in spatial],
    )
    dilation = params.get("window_dilation", (1,) * rank)
    if any(d != 1 for d in dilation):
        attributes["dilations"] = [int(dilation[a]) for a in spatial]
    return rank, attributes


def _channels_first(graph, value: str, rank: int) -> str:
    return graph.node("Transpose", [value], perm=[0, rank - 1] + list(range(1, rank - 1)))


def _channels_last(graph, value: str, rank: int) -> str:
    return graph.node("Transpose", [value], perm=[0] + list(range(2, rank)) + [1])


def _reduce_window_max(graph, eqn, inputs):
    rank, attributes = _window_attributes(eqn)
    pooled = graph.node("MaxPool", [_channels_first(graph, inputs[0], rank)], **attributes)
    return _channels_last(graph, pooled, rank)


def _reduce_window_sum(graph, eqn, inputs):
    rank, attributes = _window_attributes(eqn)
    size = int(np.prod(attributes["kernel_shape"]))
    pooled = graph.node("AveragePool", [_channels_first(graph, inputs[0], rank)], count_include_pad=1, **attributes)
    total = graph.node("Mul", [pooled, graph.const(size, _out_aval(eqn).dtype)])
    return _channels_last(graph, total, rank)


# ----------------------------------------------------------------------------- convolution and products


def _is_int8(aval: Any) -> bool:
    return np.dtype(aval.dtype) in (np.dtype(np.int8), np.dtype(np.uint8))


def _conv_general_dilated(graph, eqn, inputs):
    params = eqn.params
    lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
    if any(d != 1 for d in params["lhs_dilation"]) or params["batch_group_count"] != 1:
        raise _unsupported(eqn, "input dilation (a transposed conv) or batch groups")
    x = graph.node("Transpose", [inputs[0]], perm=[int(a) for a in lhs_spec])  # -> [N, C, *S]
    kernel = graph.constants.get(inputs[1])
    if kernel is not None:  # -> [O, I, *K], done here on the weights
        w = graph.const(np.transpose(kernel, [int(a) for a in rhs_spec]), hint="kernel")
    else:
        w = graph.node("Transpose", [inputs[1]], perm=[int(a) for a in rhs_spec])
    padding = params["padding"]
    attributes = dict(
        strides=[int(s) for s in params["window_strides"]], dilations=[int(d) for d in params["rhs_dilation"]],
        pads=[int(lo) for lo, _ in padding] + [int(hi) for _, hi in padding], group=int(params["feature_group_count"]),
    )
    lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
    if _is_int8(lhs) and _is_int8(rhs):
        if attributes["group"] != 1:
            raise _unsupported(eqn, "int8 operands and feature groups (ConvInteger has no groups)")
        y = graph.node("ConvInteger", [x, w], **attributes)
    elif _is_int8(lhs) or _is_int8(rhs):
        raise _unsupported(eqn, f"mixed operand types {lhs.dtype} x {rhs.dtype}")
    else:
        y = graph.node("Conv", [x, w], **attributes)
    y = graph.node("Transpose", [y], perm=[int(a) for a in np.argsort(out_spec)])  # [N, C, *S] -> the output order
    if np.dtype(_out_aval(eqn).dtype) != np.dtype(np.int32) and _is_int8(lhs):
        y = graph.node("Cast", [y], to=_onnx_type(_out_aval(eqn).dtype))
    return y


def _dot_general(graph, eqn, inputs):
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    lhs, rhs = eqn.invars[0].aval, eqn.invars[1].aval
    int8 = _is_int8(lhs) and _is_int8(rhs)
    simple = (not lhs_batch and not rhs_batch and len(lhs_contract) == 1 and rhs.ndim == 2
              and tuple(lhs_contract) == (lhs.ndim - 1,))
    if simple:
        w = inputs[1]
        if tuple(rhs_contract) == (1,):  # [M, K] -> [K, M]
            kernel = graph.constants.get(w)
            w = graph.const(kernel.T) if kernel is not None else graph.node("Transpose", [w], perm=[1, 0])
        if int8:
            y = graph.node("MatMulInteger", [inputs[0], w])
            if np.dtype(_out_aval(eqn).dtype) != np.dtype(np.int32):
                y = graph.node("Cast", [y], to=_onnx_type(_out_aval(eqn).dtype))
            return y
        return graph.node("MatMul", [inputs[0], w])
    if int8 or _is_int8(lhs) or _is_int8(rhs):
        raise _unsupported(eqn, f"int8 operands and dimension numbers {eqn.params['dimension_numbers']}")
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    lhs_letters = [next(letters) for _ in range(lhs.ndim)]
    rhs_letters = [next(letters) for _ in range(rhs.ndim)]
    for a, b in zip(list(lhs_contract) + list(lhs_batch), list(rhs_contract) + list(rhs_batch)):
        rhs_letters[b] = lhs_letters[a]
    out = ([lhs_letters[a] for a in lhs_batch]
           + [c for a, c in enumerate(lhs_letters) if a not in lhs_contract and a not in lhs_batch]
           + [c for b, c in enumerate(rhs_letters) if b not in rhs_contract and b not in rhs_batch])
    equation = f"{''.join(lhs_letters)},{''.join(rhs_letters)}->{''.join(out)}"
    return graph.node("Einsum", inputs, equation=equation)


def _dim_as_value(graph, eqn, inputs):
    value = graph.node("Reshape", [graph.dim(eqn.params["dimension"]), graph.const([], np.int64)])
    return graph.node("Cast", [value], to=_onnx_type(_out_aval(eqn).dtype))


RULES: Dict[str, Any] = {
    "add": _simple("Add"), "add_any": _simple("Add"), "sub": _simple("Sub"), "mul": _simple("Mul"),
    "div": _simple("Div"), "max": _simple("Max"), "min": _simple("Min"), "pow": _simple("Pow"),
    "neg": _simple("Neg"), "exp": _simple("Exp"), "log": _simple("Log"), "tanh": _simple("Tanh"),
    "logistic": _simple("Sigmoid"), "sqrt": _simple("Sqrt"), "abs": _simple("Abs"), "sign": _simple("Sign"),
    "floor": _simple("Floor"), "ceil": _simple("Ceil"), "erf": _simple("Erf"), "rsqrt": _rsqrt, "erfc": _erfc,
    "square": _square, "integer_pow": _integer_pow, "log1p": _log1p, "round": _round,
    "copy": _simple("Identity"), "copy_p": _simple("Identity"), "stop_gradient": _simple("Identity"),
    "optimization_barrier": _simple("Identity"), "reduce_precision": _simple("Identity"),
    "sharding_constraint": _simple("Identity"),
    "gt": _simple("Greater"), "lt": _simple("Less"), "ge": _simple("GreaterOrEqual"), "le": _simple("LessOrEqual"),
    "eq": _simple("Equal"), "ne": _not_equal, "and": _simple("And"), "or": _simple("Or"), "not": _simple("Not"),
    "convert_element_type": _convert_element_type, "clamp": _clamp, "select_n": _select_n,
    "reshape": _reshape, "squeeze": _squeeze, "broadcast_in_dim": _broadcast_in_dim, "transpose": _transpose,
    "concatenate": _concatenate, "pad": _pad, "slice": _slice, "split": _split, "gather": _gather,
    "reduce_sum": _reduce("ReduceSum"), "reduce_max": _reduce("ReduceMax"), "reduce_min": _reduce("ReduceMin"),
    "reduce_prod": _reduce("ReduceProd"), "argmax": _argmax,
    "reduce_window_max": _reduce_window_max, "reduce_window_sum": _reduce_window_sum,
    "conv_general_dilated": _conv_general_dilated, "dot_general": _dot_general, "dim_as_value": _dim_as_value,
}
