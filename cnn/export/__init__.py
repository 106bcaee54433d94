"""Taking models out of JAX (StableHLO, ONNX) and making them smaller (pruning, int8 quantisation)."""

from cnn.export.onnx_model import export_onnx, run_onnx, to_onnx
from cnn.export.stablehlo import export_stablehlo, load_stablehlo, to_stablehlo

__all__ = ["export_onnx", "export_stablehlo", "load_stablehlo", "run_onnx", "to_onnx", "to_stablehlo"]
