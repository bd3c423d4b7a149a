"""The reader engine: the one inference path behind eval, finetune, export's gate, predict, the
pipeline, synth's filter and every benchmark.

featurize (HF `run_qa.py` windows) → batches of windows → window logits → decode
(`metaqa.evaluation.postprocess`) is written once, in `Predictor`; a backend only turns one padded
batch of windows into start/end logits:

- `TorchPredictor`: a PyTorch `*ForQuestionAnswering` net (a `save_pretrained` reader dir);
- `OnnxPredictor`: an ONNX dir from `metaqa export` on onnxruntime (a plain `InferenceSession`), or
  on OpenVINO's CPU plugin where the dir's export.json says so (`export=openvino_bf16`).

Two ways to read many questions, and they are not interchangeable for int8 graphs:
- `answer` / `answer_each`: **the serving path** — one question at a time, its windows in one
  run. Nothing is batched across questions, so an answer never depends on which other questions
  were asked with it (dynamic int8 quantises activations per batch, so batch-mates would change
  its logits). Latency is timed here, and F1 beside a latency comes from here.
- `predict`: throughput — windows of similar length batched together across questions.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from metaqa.config import check_windows
from metaqa.data.features import Features, featurize
from metaqa.data.records import QARecord
from metaqa.evaluation.postprocess import DecodeConfig, SpanPrediction, postprocess

_NUMPY_INT = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
ONNX_NAME = "model.onnx"  # the graph's name in an ONNX dir written by `metaqa export`
MANIFEST = "export.json"  # beside it: the variant (and its runtime), source model, parity report


@dataclass
class ReaderConfig:
    """The `reader` config node: windows and decoding, the same for every stage."""

    max_seq_length: int = 384
    doc_stride: int = 128
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        check_windows(self.max_seq_length, self.doc_stride, "reader")
        if isinstance(self.decode, Mapping):
            self.decode = DecodeConfig(**self.decode)

    @classmethod
    def from_cfg(cls, node: Mapping[str, Any] | None) -> "ReaderConfig":
        """From `cfg.reader` (a DictConfig or dict); missing keys take the defaults."""
        if node is None:
            return cls()
        node = {k: node[k] for k in node}
        decode = node.get("decode")
        return cls(max_seq_length=int(node.get("max_seq_length", 384)), doc_stride=int(node.get("doc_stride", 128)),
                   decode=DecodeConfig(**{k: decode[k] for k in decode}) if decode is not None else DecodeConfig())


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


class Predictor:
    """featurize → batching → window logits → decode; subclasses implement `run` for one batch."""

    backend = "base"

    def __init__(self, tokenizer, reader: ReaderConfig | None = None) -> None:
        if not tokenizer.is_fast:
            raise ValueError("the reader's tokenizer is not a fast one (offsets are needed)")
        self.tokenizer = tokenizer
        self.reader = reader or ReaderConfig()
        self.input_names: dict[str, type] = {name: np.int64 for name in MODEL_INPUTS}

    # ------------------------------------------------------------------ serving path
    def answer(self, question: str, context: str, id: str = "q0") -> SpanPrediction:
        """One question: tokenise, its windows in one run, decode."""
        record = make_record(question, context, id)
        features = self.featurize([record])
        start, end = self.run(self.pad(features, np.arange(len(features))))
        return self.decode([record], features, start, end)[0]

    def answer_each(self, records: Sequence[QARecord], progress: bool = False) -> list[SpanPrediction]:
        """`answer` for every record (the same windows and runs), tokenised in one call."""
        records = as_records(records)
        if not records:
            return []
        features = self.featurize(records)
        return self.decode(records, features, *self.logits_each(features, progress))

    def logits_each(self, features: Features, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Window logits with each question's windows in a run of their own (the serving path)."""
        start, end = self._empty_logits(features)
        bounds = np.flatnonzero(np.r_[True, features.example_index[1:] != features.example_index[:-1], True])
        for lo, hi in tqdm(list(zip(bounds[:-1], bounds[1:])), desc="reading", disable=not progress, leave=False):
            idx = np.arange(lo, hi)
            s, e = self.run(self.pad(features, idx))
            start[idx, : s.shape[1]], end[idx, : e.shape[1]] = s, e
        return start, end

    # ------------------------------------------------------------------ throughput path
    def predict(self, records: Sequence[QARecord | Mapping[str, Any]], batch_size: int = 32,
                progress: bool = False) -> list[SpanPrediction]:
        """Answers for many questions; windows of similar length batched across questions."""
        records = as_records(records)
        if not records:
            return []
        features = self.featurize(records)
        start, end = self.window_logits(features, batch_size, progress)
        return self.decode(records, features, start, end)

    def window_logits(self, features: Features, batch_size: int = 32,
                      progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(windows, max_width) start and end logits; batches of windows of similar length."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: pass 1 or more")
        start, end = self._empty_logits(features)
        by_length = np.argsort([len(ids) for ids in features.encodings["input_ids"]], kind="stable")
        batches = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
        for idx in tqdm(batches, desc="reading", disable=not progress, leave=False):
            s, e = self.run(self.pad(features, idx))
            start[idx, : s.shape[1]], end[idx, : e.shape[1]] = s, e
        return start, end

    # ------------------------------------------------------------------ shared steps
    def featurize(self, records: Sequence[QARecord]) -> Features:
        return featurize(self.tokenizer, records, self.reader.max_seq_length, self.reader.doc_stride,
                         with_labels=False)

    def decode(self, records, features: Features, start, end) -> list[SpanPrediction]:
        return postprocess(records, features, np.asarray(start, dtype=np.float32),
                           np.asarray(end, dtype=np.float32), **self.reader.decode.as_kwargs())

    def pad(self, features: Features, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Windows `idx` padded to their longest: the arrays the backend's graph takes."""
        rows = [features.encodings["input_ids"][int(i)] for i in idx]
        width = max(len(r) for r in rows)
        batch = {}
        for name, dtype in self.input_names.items():
            if name not in features.encodings:
                if name == "token_type_ids":
                    continue  # a tokenizer without segment ids (the graph then has none either)
                raise ValueError(f"the tokenizer gives no {name}, which the model needs")
            pad = self.tokenizer.pad_token_id if name == "input_ids" else 0
            array = np.full((len(idx), width), pad, dtype=dtype)
            for row, i in enumerate(idx):
                values = features.encodings[name][int(i)]
                array[row, : len(values)] = values
            batch[name] = array
        return batch

    def run(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @staticmethod
    def _empty_logits(features: Features) -> tuple[np.ndarray, np.ndarray]:
        width = max((len(ids) for ids in features.encodings["input_ids"]), default=0)
        return (np.zeros((len(features), width), dtype=np.float32),
                np.zeros((len(features), width), dtype=np.float32))


class TorchPredictor(Predictor):
    """A PyTorch `*ForQuestionAnswering` net; reads in eval mode (the net's mode is restored)."""

    backend = "torch"

    def __init__(self, net, tokenizer, reader: ReaderConfig | None = None) -> None:
        super().__init__(tokenizer, reader)
        self.net = net

    def run(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        import torch

        device = next(self.net.parameters()).device
        was_training = self.net.training
        self.net.eval()
        try:
            with torch.inference_mode():
                out = self.net(**{k: torch.from_numpy(v).to(device) for k, v in batch.items()})
        finally:
            self.net.train(was_training)
        return out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()

    @classmethod
    def from_dir(cls, model_dir: str | Path, reader: ReaderConfig | None = None) -> "TorchPredictor":
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        net = AutoModelForQuestionAnswering.from_pretrained(str(model_dir), local_files_only=True)
        return cls(net.eval(), tokenizer, reader)

    def __repr__(self) -> str:
        return f"TorchPredictor({type(self.net).__name__}, {self.reader})"


RUNTIMES = ("onnxruntime", "openvino")
OV_PRECISIONS = ("bf16", "f32")


class OnnxPredictor(Predictor):
    """An ONNX dir written by `metaqa export` (model.onnx + fast tokenizer), on the runtime its
    export.json names (`runtime`: {name, precision}; onnxruntime when it names none).

    `threads`: intra-op threads (0 = the runtime's default, all cores); onnxruntime with every graph
    optimisation on, sequential execution, one inter-op thread; OpenVINO with one stream, latency hint.
    `runtime` overrides the dir's (bench_openvino.py runs one graph on both).
    """

    backend = "onnx"

    def __init__(self, model_dir: str | Path, threads: int = 1, reader: ReaderConfig | None = None,
                 providers: Sequence[str] | None = None, runtime: Mapping[str, Any] | None = None) -> None:
        from transformers import AutoTokenizer

        if threads < 0:
            raise ValueError(f"threads={threads}: pass 1 or more, or 0 for the runtime's default")
        self.model_dir = Path(model_dir)
        self.onnx_path = onnx_file(self.model_dir)
        super().__init__(AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True), reader)
        self.threads = threads
        self.runtime = dict(runtime or exported_runtime(self.model_dir))
        if self.runtime["name"] == "openvino":
            self.session = OpenVinoSession(self.onnx_path, threads, self.runtime.get("precision", "bf16"))
        else:
            self.session = onnxruntime_session(self.onnx_path, threads, providers)
        self.input_names = {i.name: _NUMPY_INT.get(i.type, np.int64) for i in self.session.get_inputs()}
        unknown = set(self.input_names) - set(MODEL_INPUTS)
        if unknown:
            raise ValueError(f"{self.onnx_path}: unexpected graph inputs {sorted(unknown)}")
        outputs = [o.name for o in self.session.get_outputs()]
        self.outputs = ["start_logits", "end_logits"] if {"start_logits", "end_logits"} <= set(outputs) else outputs[:2]

    def run(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.session.run(self.outputs, batch)
        return start, end

    def __repr__(self) -> str:
        runtime = "" if self.runtime["name"] == "onnxruntime" else f", runtime={self.runtime}"
        return f"OnnxPredictor({str(self.model_dir)!r}, threads={self.threads}{runtime}, {self.reader})"


def exported_runtime(model_dir: Path) -> dict[str, Any]:
    """The runtime an exported dir's export.json names (onnxruntime for dirs without one)."""
    manifest = model_dir / MANIFEST
    variant = json.loads(manifest.read_text(encoding="utf-8")).get("variant", {}) if manifest.is_file() else {}
    return dict(variant.get("runtime") or {"name": "onnxruntime"})


def onnxruntime_session(onnx_path: Path, threads: int, providers: Sequence[str] | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=list(providers or ["CPUExecutionProvider"]))


@dataclass(frozen=True)
class _Port:
    name: str
    type: str


class OpenVinoSession:
    """The ONNX graph compiled by OpenVINO's CPU plugin, behind the three calls `OnnxPredictor` makes
    of an onnxruntime session (`get_inputs`, `get_outputs`, `run`), so one predictor serves both."""

    def __init__(self, onnx_path: Path, threads: int, precision: str = "bf16") -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ImportError(f"{onnx_path.parent}: its export.json asks for OpenVINO, which is not installed. "
                              "pip install 'metaqa[openvino]', or re-export it with export=fp32") from None
        if precision not in OV_PRECISIONS:
            raise ValueError(f"OpenVINO precision {precision!r}: pass one of {OV_PRECISIONS}")
        config = {"NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
        self.request = self.compiled.create_infer_request()  # one request: not for two threads at once
        self.lock = threading.Lock()
        self.ports = {o.get_any_name(): o for o in self.compiled.outputs}

    def get_inputs(self) -> list[_Port]:
        return [_Port(i.get_any_name(), f"tensor({i.get_element_type().to_dtype().name})")
                for i in self.compiled.inputs]

    def get_outputs(self) -> list[_Port]:
        return [_Port(name, "tensor(float)") for name in self.ports]

    def run(self, output_names: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self.lock:  # the request's output buffers are reused: copy them out before the next run
            result = self.request.infer(feed)
            return [np.array(result[self.ports[name]]) for name in output_names]


def openvino_bf16_capable() -> bool:
    """Whether OpenVINO's CPU plugin has a bf16 path here (AMX or AVX512-BF16)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def onnx_file(model_dir: str | Path) -> Path:
    """The one ONNX graph of an exported dir (`model.onnx`, else a single `*.onnx`)."""
    model_dir = Path(model_dir)
    if (model_dir / ONNX_NAME).is_file():
        return model_dir / ONNX_NAME
    found = sorted(model_dir.glob("*.onnx")) if model_dir.is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{model_dir}: no ONNX model inside. Export one first: "
                                f"`metaqa export model_dir=<reader dir>`; then pass its output dir")
    raise FileNotFoundError(f"{model_dir}: several ONNX files {[p.name for p in found]}; keep one (model.onnx)")


def load_predictor(model_dir: str | Path, reader: ReaderConfig | None = None, threads: int | None = None) -> Predictor:
    """The right backend for a dir: an ONNX dir (from `metaqa export`) or a `save_pretrained` reader."""
    path = Path(model_dir)
    if path.is_dir() and any(path.glob("*.onnx")):
        return OnnxPredictor(path, threads=threads or 0, reader=reader)
    from metaqa.config import check_reader_dir

    return TorchPredictor.from_dir(check_reader_dir(path), reader)
