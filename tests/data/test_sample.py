"""The embedded sample dataset (metaqa/data/sample/sample_qa.csv) is well-formed DevRev CSV."""
from __future__ import annotations

import ast
import csv
from collections import Counter, defaultdict
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "metaqa/data/sample/sample_qa.csv"
HEADER = ["Theme", "Paragraph", "Question", "Answer_possible", "Answer_text", "Answer_start"]


@pytest.fixture(scope="module")
def table() -> tuple[list[str], list[dict[str, str]]]:
    with SAMPLE.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def test_header(table):
    header, rows = table
    assert header == HEADER
    assert rows
    for row in rows:
        assert None not in row, "row has more fields than the header"
        assert all(row[col] is not None for col in HEADER), "row has fewer fields than the header"


def test_file_is_small():
    assert SAMPLE.stat().st_size < 150 * 1024


def test_themes_and_paragraphs(table):
    _, rows = table
    paragraphs: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        assert row["Theme"].replace("_", "").isalpha(), row["Theme"]
        paragraphs[row["Theme"]].add(row["Paragraph"])
    assert len(paragraphs) >= 6
    for theme, paras in paragraphs.items():
        assert len(paras) >= 4, f"{theme} has only {len(paras)} paragraphs"


def test_questions_per_paragraph(table):
    _, rows = table
    total: Counter[str] = Counter()
    unanswerable: Counter[str] = Counter()
    for row in rows:
        total[row["Paragraph"]] += 1
        if row["Answer_possible"] == "False":
            unanswerable[row["Paragraph"]] += 1
    for para, n in total.items():
        assert n >= 5, f"only {n} questions for: {para[:60]}"
        assert unanswerable[para] >= 1, f"no unanswerable question for: {para[:60]}"


def test_answers_point_into_paragraph(table):
    _, rows = table
    for row in rows:
        assert row["Answer_possible"] in {"True", "False"}
        texts = ast.literal_eval(row["Answer_text"])
        starts = ast.literal_eval(row["Answer_start"])
        assert isinstance(texts, list) and isinstance(starts, list)
        assert len(texts) == len(starts)
        para = row["Paragraph"]
        for text, start in zip(texts, starts):
            assert isinstance(text, str) and text
            assert isinstance(start, int) and start >= 0
            assert para[start : start + len(text)] == text, (row["Question"], text, start)
        if row["Answer_possible"] == "True":
            assert len(texts) == 1, row["Question"]
        else:
            assert texts == [] and starts == [], row["Question"]


def test_questions_are_unique(table):
    _, rows = table
    questions = [row["Question"] for row in rows]
    assert len(questions) == len(set(questions))
