"""Issue 12, "nothing lost, nothing silently wrong": every theme gets its own shard file, every
question read is written once, duplicate ids are made unique (or refused), read warnings reach
the stage's log and summary.json, empty files stop clearly, real SQuAD-style files are read."""
from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from metaqa.data import readlog
from metaqa.data.formats import FORMATS, read_records
from metaqa.data.records import Answer, DataValidationError, QARecord
from metaqa.data.shards import load_source, manifest_rows, split_records, write_shards
from metaqa.export.io import read_questions
from metaqa.stages import prep
from metaqa.synth.generate import iter_paragraphs
from metaqa.tracking.run import run_stage

CTX = "Ada Lovelace wrote the first program in 1843 in London."


@pytest.fixture(autouse=True)
def fresh_notes():
    readlog.drain()  # notes of earlier tests are not ours
    yield
    readlog.drain()


def record(i: int, theme: str) -> QARecord:
    return QARecord(f"q{i}", theme, CTX, f"Question {i}?", (Answer("1843", CTX.index("1843")),))


def squad_file(path: Path, qas: list[dict], **article) -> Path:
    doc = {"data": [{"title": "T", **article, "paragraphs": [{"context": CTX, "qas": qas}]}]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def qa(qid: str, start: int = CTX.index("1843")) -> dict:
    return {"id": qid, "question": f"When ({qid})?", "answers": [{"text": "1843", "answer_start": start}]}


def no_tmp_left(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# --------------------------------------------------------------------------- 1. themes → files
THEMES = ["C++", "C", "a b", "a_b", "日本の歴史", "中国", "한국어", "Ελληνικά",
          "Straße", "Jazz", "jazz", "ｆｕｌｌ"]


def test_every_theme_gets_its_own_file_and_every_question_is_written(tmp_path):
    records = [record(2 * t + k, theme) for t, theme in enumerate(THEMES) for k in range(2)]
    splits = split_records(records, [], dev_fraction=0.0, seed=0)
    manifest = manifest_rows(splits, [])
    out = write_shards(splits, manifest, tmp_path / "prep", {})
    files = sorted(p.name for p in (out / "train").iterdir())
    assert len(files) == len(THEMES) == len({f.casefold() for f in files})  # safe on case-blind disks too
    back = load_source(out / "train")
    assert sorted(r.id for r in back) == sorted(r.id for r in records)  # 24 of 24
    recorded = json.loads((out / "manifest.json").read_text())["themes"]
    by_theme = {row["theme"]: row["file"] for row in recorded}
    assert set(by_theme) == set(THEMES) and sorted(by_theme.values()) == files
    for theme, name in by_theme.items():  # each file holds its theme and nothing else
        assert {r.theme for r in load_source(out / "train" / name)} == {theme}
    assert "日本の歴史.json" in files and "Ελληνικά.json" in files  # letters of any script kept


def test_a_theme_name_over_255_bytes_is_written_and_nothing_is_left_behind(tmp_path):
    long = "Geschichte der " * 30 + "ä" * 100  # ~650 bytes in UTF-8
    records = [record(0, long), record(1, long + "!")]  # the two differ only past any cap
    splits = split_records(records, [], 0.0, 0)
    out = write_shards(splits, manifest_rows(splits, []), tmp_path / "prep", {})
    names = [p.name for p in (out / "train").iterdir()]
    assert len(names) == 2 and all(len(n.encode()) < 200 for n in names)
    assert sorted(r.theme for r in load_source(out / "train")) == sorted([long, long + "!"])
    assert no_tmp_left(tmp_path)


def test_shards_that_do_not_read_back_as_written_are_never_swapped_in(tmp_path):
    records = [record(0, "A"), record(1, "B")]
    splits = split_records(records, [], 0.0, 0)
    manifest = [{**row, "file": "same.json"} for row in manifest_rows(splits, [])]  # a hand-made clash
    with pytest.raises(ValueError, match="read back 1 of 2"):
        write_shards(splits, manifest, tmp_path / "prep", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no prep/, no shards.tmp-*


# --------------------------------------------------------------------------- 2. duplicate ids
def test_duplicate_squad_ids_are_made_unique_with_a_warning(tmp_path):
    path = squad_file(tmp_path / "dup.json", [qa("a"), qa("a"), qa("b"), qa("b"), qa("a#2")])
    res = read_records(path)
    assert [r.id for r in res.records] == ["a", "a#3", "b", "b#2", "a#2"]  # never meets a real id
    assert any("duplicate" in w and "'a'" in w and "rows 1, 2" in w for w in res.warnings)
    assert any("duplicate" in n for n in readlog.drain())
    assert len({r.id for r in load_source(path)}) == 5  # eval scores 5 questions, not 2


def test_duplicate_ids_error_names_both_rows(tmp_path):
    path = squad_file(tmp_path / "dup.json", [qa("x"), qa("y"), qa("x")])
    with pytest.raises(DataValidationError, match=r"dup.json.*'x'.*rows 1 and 3.*duplicate_ids"):
        read_records(path, duplicate_ids="error")
    with pytest.raises(DataValidationError, match="rows 1 and 3"):
        load_source(path, duplicate_ids="error")
    with pytest.raises(ValueError, match="duplicate_ids"):
        read_records(path, duplicate_ids="ignore")


def test_duplicate_ids_in_a_questions_jsonl_are_made_unique(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"id": "same", "question": f"Q{i}?", "context": CTX}) + "\n"
                            for i in range(3)), encoding="utf-8")
    records, labelled = read_questions(path)
    assert not labelled and [r.id for r in records] == ["same", "same#2", "same#3"]
    assert any("lines 1, 2, 3" in n for n in readlog.drain())


def test_prep_splits_duplicate_ids_like_distinct_questions(stage_cfg, tmp_path):
    path = squad_file(tmp_path / "dup.json", [qa("d") for _ in range(10)])
    cfg = stage_cfg("prep", [f"data.path={path}", "data.format=auto", f"data.prep_dir={tmp_path / 'out'}",
                             "data.heldout_themes=[]", "data.dev_fraction=0.2"])
    metrics = prep.run(cfg)
    assert (metrics["n_train"], metrics["n_dev"]) == (8, 2)  # not 10 / 0: one id stood for all ten


def test_read_warnings_and_repairs_reach_the_log_and_summary(stage_cfg, tmp_path, caplog):
    path = squad_file(tmp_path / "data.json", [qa("a", start=3), qa("a")])  # a wrong start + a repeat
    cfg = stage_cfg("eval", ["model_dir=/nowhere", f"source={path}"])
    with caplog.at_level(logging.WARNING):
        run_stage("eval", lambda c: {"f1": 0.0, "n": len(load_source(c.source, c.format))}, cfg)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    notes = summary["read_warnings"]
    assert summary["read_warnings_total"] == len(notes) >= 2
    assert any("repaired" in n and "data.json" in n for n in notes)
    assert any("duplicate" in n for n in notes)
    assert all(n in caplog.text for n in notes)


def test_prep_summary_has_its_read_warnings(stage_cfg, tmp_path):
    path = squad_file(tmp_path / "data.json", [qa("a", start=3), qa("b")])
    cfg = stage_cfg("prep", [f"data.path={path}", "data.format=auto", f"data.prep_dir={tmp_path / 'out'}",
                             "data.heldout_themes=[]"])
    run_stage("prep", prep.run, cfg)
    summary = json.loads((tmp_path / "prep" / "summary.json").read_text())
    assert summary["metrics"]["repaired"] == 1 and any("repaired" in n for n in summary["read_warnings"])


# --------------------------------------------------------------------------- 3. empty files
HEADER = "Theme,Paragraph,Question,Answer_possible,Answer_text,Answer_start\n"


@pytest.mark.parametrize("name, text", [
    ("only_header.csv", HEADER),
    ("subj.csv", "domain,question,review,human_ans_spans,human_ans_indices\n"),
    ("no_articles.json", '{"data": []}'),
    ("no_questions.json", json.dumps({"data": [{"title": "T", "paragraphs": [{"context": CTX, "qas": []}]}]})),
    ("blank.jsonl", "\n\n"),
])
def test_a_file_without_questions_stops_with_its_name(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataValidationError, match=rf"{name}.*holds no questions.*Fix:"):
        load_source(path)


# --------------------------------------------------------------------------- 4. liberal SQuAD, MRQA
def test_articles_without_title_take_their_theme_from_document_id_or_position(tmp_path):
    doc = {"data": [
        {"paragraphs": [{"context": CTX, "document_id": "doc-7", "qas": [qa("a")]},
                        {"context": CTX, "document_id": "doc-8", "qas": [qa("b")]}]},
        {"paragraphs": [{"context": CTX, "qas": [{"id": "c", "question": "Who?", "answers": []}]}]},
    ]}
    path = tmp_path / "release.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    res = read_records(path)
    assert [(r.id, r.theme) for r in res.records] == [("a", "doc-7"), ("b", "doc-8"), ("c", "release:2")]
    assert res.records[2].is_impossible  # no is_impossible and no answers: unanswerable
    assert any("title" in w for w in res.warnings)


def mrqa_lines() -> list[dict]:
    return [
        {"header": {"dataset": "SQuAD", "split": "dev"}},
        {"id": "ctx1", "context": CTX, "qas": [
            {"qid": "m1", "question": "Who wrote it?", "answers": ["Ada Lovelace"],
             "detected_answers": [{"text": "Ada Lovelace", "char_spans": [[0, 11]], "token_spans": [[0, 1]]}]},
            {"qid": "m2", "question": "When?", "answers": ["1843"],
             "detected_answers": [{"text": "1843", "char_spans": [[40, 43]]}]},
        ]},
        {"context": "Bees make honey.", "qas": [{"qid": "m3", "question": "What?", "answers": ["honey"],
                                               "detected_answers": [{"text": "honey", "char_spans": [[10, 14]]}]}]},
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_mrqa_jsonl_is_read_with_inclusive_span_ends(tmp_path):
    path = write_jsonl(tmp_path / "SQuAD-dev.jsonl", mrqa_lines())
    assert "mrqa_jsonl" in FORMATS
    res = read_records(path)
    assert res.records == read_records(path, "mrqa_jsonl").records
    a, b, c = res.records
    assert a.answers == (Answer("Ada Lovelace", 0),) and b.answers == (Answer("1843", 40),)
    assert c.answers == (Answer("honey", 10),) and a.theme == "SQuAD" and [a.id, b.id, c.id] == ["m1", "m2", "m3"]
    assert res.repaired == 0
    records, labelled = read_questions(path)  # `metaqa predict input=` tells it from a questions JSONL
    assert labelled and records == res.records
    assert [p.theme for p in iter_paragraphs(path)] == ["SQuAD", "SQuAD"]  # and `metaqa synth input=`
    gz = tmp_path / "SQuAD-dev.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert read_records(gz).records == res.records  # MRQA releases are gzipped


def test_questions_jsonl_still_reads_for_predict_but_not_as_labelled_data(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "Who?", "context": CTX}])
    records, labelled = read_questions(path)
    assert not labelled and records[0].id == "line1"
    with pytest.raises(DataValidationError, match="q.jsonl.*no answers.*mrqa"):
        read_records(path)


def test_mrqa_line_without_qas_is_named(tmp_path):
    rows = mrqa_lines()
    del rows[2]["qas"]
    with pytest.raises(DataValidationError, match=r"line 3.*qas"):
        read_records(write_jsonl(tmp_path / "m.jsonl", rows))


def test_ids_repeated_across_the_shards_of_a_dir_are_made_unique(tmp_path):
    shards = tmp_path / "train"
    shards.mkdir()
    squad_file(shards / "A.json", [qa("same")])
    squad_file(shards / "B.json", [qa("same")])
    assert [r.id for r in load_source(shards)] == ["same", "same#2"]
    assert any("A.json row 1, B.json row 1" in n for n in readlog.drain())
    with pytest.raises(DataValidationError, match="A.json row 1 and B.json row 1"):
        load_source(shards, duplicate_ids="error")
