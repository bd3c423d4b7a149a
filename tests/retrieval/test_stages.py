"""`metaqa pipeline` and `metaqa pipeline-eval` on the embedded sample with a tiny ONNX reader."""
import json

import pytest

from metaqa.config import ConfigError
from metaqa.stages import pipeline, pipeline_eval
from tests.retrieval.conftest import WINDOW

WINDOW_OVERRIDES = [f"reader.max_seq_length={WINDOW['max_seq_length']}", f"reader.doc_stride={WINDOW['doc_stride']}", "threads=1"]


def test_single_question_builds_the_index_once(stage_cfg, tiny_onnx_dir, tmp_path, capsys):
    args = [f"model_dir={tiny_onnx_dir}", "theme=Beekeeping", "question='What do bees store honey in?'",
            *WINDOW_OVERRIDES]
    metrics = pipeline.run(stage_cfg("pipeline", args))
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["questions"] == 1 and row["theme"] == "Beekeeping" and row["read"] == 3
    index_dir = tmp_path / "outputs" / "indexes" / "sample" / "bm25"
    assert (index_dir / "index.json").exists()
    stamp = (index_dir / "index.json").stat().st_mtime_ns
    pipeline.run(stage_cfg("pipeline", args, out=tmp_path / "again"))
    assert (index_dir / "index.json").stat().st_mtime_ns == stamp  # loaded, not rebuilt
    with pytest.raises(KeyError, match="Beekeeping"):
        pipeline.run(stage_cfg("pipeline", [*args[:1], "theme=Knitting", *args[2:]], out=tmp_path / "bad"))


def test_eval_calibrates_then_scores_disjoint_questions(stage_cfg, tiny_onnx_dir, tmp_path):
    out = tmp_path / "eval"
    cfg = stage_cfg("pipeline_eval", [f"model_dir={tiny_onnx_dir}", "sample=30", "calibration.questions=20",
                                      "warmup=2", *WINDOW_OVERRIDES], out=out)
    metrics = pipeline_eval.run(cfg)
    assert metrics["questions"] == 30 and metrics["calibration_questions"] == 20
    for key in ("para_acc", "f1", "theme_score", "recall_at_1", "recall_at_5"):
        assert 0.0 <= metrics[key] <= (2.0 if key == "theme_score" else 1.0)
    assert metrics["recall_at_1"] <= metrics["recall_at_5"]
    assert metrics["latency_ms_p50"] <= metrics["latency_ms_p95"]
    assert metrics["latency_ms_p50_ci_low"] <= metrics["latency_ms_p50"] <= metrics["latency_ms_p50_ci_high"]
    calibration = json.loads((out / "calibration.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert not set(calibration["questions"]) & {r["id"] for r in rows}
    assert calibration["thresholds"]["confidence"] in ("margin", "span")
    metrics_file = json.loads((out / "metrics.json").read_text())
    assert sum(t["questions"] for t in metrics_file["per_theme"].values()) == 30
    # the calibration file drives the single-question stage too
    pipeline.run(stage_cfg("pipeline", [f"model_dir={tiny_onnx_dir}", "theme=Jazz", "question='Who played?'",
                                        f"calibration={out / 'calibration.json'}", *WINDOW_OVERRIDES],
                           out=tmp_path / "single"))


def test_bad_config_is_named(stage_cfg, tiny_onnx_dir, tmp_path):
    with pytest.raises(ConfigError, match="calibration.questions"):
        pipeline_eval.run(stage_cfg("pipeline_eval", [f"model_dir={tiny_onnx_dir}", "calibration.questions=100000"]))
    with pytest.raises(ConfigError, match="model_dir"):
        pipeline.run(stage_cfg("pipeline", [f"model_dir={tmp_path / 'none'}", "theme=Jazz", "question=x"]))
    with pytest.raises(ConfigError, match="question"):
        pipeline.run(stage_cfg("pipeline", [f"model_dir={tiny_onnx_dir}"]))
