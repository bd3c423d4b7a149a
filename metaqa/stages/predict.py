"""`metaqa predict`: answer questions with an exported ONNX dir (onnxruntime, no PyTorch model).

Input: `question=... context=...` (one question, printed too), or `input=<file>`: JSONL lines
with question, context[, id], or any format the readers support (SQuAD JSON, DevRev / SubjQA
CSV, a shard dir), which also carry gold answers and are then scored. Output: JSONL with id,
answer, score, start, end, null_score in `output` (default `<run dir>/predictions.jsonl`).

`engine=ray` runs the same reader on Ray Data over an actor pool (`metaqa.serving.ray_batch`):
`input` may be a folder or a glob, answers go to resumable shard files under
`engine.output_dir`, bad rows to its errors.jsonl; it does not score (use `metaqa eval`).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from metaqa.config import CONF_DIR, ConfigError, check_input_file
from metaqa.evaluation.scoring import score
from metaqa.export.io import prediction_row, read_questions, write_predictions
from metaqa.inference import OnnxPredictor, ReaderConfig, make_record
from metaqa.tracking.run import run_stage

log = logging.getLogger(__name__)


def load_inputs(cfg: DictConfig) -> tuple[list, bool]:
    """(records, labelled) from `input=` or from `question=` + `context=`; errors name the fix."""
    single = cfg.question is not None or cfg.context is not None
    if cfg.input and single:
        raise ConfigError("input", "both input= and question=/context= are given",
                          "pass either input=<file> or question='...' context='...'")
    if cfg.input:
        path = check_input_file(cfg, "input")
        records, labelled = read_questions(path, cfg.format)
        records = records[: cfg.limit]
        if not records:
            raise ConfigError("input", f"{path} holds no questions", "pass a file with at least one question")
        return records, labelled
    if not single:
        raise ConfigError("input", "nothing to answer",
                          "pass input=<questions.jsonl | squad.json | data.csv> or question='...' context='...'")
    for key in ("question", "context"):
        if not isinstance(cfg[key], str) or not cfg[key].strip():
            raise ConfigError(key, f"{key} is empty or missing",
                              f"pass {key}='<text>' (quote it: \"{key}='...'\" on the command line)")
    return [make_record(cfg.question, cfg.context, str(cfg.id))], False


def run(cfg: DictConfig) -> dict:
    model_dir = Path(cfg.model_dir)
    if not model_dir.is_dir():
        raise ConfigError("model_dir", f"{model_dir} is not a directory",
                          "pass model_dir=<export run>/onnx (run `metaqa export model_dir=<reader dir>` first)")
    if cfg.engine.name == "ray":
        return run_on_ray(cfg, model_dir)
    reader = ReaderConfig.from_cfg(cfg.reader)
    records, labelled = load_inputs(cfg)
    try:
        predictor = OnnxPredictor(model_dir, threads=cfg.threads, reader=reader)
    except FileNotFoundError as err:
        raise ConfigError("model_dir", str(err), "pass model_dir=<export run>/onnx") from err
    started = time.perf_counter()
    # Batched across questions only when asked (batch_size > 1): dynamic int8 answers then depend on
    # batch-mates; batch_size=1 is the serving path (one question at a time).
    predictions = (predictor.answer_each(records, progress=len(records) > 1) if cfg.batch_size == 1
                   else predictor.predict(records, cfg.batch_size, progress=True))
    seconds = time.perf_counter() - started
    path = write_predictions(cfg.output, predictions)
    metrics = {"questions": len(records), "answered": sum(bool(p.text) for p in predictions),
               "questions_per_s": len(records) / max(seconds, 1e-9)}
    if labelled:
        overall, _ = score(records, predictions, reader.decode.version_2)
        metrics.update(f1=overall["f1"], exact=overall["exact"])
    log.info("%d predictions in %s (%.1f questions/s)", len(predictions), path, metrics["questions_per_s"])
    if cfg.question is not None:  # the answer is the last line on stdout
        print(json.dumps(prediction_row(predictions[0]), ensure_ascii=False))
    else:
        print(f"{len(predictions)} predictions → {path}" + (f" (F1 {metrics['f1']:.2f})" if labelled else ""))
    return metrics


def run_on_ray(cfg: DictConfig, model_dir: Path) -> dict:
    from metaqa.serving.ray_batch import predict_dataset

    if not cfg.input:
        raise ConfigError("input", "engine=ray answers files, not one question",
                          "pass input=<file | folder | 'glob/*.jsonl'> (or drop engine=ray for question=/context=)")
    engine = cfg.engine
    try:
        summary = predict_dataset(
            cfg.input, model_dir, engine.output_dir, reader=OmegaConf.to_container(cfg.reader, resolve=True),
            fmt=cfg.format, actors=engine.actors, threads_per_actor=engine.threads_per_actor,
            batch_rows=engine.batch_rows, batch_size=cfg.batch_size, shard_rows=engine.shard_rows,
            output_format=engine.output_format, address=engine.address, num_cpus=engine.num_cpus)
    except FileNotFoundError as err:
        raise ConfigError("input", str(err), "pass input=<file | folder | 'glob/*.jsonl'>") from err
    except ValueError as err:
        raise ConfigError("engine", str(err), "see conf/engine/ray.yaml for the settings") from err
    print(f"{summary['written']} answers in {summary['shards']} shards → {summary['output_dir']} "
          f"({summary['shards_skipped']} shards already done, {summary['errors']} bad rows → errors.jsonl)")
    return {k: v for k, v in summary.items() if isinstance(v, (int, float))}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="predict")
def main(cfg: DictConfig) -> float | None:
    return run_stage("predict", run, cfg)
