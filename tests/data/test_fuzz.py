"""Property-based tests (hypothesis): corrupted files give records or a clean error naming the
file, never a raw KeyError/IndexError/TypeError; any themes, ids and offsets survive prep exactly
once; any question and context survive featurize → postprocess with spans inside the context."""
from __future__ import annotations

import copy
import csv
import io
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metaqa.config import ConfigError
from metaqa.data import readlog
from metaqa.data.features import featurize
from metaqa.data.formats import read_records
from metaqa.data.records import Answer, DataValidationError, QARecord
from metaqa.data.shards import load_source, manifest_rows, split_records, theme_files, write_shards
from metaqa.evaluation.postprocess import postprocess
from metaqa.export.io import read_questions

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CTX = "Ada Lovelace wrote the first program in 1843 in London."

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 100) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def squad_doc() -> dict:
    return {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": CTX, "qas": [
        {"id": "a", "question": "When?", "answers": [{"text": "1843", "answer_start": 40}], "is_impossible": False},
        {"id": "b", "question": "Who?", "answers": [], "is_impossible": True},
    ]}]}]}


def mrqa_rows() -> list[dict]:
    return [{"header": {"dataset": "D"}}, {"context": CTX, "qas": [
        {"qid": "m1", "question": "When?", "answers": ["1843"],
         "detected_answers": [{"text": "1843", "char_spans": [[40, 43]]}]}]}]


def nodes(obj, path=()):
    """Every (container, key) in a JSON document, so one can be replaced."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        yield obj, k
        yield from nodes(v)


def mutate(doc, data) -> object:
    """Replace a few nodes with random JSON values, or delete a few keys."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        spots = list(nodes(doc))
        if not spots:
            break
        parent, key = data.draw(st.sampled_from(spots))
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[key]
        else:
            parent[key] = data.draw(json_values)
    return doc


def read_or_clean_error(path: Path, reader=read_records) -> None:
    try:
        reader(path)
    except (DataValidationError, ConfigError) as err:
        assert str(path.name) in str(err) and "Fix:" in str(err), err
    finally:
        readlog.drain()


@FAST
@given(st.data())
def test_corrupted_squad_json_reads_or_fails_cleanly(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "squad.json"
        path.write_text(json.dumps(mutate(squad_doc(), data)), encoding="utf-8")
        read_or_clean_error(path)


@FAST
@given(st.data())
def test_corrupted_mrqa_jsonl_reads_or_fails_cleanly(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mrqa.jsonl"
        rows = mutate(mrqa_rows(), data)
        lines = [json.dumps(r) for r in rows] if isinstance(rows, list) else [json.dumps(rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        read_or_clean_error(path)
        read_or_clean_error(path, read_questions)  # what `metaqa predict input=` does with it


DEVREV = [["Theme", "Paragraph", "Question", "Answer_possible", "Answer_text", "Answer_start"],
          ["T", CTX, "When?", "True", "['1843']", "[40]"], ["T", CTX, "Who?", "False", "[]", "[]"]]


@FAST
@given(st.data())
def test_corrupted_devrev_csv_reads_or_fails_cleanly(data):
    rows = copy.deepcopy(DEVREV)
    for _ in range(data.draw(st.integers(1, 4))):
        r = data.draw(st.integers(0, len(rows) - 1))
        c = data.draw(st.integers(0, len(rows[r]) - 1))
        rows[r][c] = data.draw(st.text(max_size=12) | st.sampled_from(["[]", "['x']", "[-3]", "[999]", "nan"]))
    if data.draw(st.booleans()):
        rows[data.draw(st.integers(0, len(rows) - 1))].pop()  # a short row
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    raw = bytearray(buf.getvalue().encode())
    if data.draw(st.booleans()) and raw:  # and a random byte, sometimes
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "devrev.csv"
        path.write_bytes(bytes(raw))
        read_or_clean_error(path)


themes = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=0, max_size=40)


@FAST
@given(st.lists(st.tuples(themes, st.text(min_size=1, max_size=10), st.integers(0, len(CTX) - 4)),
                min_size=1, max_size=12))
def test_prep_writes_every_record_exactly_once(rows):
    records = []
    for i, (theme, qid, start) in enumerate(rows):
        text = CTX[start : start + 4]
        answers = (Answer(text, CTX.index(text)),) if text.strip() else ()
        records.append(QARecord(f"{qid}-{i}", theme, CTX, "Which?", answers, not answers))
    files = theme_files(r.theme for r in records)
    assert len({f.casefold() for f in files.values()}) == len(files)
    assert all(0 < len(f.encode()) < 200 and "/" not in f and not f.startswith(".") for f in files.values())
    with tempfile.TemporaryDirectory() as tmp:
        splits = split_records(records, [], 0.3, seed=0)
        out = write_shards(splits, manifest_rows(splits, []), Path(tmp) / "prep", {})
        back = [r for split in ("train", "dev") if any((out / split).glob("*.json"))
                for r in load_source(out / split)]
        readlog.drain()
    assert Counter(r.id for r in back) == Counter(r.id for r in records)
    assert sorted(back, key=lambda r: r.id) == sorted(records, key=lambda r: r.id)


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(context=texts.filter(str.strip), question=texts.filter(str.strip), seed=st.integers(0, 2**16))
def test_featurize_then_postprocess_keeps_spans_inside_the_context(tokenizer, context, question, seed):
    record = QARecord("r", "t", context, question, is_impossible=True)
    features = featurize(tokenizer, [record], max_seq_length=64, doc_stride=16, with_labels=False)
    width = max(len(ids) for ids in features.encodings["input_ids"])
    rng = np.random.default_rng(seed)
    start, end = rng.normal(size=(2, len(features), width)) * 5
    for pred in postprocess([record], features, start, end, version_2=False):
        assert pred.id == "r"
        if pred.text:
            assert 0 <= pred.start < pred.end <= len(context)
            assert pred.text == context[pred.start : pred.end]
