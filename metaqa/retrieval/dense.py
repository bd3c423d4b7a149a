"""Dense retrieval: sentence embeddings from the packaged MiniLM (all-MiniLM-L6-v2).

The model is a sentence-transformers one: its embedding is the mean of the last hidden states
over real tokens, L2-normalised (its `1_Pooling/config.json` says mean pooling), so cosine
similarity is a dot product. Done here with plain transformers, no sentence-transformers, on one
of two backends with the same pooling:

* `SentenceEncoder`: PyTorch;
* `OnnxSentenceEncoder`: the encoder exported to ONNX (`export_encoder`, optimum) on an
  onnxruntime session. On the 2-core development box (shared, loaded) a 15-token question took
  ~8 ms instead of ~18 ms at 1 thread, and 16 ms instead of ~116 ms at 2 threads: PyTorch's
  thread pool degrades far worse than onnxruntime's when the cores are busy.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from metaqa.models.factory import resolve_source

EMBEDDINGS = "embeddings.npy"
ONNX_FILE = "model.onnx"


def mean_pool_unit(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Sentence-transformers pooling: mean over real tokens, then unit length."""
    mask = attention_mask[:, :, None].astype(np.float32)
    mean = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
    return mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)


class SentenceEncoder:
    """Texts → (n, hidden) float32 unit vectors. `model` is a dir or `packaged`."""

    def __init__(self, model: str = "packaged", max_length: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = resolve_source(model)
        if not (Path(self.model_dir) / "config.json").exists():
            raise FileNotFoundError(f"{self.model_dir}: no config.json; pass retriever.encoder=packaged "
                                    "or a sentence-embedding model dir")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
        self.net = AutoModel.from_pretrained(self.model_dir, local_files_only=True).eval()
        self.max_length = max_length
        self.dim = int(self.net.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # Similar lengths together: less padding, and padding never changes a mean over real tokens.
        order = np.argsort([len(t) for t in texts], kind="stable")
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            hidden = self.net(**batch).last_hidden_state
            out[idx] = mean_pool_unit(hidden.numpy(), batch["attention_mask"].numpy())
        return out


class OnnxSentenceEncoder:
    """`SentenceEncoder` on onnxruntime, over a dir written by `export_encoder`."""

    def __init__(self, onnx_dir: str | Path, max_length: int = 256, threads: int = 0) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.onnx_dir = Path(onnx_dir)
        if not (self.onnx_dir / ONNX_FILE).exists():
            raise FileNotFoundError(f"{self.onnx_dir}: no {ONNX_FILE}; export the encoder first (export_encoder)")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.onnx_dir), local_files_only=True)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.onnx_dir / ONNX_FILE), options,
                                            providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.max_length = max_length
        self.dim = int(self.session.get_outputs()[0].shape[-1])

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        for lo in range(0, len(order), batch_size):
            idx = order[lo : lo + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="np")
            hidden = self.session.run(None, {k: batch[k].astype(np.int64) for k in self.inputs})[0]
            out[idx] = mean_pool_unit(hidden, batch["attention_mask"])
        return out


def export_encoder(model: str, out_dir: str | Path) -> Path:
    """The sentence encoder (`packaged` or a model dir) as ONNX + its tokenizer, in `out_dir`."""
    from optimum.onnxruntime import ORTModelForFeatureExtraction
    from transformers import AutoTokenizer

    source = resolve_source(model)
    out_dir = Path(out_dir)
    with warnings.catch_warnings():  # the tracer's notes about constant tensors are expected here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        model = ORTModelForFeatureExtraction.from_pretrained(source, export=True, provider="CPUExecutionProvider",
                                                             local_files_only=True)
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(out_dir)
    return out_dir


class DenseIndex:
    """Cosine scores of a query vector against the unit vectors of one corpus."""

    def __init__(self, embeddings: np.ndarray) -> None:
        if embeddings.ndim != 2 or not len(embeddings):
            raise ValueError(f"DenseIndex: expected a non-empty (n, dim) matrix, got shape {embeddings.shape}")
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    @classmethod
    def build(cls, texts: Sequence[str], encoder: SentenceEncoder | OnnxSentenceEncoder,
              batch_size: int = 32) -> "DenseIndex":
        if not texts:
            raise ValueError("DenseIndex.build: no texts to index")
        return cls(encoder.encode(texts, batch_size))

    @property
    def size(self) -> int:
        return len(self.embeddings)

    def scores(self, query_vector: np.ndarray) -> np.ndarray:
        return self.embeddings @ query_vector

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / EMBEDDINGS, self.embeddings)

    @classmethod
    def load(cls, directory: str | Path) -> "DenseIndex":
        return cls(np.load(Path(directory) / EMBEDDINGS))
