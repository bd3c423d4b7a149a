"""`metaqa bench` on the tiny reader (a few questions, 1 thread, warmup 1), and its helpers."""
import csv
import json

import numpy as np
import pytest

from metaqa.config import ConfigError
from metaqa.evaluation.latency import (
    interleaved_times,
    latency_stats,
    median_ci,
    model_size_mb,
    pinned_threads,
    ratio_ci,
    throughput,
    time_calls,
)
from metaqa.stages import bench
from metaqa.tracking.plots import latency_plot
from metaqa.tracking.run import run_stage
from tests.export.conftest import WINDOW

FAST = ["limit=5", "warmup=1", "repeats=3", "threads=[1]", "batch_size=4",
        f"reader.max_seq_length={WINDOW['max_seq_length']}", f"reader.doc_stride={WINDOW['doc_stride']}"]


def bench_cfg(stage_cfg, reader, source, *overrides):
    return stage_cfg("bench", [f"model_dir={reader[0]}", f"source={source}", *FAST, *overrides])


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_every_variant_and_the_pipeline(stage_cfg, reader, self_gold, tmp_path):
    cfg = bench_cfg(stage_cfg, reader, self_gold, "variants=[fp32,optimized,int8_dynamic]")
    assert run_stage("bench", bench.run, cfg) is None  # optimized_metric: null
    out = tmp_path / "bench"
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert [r["variant"] for r in rows] == ["pytorch_pipeline", "metaqa_pytorch", "fp32", "optimized", "int8_dynamic"]
    data = json.loads((out / "bench.json").read_text())
    assert [r["variant"] for r in data["rows"]] == [r["variant"] for r in rows]
    assert list(rows[0]) == bench.COLUMNS
    for row in data["rows"]:
        assert row["threads"] == 1 and row["questions"] == 5 and row["repeats"] == 3
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        assert row["p50_ci_low"] <= row["p50_ms"] <= row["p50_ci_high"]
        assert row["speedup_ci_low"] <= row["speedup_vs_pipeline"] <= row["speedup_ci_high"]
        assert row["torch_threads"] == 1 and row["ort_intra_op_threads"] == 1 and row["tokenizers_parallelism"] is False
        assert row["mean_ms"] > 0 and row["throughput_qps"] > 0 and row["model_mb"] > 0
        assert 0 <= row["f1"] <= 100 and 0 <= row["exact"] <= 100
        assert row["speedup_vs_pipeline"] == pytest.approx(data["rows"][0]["p50_ms"] / row["p50_ms"])
    by_name = {r["variant"]: r for r in data["rows"]}
    assert by_name["fp32"]["f1"] == pytest.approx(100.0)  # self-gold: the PyTorch model's own answers
    assert by_name["int8_dynamic"]["model_mb"] < by_name["fp32"]["model_mb"]
    for name in ("fp32", "optimized", "int8_dynamic"):
        assert (out / "onnx" / name / "model.onnx").is_file()
    assert not list((out / "onnx").glob("*.tmp-*"))
    latencies = json.loads((out / "latencies.json").read_text())
    assert {k: len(v) for k, v in latencies.items()} == {f"{n}@1": 15 for n in by_name}  # 3 passes x 5
    assert by_name["metaqa_pytorch"]["f1"] == pytest.approx(100.0)  # F1 of the timed (one-at-a-time) answers
    assert is_png(out / "latency.png")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok"
    m = summary["metrics"]
    onnx_rows = [r for r in data["rows"] if r["runtime"] == "onnxruntime"]
    best = min(onnx_rows, key=lambda r: r["p50_ms"])
    assert m["best_variant"] == best["variant"] and m["best_p50_ms"] == best["p50_ms"]
    assert m["pipeline_fp32_p50_ms"] == by_name["pytorch_pipeline"]["p50_ms"]
    assert m["speedup_vs_pipeline"] == pytest.approx(m["pipeline_fp32_p50_ms"] / m["best_p50_ms"])
    assert m["int8_f1_drop"] == pytest.approx(by_name["fp32"]["f1"] - by_name["int8_dynamic"]["f1"])
    assert m["int8_f1_reference"] == "fp32"


def test_bench_one_variant_without_the_pipeline(stage_cfg, reader, self_gold, tmp_path, capsys):
    cfg = bench_cfg(stage_cfg, reader, self_gold, "variants=[fp32]", "include_pipeline=false",
                    "include_torch=false")
    metrics = bench.run(cfg)
    out = tmp_path / "bench"
    data = json.loads((out / "bench.json").read_text())
    assert [(r["variant"], r["threads"]) for r in data["rows"]] == [("fp32", 1)]
    row = data["rows"][0]
    assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] and row["speedup_vs_pipeline"] is None
    assert len(json.loads((out / "latencies.json").read_text())["fp32@1"]) == 15  # 3 passes x 5
    assert metrics["best_variant"] == "fp32" and metrics["pipeline_fp32_p50_ms"] is None
    assert metrics["speedup_vs_pipeline"] is None and metrics["int8_f1_drop"] is None
    assert is_png(out / "latency.png")
    assert "| fp32 | 1 |" in capsys.readouterr().out


@pytest.mark.parametrize("overrides,field", [
    (["variants=[fp16]"], "variants"),
    (["variants=[]", "include_pipeline=false", "include_torch=false"], "variants"),
    (["repeats=1"], "repeats"),  # no interval from one pass
    (["threads=[0]"], "threads"),
    (["limit=0"], "limit"),
])
def test_bad_config_fails_before_any_work(stage_cfg, reader, self_gold, tmp_path, overrides, field):
    cfg = bench_cfg(stage_cfg, reader, self_gold, *overrides)
    with pytest.raises(ConfigError, match=f"config `{field}`"):
        bench.run(cfg)
    assert not (tmp_path / "bench" / "onnx").exists()


def test_int8_drop_falls_back_to_the_pipeline_without_fp32():
    rows = [{"variant": "pytorch_pipeline", "runtime": "pytorch", "threads": 1, "questions": 3, "p50_ms": 4.0,
             "throughput_qps": 10.0, "f1": 80.0, "speedup_vs_pipeline": 1.0},
            {"variant": "int8_dynamic", "runtime": "onnxruntime", "threads": 1, "questions": 3, "p50_ms": 1.0,
             "throughput_qps": 40.0, "f1": 75.0, "speedup_vs_pipeline": 4.0}]
    m = bench.headline(rows, 1, include_pipeline=True)
    assert m["int8_f1_drop"] == 5.0 and m["int8_f1_reference"] == "pytorch_pipeline"
    assert m["best_variant"] == "int8_dynamic" and m["speedup_vs_pipeline"] == 4.0


def test_variant_spec_matches_the_export_config_and_takes_overrides(stage_cfg, reader, self_gold):
    cfg = bench_cfg(stage_cfg, reader, self_gold, "+variant_overrides.int8_dynamic.quantization.isa=avx2")
    spec = bench.variant_spec(cfg, "int8_dynamic")
    assert spec["name"] == "int8_dynamic" and spec["quantization"]["mode"] == "dynamic"
    assert spec["quantization"]["isa"] == "avx2" and "parity" not in spec
    assert bench.variant_spec(cfg, "optimized")["optimization"]["level"] == "O2"


def test_latency_helpers(tmp_path):
    calls = []
    times, outs = time_calls(lambda x: calls.append(x) or x * 2, [1, 2, 3], warmup=4, repeats=2)
    assert calls == [1, 2, 3, 1] + [1, 2, 3] * 2 and outs == [2, 4, 6] and times.shape == (6,)
    assert (times >= 0).all()
    stats = latency_stats(np.random.default_rng(0).lognormal(1, 1, 500))
    assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"] and stats["n"] == 500
    qps, out = throughput(lambda: "done", 10, repeats=3)
    assert qps > 0 and out == "done"
    (tmp_path / "model.safetensors").write_bytes(b"0" * 2**20)
    (tmp_path / "pytorch_model.bin").write_bytes(b"0" * 2**20)  # a duplicate: not counted
    (tmp_path / "tokenizer.json").write_bytes(b"0" * 2**20)
    assert model_size_mb(tmp_path) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        latency_stats([])
    png = latency_plot({"a": [1.0, 2.0, 30.0], "b": [0.5, 0.6, 0.7]}, tmp_path / "p" / "lat.png")
    assert is_png(png)


def test_interleaved_times_rotate_the_systems_and_keep_first_pass_outputs():
    order = []
    systems = {name: (lambda x, name=name: order.append(name) or f"{name}{x}") for name in "abc"}
    times, outputs = interleaved_times(systems, [1, 2], warmup=1, repeats=3)
    timed = order[3:]  # after one warm-up call each
    passes = [timed[i:i + 2][0] for i in range(0, len(timed), 2)]
    assert passes == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # order rotates by one per repeat
    assert outputs == {"a": ["a1", "a2"], "b": ["b1", "b2"], "c": ["c1", "c2"]}
    assert all(t.shape == (3, 2) and (t >= 0).all() for t in times.values())


def test_bootstrap_intervals_cover_the_median_and_pair_the_items():
    rng = np.random.default_rng(0)
    x = rng.lognormal(2, 0.3, 400)
    med, lo, hi = median_ci(x)
    assert lo < med < hi and med == pytest.approx(np.median(x)) and hi - lo < 0.3 * med
    ratio, lo, hi = ratio_ci(2 * x, x)  # exactly 2 on every resample: paired
    assert ratio == lo == hi == pytest.approx(2.0)
    ratio, lo, hi = ratio_ci(rng.permutation(2 * x), x)  # unpaired noise widens it
    assert lo < 2.0 < hi
    with pytest.raises(ValueError, match="paired"):
        ratio_ci(x, x[:10])


def test_pinned_threads_pin_torch_omp_and_the_tokenizers_then_restore(monkeypatch):
    import os

    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    with pinned_threads(1) as pinned:
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
        assert pinned == {"torch_threads": 1, "ort_intra_op_threads": 1, "omp_num_threads": 1,
                          "tokenizers_parallelism": False}
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ


def test_bench_with_a_context_budget_reads_fewer_tokens_per_question(stage_cfg, reader, self_gold, tmp_path):
    cfg = bench_cfg(stage_cfg, reader, self_gold, "variants=[fp32]", "include_pipeline=false", "context_budget=40")
    bench.run(cfg)
    data = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert data["config"]["context_budget"] == 40
    assert [r["variant"] for r in data["rows"]] == ["metaqa_pytorch", "fp32"]
    assert all(0 <= r["f1"] <= 100 for r in data["rows"])
    with pytest.raises(ConfigError, match="context_budget"):
        bench.check_config(bench_cfg(stage_cfg, reader, self_gold, "context_budget=4096"))


def test_bench_runs_the_openvino_variant_on_openvino(stage_cfg, reader, self_gold, tmp_path):
    from tests.export.test_export import openvino_precision

    cfg = bench_cfg(stage_cfg, reader, self_gold, "variants=[fp32,openvino_bf16]", "include_pipeline=false",
                    "include_torch=false",
                    f"+variant_overrides.openvino_bf16.runtime.precision={openvino_precision()}")
    metrics = bench.run(cfg)
    rows = {r["variant"]: r for r in json.loads((tmp_path / "bench" / "bench.json").read_text())["rows"]}
    assert rows["fp32"]["runtime"] == "onnxruntime" and rows["openvino_bf16"]["runtime"] == "openvino"
    assert rows["openvino_bf16"]["f1"] == pytest.approx(100.0, abs=20)  # self-gold; bf16 may flip a tiny logit
    assert metrics["best_variant"] in rows
