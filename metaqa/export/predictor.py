"""Answer questions with an exported ONNX reader on a plain `onnxruntime.InferenceSession`.

The same windows (`metaqa.data.features.featurize`) and the same decoding
(`metaqa.evaluation.postprocess.postprocess`) as the PyTorch path, so answers match
`metaqa.models.inference.predict_records` up to the graph's numerics. Two entry points:
`predict(records, batch_size)` for throughput (windows of similar length batched together) and
`answer(question, context)` for latency (one question, its windows in one run).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from metaqa.config import check_windows
from metaqa.data.features import Features, featurize
from metaqa.data.records import QARecord
from metaqa.evaluation.postprocess import SpanPrediction, postprocess
from metaqa.export.convert import onnx_file
from metaqa.models.inference import DecodeConfig

_NUMPY_INT = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def make_record(question: str, context: str, id: str = "q0", theme: str = "") -> QARecord:
    """A record to answer (no gold answer), with clear errors for empty text."""
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {type(value).__name__}")
        if not value.strip():
            raise ValueError(f"{name} is empty (id {id!r}): pass a non-empty {name} text")
    return QARecord(id=str(id), theme=theme, context=context, question=question, is_impossible=True)


def as_records(items: Sequence[QARecord | Mapping[str, Any]]) -> list[QARecord]:
    """QARecords as they are; mappings with question, context[, id] become records (id = index)."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, QARecord):
            make_record(item.question, item.context, item.id)  # validates the text only
            out.append(item)
        elif isinstance(item, Mapping):
            missing = [k for k in ("question", "context") if k not in item]
            if missing:
                raise ValueError(f"item {i}: missing {missing}; each item needs question and context")
            out.append(make_record(item["question"], item["context"], item.get("id", str(i))))
        else:
            raise TypeError(f"item {i}: expected a QARecord or a mapping, got {type(item).__name__}")
    return out


class OnnxPredictor:
    """Extractive QA over an ONNX dir written by `metaqa export` (model.onnx + fast tokenizer).

    `threads`: onnxruntime intra-op threads (0 = onnxruntime's default, all cores). The session
    runs with every graph optimisation enabled and sequential execution.
    """

    def __init__(self, model_dir: str | Path, threads: int = 1, max_seq_length: int = 384,
                 doc_stride: int = 128, decode: DecodeConfig | Mapping[str, Any] | None = None,
                 providers: Sequence[str] | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        check_windows(max_seq_length, doc_stride, "predictor")
        if threads < 0:
            raise ValueError(f"threads={threads}: pass 1 or more, or 0 for onnxruntime's default")
        self.model_dir = Path(model_dir)
        self.onnx_path = onnx_file(self.model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        if not self.tokenizer.is_fast:
            raise ValueError(f"{self.model_dir}: the saved tokenizer is not a fast one (offsets are needed)")
        self.max_seq_length, self.doc_stride, self.threads = max_seq_length, doc_stride, threads
        self.decode = decode if isinstance(decode, DecodeConfig) else DecodeConfig(**(decode or {}))

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.onnx_path), options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.inputs = {i.name: _NUMPY_INT.get(i.type, np.int64) for i in self.session.get_inputs()}
        unknown = set(self.inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise ValueError(f"{self.onnx_path}: unexpected graph inputs {sorted(unknown)}")
        outputs = [o.name for o in self.session.get_outputs()]
        self.outputs = ["start_logits", "end_logits"] if {"start_logits", "end_logits"} <= set(outputs) else outputs[:2]

    # ------------------------------------------------------------------ public API
    def predict(self, records: Sequence[QARecord | Mapping[str, Any]], batch_size: int = 32) -> list[SpanPrediction]:
        """Answers for many questions; windows of similar length are batched together."""
        records = as_records(records)
        if not records:
            return []
        features = self.featurize(records)
        start, end = self.window_logits(features, batch_size)
        return self._decode(records, features, start, end)

    def answer(self, question: str, context: str, id: str = "q0") -> SpanPrediction:
        """One question, unbatched: its windows go through the graph in a single run."""
        record = make_record(question, context, id)
        features = self.featurize([record])
        batch = self._batch(features, np.arange(len(features)))
        start, end = self.session.run(self.outputs, batch)
        return self._decode([record], features, start, end)[0]

    def featurize(self, records: Sequence[QARecord]) -> Features:
        return featurize(self.tokenizer, records, self.max_seq_length, self.doc_stride, with_labels=False)

    def window_logits(self, features: Features, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(windows, max_width) start and end logits; like `metaqa.models.inference.window_logits`."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: pass 1 or more")
        lengths = np.array([len(ids) for ids in features.encodings["input_ids"]])
        width = int(lengths.max()) if len(lengths) else 0
        start = np.zeros((len(features), width), dtype=np.float32)
        end = np.zeros((len(features), width), dtype=np.float32)
        by_length = np.argsort(lengths, kind="stable")
        for lo in range(0, len(by_length), batch_size):
            idx = by_length[lo : lo + batch_size]
            s, e = self.session.run(self.outputs, self._batch(features, idx))
            start[idx, : s.shape[1]] = s
            end[idx, : e.shape[1]] = e
        return start, end

    # ------------------------------------------------------------------ internals
    def _batch(self, features: Features, idx: np.ndarray) -> dict[str, np.ndarray]:
        rows = [features.encodings["input_ids"][int(i)] for i in idx]
        width = max(len(r) for r in rows)
        batch = {}
        for name, dtype in self.inputs.items():
            if name not in features.encodings:
                raise ValueError(f"the tokenizer gives no {name}, which the graph needs")
            pad = self.tokenizer.pad_token_id if name == "input_ids" else 0
            array = np.full((len(idx), width), pad, dtype=dtype)
            for row, i in enumerate(idx):
                values = features.encodings[name][int(i)]
                array[row, : len(values)] = values
            batch[name] = array
        return batch

    def _decode(self, records, features, start, end) -> list[SpanPrediction]:
        d = self.decode
        return postprocess(records, features, np.asarray(start, dtype=np.float32), np.asarray(end, dtype=np.float32),
                           n_best=d.n_best, max_answer_length=d.max_answer_length,
                           null_threshold=d.null_threshold, version_2=d.version_2)

    def __repr__(self) -> str:
        return (f"OnnxPredictor({str(self.model_dir)!r}, threads={self.threads}, "
                f"max_seq_length={self.max_seq_length}, doc_stride={self.doc_stride})")
