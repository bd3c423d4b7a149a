"""`metaqa predict engine=ray`: Ray Data (a real local Ray, 2 actors) over a tiny ONNX reader."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from metaqa.inference import OnnxPredictor

from .conftest import WINDOW, reader_cfg

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from metaqa.serving.ray_batch import plan_shards, predict_dataset, read_outputs, resolve_inputs  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def inputs(tmp_path, sample_records):
    """A JSONL file (10 questions, a blank line, a broken line, an empty question) and a Parquet file."""
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [json.dumps({"id": r.id, "question": r.question, "context": r.context}) for r in sample_records[:10]]
    lines[3:3] = ["", "{not json", json.dumps({"id": "blank-q", "question": " ", "context": "x"})]
    (folder / "a.jsonl").write_text("\n".join(lines) + "\n")
    rest = sample_records[10:]
    pq.write_table(pa.Table.from_pylist([{"id": r.id, "question": r.question, "context": r.context} for r in rest]),
                   folder / "b.parquet")
    return folder


def test_shards_cover_every_row_once(inputs):
    shards = plan_shards(resolve_inputs(str(inputs / "*")), shard_rows=4)
    assert [s.name for s in shards] == ["a-00000", "a-00001", "a-00002", "b-00000"]
    assert [s.rows for s in shards] == [4, 4, 4, 2]  # 12 non-blank lines in a, 2 rows in b


def test_answers_match_predict_errors_reported_and_rerun_resumes(local_ray, stage_cfg, inputs, fp32_dir,
                                                                 sample_records):
    from metaqa.stages import predict

    cfg = stage_cfg("predict", ["engine=ray", f"model_dir={fp32_dir}", f"input={inputs}", "batch_size=1",
                                "engine.shard_rows=4", "engine.batch_rows=3", "engine.output_format=parquet",
                                f"reader.max_seq_length={WINDOW['max_seq_length']}",
                                f"reader.doc_stride={WINDOW['doc_stride']}"])
    summary = predict.run(cfg)
    assert summary["questions"] == 14 and summary["written"] == 12 and summary["errors"] == 2
    out = Path(cfg.engine.output_dir)
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        "a-00000.parquet", "a-00001.parquet", "a-00002.parquet", "b-00000.parquet"]

    rows = {r["id"]: r for r in read_outputs(out)}
    expected = OnnxPredictor(fp32_dir, threads=1, reader=reader_cfg()).answer_each(sample_records)
    assert set(rows) == {r.id for r in sample_records}
    for p in expected:  # the same answers as the single-process predictor, one question per call
        assert (rows[p.id]["answer"], rows[p.id]["start"], rows[p.id]["end"]) == (p.text, p.start, p.end)
        assert rows[p.id]["score"] == pytest.approx(p.score, abs=1e-5)

    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["id"]) for e in errors] == [(5, "line5"), (6, "blank-q")]  # line 4 is blank
    assert "not valid JSON" in errors[0]["reason"] and "`question`" in errors[1]["reason"]

    # a crash lost one shard: the re-run answers that shard only, and the job's output is unchanged
    (out / "shards" / "a-00001.parquet").unlink()
    reader = OmegaConf.to_container(cfg.reader, resolve=True)  # the stage's settings, as the manifest pinned them
    again = predict_dataset(str(inputs), fp32_dir, out, reader=reader, actors=2, batch_size=1, shard_rows=4,
                            output_format="parquet", progress=False)
    assert again["shards_skipped"] == 3 and again["questions"] == 4
    assert {r["id"]: r for r in read_outputs(out)} == rows
    assert again["errors"] == 2  # errors.jsonl rebuilt from the shards', never appended twice

    with pytest.raises(ValueError, match="shard_rows"):  # other settings would not match the finished shards
        predict_dataset(str(inputs), fp32_dir, out, reader=reader, batch_size=1, shard_rows=5, output_format="parquet",
                        progress=False)


def test_stage_refuses_a_single_question_and_a_missing_input(stage_cfg, fp32_dir, tmp_path):
    from metaqa.config import ConfigError
    from metaqa.stages import predict

    with pytest.raises(ConfigError, match="engine=ray answers files"):
        predict.run(stage_cfg("predict", ["engine=ray", f"model_dir={fp32_dir}", "question=q", "context=c"]))
    with pytest.raises(ConfigError, match="no input files"):
        predict.run(stage_cfg("predict", ["engine=ray", f"model_dir={fp32_dir}", f"input={tmp_path}/none/*.jsonl"]))
