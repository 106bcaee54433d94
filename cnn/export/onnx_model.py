"""Export to ONNX: the evaluation forward pass traced to a jaxpr and written node by node (opset 18).

The batch dimension is dynamic (``dim_param`` ``batch``); the weights are initializers in the file.
The conversion is this package's own (``onnx_graph`` walks the jaxpr, ``onnx_ops`` holds one rule per
primitive): it needs only ``onnx``, and it writes int8 convolutions and products of qwix-quantised
models as ONNX's integer ops. ``run_onnx`` runs a file with ONNX Runtime on the CPU.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Sequence

import jax
import numpy as np
import onnx
from flax import linen as nn

from cnn.export.forward import forward, input_spec
from cnn.export.onnx_graph import jaxpr_to_onnx

INPUT, OUTPUT = "images", "logits"


def export_onnx(function: Callable[[jax.Array], jax.Array], *, input_shape: Sequence[int], dtype: Any = np.float32,
                name: str = "cnn") -> onnx.ModelProto:
    """The ONNX model of ``function`` (``images [batch, *input_shape] of dtype -> logits``), checked by onnx's checker."""
    closed = jax.make_jaxpr(function)(input_spec(input_shape, dtype))
    model = jaxpr_to_onnx(closed, input_names=[INPUT], output_names=[OUTPUT], graph_name=name)
    onnx.checker.check_model(model)
    return model


def to_onnx(model: nn.Module, variables: Any, path: Any, *, input_shape: Sequence[int]) -> pathlib.Path:
    """Writes ``model`` in evaluation mode (``images [N, *input_shape] -> logits [N, classes]``) to ``path``."""
    proto = export_onnx(forward(model, variables), input_shape=input_shape, name=type(model).__name__)
    return write(proto, path)


def write(proto: onnx.ModelProto, path: Any) -> pathlib.Path:
    """Saves ``proto`` to ``path`` atomically (a temporary file renamed into place)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(proto.SerializeToString())
    temporary.replace(path)
    return path


def run_onnx(path: Any, *, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """``images [N, ...] -> logits`` through an ONNX Runtime CPU session on ``path`` (0 threads: its default);
    the images are cast to the file's input type (float32, or uint8 for a run exported with its preprocessing)."""
    import onnxruntime  # a test and deployment dependency, not the exporter's

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    dtype = np.uint8 if session.get_inputs()[0].type == "tensor(uint8)" else np.float32
    return lambda images: session.run([OUTPUT], {INPUT: np.asarray(images, dtype)})[0]
