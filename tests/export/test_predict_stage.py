"""`metaqa predict` on the fp32 export: one question, JSONL files, labelled files, bad input."""
import json
import os
import subprocess
import sys

import pytest

from metaqa.config import ConfigError
from metaqa.data.records import DataValidationError
from metaqa.inference import OnnxPredictor
from metaqa.stages import predict
from tests.export.conftest import WINDOW, reader_cfg

WINDOW_OVERRIDES = [f"reader.max_seq_length={WINDOW['max_seq_length']}", f"reader.doc_stride={WINDOW['doc_stride']}"]
KEYS = ["id", "answer", "score", "start", "end", "null_score"]


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_single_question_from_the_command_line_grammar(stage_cfg, fp32_dir, tmp_path, capsys):
    cfg = stage_cfg("predict", [f"model_dir={fp32_dir}", "question='Who wrote the first program, and where?'",
                                "context='Ada Lovelace wrote it in London: the first program.'", *WINDOW_OVERRIDES])
    metrics = predict.run(cfg)
    assert metrics["questions"] == 1
    rows = lines(tmp_path / "predict" / "predictions.jsonl")
    assert len(rows) == 1 and list(rows[0]) == KEYS and rows[0]["id"] == "q0"
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == rows[0]
    same = OnnxPredictor(fp32_dir, reader=reader_cfg()).answer("Who wrote the first program, and where?",
                                                    "Ada Lovelace wrote it in London: the first program.")
    assert rows[0]["answer"] == same.text


def test_jsonl_input_with_and_without_ids_and_non_ascii(stage_cfg, fp32_dir, tmp_path):
    path = tmp_path / "questions.jsonl"
    items = [{"id": "a", "question": "Wer schrieb es?", "context": "Jürg aus Zürich schrieb „Café“."},
             {"question": "Who?", "context": "Ada wrote it."}, {"question": "東京は？", "context": "東京は日本の首都です。"}]
    path.write_text("\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n\n", encoding="utf-8")
    metrics = predict.run(stage_cfg("predict", [f"model_dir={fp32_dir}", f"input={path}", *WINDOW_OVERRIDES]))
    assert metrics["questions"] == 3 and "f1" not in metrics
    rows = lines(tmp_path / "predict" / "predictions.jsonl")
    assert [r["id"] for r in rows] == ["a", "line2", "line3"]
    for row, item in zip(rows, items):
        if row["answer"]:
            assert item["context"][row["start"] : row["end"]] == row["answer"]
        else:
            assert row["start"] is None and row["end"] is None


def test_labelled_file_is_answered_and_scored(stage_cfg, fp32_dir, self_gold, tmp_path):
    out = tmp_path / "p.jsonl"
    metrics = predict.run(stage_cfg("predict", [f"model_dir={fp32_dir}", f"input={self_gold}", "limit=5",
                                                f"output={out}", *WINDOW_OVERRIDES]))
    assert metrics["questions"] == 5 and metrics["f1"] == pytest.approx(100.0)  # gold = the model's own answers
    assert len(lines(out)) == 5


def test_bad_input_is_named(stage_cfg, fp32_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Who?", "context": "Ada."}\n{"question": "", "context": "Ada."}\n')
    with pytest.raises(DataValidationError, match="bad.jsonl, row 2: question is empty"):
        predict.run(stage_cfg("predict", [f"model_dir={fp32_dir}", f"input={bad}"]))
    bad.write_text("not json\n")
    with pytest.raises(DataValidationError, match="row 1: not valid JSON"):
        predict.run(stage_cfg("predict", [f"model_dir={fp32_dir}", f"input={bad}"]))
    with pytest.raises(ConfigError, match="nothing to answer"):
        predict.run(stage_cfg("predict", [f"model_dir={fp32_dir}"]))
    with pytest.raises(ConfigError, match="config `context`"):
        predict.run(stage_cfg("predict", [f"model_dir={fp32_dir}", "question=Who"]))
    with pytest.raises(ConfigError, match="either input"):
        predict.run(stage_cfg("predict", [f"model_dir={fp32_dir}", f"input={bad}", "question=Who"]))
    with pytest.raises(ConfigError, match="config `model_dir`.*metaqa export"):
        predict.run(stage_cfg("predict", [f"model_dir={tmp_path}", "question=Who", "context=Ada"]))
    assert not (tmp_path / "predict" / "predictions.jsonl").exists()


def test_cli_runs_the_stage(fp32_dir, tmp_path):
    """`python -m metaqa.stages.predict` (the Hydra app the `metaqa predict` entry will call)."""
    env = {**os.environ, "WANDB_MODE": "disabled"}
    out = subprocess.run(
        [sys.executable, "-c", "from metaqa.stages.predict import main; main()", f"model_dir={fp32_dir}",
         "question='Who wrote it?'", "context='Ada Lovelace wrote it.'", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(row) == KEYS
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "ok"
