"""`metaqa synth` end to end on real spaCy: DevRev CSV out (offsets exact, `metaqa prep` reads it
unchanged), stats, dropped reasons, determinism, streaming chunks, inputs, gold pairs, readers."""
import ast
import csv
import json

import pytest

from metaqa.config import PACKAGE_DIR, ConfigError
from metaqa.data.formats import read_devrev_csv, read_records
from metaqa.data.records import DataValidationError
from metaqa.stages import prep
from metaqa.stages import synth as synth_stage
from metaqa.tracking.run import run_stage
from tests.conftest import shared

SAMPLE = PACKAGE_DIR / "data" / "sample" / "sample_qa.csv"


@pytest.fixture
def synth(stage_cfg, tmp_path):
    """Run the stage with overrides; returns (metrics, run dir)."""
    def go(overrides=(), name="synth"):
        out = tmp_path / name
        cfg = stage_cfg("synth", ["progress=false", *overrides], out=out)
        return synth_stage.run(cfg), out
    return go


def raw_rows(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_default_run_on_the_embedded_sample(synth, stage_cfg, tmp_path):
    metrics, out = synth()
    rows = raw_rows(out / "synthetic.csv")
    assert len(rows) == metrics["rows"] > 100 and metrics["paragraphs"] == 40
    # every answer offset points at the answer text in the paragraph (checked on the raw file)
    for row in rows:
        texts, starts = ast.literal_eval(row["Answer_text"]), ast.literal_eval(row["Answer_start"])
        assert row["Answer_possible"] == str(bool(texts))
        for text, start in zip(texts, starts):
            assert row["Paragraph"][start : start + len(text)] == text
    result = read_devrev_csv(out / "synthetic.csv")
    assert result.repaired == 0 and len({r.id for r in result.records}) == len(rows)
    assert sum(r.is_impossible for r in result.records) == metrics["negatives"] == metrics["unanswerable"] > 0

    stats = json.loads((out / "synth_stats.json").read_text())
    assert set(stats["themes"]) == {r.theme for r in read_records(SAMPLE).records}
    total = stats["total"]
    assert total["candidates"] == sum(total["entity_types"].values()) == total["generated"]  # one variant
    assert total["generated"] - total["kept_question_filter"] == sum(
        v for k, v in total["dropped"].items() if k.startswith("question_"))
    dropped = [json.loads(line) for line in (out / "synth_dropped.jsonl").read_text().splitlines()]
    reasons = {}
    for d in dropped:
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    assert reasons == {k: v for k, v in total["dropped"].items()
                       if k.startswith(("question_", "negative_", "roundtrip_"))}

    # the output goes into `metaqa prep` unchanged
    cfg = stage_cfg("prep", ["data=devrev_csv", f"data.path={out / 'synthetic.csv'}",
                             f"data.prep_dir={tmp_path / 'prepped'}"], out=tmp_path / "prep")
    assert prep.run(cfg)["questions"] == len(rows)


def test_deterministic_and_independent_of_chunking(synth):
    _, a = synth(["seed=3"], "a")
    _, b = synth(["seed=3"], "b")
    assert (a / "synthetic.csv").read_bytes() == (b / "synthetic.csv").read_bytes()
    _, c = synth(["seed=4"], "c")
    assert (a / "synthetic.csv").read_bytes() != (c / "synthetic.csv").read_bytes()
    # without negatives (whose pools follow the input order), chunk size changes nothing
    _, d = synth(["negatives.per_paragraph=0", "batch_paragraphs=3"], "d")
    _, e = synth(["negatives.per_paragraph=0", "batch_paragraphs=64"], "e")
    assert (d / "synthetic.csv").read_bytes() == (e / "synthetic.csv").read_bytes()


def test_ner_limit_identity_variant_and_limit_paragraphs(synth):
    few, _ = synth(["ner_limit=1", "negatives.per_paragraph=0", "limit_paragraphs=10"], "few")
    many, out = synth(["ner_limit=null", "negatives.per_paragraph=0", "limit_paragraphs=10",
                       "synth.variants=[identity,noisy_cloze]"], "many")
    assert few["paragraphs"] == many["paragraphs"] == 10
    assert few["generated"] < many["generated"] and many["generated"] % 2 == 0
    questions = [r["Question"] for r in raw_rows(out / "synthetic.csv")]
    assert any(q.startswith(("Who ", "When ", "Where ", "How ", "What ")) for q in questions)


def test_use_qa_data_merges_gold_pairs(synth):
    metrics, out = synth([f"use_qa_data={SAMPLE}", "synth=none", "negatives.per_paragraph=0"])
    gold = read_records(SAMPLE).records
    merged = read_devrev_csv(out / "synthetic.csv").records
    assert metrics["generated"] == 0 and metrics["gold"] == len(merged)
    # every gold question of a paragraph is there with its own answers ...
    pairs = {(r.context, r.question): r for r in merged}
    for g in gold:
        m = pairs[(g.context, g.question)]
        assert m.is_impossible == g.is_impossible and m.answers == g.answers
    # ... plus answerable pairs of the same theme whose answer occurs in another paragraph
    assert len(merged) > len({(g.context, g.question) for g in gold})
    for m in merged:
        assert all(m.context[a.start : a.start + len(a.text)] == a.text for a in m.answers)


def test_roundtrip_filter_in_the_stage(synth, reader_dir, onnx_dir):
    common = [f"reader_dir={reader_dir}", "reader.max_seq_length=128", "reader.doc_stride=32",
              "limit_paragraphs=12"]
    keep, _ = synth([*common, "roundtrip.threshold=-inf"], "keep")
    assert 0 < keep["kept_roundtrip"] <= keep["kept_question_filter"]
    none, out = synth([*common, "roundtrip.threshold=inf", "negatives.per_paragraph=0"], "none")
    assert none["kept_roundtrip"] == 0 and none["rows"] == 0
    reasons = [json.loads(line)["reason"] for line in (out / "synth_dropped.jsonl").read_text().splitlines()]
    assert reasons.count("roundtrip_low_score") + reasons.count("roundtrip_no_overlap") == none["kept_question_filter"]
    assert read_devrev_csv(out / "synthetic.csv").records == []  # an empty but valid file
    onnx, _ = synth([*common, f"reader_dir={onnx_dir}", "roundtrip.threshold=-inf"], "onnx")
    assert onnx["kept_roundtrip"] == keep["kept_roundtrip"]  # same reader, same spans


def test_inputs_squad_subjqa_jsonl_text(synth, tmp_path):
    squad = tmp_path / "in.json"
    squad.write_text(json.dumps({"data": [{"title": "Space", "paragraphs": [
        {"context": "Yuri Gagarin orbited the Earth on 12 April 1961 aboard Vostok 1.", "qas": []},
        {"context": "Yuri Gagarin orbited the Earth on 12 April 1961 aboard Vostok 1.", "qas": []}]}]}))
    subj = tmp_path / "in.csv"
    subj.write_text("domain,question,review,human_ans_spans,human_ans_indices\n"
                    "electronics,Q?,I bought this camera from Amazon in June 2019 for $300. ANSWERNOTFOUND,"
                    "ANSWERNOTFOUND,\"(0, 1)\"\n")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"theme": "Music", "context": "Miles Davis recorded Kind of Blue in New York in 1959."}\n')
    text = tmp_path / "notes.txt"
    text.write_text("Ada Lovelace wrote the first program in London in 1843.\n\n\n"
                    "Charles Babbage designed the Analytical Engine in the 1830s in England.\n")
    for path, theme, n in ((squad, "Space", 1), (subj, "electronics", 1), (jsonl, "Music", 1), (text, "notes", 2)):
        metrics, out = synth([f"input={path}", "negatives.per_paragraph=0"], path.suffix[1:])
        records = read_devrev_csv(out / "synthetic.csv").records
        assert metrics["paragraphs"] == n and records and {r.theme for r in records} == {theme}
        assert not any(r.context.endswith("ANSWERNOTFOUND") for r in records)


def test_real_subjqa_reviews(synth):
    path = shared("subjqa/electronics/train.csv")
    metrics, out = synth([f"input={path}", "limit_paragraphs=8", "filters.paragraph.max_chars=null",
                          "filters.paragraph.max_words=null"], "subjqa")
    records = read_devrev_csv(out / "synthetic.csv").records
    assert metrics["paragraphs"] == 8 and records and {r.theme for r in records} == {"electronics"}
    assert all(not r.context.endswith("ANSWERNOTFOUND") for r in records)


def test_bad_input_and_config_errors(synth, stage_cfg, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Theme,Text\nT,Some paragraph here.\n")
    with pytest.raises(DataValidationError, match=r"bad.csv.*missing column.*Paragraph.*Fix"):
        synth([f"input={bad}"], "bad")
    assert not (tmp_path / "bad" / "synthetic.csv").exists()
    assert not list((tmp_path / "bad").glob(".synthetic.csv*"))  # no temp file left behind
    with pytest.raises(ConfigError, match="`input`"):
        synth([f"input={tmp_path / 'missing.csv'}"], "missing")
    with pytest.raises(ConfigError, match="synth.model"):
        synth(["synth=seq2seq"], "seq2seq")
    with pytest.raises(ConfigError, match="ner_limit"):
        synth(["ner_limit=-1"], "limit")
    cfg = stage_cfg("synth", [f"input={bad}", "progress=false"], out=tmp_path / "summary")
    with pytest.raises(DataValidationError):
        run_stage("synth", synth_stage.run, cfg)
    assert json.loads((tmp_path / "summary" / "summary.json").read_text())["status"] == "failed"
