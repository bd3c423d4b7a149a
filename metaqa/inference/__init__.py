"""One inference path for every stage: `metaqa.inference.engine`."""
from metaqa.evaluation.postprocess import DecodeConfig
from metaqa.inference.engine import (
    OnnxPredictor,
    Predictor,
    ReaderConfig,
    TorchPredictor,
    as_records,
    load_predictor,
    make_record,
)

__all__ = ["DecodeConfig", "OnnxPredictor", "Predictor", "ReaderConfig", "TorchPredictor", "as_records",
           "load_predictor", "make_record"]
