"""Readers and writers at the edge (`metaqa.data.formats`): small hand-written files, then the
real shared data when it is there (skipped otherwise)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from metaqa.data.formats import (
    MAX_WARNINGS,
    read_devrev_csv,
    read_records,
    read_squad_json,
    read_subjqa_csv,
    write_devrev_csv,
    write_squad_json,
)
from metaqa.data.records import Answer, DataValidationError, QARecord

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"

DEVREV_HEADER = ["Unnamed: 0", "Theme", "Paragraph", "Question", "Answer_possible", "Answer_text", "Answer_start"]
CTX = 'The office, called "Cabinet Office", sits in London. Cabinet Office staff advise.'
START = CTX.index("Cabinet Office")  # 19


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def devrev(tmp_path: Path, rows: list[list[str]], header: list[str] = DEVREV_HEADER) -> Path:
    return write_csv(tmp_path / "dev.csv", header, rows)


def good_rows() -> list[list[str]]:
    return [
        ["7", "Prime_minister", CTX, "What is it called, in the UK?", "True", "['Cabinet Office']", f"[{START}]"],
        ["9", "Prime_minister", CTX, "Where is the \"office\"?", "false", "[]", "[]"],
        ["12", "Annelid", "Worms, it's said, have segments.", "What do worms have?", "1", "['segments']", "[23]"],
    ]


# --------------------------------------------------------------------------- DevRev CSV
def test_devrev_good_file_with_commas_and_quotes(tmp_path):
    res = read_devrev_csv(devrev(tmp_path, good_rows()))
    assert res.repaired == 0 and res.warnings == []
    a, b, c = res.records
    assert a == QARecord("7", "Prime_minister", CTX, "What is it called, in the UK?",
                         (Answer("Cabinet Office", START),), False)
    assert b.is_impossible and b.answers == () and b.question == 'Where is the "office"?'
    assert c.id == "12" and c.answers == (Answer("segments", 23),)
    assert res.path == str(tmp_path / "dev.csv")


def test_devrev_ids_fall_back_to_stem_row_when_not_unique(tmp_path):
    rows = good_rows()
    rows[1][0] = "7"  # duplicate id
    res = read_devrev_csv(devrev(tmp_path, rows))
    assert [r.id for r in res.records] == ["dev-1", "dev-2", "dev-3"]
    # and without the id column at all
    res = read_devrev_csv(devrev(tmp_path, [r[1:] for r in rows], DEVREV_HEADER[1:]))
    assert [r.id for r in res.records] == ["dev-1", "dev-2", "dev-3"]


def test_devrev_off_start_is_repaired_to_nearest_occurrence(tmp_path):
    rows = good_rows()
    second = CTX.index("Cabinet Office", START + 1)
    rows[0][6] = f"[{second - 3}]"  # 3 chars before the *second* occurrence
    res = read_devrev_csv(devrev(tmp_path, rows))
    assert res.repaired == 1
    assert res.records[0].answers == (Answer("Cabinet Office", second),)
    assert len(res.warnings) == 1 and "row 1" in res.warnings[0]


def test_devrev_warnings_are_bounded(tmp_path):
    rows = [[str(i), "T", CTX, f"q{i}?", "True", "['Cabinet Office']", "[0]"] for i in range(MAX_WARNINGS + 5)]
    res = read_devrev_csv(devrev(tmp_path, rows))
    assert res.repaired == MAX_WARNINGS + 5
    assert len(res.warnings) == MAX_WARNINGS + 1 and "5 more" in res.warnings[-1]


def test_devrev_answer_absent_from_context_is_an_error(tmp_path):
    rows = good_rows()
    rows[2][5] = "['feathers']"
    with pytest.raises(DataValidationError) as e:
        read_devrev_csv(devrev(tmp_path, rows))
    msg = str(e.value)
    assert "row 3" in msg and "line 4" in msg and "Answer_text" in msg and "feathers" in msg
    assert "Fix:" in msg and e.value.row == 3


def test_devrev_missing_column_is_named(tmp_path):
    header = [h for h in DEVREV_HEADER if h != "Answer_start"]
    path = devrev(tmp_path, [r[:-1] for r in good_rows()], header)
    with pytest.raises(DataValidationError, match="Answer_start") as e:
        read_devrev_csv(path)
    assert "columns found" in str(e.value) and "Paragraph" in str(e.value)


@pytest.mark.parametrize("bad", ["['unterminated", "__import__('os').system('echo pwned')", "'Cabinet Office'",
                                 "['a'] + ['b']", "[1]"])
def test_devrev_malformed_list_is_an_error_not_evaluated(tmp_path, bad):
    rows = good_rows()
    rows[0][5] = bad
    with pytest.raises(DataValidationError, match=r"row 1 .*Answer_text.*Fix: write it as a Python literal"):
        read_devrev_csv(devrev(tmp_path, rows))


def test_devrev_bool_in_start_list_is_rejected(tmp_path):
    rows = good_rows()
    rows[0][6] = "[True]"  # bool is an int subclass; must not sneak in as offset 1
    with pytest.raises(DataValidationError, match="Answer_start"):
        read_devrev_csv(devrev(tmp_path, rows))


def test_devrev_latin1_bytes_are_an_error_naming_utf8(tmp_path):
    path = devrev(tmp_path, good_rows())
    data = path.read_bytes().replace(b"Worms", "Würms".encode("latin-1"))
    path.write_bytes(data)
    with pytest.raises(DataValidationError) as e:
        read_devrev_csv(path)
    msg = str(e.value)
    assert "UTF-8" in msg and "iconv" in msg and "line 4" in msg
    offset = data.index("ü".encode("latin-1"))
    assert f"byte offset {offset}" in msg


def test_devrev_utf8_bom_is_accepted(tmp_path):
    path = devrev(tmp_path, good_rows())
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert [r.id for r in read_devrev_csv(path).records] == ["7", "9", "12"]


@pytest.mark.parametrize(
    "col, value, pattern",
    [
        (4, "False", "unanswerable but answers are given"),   # Answer_possible False + answers
        (4, "maybe", "not a boolean"),
        (5, "[]", "marked answerable but `Answer_text` is empty"),
        (2, "   ", r"empty context \(`Paragraph`\)"),
        (3, "", r"empty question \(`Question`\)"),
    ],
)
def test_devrev_row_errors(tmp_path, col, value, pattern):
    rows = good_rows()
    rows[0][col] = value
    if col == 5:
        rows[0][6] = "[]"
    with pytest.raises(DataValidationError, match=pattern) as e:
        read_devrev_csv(devrev(tmp_path, rows))
    assert "row 1" in str(e.value)


def test_devrev_whitespace_answer_and_length_mismatch(tmp_path):
    rows = good_rows()
    rows[0][5], rows[0][6] = "['  ']", "[0]"
    with pytest.raises(DataValidationError, match="empty or whitespace"):
        read_devrev_csv(devrev(tmp_path, rows))
    rows[0][5], rows[0][6] = "['Cabinet Office']", f"[{START}, 3]"
    with pytest.raises(DataValidationError, match="1 answers but `Answer_start` has 2"):
        read_devrev_csv(devrev(tmp_path, rows))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_records(tmp_path / "nope.csv")


def test_devrev_round_trip(tmp_path):
    records = read_devrev_csv(devrev(tmp_path, good_rows())).records
    out = tmp_path / "sub" / "out.csv"
    write_devrev_csv(records, out)
    assert read_devrev_csv(out).records == records
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temp file left behind
    text = out.read_text(encoding="utf-8")
    assert "['Cabinet Office']" in text and f"[{START}]" in text


# --------------------------------------------------------------------------- SQuAD JSON
def squad_records(v2: bool) -> list[QARecord]:
    recs = [
        QARecord("q1", "Oil", "The crisis began in October 1973.", "When?",
                 (Answer("October 1973", 20), Answer("1973", 28), Answer("October 1973", 20))),
        QARecord("q2", "Oil", "The crisis began in October 1973.", "What began?", (Answer("crisis", 4),)),
        QARecord("q3", "Oil", "Prices rose to $12.", "Price?", (Answer("$12", 15),)),
        QARecord("q4", "Ünïcode", "Ça va, “quotes”.", "Quoi?", (Answer("“quotes”", 7),)),
    ]
    if v2:
        recs.insert(2, QARecord("q5", "Oil", "The crisis began in October 1973.", "Who?", (), True))
    return recs


@pytest.mark.parametrize("version", ["v1.1", "v2.0"])
def test_squad_round_trip(tmp_path, version):
    recs = squad_records(v2=version == "v2.0")
    path = tmp_path / "squad.json"
    write_squad_json(recs, path, version=version)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["version"] == version
    assert [a["title"] for a in doc["data"]] == ["Oil", "Ünïcode"]
    assert len(doc["data"][0]["paragraphs"]) == 2  # grouped by identical context
    assert ("is_impossible" in doc["data"][0]["paragraphs"][0]["qas"][0]) == (version == "v2.0")
    res = read_squad_json(path)
    assert res.records == recs and res.repaired == 0
    assert list(tmp_path.iterdir()) == [path]


def test_squad_v1_refuses_unanswerables(tmp_path):
    with pytest.raises(ValueError, match="v2.0"):
        write_squad_json(squad_records(v2=True), tmp_path / "x.json", version="v1.1")
    assert not (tmp_path / "x.json").exists()


def test_squad_v2_reader_ignores_plausible_answers_and_repairs(tmp_path):
    doc = {"version": "v2.0", "data": [{"title": "T", "paragraphs": [{"context": "a b a b", "qas": [
        {"id": "x", "question": "q?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "b", "answer_start": 2}]},
        {"id": "y", "question": "q?", "answers": [{"text": "b", "answer_start": 5}]},
    ]}]}]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    res = read_squad_json(path)
    assert res.records[0].is_impossible and res.records[0].answers == ()
    assert res.records[1].answers == (Answer("b", 6),) and res.repaired == 1


def test_squad_missing_key_and_bad_answer(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"qas": []}]}]}), encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"missing key\(s\) \['context'\]; keys found: \['qas'\]"):
        read_squad_json(path)
    doc = {"data": [{"title": "T", "paragraphs": [{"context": "abc", "qas": [
        {"id": "z", "question": "q?", "answers": [{"text": "zzz", "answer_start": 0}]}]}]}]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(DataValidationError, match=r"row 1 \[question id='z'\].*'zzz'"):
        read_squad_json(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataValidationError, match="invalid JSON at line 1"):
        read_squad_json(path)


# --------------------------------------------------------------------------- SubjQA CSV
SUBJQA_HEADER = ["item_id", "domain", "question", "review", "human_ans_spans", "human_ans_indices", "q_review_id"]
REVIEW = "Great pasta. It wasn't cheap, but worth it."


def subjqa_rows() -> list[list[str]]:
    marker = REVIEW + " ANSWERNOTFOUND"
    return [
        ["i1", "restaurants", "How is the pasta?", marker, "Great pasta", "(0, 11)", "a"],
        ["i1", "restaurants", "Is it cheap?", marker, "ANSWERNOTFOUND", f"({len(REVIEW) + 1}, {len(marker)})", "b"],
        # SubjQA's spans are tokenised copies: "was n't cheap ," is not in the review
        ["i1", "restaurants", "Price?", marker, "was n't cheap ,", "(16, 29)", "c"],
    ]


def test_subjqa_marker_stripped_and_offsets_right(tmp_path):
    path = write_csv(tmp_path / "test.csv", SUBJQA_HEADER, subjqa_rows())
    res = read_subjqa_csv(path)
    a, b, c = res.records
    assert a.context == b.context == REVIEW  # trailing " ANSWERNOTFOUND" gone
    assert a == QARecord("a", "restaurants", REVIEW, "How is the pasta?", (Answer("Great pasta", 0),))
    assert b.is_impossible and b.answers == ()
    assert c.answers == (Answer("wasn't cheap,", 16),) and res.text_repaired == 1
    for r in res.records:
        assert all(r.context[x.start : x.start + len(x.text)] == x.text for x in r.answers)


def test_subjqa_duplicate_ids_fall_back_and_bad_indices(tmp_path):
    rows = subjqa_rows()
    rows[1][6] = "a"
    res = read_subjqa_csv(write_csv(tmp_path / "test.csv", SUBJQA_HEADER, rows))
    assert [r.id for r in res.records] == ["restaurants-test-1", "restaurants-test-2", "restaurants-test-3"]
    rows[0][5] = "(0, 11, 12)"
    with pytest.raises(DataValidationError, match="human_ans_indices.*2 items"):
        read_subjqa_csv(write_csv(tmp_path / "test.csv", SUBJQA_HEADER, rows))


# --------------------------------------------------------------------------- dispatch
def test_auto_detection(tmp_path):
    d = read_records(devrev(tmp_path, good_rows()))
    s = read_records(write_csv(tmp_path / "subj.csv", SUBJQA_HEADER, subjqa_rows()))
    write_squad_json(squad_records(v2=True), tmp_path / "sq.json")
    q = read_records(tmp_path / "sq.json")
    assert d.records[0].id == "7" and s.records[0].theme == "restaurants" and q.records[0].id == "q1"
    # an explicit format wins over detection
    assert read_records(tmp_path / "dev.csv", fmt="devrev_csv").records == d.records
    with pytest.raises(ValueError, match="unknown format"):
        read_records(tmp_path / "dev.csv", fmt="parquet")
    (tmp_path / "x.txt").write_text("hi", encoding="utf-8")
    with pytest.raises(DataValidationError, match="fmt="):
        read_records(tmp_path / "x.txt")


# --------------------------------------------------------------------------- real shared data
def shared(rel: str) -> Path:
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


def assert_offsets(records: list[QARecord]) -> None:
    for r in records:
        for a in r.answers:
            assert r.context[a.start : a.start + len(a.text)] == a.text, r.id


def test_real_devrev_sample():
    res = read_records(shared("devrev_sample/df_sample.csv"))
    assert len(res.records) == 1000
    assert sum(not r.is_impossible for r in res.records) == 687
    assert res.repaired == 0
    assert len({r.id for r in res.records}) == 1000  # `Unnamed: 0` repeats: stem-row ids
    assert_offsets(res.records)


def test_real_squad_dev():
    v1 = read_records(shared("squad/dev-v1.1.json"))
    assert len(v1.records) == 10_570 and not any(r.is_impossible for r in v1.records)
    v2 = read_records(shared("squad/dev-v2.0.json"))
    assert len(v2.records) == 11_873
    assert sum(r.is_impossible for r in v2.records) == 5_945
    assert max(len(r.answers) for r in v1.records) > 1  # every gold answer kept
    assert_offsets(v1.records)
    assert_offsets(v2.records)


def test_real_subjqa_test_file():
    res = read_records(shared("subjqa/books/test.csv"))
    assert len(res.records) == 692
    assert sum(not r.is_impossible for r in res.records) == 241
    assert not any(r.context.endswith("ANSWERNOTFOUND") for r in res.records)
    assert_offsets(res.records)
