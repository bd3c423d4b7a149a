"""Run a PyTorch QA model over feature windows and turn its logits into scored answers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from metaqa.data.features import FeatureDataset, Features, featurize, model_inputs
from metaqa.data.records import QARecord
from metaqa.evaluation.postprocess import SpanPrediction, metric_inputs, postprocess
from metaqa.evaluation.squad_v2 import (
    gold_from_records,
    per_theme_metrics,
    squad_v2_metrics,
)


@dataclass
class DecodeConfig:
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0
    version_2: bool = True


def scatter_logits(
    chunks: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], n_windows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(feature_index, start, end) batches of any widths → two (n_windows, max_width) arrays."""
    chunks = list(chunks)
    width = max(s.shape[1] for _, s, _ in chunks)
    start = np.zeros((n_windows, width), dtype=np.float32)
    end = np.zeros((n_windows, width), dtype=np.float32)
    for index, s, e in chunks:
        start[index.cpu().numpy(), : s.shape[1]] = s.float().cpu().numpy()
        end[index.cpu().numpy(), : e.shape[1]] = e.float().cpu().numpy()
    return start, end


@torch.inference_mode()
def window_logits(
    net: torch.nn.Module,
    features: Features,
    pad_token_id: int,
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits for every window; batches are formed from windows of similar length (less padding)."""
    dataset = FeatureDataset(features, pad_token_id)
    by_length = np.argsort([len(ids) for ids in features.encodings["input_ids"]], kind="stable")
    batches = [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    chunks = []
    for idx in tqdm(batches, desc="reading", disable=not progress, leave=False):
        batch = dataset.collate([dataset[int(i)] for i in idx])
        out = net(**{k: v.to(device) for k, v in model_inputs(batch).items()})
        chunks.append((batch["feature_index"], out.start_logits, out.end_logits))
    net.train(was_training)
    return scatter_logits(chunks, len(features))


def score(
    records: Sequence[QARecord], predictions: Sequence[SpanPrediction]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Official SQuAD v2 metrics overall and per theme."""
    texts, na_probs = metric_inputs(predictions)
    overall = squad_v2_metrics(gold_from_records(records), texts, na_probs)
    return overall, per_theme_metrics(records, texts, na_probs)


def predict_records(
    net: torch.nn.Module,
    tokenizer,
    records: Sequence[QARecord],
    max_seq_length: int = 384,
    doc_stride: int = 128,
    batch_size: int = 64,
    decode: DecodeConfig | None = None,
    progress: bool = False,
) -> list[SpanPrediction]:
    decode = decode or DecodeConfig()
    features = featurize(tokenizer, records, max_seq_length, doc_stride, with_labels=False)
    start, end = window_logits(net, features, tokenizer.pad_token_id, batch_size, progress)
    return postprocess(
        records, features, start, end,
        n_best=decode.n_best,
        max_answer_length=decode.max_answer_length,
        null_threshold=decode.null_threshold,
        version_2=decode.version_2,
    )
