"""Tokenise QA records into model windows, following HF `run_qa.py`.

Question first, context second, truncation of the context only, overlapping windows of
`max_seq_length` tokens with `doc_stride` tokens of overlap, character offsets kept for the
context tokens only (others are -1), and a window whose context does not contain the answer is
labelled (CLS, CLS), like an unanswerable question. Labels are computed with numpy per window.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from metaqa.data.records import QARecord

NO_OFFSET = -1


@dataclass
class Features:
    """Model windows for a list of records (several windows for a long context)."""

    encodings: dict[str, list[list[int]]]  # input_ids, attention_mask[, token_type_ids]
    example_index: np.ndarray  # (F,) record index of each window, non-decreasing
    offsets: list[np.ndarray]  # (L_f, 2) char span of each token, NO_OFFSET outside the context
    start_positions: np.ndarray | None = None  # (F,) token labels; 0 (CLS) = no answer here
    end_positions: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.example_index)

    @property
    def has_labels(self) -> bool:
        return self.start_positions is not None


def featurize(
    tokenizer,
    records: Sequence[QARecord],
    max_seq_length: int = 384,
    doc_stride: int = 128,
    with_labels: bool = True,
    chunk_size: int = 1000,
) -> Features:
    """Tokenise `records` into windows; `with_labels` adds start/end token labels."""
    if not tokenizer.is_fast:
        raise ValueError("metaqa needs a fast tokenizer (offset mapping); got a slow one")
    if tokenizer.padding_side != "right":
        raise ValueError("metaqa expects padding_side='right' (question first, context second)")
    encodings: dict[str, list[list[int]]] = {}
    example_index, offsets, starts, ends = [], [], [], []
    for lo in range(0, len(records), chunk_size):
        chunk = records[lo : lo + chunk_size]
        enc = tokenizer(
            [r.question.lstrip() for r in chunk],  # leading spaces eat window room (run_qa.py)
            [r.context for r in chunk],
            truncation="only_second",
            max_length=max_seq_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding=False,
        )
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key in enc:
                encodings.setdefault(key, []).extend(enc[key])
        for f, rec_i in enumerate(enc["overflow_to_sample_mapping"]):
            seq_ids = np.array([-1 if s is None else s for s in enc.sequence_ids(f)])
            off = np.asarray(enc["offset_mapping"][f], dtype=np.int64).reshape(-1, 2)
            off[seq_ids != 1] = NO_OFFSET
            record = chunk[rec_i]
            example_index.append(lo + rec_i)
            offsets.append(off)
            if with_labels:
                cls = enc["input_ids"][f].index(tokenizer.cls_token_id)
                s, e = _label_window(record, off, cls)
                starts.append(s)
                ends.append(e)
    return Features(
        encodings=encodings,
        example_index=np.asarray(example_index, dtype=np.int64),
        offsets=offsets,
        start_positions=np.asarray(starts, dtype=np.int64) if with_labels else None,
        end_positions=np.asarray(ends, dtype=np.int64) if with_labels else None,
    )


def _label_window(record: QARecord, offsets: np.ndarray, cls_index: int) -> tuple[int, int]:
    """Token span of the record's first answer inside this window, or (CLS, CLS)."""
    if record.is_impossible:
        return cls_index, cls_index
    answer = record.answers[0]
    start_char, end_char = answer.start, answer.start + len(answer.text)
    in_context = np.flatnonzero(offsets[:, 0] != NO_OFFSET)
    if offsets[in_context[0], 0] > start_char or offsets[in_context[-1], 1] < end_char:
        return cls_index, cls_index
    ctx = offsets[in_context]
    start_tok = in_context[np.flatnonzero(ctx[:, 0] <= start_char)[-1]]
    end_tok = in_context[np.flatnonzero(ctx[:, 1] >= end_char)[0]]
    return int(start_tok), int(end_tok)


class FeatureDataset(torch.utils.data.Dataset):
    """Windows as tensors; `collate` pads a batch to its longest window (fast on CPU)."""

    def __init__(self, features: Features, pad_token_id: int) -> None:
        self.features = features
        self.pad_token_id = pad_token_id

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        item = {k: v[i] for k, v in self.features.encodings.items()}
        item["feature_index"] = i
        if self.features.has_labels:
            item["start_positions"] = int(self.features.start_positions[i])
            item["end_positions"] = int(self.features.end_positions[i])
        return item

    def collate(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return self.collate_items(items, self.pad_token_id)

    @staticmethod
    def collate_items(items: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        batch: dict[str, torch.Tensor] = {}
        for key in ("input_ids", "attention_mask", "token_type_ids"):
            if key not in items[0]:
                continue
            pad = pad_token_id if key == "input_ids" else 0
            batch[key] = torch.tensor([it[key] + [pad] * (width - len(it[key])) for it in items])
        for key in ("feature_index", "start_positions", "end_positions"):
            if key in items[0]:
                batch[key] = torch.tensor([it[key] for it in items])
        return batch


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a collated batch that the HF model takes."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
