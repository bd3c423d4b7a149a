"""`metaqa bench`: every export variant against `transformers.pipeline("question-answering")`
(PyTorch fp32) on the same reader and the same questions, in one run.

1. Build each variant (`variants`, the names of `conf/export/` options) from `model_dir` with
   `metaqa.export.convert.build_variant` into `<run>/onnx/<name>` (all builds finish before any
   timing starts, so the exports never share the CPU with a timed call).
2. For every thread count in `threads`, for the pipeline and each variant:
   - latency per question, end to end (tokenise + model + postprocess): `OnnxPredictor.answer`
     or one `pipeline(question=, context=)` call, timed with `time.perf_counter` after `warmup`
     untimed calls, `repeats` passes; p50/p95/p99/mean in ms;
   - throughput at `batch_size`: questions/s of one `predictor.predict(records, batch_size)` /
     `pipeline(questions, contexts, batch_size=)` call (median of `repeats`), whose answers are
     also scored (SQuAD v2 F1 / EM);
   - model size on disk (weights only: `model.onnx`, or the reader's safetensors).
3. Write `bench.csv` and `bench.json` (one row per (system, threads)), `latencies.json` (every
   timed call), `latency.png` (distribution per system at the first thread count), print a
   Markdown table, and log rows + headline to the configured loggers (`logger=wandb`).

`speedup_vs_pipeline` = pipeline p50 / variant p50 at the same thread count. The headline
figures (returned, and in `summary.json`) are taken at the first entry of `threads`;
`int8_f1_drop` = F1(fp32 ONNX) − F1(int8_dynamic), or F1(pipeline) − F1(int8_dynamic) when fp32
is not among the variants (`int8_f1_reference` names which).
"""
from __future__ import annotations

import copy
import logging
import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from metaqa.config import CONF_DIR, ConfigError, check_reader_dir, check_windows
from metaqa.data.records import QARecord
from metaqa.data.shards import load_source
from metaqa.evaluation.latency import latency_stats, model_size_mb, throughput, time_calls, torch_threads
from metaqa.evaluation.squad_v2 import gold_from_records, squad_v2_metrics
from metaqa.export.convert import build_variant, check_variant
from metaqa.export.predictor import OnnxPredictor
from metaqa.fileio import guard_output_dir, replace_dir, write_csv, write_json
from metaqa.models.inference import DecodeConfig, score
from metaqa.tracking.plots import latency_plot
from metaqa.tracking.run import instantiate_list, log_hyperparams, resolved_config, run_stage
from metaqa.tracking.tables import markdown_table

log = logging.getLogger(__name__)

PIPELINE = "pytorch_pipeline"
COLUMNS = ["variant", "runtime", "threads", "questions", "p50_ms", "p95_ms", "p99_ms", "mean_ms",
           "throughput_qps", "model_mb", "f1", "exact", "speedup_vs_pipeline"]
TABLE_COLUMNS = [c for c in COLUMNS if c != "questions"]


# --------------------------------------------------------------------------- config
def export_options() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "export").glob("*.yaml"))


def variant_spec(cfg: DictConfig, name: str) -> dict[str, Any]:
    """The `export` node `metaqa export export=<name>` would see (conf/export.yaml's shared
    `export:` node, conf/export/<name>.yaml on top, then `variant_overrides.<name>`), resolved
    against this run's config (so `${data.prep_dir}` means the same thing). The parity gate is
    not part of a bench, so its node is dropped."""
    file = CONF_DIR / "export" / f"{name}.yaml"
    if not file.is_file():
        raise ConfigError("variants", f"{name!r} is not an export option", f"pick from {export_options()}")
    overrides = (cfg.get("variant_overrides") or {}).get(name) or {}
    node = OmegaConf.merge(OmegaConf.load(CONF_DIR / "export.yaml").export, OmegaConf.load(file), overrides)
    with open_dict(node):
        node.pop("parity", None)
    holder = copy.deepcopy(cfg)
    with open_dict(holder):
        holder["_bench_variant"] = node
    spec = OmegaConf.to_container(holder["_bench_variant"], resolve=True)
    check_variant(spec)
    return spec


def check_config(cfg: DictConfig) -> tuple[list[str], list[int]]:
    variants = list(cfg.variants or [])
    if len(set(variants)) != len(variants):
        raise ConfigError("variants", f"{variants} repeats a name", "list each export option once")
    if not variants and not cfg.include_pipeline:
        raise ConfigError("variants", "nothing to bench (no variants, include_pipeline=false)",
                          "variants=[fp32,int8_dynamic] and/or include_pipeline=true")
    threads = [int(t) for t in (cfg.threads or [])]
    if not threads or any(t < 1 for t in threads):
        raise ConfigError("threads", f"{list(cfg.threads or [])} needs thread counts >= 1", "threads=[1,2]")
    if cfg.limit is not None and not cfg.limit > 0:
        raise ConfigError("limit", f"{cfg.limit!r} is not > 0", "limit=200 (or null: every question)")
    if cfg.warmup < 0:
        raise ConfigError("warmup", f"{cfg.warmup} is negative", "warmup=10")
    if cfg.repeats < 1:
        raise ConfigError("repeats", f"{cfg.repeats} is not >= 1", "repeats=1")
    if cfg.batch_size < 1:
        raise ConfigError("batch_size", f"{cfg.batch_size} is not >= 1", "batch_size=32")
    check_windows(cfg.max_seq_length, cfg.doc_stride, "bench")
    return variants, threads


# --------------------------------------------------------------------------- systems
def build_variants(model_dir: Path, specs: dict[str, dict], onnx_root: Path, calibration,
                   max_seq_length: int, doc_stride: int) -> dict[str, Path]:
    """Each variant into `onnx_root/<name>` (built in a temp dir beside it, then renamed)."""
    dirs = {}
    for name, spec in specs.items():
        final = onnx_root / name
        work = onnx_root / f"{name}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        log.info("building %s from %s", name, model_dir)
        try:
            built = build_variant(model_dir, spec, work, calibration.get(name), max_seq_length, doc_stride)
            dirs[name] = replace_dir(built, final, stage="bench")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dirs


def pipeline_kwargs(cfg: DictConfig, decode: DecodeConfig) -> dict[str, Any]:
    """The pipeline's decoding, matched to ours (windows, answer length, impossible answers)."""
    return {"max_seq_len": cfg.max_seq_length, "doc_stride": cfg.doc_stride,
            "max_answer_len": decode.max_answer_length, "handle_impossible_answer": bool(decode.version_2),
            "top_k": 1}


def _answers(out) -> list[str]:
    out = [out] if isinstance(out, dict) else list(out)
    return [(o[0] if isinstance(o, list) else o)["answer"] for o in out]


def bench_pipeline(qa, kwargs: dict, records: Sequence[QARecord], threads: int, cfg: DictConfig):
    """(latencies ms, row) for transformers' pipeline at `threads` torch threads."""
    with torch_threads(threads):
        times, answers = time_calls(lambda r: _answers(qa(question=r.question, context=r.context, **kwargs))[0],
                                    records, cfg.warmup, cfg.repeats)
        qps, batched = throughput(lambda: _answers(qa(question=[r.question for r in records],
                                                      context=[r.context for r in records],
                                                      batch_size=cfg.batch_size, **kwargs)),
                                  len(records), cfg.repeats)
    # F1/EM of the per-question answers ("" = no answer); the batched run must agree in count.
    if len(batched) != len(records):
        raise RuntimeError(f"the pipeline returned {len(batched)} answers for {len(records)} questions")
    metrics = squad_v2_metrics(gold_from_records(records), {r.id: a.strip() for r, a in zip(records, answers)})
    return times, {"runtime": "pytorch", "throughput_qps": qps, "f1": metrics["f1"], "exact": metrics["exact"]}


def bench_onnx(model_dir: Path, records: Sequence[QARecord], threads: int, cfg: DictConfig, decode: DecodeConfig):
    """(latencies ms, row) for one ONNX dir on an `OnnxPredictor` with `threads` intra-op threads."""
    predictor = OnnxPredictor(model_dir, threads=threads, max_seq_length=cfg.max_seq_length,
                              doc_stride=cfg.doc_stride, decode=decode)
    times, _ = time_calls(lambda r: predictor.answer(r.question, r.context, r.id), records, cfg.warmup, cfg.repeats)
    qps, predictions = throughput(lambda: predictor.predict(records, cfg.batch_size), len(records), cfg.repeats)
    overall, _ = score(records, predictions)
    return times, {"runtime": "onnxruntime", "throughput_qps": qps, "f1": overall["f1"], "exact": overall["exact"]}


# --------------------------------------------------------------------------- results
def headline(rows: list[dict], threads: int, include_pipeline: bool) -> dict[str, Any]:
    at = [r for r in rows if r["threads"] == threads]
    onnx = [r for r in at if r["runtime"] == "onnxruntime"]
    by_name = {r["variant"]: r for r in at}
    best = min(onnx, key=lambda r: r["p50_ms"]) if onnx else None
    pipe = by_name.get(PIPELINE)
    # The int8 cost alone: fp32 ONNX decodes exactly like int8 (same predictor), the pipeline
    # decodes its own way (softmax scores, its own null rule), so it is only the fallback.
    reference = by_name.get("fp32") or (pipe if include_pipeline else None)
    int8 = by_name.get("int8_dynamic")
    return {
        "threads": threads,
        "questions": at[0]["questions"] if at else 0,
        "best_p50_ms": best["p50_ms"] if best else None,
        "best_variant": best["variant"] if best else None,
        "best_throughput_qps": max(r["throughput_qps"] for r in onnx) if onnx else None,
        "pipeline_fp32_p50_ms": pipe["p50_ms"] if pipe else None,
        "pipeline_throughput_qps": pipe["throughput_qps"] if pipe else None,
        "speedup_vs_pipeline": best["speedup_vs_pipeline"] if best and pipe else None,
        "int8_f1_drop": reference["f1"] - int8["f1"] if reference and int8 else None,
        "int8_f1_reference": reference["variant"] if reference and int8 else None,
    }


def table(rows: list[dict]) -> str:
    return markdown_table([{k: ("–" if v is None else v) for k, v in r.items()} for r in rows], TABLE_COLUMNS)


def environment() -> dict[str, Any]:
    import onnxruntime
    import torch
    import transformers

    return {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "onnxruntime": onnxruntime.__version__}


def log_to_loggers(cfg: DictConfig, rows: list[dict], summary: dict, plot: Path) -> None:
    loggers = instantiate_list(cfg.get("logger"))
    if not loggers:
        return
    log_hyperparams(loggers, cfg)
    for row in rows:
        prefix = f"{row['variant']}/threads{row['threads']}"
        flat = {f"{prefix}/{k}": float(v) for k, v in row.items()
                if k not in ("variant", "runtime", "threads") and isinstance(v, (int, float))}
        for logger in loggers:
            logger.log_metrics(flat)
    flat = {f"headline/{k}": float(v) for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for logger in loggers:
        logger.log_metrics(flat)
        if hasattr(logger, "log_table") and hasattr(logger, "log_image"):  # WandbLogger
            logger.log_table(key="bench", columns=COLUMNS, data=[[r.get(c) for c in COLUMNS] for r in rows])
            logger.log_image(key="latency", images=[str(plot)])
        logger.save()
        logger.finalize("success")


# --------------------------------------------------------------------------- stage
def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    variants, threads = check_config(cfg)
    decode = DecodeConfig(**cfg.decode)
    specs = {name: variant_spec(cfg, name) for name in variants}
    # Read every input before any work: a missing source fails in a second.
    records = load_source(cfg.source, cfg.format)[: cfg.limit]
    if not records:
        raise ConfigError("source", f"{cfg.source} holds no questions", "pass source=<shard dir or data file>")
    calibration = {}
    for name, spec in specs.items():
        quant = spec.get("quantization") or {}
        if quant.get("mode") == "static":
            cal = quant["calibration"]
            calibration[name] = load_source(cal["source"], cal.get("format", "auto"))[: cal["limit"]]

    out = Path(cfg.paths.output_dir)
    guard_output_dir(*(out / "onnx" / name for name in specs), field="hydra.run.dir", stage="bench",
                     inputs=[model_dir, cfg.source], overwrite=cfg.get("overwrite", False))
    dirs = build_variants(model_dir, specs, out / "onnx", calibration, cfg.max_seq_length, cfg.doc_stride)
    sizes = {name: model_size_mb(d) for name, d in dirs.items()}
    qa = kwargs = None
    if cfg.include_pipeline:
        from transformers import pipeline

        qa = pipeline("question-answering", model=str(model_dir), tokenizer=str(model_dir), device=-1)
        kwargs = pipeline_kwargs(cfg, decode)
        sizes[PIPELINE] = model_size_mb(model_dir)

    rows, latencies = [], {}
    log.info("bench: %d questions of %s, threads %s, systems %s", len(records), cfg.source, threads,
             ([PIPELINE] if qa else []) + variants)
    for t in threads:
        systems = ([PIPELINE] if qa is not None else []) + variants
        for name in systems:
            if name == PIPELINE:
                times, row = bench_pipeline(qa, kwargs, records, t, cfg)
            else:
                times, row = bench_onnx(dirs[name], records, t, cfg, decode)
            stats = latency_stats(times)
            row = {"variant": name, "threads": t, "questions": len(records), **row,
                   **{k: stats[k] for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")},
                   "model_mb": sizes[name], "speedup_vs_pipeline": None}
            rows.append({c: row.get(c) for c in COLUMNS})
            latencies[f"{name}@{t}"] = times.tolist()
            log.info("%s @ %d threads: p50 %.2f ms, p95 %.2f ms, %.1f q/s, F1 %.2f", name, t,
                     row["p50_ms"], row["p95_ms"], row["throughput_qps"], row["f1"])
        pipe = next((r for r in rows if r["variant"] == PIPELINE and r["threads"] == t), None)
        if pipe:
            for r in rows:
                if r["threads"] == t:
                    r["speedup_vs_pipeline"] = pipe["p50_ms"] / r["p50_ms"]

    summary = headline(rows, threads[0], bool(cfg.include_pipeline))
    plot = latency_plot({name.split("@")[0]: v for name, v in latencies.items() if name.endswith(f"@{threads[0]}")},
                        out / "latency.png", log_scale=bool(cfg.plot_log_scale),
                        title=f"end-to-end latency per question ({len(records)} questions, {threads[0]} thread"
                              f"{'s' if threads[0] > 1 else ''})")
    write_csv(out / "bench.csv", rows, COLUMNS)
    write_json(out / "bench.json", {
        "rows": rows, "headline": summary, "model_dir": str(model_dir.resolve()), "source": str(cfg.source),
        "variants": {n: {"dir": str(d), "spec": specs[n]} for n, d in dirs.items()},
        "config": {k: v for k, v in resolved_config(cfg).items()
                   if k in ("threads", "limit", "warmup", "repeats", "batch_size", "max_seq_length",
                            "doc_stride", "decode", "include_pipeline")},
        "environment": environment(),
    })
    write_json(out / "latencies.json", latencies)
    log_to_loggers(cfg, rows, summary, plot)
    print(table(rows))
    print(f"\nbench: {len(records)} questions; headline at {threads[0]} thread(s): best {summary['best_variant']} "
          f"p50 {_fmt(summary['best_p50_ms'])} ms, pipeline p50 {_fmt(summary['pipeline_fp32_p50_ms'])} ms, "
          f"speedup {_fmt(summary['speedup_vs_pipeline'])}x, int8 F1 drop {_fmt(summary['int8_f1_drop'])}")
    print(f"wrote {out / 'bench.csv'}, {out / 'bench.json'}, {plot}")
    return summary


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="bench")
def main(cfg: DictConfig) -> float | None:
    return run_stage("bench", run, cfg)
