"""ONNX export (fp32 / graph-optimised / int8 with optimum-onnx), the parity gate against the
PyTorch model, and an onnxruntime predictor that decodes exactly like the PyTorch path.

optimum is imported only inside the export functions; the predictor needs onnxruntime alone.
"""
from metaqa.export.convert import ONNX_NAME, build_variant, check_variant, onnx_file
from metaqa.export.parity import ParityError, ParityReport, compare, enforce
from metaqa.export.predictor import OnnxPredictor, make_record

__all__ = [
    "ONNX_NAME", "OnnxPredictor", "ParityError", "ParityReport", "build_variant", "check_variant",
    "compare", "enforce", "make_record", "onnx_file",
]
