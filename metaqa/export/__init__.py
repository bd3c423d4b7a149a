"""ONNX export (fp32 / graph-optimised / int8 with optimum-onnx), the parity gate against the
PyTorch model. The onnxruntime predictor is `metaqa.inference.OnnxPredictor`.

optimum is imported only inside the export functions.
"""
from metaqa.export.convert import ONNX_NAME, build_variant, check_variant, onnx_file
from metaqa.export.parity import ParityError, ParityReport, compare, enforce

__all__ = [
    "ONNX_NAME", "ParityError", "ParityReport", "build_variant", "check_variant", "compare", "enforce", "onnx_file",
]
