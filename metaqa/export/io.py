"""Questions in (JSONL or any format the readers support), predictions out (JSONL)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from metaqa.data import readlog
from metaqa.data.formats import is_jsonl, jsonl_kind, jsonl_objects, unique_ids
from metaqa.data.records import DataValidationError, QARecord
from metaqa.data.shards import load_source
from metaqa.evaluation.postprocess import SpanPrediction
from metaqa.fileio import write_jsonl
from metaqa.inference.engine import make_record


def read_questions_jsonl(path: str | Path, duplicate_ids: str = "rename") -> list[QARecord]:
    """One JSON object per line with `question`, `context` and optionally `id` (default `line<n>`).

    Blank lines are skipped; a repeated id is renamed `<id>#2` with a warning (or refused, with
    `duplicate_ids="error"`); anything else that is wrong stops with the file, line and fix.
    """
    path = Path(path)
    records, lines_of = [], []
    for n, obj in jsonl_objects(path, '{"question": "...", "context": "..."}'):
        try:
            records.append(make_record(obj.get("question", ""), obj.get("context", ""), str(obj.get("id", f"line{n}"))))
        except (TypeError, ValueError) as err:
            raise DataValidationError(str(path), n, str(err),
                                      "every line needs a non-empty string question and context") from err
        lines_of.append(str(n))
    records, warning = unique_ids(records, str(path), lines_of, unit="line", policy=duplicate_ids)
    if warning:
        readlog.note(str(path), warning)
    return records


def read_questions(path: str | Path, fmt: str = "auto", duplicate_ids: str = "rename") -> tuple[list[QARecord], bool]:
    """(records, labelled): JSONL questions (unlabelled), or any reader format / shard dir,
    MRQA JSONL included (labelled); a `.jsonl` file is told apart by its keys."""
    path = Path(path)
    if fmt == "jsonl" or (fmt == "auto" and is_jsonl(path) and jsonl_kind(path) != "mrqa_jsonl"):
        return read_questions_jsonl(path, duplicate_ids), False
    return load_source(path, fmt, duplicate_ids), True


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def prediction_row(p: SpanPrediction) -> dict:
    """{id, answer, score, start, end, null_score}; start/end locate the answer in the context
    (null for no answer); score is the best span's start+end logit even when "" wins."""
    answered = bool(p.text)
    return {"id": p.id, "answer": p.text, "score": _finite(p.score),
            "start": p.start if answered else None, "end": p.end if answered else None,
            "null_score": _finite(p.null_score)}


def write_predictions(path: str | Path, predictions: Sequence[SpanPrediction]) -> Path:
    return write_jsonl(path, (prediction_row(p) for p in predictions))
