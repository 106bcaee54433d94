"""A jaxpr written out as an ONNX graph: the walk over the equations and the graph being built.

``jaxpr_to_onnx(closed_jaxpr, ...)`` visits every equation once. An equation whose inputs are all
constants (the weights, BatchNorm statistics, quantisation scales) is evaluated here by JAX itself and
its result stored as an initializer, so the graph keeps only the work that depends on the images;
any other equation is translated by the rule for its primitive (``cnn.export.onnx_ops.RULES``). Calls
(``jit``, ``custom_jvp_call``, ...) are inlined. A symbolic batch dimension becomes the ONNX
``dim_param`` ``batch``; shapes that depend on it are computed in the graph from the input's shape.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnx
from jax.extend import core as jax_core
from onnx import helper, numpy_helper

from cnn.export.onnx_ops import RULES, has_symbolic, is_symbolic

OPSET = 18  # every Reduce* takes its axes as an input from 18 on; onnxruntime >= 1.14 runs it

# Primitives that call a sub-jaxpr with the same inputs and outputs: inlined.
_CALL_PARAMS = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
                "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
                "checkpoint": "jaxpr", "remat": "jaxpr"}


class Graph:
    """The ONNX nodes and initializers built so far, with the constants known at conversion time."""

    def __init__(self):
        self.nodes: List[onnx.NodeProto] = []
        self.constants: Dict[str, np.ndarray] = {}  # initializer name -> value
        self.symbols: Dict[str, str] = {}  # symbolic dimension name -> int64 [1] tensor holding its value
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, dtype: Any = None, hint: str = "const") -> str:
        """An initializer holding ``value``; returns its name."""
        name = self.name(hint)
        self.constants[name] = np.asarray(value, dtype=dtype)
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attributes: Any) -> Any:
        """Appends one node; returns its output name (or the list of names when ``outputs > 1``)."""
        names = [self.name(op.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def dim(self, dim: Any) -> str:
        """An int64 [1] tensor holding ``dim``: a constant, or computed from the symbolic dimensions."""
        if not is_symbolic(dim):
            return self.const([int(dim)], np.int64, "dim")
        (symbol,) = dim._get_vars()  # one symbol (the batch): the dimension is ``scale * batch + offset``
        offset = int(dim._evaluate({symbol: 0}))
        scale = int(dim._evaluate({symbol: 1})) - offset
        if int(dim._evaluate({symbol: 2})) != 2 * scale + offset:
            raise ValueError(f"ONNX export: dimension {dim} is not linear in {symbol}; only a * {symbol} + b is supported")
        value = self.symbols[symbol]
        if scale != 1:
            value = self.node("Mul", [value, self.const([scale], np.int64)])
        if offset:
            value = self.node("Add", [value, self.const([offset], np.int64)])
        return value

    def shape(self, shape: Sequence[Any]) -> str:
        """An int64 [rank] tensor holding ``shape`` (computed in the graph where it is symbolic)."""
        if not has_symbolic(shape):
            return self.const([int(d) for d in shape], np.int64, "shape")
        return self.node("Concat", [self.dim(d) for d in shape], axis=0)


def _literal_value(atom: Any) -> np.ndarray:
    aval = atom.aval
    return np.asarray(atom.val, dtype=aval.dtype)


def _sub_jaxpr(eqn: Any):
    """``(jaxpr, consts)`` of a call-like equation, or None."""
    key = _CALL_PARAMS.get(eqn.primitive.name)
    sub = eqn.params.get(key) if key else None
    if isinstance(sub, jax_core.ClosedJaxpr):
        return sub.jaxpr, sub.consts
    if isinstance(sub, jax_core.Jaxpr):
        return sub, []
    return None


def _fold(eqn: Any, values: List[np.ndarray]) -> Optional[List[np.ndarray]]:
    """The outputs of ``eqn`` on constant inputs, computed by JAX, or None when they depend on the batch."""
    if any(has_symbolic(v.aval.shape) for v in eqn.outvars):
        return None
    outputs = eqn.primitive.bind(*values, **eqn.params)
    outputs = outputs if eqn.primitive.multiple_results else [outputs]
    return [np.asarray(o) for o in outputs]


def _live_equations(jaxpr: Any) -> List[Any]:
    """The equations that the outputs depend on (a computation of unused values, e.g. the one-hot targets
    of a preprocessing chain, is dropped rather than converted)."""
    needed = {v for v in jaxpr.outvars if not isinstance(v, jax_core.Literal)}
    live = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            live.append(eqn)
            needed.update(v for v in eqn.invars if not isinstance(v, jax_core.Literal))
    return live[::-1]


def convert(graph: Graph, jaxpr: Any, consts: Sequence[Any], inputs: Sequence[str]) -> List[str]:
    """Writes ``jaxpr`` into ``graph`` with ``inputs`` (tensor names) as its inputs; returns its output names."""
    env: Dict[Any, str] = {}
    for var, value in zip(jaxpr.constvars, consts):
        env[var] = graph.const(np.asarray(value), hint="weight")
    for var, name in zip(jaxpr.invars, inputs):
        env[var] = name

    def read(atom: Any) -> str:
        if isinstance(atom, jax_core.Literal):
            return graph.const(_literal_value(atom), hint="literal")
        return env[atom]

    for eqn in _live_equations(jaxpr):
        names = [read(a) for a in eqn.invars]
        if all(n in graph.constants for n in names):
            folded = _fold(eqn, [graph.constants[n] for n in names])
            if folded is not None:
                for var, value in zip(eqn.outvars, folded):
                    env[var] = graph.const(value, hint=eqn.primitive.name)
                continue
        sub = _sub_jaxpr(eqn)
        if sub is not None:
            outputs = convert(graph, sub[0], sub[1], names)
        else:
            rule = RULES.get(eqn.primitive.name)
            if rule is None:
                raise NotImplementedError(
                    f"ONNX export: no rule for the JAX primitive {eqn.primitive.name!r}; "
                    f"supported: {', '.join(sorted(set(RULES) | set(_CALL_PARAMS)))}"
                )
            outputs = rule(graph, eqn, names)
            outputs = outputs if isinstance(outputs, list) else [outputs]
        for var, name in zip(eqn.outvars, outputs):
            env[var] = name
    return [read(a) for a in jaxpr.outvars]


def _value_info(name: str, aval: Any) -> onnx.ValueInfoProto:
    dims = [str(d) if is_symbolic(d) else int(d) for d in aval.shape]
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(aval.dtype)), dims)


def jaxpr_to_onnx(
    closed: Any, *, input_names: Sequence[str], output_names: Sequence[str], graph_name: str = "cnn"
) -> onnx.ModelProto:
    """The ONNX model (opset ``OPSET``) computing ``closed`` (a ClosedJaxpr); its symbolic dims become dim_params."""
    graph = Graph()
    jaxpr = closed.jaxpr
    for name, var in zip(input_names, jaxpr.invars):
        for axis, dim in enumerate(var.aval.shape):
            if is_symbolic(dim):
                (symbol,) = dim._get_vars()
                if str(dim) == symbol and symbol not in graph.symbols:
                    graph.symbols[symbol] = graph.node("Shape", [name], start=axis, end=axis + 1)
    outputs = convert(graph, jaxpr, closed.consts, input_names)
    for name, produced in zip(output_names, outputs):
        graph.nodes.append(helper.make_node("Identity", [produced], [name]))

    used = {i for node in graph.nodes for i in node.input}
    initializers = [numpy_helper.from_array(v, n) for n, v in graph.constants.items() if n in used]
    onnx_graph = helper.make_graph(
        graph.nodes, graph_name,
        [_value_info(n, v.aval) for n, v in zip(input_names, jaxpr.invars)],
        [_value_info(n, v.aval) for n, v in zip(output_names, jaxpr.outvars)],
        initializer=initializers,
    )
    model = helper.make_model(onnx_graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnn")
    model.ir_version = 9  # read by onnxruntime >= 1.16
    return model
