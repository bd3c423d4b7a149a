"""`metaqa bench`: metaqa's readers against `transformers.pipeline("question-answering")` on the
same reader and the same questions, in one run, measured the same way for every system.

Systems: the HF pipeline (PyTorch fp32, the anchor), metaqa's own PyTorch reader at batch 1
(`TorchPredictor.answer`: same weights and precision as the pipeline, metaqa's windows and
decoder), and each export variant (`variants`, `conf/export/` names) on onnxruntime
(`OnnxPredictor.answer`). Every variant is built before any timing starts.

For every thread count in `threads`, with torch, onnxruntime, OMP/MKL and the tokenizers pinned
to it (`metaqa.evaluation.latency.pinned_threads`):
- latency per question, end to end (tokenise + model + decode), `warmup` untimed calls per
  system, then `repeats` (>= 3) interleaved passes (`interleaved_times`: the systems' order
  rotates per pass); a question's latency is its median over passes; p50 with a bootstrap 95%
  interval over questions, p95, p99, mean;
- F1 / EM of the answers of that very timed path (first pass), by the scoring contract;
- warm throughput at `batch_size` (questions/s of `predict(records, batch_size)` /
  `pipeline(..., batch_size=)`, after one untimed call, median of `repeats`) and the F1 of those
  batched answers (`batched_f1`: int8 answers may depend on batch-mates);
- model size on disk.
With `context_budget=N`, metaqa's readers (not the pipeline) read at most N tokens per question: a
longer context keeps only its question-relevant sentences (`BudgetedReader`), less work per question.
`speedup_vs_pipeline` = pipeline p50 / system p50 at the same threads, with a paired bootstrap
interval. Writes `bench.csv`, `bench.json` (rows, headline, machine, config), `latencies.json`
(every timed call), `latency.png`, and logs rows + headline to the configured loggers.
The headline is taken at the first entry of `threads`; `int8_f1_drop` = F1(fp32 ONNX) −
F1(int8_dynamic), or F1(metaqa PyTorch) − F1(int8_dynamic) when fp32 is not among the variants.
"""
from __future__ import annotations

import copy
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from metaqa.config import CONF_DIR, ConfigError, check_reader_dir
from metaqa.data.records import QARecord
from metaqa.data.shards import load_source
from metaqa.evaluation.latency import (
    interleaved_times,
    latency_stats,
    median_ci,
    model_size_mb,
    per_item_ms,
    pinned_threads,
    ratio_ci,
    throughput,
)
from metaqa.evaluation.machine import machine_info
from metaqa.evaluation.scoring import score, score_texts
from metaqa.export.convert import build_variant, check_variant
from metaqa.fileio import guard_output_dir, replace_dir, write_csv, write_json
from metaqa.inference import OnnxPredictor, ReaderConfig, TorchPredictor
from metaqa.retrieval.longdoc import BudgetedReader
from metaqa.tracking.plots import latency_plot
from metaqa.tracking.run import instantiate_list, log_hyperparams, resolved_config, run_stage
from metaqa.tracking.tables import markdown_table

log = logging.getLogger(__name__)

PIPELINE = "pytorch_pipeline"
TORCH = "metaqa_pytorch"
COLUMNS = ["variant", "runtime", "threads", "questions", "repeats", "p50_ms", "p50_ci_low", "p50_ci_high",
           "p95_ms", "p99_ms", "mean_ms", "f1", "exact", "throughput_qps", "batched_f1", "model_mb",
           "speedup_vs_pipeline", "speedup_ci_low", "speedup_ci_high",
           "torch_threads", "ort_intra_op_threads", "omp_num_threads", "tokenizers_parallelism"]
TABLE_COLUMNS = ["variant", "threads", "p50_ms", "p50_ci_low", "p50_ci_high", "p95_ms", "f1", "throughput_qps",
                 "batched_f1", "model_mb", "speedup_vs_pipeline", "speedup_ci_low", "speedup_ci_high"]


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
    if not variants and not cfg.include_pipeline and not cfg.include_torch:
        raise ConfigError("variants", "nothing to bench (no variants, include_pipeline=false, include_torch=false)",
                          "variants=[fp32,int8_dynamic] and/or include_pipeline=true")
    threads = [int(t) for t in (cfg.threads or [])]
    if not threads or any(t < 1 for t in threads):
        raise ConfigError("threads", f"{list(cfg.threads or [])} needs thread counts >= 1", "threads=[1,2]")
    if cfg.limit is not None and not cfg.limit > 0:
        raise ConfigError("limit", f"{cfg.limit!r} is not > 0", "limit=200 (or null: every question)")
    if cfg.warmup < 0:
        raise ConfigError("warmup", f"{cfg.warmup} is negative", "warmup=10")
    if cfg.repeats < 3 and not cfg.get("allow_few_repeats", False):
        raise ConfigError("repeats", f"{cfg.repeats} interleaved repeats cannot give an interval",
                          "repeats=3 (or more); +allow_few_repeats=true for a smoke run")
    if cfg.repeats < 1:
        raise ConfigError("repeats", f"{cfg.repeats} is not >= 1", "repeats=3")
    if cfg.batch_size < 1:
        raise ConfigError("batch_size", f"{cfg.batch_size} is not >= 1", "batch_size=32")
    budget, window = cfg.get("context_budget"), cfg.reader.max_seq_length
    if budget is not None and not 32 <= int(budget) <= window:
        raise ConfigError("context_budget", f"{budget} tokens is outside [32, reader.max_seq_length={window}]",
                          "context_budget=128 (or null: every context whole)")
    return variants, threads


# --------------------------------------------------------------------------- systems
def calibration_records(specs: dict[str, dict]) -> dict[str, list[QARecord]]:
    """The calibration questions of each static-int8 variant, read before any work starts."""
    calibration = {}
    for name, spec in specs.items():
        quant = spec.get("quantization") or {}
        if quant.get("mode") == "static":
            cal = quant["calibration"]
            calibration[name] = load_source(cal["source"], cal.get("format", "auto"))[: cal["limit"]]
    return calibration


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


def pipeline_kwargs(reader: ReaderConfig) -> dict[str, Any]:
    """The pipeline's decoding, matched to ours (windows, answer length, impossible answers)."""
    return {"max_seq_len": reader.max_seq_length, "doc_stride": reader.doc_stride,
            "max_answer_len": reader.decode.max_answer_length,
            "handle_impossible_answer": bool(reader.decode.version_2), "top_k": 1}


def _answers(out) -> list[str]:
    out = [out] if isinstance(out, dict) else list(out)
    return [(o[0] if isinstance(o, list) else o)["answer"].strip() for o in out]


class PipelineSystem:
    """transformers' pipeline as a bench system: one question per call, or all in batches."""

    runtime = "pytorch"

    def __init__(self, model_dir: Path, reader: ReaderConfig) -> None:
        from transformers import pipeline

        self.qa = pipeline("question-answering", model=str(model_dir), tokenizer=str(model_dir), device=-1)
        self.kwargs = pipeline_kwargs(reader)

    def answer(self, r: QARecord) -> str:
        return _answers(self.qa(question=r.question, context=r.context, **self.kwargs))[0]

    def batch(self, records: Sequence[QARecord], batch_size: int) -> list[str]:
        answers = _answers(self.qa(question=[r.question for r in records], context=[r.context for r in records],
                                   batch_size=batch_size, **self.kwargs))
        if len(answers) != len(records):
            raise RuntimeError(f"the pipeline returned {len(answers)} answers for {len(records)} questions")
        return answers


def budgeted(predictor, cfg: DictConfig):
    """The predictor, or with `context_budget` set, the same predictor reading at most that many
    tokens per question (`BudgetedReader`: a longer context keeps its question-relevant sentences)."""
    budget = cfg.get("context_budget")
    return BudgetedReader(predictor, int(budget)) if budget else predictor


class ReaderSystem:
    """A metaqa predictor (PyTorch, or an ONNX dir on onnxruntime or OpenVINO) as a bench system."""

    def __init__(self, predictor) -> None:
        self.predictor = predictor
        self.runtime = predictor.runtime["name"] if predictor.backend == "onnx" else "pytorch"

    def answer(self, r: QARecord):
        return self.predictor.answer(r.question, r.context, r.id)

    def batch(self, records: Sequence[QARecord], batch_size: int):
        return self.predictor.predict(records, batch_size)


def accuracy(records: Sequence[QARecord], answers: Sequence, version_2: bool) -> dict[str, float]:
    """F1 / EM of a system's answers: SpanPredictions by the scoring contract, texts by its headline."""
    if answers and isinstance(answers[0], str):
        return score_texts(records, {r.id: a for r, a in zip(records, answers)}, version_2)
    return score(records, answers, version_2)[0]


def bench_threads(systems: dict, records: Sequence[QARecord], threads: int, cfg: DictConfig,
                  version_2: bool) -> tuple[list[dict], dict[str, list[float]]]:
    """Rows for every system at `threads` (interleaved repeats), and every timed call."""
    with pinned_threads(threads) as pinned:
        times, answers = interleaved_times({n: s.answer for n, s in systems.items()}, records,
                                           cfg.warmup, cfg.repeats)
        batched = {}
        for name, system in systems.items():
            system.batch(records[: cfg.batch_size], cfg.batch_size)  # warm at the measured batch shape
            batched[name] = throughput(lambda: system.batch(records, cfg.batch_size), len(records), cfg.repeats)
    per_item = {name: per_item_ms(t) for name, t in times.items()}
    rows = []
    for name, system in systems.items():
        p50, lo, hi = median_ci(per_item[name])
        stats = latency_stats(per_item[name])
        timed, qps_batched = accuracy(records, answers[name], version_2), batched[name]
        row = {"variant": name, "runtime": system.runtime, "threads": threads, "questions": len(records),
               "repeats": cfg.repeats, "p50_ms": p50, "p50_ci_low": lo, "p50_ci_high": hi,
               "p95_ms": stats["p95_ms"], "p99_ms": stats["p99_ms"], "mean_ms": stats["mean_ms"],
               "f1": timed["f1"], "exact": timed["exact"], "throughput_qps": qps_batched[0],
               "batched_f1": accuracy(records, qps_batched[1], version_2)["f1"], **pinned}
        if PIPELINE in per_item:
            row["speedup_vs_pipeline"], row["speedup_ci_low"], row["speedup_ci_high"] = \
                ratio_ci(per_item[PIPELINE], per_item[name])
        rows.append(row)
        log.info("%s @ %d threads: p50 %.2f ms [%.2f, %.2f], F1 %.2f (timed path), %.1f q/s batched", name,
                 threads, p50, lo, hi, row["f1"], row["throughput_qps"])
    return rows, {f"{n}@{threads}": t.ravel().tolist() for n, t in times.items()}


# --------------------------------------------------------------------------- results
def headline(rows: list[dict], threads: int, include_pipeline: bool) -> dict[str, Any]:
    at = [r for r in rows if r["threads"] == threads]
    onnx = [r for r in at if r["runtime"] in ("onnxruntime", "openvino")]  # the exported variants
    by_name = {r["variant"]: r for r in at}
    best = min(onnx, key=lambda r: r["p50_ms"]) if onnx else None
    pipe = by_name.get(PIPELINE)
    # The int8 cost alone: fp32 ONNX decodes exactly like int8 (same predictor), the pipeline
    # decodes its own way (softmax scores, its own null rule), so it is only the fallback.
    reference = by_name.get("fp32") or by_name.get(TORCH) or (pipe if include_pipeline else None)
    int8 = by_name.get("int8_dynamic")
    return {
        "threads": threads,
        "questions": at[0]["questions"] if at else 0,
        "best_p50_ms": best["p50_ms"] if best else None,
        "best_variant": best["variant"] if best else None,
        "best_throughput_qps": max(r["throughput_qps"] for r in onnx) if onnx else None,
        "best_p50_ci": [best.get("p50_ci_low"), best.get("p50_ci_high")] if best else None,
        "best_f1": best["f1"] if best else None,
        "pipeline_fp32_p50_ms": pipe["p50_ms"] if pipe else None,
        "pipeline_f1": pipe["f1"] if pipe else None,
        "metaqa_pytorch_p50_ms": by_name[TORCH]["p50_ms"] if TORCH in by_name else None,
        "pipeline_throughput_qps": pipe["throughput_qps"] if pipe else None,
        "speedup_vs_pipeline": best["speedup_vs_pipeline"] if best and pipe else None,
        "speedup_ci": [best.get("speedup_ci_low"), best.get("speedup_ci_high")] if best and pipe else None,
        "int8_f1_drop": reference["f1"] - int8["f1"] if reference and int8 else None,
        "int8_f1_reference": reference["variant"] if reference and int8 else None,
    }


def table(rows: list[dict]) -> str:
    return markdown_table([{k: ("–" if v is None else v) for k, v in r.items()} for r in rows], TABLE_COLUMNS)


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
    reader = ReaderConfig.from_cfg(cfg.reader)
    specs = {name: variant_spec(cfg, name) for name in variants}
    # Read every input before any work: a missing source fails in a second.
    records = load_source(cfg.source, cfg.format, cfg.data.duplicate_ids)[: cfg.limit]
    if not records:
        raise ConfigError("source", f"{cfg.source} holds no questions", "pass source=<shard dir or data file>")
    calibration = calibration_records(specs)

    out = Path(cfg.paths.output_dir)
    guard_output_dir(*(out / "onnx" / name for name in specs), field="hydra.run.dir", stage="bench",
                     inputs=[model_dir, cfg.source], overwrite=cfg.get("overwrite", False))
    dirs = build_variants(model_dir, specs, out / "onnx", calibration, reader.max_seq_length, reader.doc_stride)
    sizes = {name: model_size_mb(d) for name, d in dirs.items()}
    sizes[PIPELINE] = sizes[TORCH] = model_size_mb(model_dir)
    log.info("bench: %d questions of %s, threads %s, %d interleaved repeats", len(records), cfg.source,
             threads, cfg.repeats)
    rows, latencies = [], {}
    for t in threads:
        systems = {}
        if cfg.include_pipeline:
            systems[PIPELINE] = PipelineSystem(model_dir, reader)
        if cfg.include_torch:
            systems[TORCH] = ReaderSystem(budgeted(TorchPredictor.from_dir(model_dir, reader), cfg))
        for name in variants:
            systems[name] = ReaderSystem(budgeted(OnnxPredictor(dirs[name], threads=t, reader=reader), cfg))
        at, timed = bench_threads(systems, records, t, cfg, reader.decode.version_2)
        rows += [{c: {**r, "model_mb": sizes[r["variant"]]}.get(c) for c in COLUMNS} for r in at]
        latencies.update(timed)

    summary = headline(rows, threads[0], bool(cfg.include_pipeline))
    machine = machine_info()
    plot = latency_plot({name.split("@")[0]: v for name, v in latencies.items() if name.endswith(f"@{threads[0]}")},
                        out / "latency.png", log_scale=bool(cfg.plot_log_scale),
                        title=f"end-to-end latency per question ({len(records)} questions, {threads[0]} thread"
                              f"{'s' if threads[0] > 1 else ''})")
    write_csv(out / "bench.csv", rows, COLUMNS)
    write_json(out / "bench.json", {
        "rows": rows, "headline": summary, "model_dir": str(model_dir.resolve()), "source": str(cfg.source),
        "variants": {n: {"dir": str(d), "spec": specs[n]} for n, d in dirs.items()},
        "config": {k: v for k, v in resolved_config(cfg).items()
                   if k in ("threads", "limit", "warmup", "repeats", "batch_size", "reader", "include_pipeline",
                            "include_torch", "context_budget")},
        "machine": machine,
    })
    write_json(out / "latencies.json", latencies)
    log_to_loggers(cfg, rows, summary, plot)
    print(table(rows))
    print(f"\nbench: {len(records)} questions; headline at {threads[0]} thread(s): best {summary['best_variant']} "
          f"p50 {_fmt(summary['best_p50_ms'])} ms, pipeline p50 {_fmt(summary['pipeline_fp32_p50_ms'])} ms, "
          f"speedup {_fmt(summary['speedup_vs_pipeline'])}x, int8 F1 drop {_fmt(summary['int8_f1_drop'])} "
          f"({machine['cpu_model']}, {cfg.repeats} interleaved repeats)")
    print(f"wrote {out / 'bench.csv'}, {out / 'bench.json'}, {plot}")
    return summary


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="bench")
def main(cfg: DictConfig) -> float | None:
    return run_stage("bench", run, cfg)
