"""Questions in (JSONL or any format the readers support), predictions out (JSONL)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from metaqa.data.records import DataValidationError, QARecord
from metaqa.data.shards import load_source
from metaqa.evaluation.postprocess import SpanPrediction
from metaqa.fileio import write_jsonl
from metaqa.inference.engine import make_record

JSONL_SUFFIXES = (".jsonl", ".ndjson")


def read_questions_jsonl(path: str | Path) -> list[QARecord]:
    """One JSON object per line with `question`, `context` and optionally `id` (default `line<n>`).

    Blank lines are skipped; anything else that is wrong stops with the file, line and fix.
    """
    path = Path(path)
    records, seen = [], set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DataValidationError(str(path), None, f"not UTF-8 ({err.reason} at byte {err.start})",
                                  "save the file as UTF-8") from err
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataValidationError(str(path), n, f"not valid JSON ({err.msg})",
                                      'one object per line: {"question": "...", "context": "..."}') from err
        if not isinstance(obj, dict):
            raise DataValidationError(str(path), n, f"a JSON {type(obj).__name__}, not an object",
                                      'one object per line: {"question": "...", "context": "..."}')
        rid = str(obj.get("id", f"line{n}"))
        if rid in seen:
            raise DataValidationError(str(path), n, f"duplicate id {rid!r}", "give every line its own id")
        seen.add(rid)
        try:
            records.append(make_record(obj.get("question", ""), obj.get("context", ""), rid))
        except (TypeError, ValueError) as err:
            raise DataValidationError(str(path), n, str(err),
                                      "every line needs a non-empty string question and context") from err
    return records


def read_questions(path: str | Path, fmt: str = "auto") -> tuple[list[QARecord], bool]:
    """(records, labelled): JSONL questions (unlabelled), or any reader format / shard dir (labelled)."""
    path = Path(path)
    if fmt == "jsonl" or (fmt == "auto" and path.suffix.lower() in JSONL_SUFFIXES):
        return read_questions_jsonl(path), False
    return load_source(path, fmt), True


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
