"""`metaqa pipeline-eval`: the DevRev score of retrieve-then-read on a labelled file.

The questions of `source` are shuffled with `seed`. The first `calibration.questions` are set
apart and (when `calibration.enabled`) calibrate the "no paragraph" and early-exit thresholds,
the rank penalty and how many paragraphs to read (read without early exit, every top-k
candidate kept); the next `sample` (or all the rest) are answered one at a time, timed end to end
(retrieval + reading + decision), and scored with `metaqa.evaluation.devrev`. The candidate
paragraphs of a theme are all its unique contexts in `source`; the gold paragraph of an
answerable question is its own context, and of an unanswerable one "no paragraph".

Writes metrics.json (overall + per theme), per_theme.csv, predictions.jsonl, calibration.json.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm.auto import tqdm

from metaqa.config import CONF_DIR, ConfigError, check_input_file
from metaqa.data.records import QARecord
from metaqa.data.shards import load_source
from metaqa.evaluation.devrev import Outcome, devrev_report
from metaqa.fileio import write_csv, write_json, write_jsonl
from metaqa.retrieval.pipeline import CONFIDENCES, PipelineAnswer, RetrieveThenRead, calibrate
from metaqa.stages.pipeline import build_pipeline
from metaqa.tracking.run import run_stage
from metaqa.tracking.tables import markdown_table

log = logging.getLogger(__name__)
TABLE_COLUMNS = ["theme", "questions", "para_acc", "f1", "theme_score", "recall_at_1", "recall_at_5",
                 "latency_ms_p50", "latency_ms_p95"]


def gold_of(pipe: RetrieveThenRead, record: QARecord) -> tuple[int | None, tuple[str, ...]]:
    """(gold paragraph index in the theme, gold answers); None = unanswerable → "no paragraph"."""
    if record.is_impossible:
        return None, ()
    return pipe.index.theme_paragraphs(record.theme).index(record.context), tuple(record.answer_texts)


def split_questions(records: list[QARecord], cfg: DictConfig) -> tuple[list[QARecord], list[QARecord]]:
    """(calibration, evaluation): disjoint, from one seeded shuffle."""
    order = list(range(len(records)))
    random.Random(cfg.seed).shuffle(order)
    n_cal = int(cfg.calibration.questions or 0)  # set apart even when unused: runs stay comparable
    if n_cal >= len(records):
        raise ConfigError("calibration.questions", f"{n_cal} leaves none of the {len(records)} questions to evaluate",
                          "use fewer calibration questions (or calibration.questions=0)")
    rest = order[n_cal:]
    if cfg.sample is not None:
        if cfg.sample < 1:
            raise ConfigError("sample", f"{cfg.sample} < 1", "sample=null (all) or a positive number")
        rest = rest[: cfg.sample]
    return [records[i] for i in order[:n_cal]], [records[i] for i in rest]


def outcome(pipe: RetrieveThenRead, record: QARecord, answer: PipelineAnswer) -> Outcome:
    gold_paragraph, gold_answers = gold_of(pipe, record)
    ranks = [h.paragraph for h in answer.hits]
    gold_rank = ranks.index(gold_paragraph) if gold_paragraph in ranks else None
    return Outcome(record.id, record.theme, gold_paragraph, gold_answers, answer.paragraph, answer.answer,
                   answer.latency_ms, gold_rank, answer.confidence)


def run(cfg: DictConfig) -> dict:
    if cfg.calibration.confidence not in ("auto", *CONFIDENCES):
        raise ConfigError("calibration.confidence", f"{cfg.calibration.confidence!r} is not auto, margin or span",
                          "calibration.confidence=auto")
    records = load_source(check_input_file(cfg, "source"), cfg.format)
    calibration_records, eval_records = split_questions(records, cfg)
    pipe = build_pipeline(cfg, records, calibration_file=cfg.calibration.file)
    out = Path(cfg.paths.output_dir)

    calibrated = bool(calibration_records and cfg.calibration.enabled and not cfg.calibration.file)
    if calibrated:
        traces = [pipe.answer(r.question, r.theme, r.id, early_exit=False)
                  for r in tqdm(calibration_records, desc="calibrating", leave=False)]
        kinds = CONFIDENCES if cfg.calibration.confidence == "auto" else (cfg.calibration.confidence,)
        pipe.thresholds, report = calibrate(traces, [gold_of(pipe, r) for r in calibration_records], kinds,
                                            cfg.calibration.tolerance)
        write_json(out / "calibration.json", {"thresholds": vars(pipe.thresholds), "report": report,
                                              "questions": [r.id for r in calibration_records]})
        log.info("calibrated on %d questions: %s", len(calibration_records), pipe.thresholds)
    for r in eval_records[: cfg.warmup]:  # untimed: first session runs are slow
        pipe.answer(r.question, r.theme, r.id)

    answers = [pipe.answer(r.question, r.theme, r.id, early_exit=cfg.pipeline.early_exit)
               for r in tqdm(eval_records, desc="answering", leave=False)]
    outcomes = [outcome(pipe, r, a) for r, a in zip(eval_records, answers)]
    report = devrev_report(outcomes, cfg.ait_budget_ms)
    overall = {**report["overall"], "early_exit_rate": sum(a.early_exit for a in answers) / len(answers),
               "paragraphs_read_mean": sum(len(a.candidates) for a in answers) / len(answers),
               "calibration_questions": len(calibration_records) if calibrated else 0, "retriever": pipe.index.kind,
               "confidence": pipe.thresholds.confidence, "null_threshold": pipe.thresholds.null_threshold,
               "exit_threshold": pipe.thresholds.exit_threshold, "rank_penalty": pipe.thresholds.rank_penalty,
               "read_k": pipe.thresholds.read_k or pipe.top_k}

    write_json(out / "metrics.json", {"overall": overall, "per_theme": report["per_theme"]})
    rows = [{"theme": t, **m} for t, m in report["per_theme"].items()]
    write_csv(out / "per_theme.csv", rows, TABLE_COLUMNS)
    write_jsonl(out / "predictions.jsonl", [
        {**a.as_row(), "gold_paragraph": o.gold_paragraph, "gold_answers": list(o.gold_answers),
         "gold_rank": o.gold_rank} for a, o in zip(answers, outcomes)])
    table = rows + [{"theme": "**all**", **overall}]
    print(markdown_table([{k: _fmt(k, row.get(k)) for k in TABLE_COLUMNS} for row in table], TABLE_COLUMNS))
    return overall


def _fmt(key: str, value):
    """Fractions with 3 decimals (as the DevRev anchors), milliseconds with 1."""
    if not isinstance(value, float):
        return value
    return f"{value:.1f}" if key.endswith("_ms") or "_ms_" in key else f"{value:.3f}"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="pipeline_eval")
def main(cfg: DictConfig) -> float | None:
    return run_stage("pipeline_eval", run, cfg)
