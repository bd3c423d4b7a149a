"""`metaqa pipeline`: question + theme → retrieve the theme's paragraphs → read → answer.

The index over the source's paragraphs (one per theme) is built on the first run and saved in
`index_dir`; later runs load it while the source and the retriever config are unchanged. The
reader is an ONNX dir from `metaqa export`. Answer one `question=` + `theme=` (printed as JSON),
or every question of an `input=` file (each with its own theme) into `output` (JSONL).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from metaqa.config import CONF_DIR, ConfigError, check_input_file
from metaqa.data.records import QARecord
from metaqa.data.shards import load_source
from metaqa.export.io import read_questions
from metaqa.fileio import write_jsonl
from metaqa.inference import OnnxPredictor, ReaderConfig
from metaqa.retrieval.index import ThemeIndex, check_retriever_spec, paragraphs_by_theme
from metaqa.retrieval.longdoc import SentenceFilter
from metaqa.retrieval.pipeline import CONFIDENCES, RetrieveThenRead, Thresholds
from metaqa.tracking.run import run_stage

log = logging.getLogger(__name__)


def load_thresholds(pipeline_cfg: DictConfig, calibration_file: str | None) -> Thresholds:
    """Thresholds from a calibration.json when given, else from `pipeline.*`."""
    if calibration_file:
        path = Path(calibration_file)
        if not path.exists():
            raise ConfigError("calibration", f"{path} does not exist",
                              "pass the calibration.json written by `metaqa pipeline-eval`, or null")
        return Thresholds(**json.loads(path.read_text())["thresholds"])
    if pipeline_cfg.confidence not in CONFIDENCES:
        raise ConfigError("pipeline.confidence", f"{pipeline_cfg.confidence!r} is not one of {list(CONFIDENCES)}",
                          "pipeline.confidence=margin (or span for a reader trained without unanswerable questions)")
    return Thresholds(pipeline_cfg.confidence, pipeline_cfg.null_threshold, pipeline_cfg.exit_threshold,
                      pipeline_cfg.rank_penalty)


def build_pipeline(cfg: DictConfig, records: list[QARecord] | None = None,
                   calibration_file: str | None = None) -> RetrieveThenRead:
    """Index (built or loaded) + ONNX reader + thresholds, from a pipeline / pipeline_eval config."""
    reader_cfg = ReaderConfig.from_cfg(cfg.reader)
    reader_cfg.decode.version_2 = False  # every paragraph gives its best span: the pipeline decides "none"
    spec = check_retriever_spec(OmegaConf.to_container(cfg.retriever, resolve=True))
    model_dir = Path(cfg.model_dir)
    if not model_dir.is_dir():
        raise ConfigError("model_dir", f"{model_dir} is not a directory",
                          "pass model_dir=<export run>/onnx (run `metaqa export model_dir=<reader dir>` first)")
    if cfg.pipeline.top_k < 1:
        raise ConfigError("pipeline.top_k", f"{cfg.pipeline.top_k} < 1", "pipeline.top_k=3")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)  # the query encoder (dense / hybrid)
    started = time.perf_counter()
    if records is None and cfg.source:
        records = load_source(check_input_file(cfg, "source"), cfg.format)
    if records is not None:
        index, built = ThemeIndex.build_or_load(cfg.index_dir, paragraphs_by_theme(records), spec, progress=True,
                                                threads=cfg.threads or 0)
        log.info("%s index %s in %s (%.1f s)", spec["name"], "built" if built else "loaded", cfg.index_dir,
                 time.perf_counter() - started)
    else:
        index = ThemeIndex.load(cfg.index_dir, threads=cfg.threads or 0)
    try:
        reader = OnnxPredictor(model_dir, threads=cfg.threads or 0, reader=reader_cfg)
    except FileNotFoundError as err:
        raise ConfigError("model_dir", str(err), "pass model_dir=<export run>/onnx") from err
    p = cfg.pipeline
    sentence_filter = None
    if p.sentence_filter:
        sentence_filter = SentenceFilter(reader.tokenizer, reader_cfg.max_seq_length, p.filter.window, p.filter.stride,
                                         max_sentence_words=p.filter.max_sentence_words)
    return RetrieveThenRead(index, reader, p.top_k, p.recall_k, load_thresholds(p, calibration_file), sentence_filter)


def load_questions(cfg: DictConfig) -> list[tuple[str, str, str]]:
    """(id, question, theme) from `question=` + `theme=` or from `input=`."""
    single = cfg.question is not None or cfg.theme is not None
    if cfg.input and single:
        raise ConfigError("input", "both input= and question=/theme= are given",
                          "pass either input=<file> or question='...' theme='...'")
    if cfg.input:
        records, _ = read_questions(check_input_file(cfg, "input"), cfg.input_format)
        records = records[: cfg.limit]
        if not records:
            raise ConfigError("input", f"{cfg.input} holds no questions", "pass a file with at least one question")
        if any(not r.theme for r in records):
            raise ConfigError("input", f"{cfg.input}: questions without a theme",
                              "use a format that carries themes (DevRev CSV, SQuAD JSON titles, SubjQA domain)")
        return [(r.id, r.question, r.theme) for r in records]
    for key in ("question", "theme"):
        if not isinstance(cfg[key], str) or not cfg[key].strip():
            raise ConfigError(key, f"{key} is empty or missing",
                              f"pass {key}='<text>' (or input=<file of questions with themes>)")
    return [(str(cfg.id), cfg.question, cfg.theme)]


def run(cfg: DictConfig) -> dict:
    questions = load_questions(cfg)
    pipe = build_pipeline(cfg, calibration_file=cfg.calibration)
    for _, _, theme in questions:
        pipe.index.theme_paragraphs(theme)  # unknown themes fail before any reading
    id, question, theme = questions[0]
    pipe.answer(question, theme, id)  # untimed warm-up: the first session run is several times slower
    answers = [pipe.answer(q, theme, id, early_exit=cfg.pipeline.early_exit) for id, q, theme in questions]
    write_jsonl(cfg.output, [a.as_row() for a in answers])
    if cfg.question is not None:
        print(json.dumps(answers[0].as_row(), ensure_ascii=False))
    else:
        print(f"{len(answers)} answers → {cfg.output}")
    latencies = [a.latency_ms for a in answers]
    return {"questions": len(answers), "no_paragraph": sum(a.paragraph is None for a in answers),
            "latency_ms_mean": sum(latencies) / len(latencies)}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="pipeline")
def main(cfg: DictConfig) -> float | None:
    return run_stage("pipeline", run, cfg)
