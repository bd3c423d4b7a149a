"""Retrieve-then-read benchmark: DevRev score per retriever, and long documents read whole vs filtered.

    python scripts/bench_pipeline.py --reader <onnx dir>                  # everything below
    python scripts/bench_pipeline.py --reader <onnx dir> --skip-long --retrievers bm25

Part 1 goes through the product: for SQuAD v2 dev (35 themes, a seeded sample of questions) and
the DevRev sample, and for each retriever (bm25, dense, hybrid), it composes
`conf/pipeline_eval.yaml` and calls the stage: thresholds calibrated on held-apart questions,
then paragraph accuracy, F1, theme score, recall@1/5 and latency per question (end to end,
one question at a time, `--threads` threads).

Part 2 compares, on long documents, sliding windows over the whole document
(max_seq_length 384, doc_stride 128) with sentence filtering (`metaqa.retrieval.longdoc`: BM25
over 2-sentence windows, keep the best until one reader window is full): F1 on answerable
questions (the reader always answers) and latency per question. Documents: SQuAD v1.1 dev
paragraphs concatenated in runs of `--group` per article, and SubjQA electronics test reviews
(all answerable questions, and only those whose review needs more than one reader window).

Writes docs/results/bench_pipeline.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from hydra import initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.data.records import Answer, QARecord  # noqa: E402
from metaqa.data.shards import load_source  # noqa: E402
from metaqa.evaluation.devrev import answer_exact, answer_f1  # noqa: E402
from metaqa.evaluation.machine import machine_info  # noqa: E402
from metaqa.inference import DecodeConfig, OnnxPredictor, ReaderConfig, make_record  # noqa: E402
from metaqa.models.reference import reference_reader  # noqa: E402
from metaqa.retrieval.longdoc import SentenceFilter, read_filtered  # noqa: E402
from metaqa.stages import pipeline_eval  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
PIPELINE_KEYS = ["data", "retriever", "questions", "para_acc", "f1", "theme_score", "para_acc_has_ans", "f1_has_ans",
                 "para_acc_no_ans", "answerability_auc", "recall_at_1", "recall_at_5", "paragraphs_read_mean",
                 "latency_ms_mean", "latency_ms_p50", "latency_ms_p95"]
LONG_KEYS = ["documents", "method", "questions", "f1", "exact", "windows_mean", "latency_ms_mean",
             "latency_ms_p50", "latency_ms_p95"]


# --------------------------------------------------------------------------- part 1: the pipeline
ALWAYS_ANSWER = ["calibration.enabled=false", "pipeline.top_k=1", "pipeline.null_threshold=null"]


def run_pipeline_eval(data: str, retriever: str, args, out: Path, extra: list[str] = (), label: str = "") -> dict:
    overrides = [
        f"model_dir={args.reader}",
        f"data={data}", f"retriever={retriever}", f"threads={args.threads}", f"seed={args.seed}",
        f"sample={args.sample if data == 'squad_v2_dev' else 'null'}",
        f"calibration.questions={args.calibration}", f"pipeline.top_k={args.top_k}", *extra,
    ]
    cfg = compose_stage("pipeline_eval", out, overrides, root_dir=ROOT)
    metrics = pipeline_eval.run(cfg)
    row = {"data": data, **{k: metrics[k] for k in PIPELINE_KEYS if k in metrics}}
    row["retriever"] = label or retriever
    row.update({k: metrics[k] for k in ("para_acc_ci_low", "para_acc_ci_high", "f1_ci_low", "f1_ci_high",
                                        "themes", "para_acc_has_ans", "f1_has_ans", "para_acc_no_ans",
                                        "null_threshold", "exit_threshold", "rank_penalty", "read_k")})
    calibration = out / "calibration.json"
    if calibration.exists():  # what the calibration saw: the chosen setting, and the best per paragraphs read
        report = json.loads(calibration.read_text())["report"]
        best_by_k: dict[int, float] = {}
        for r in report["grid"]:
            best_by_k[r["read_k"]] = max(best_by_k.get(r["read_k"], -1.0), r["objective"])
        row["calibration"] = {"chosen": report["chosen"], "best_objective_by_read_k": best_by_k}
    return row


# --------------------------------------------------------------------------- part 2: long documents
def squad_long_documents(group: int, limit: int, seed: int) -> list[QARecord]:
    """SQuAD v1.1 dev questions re-anchored in documents of `group` consecutive paragraphs."""
    records = load_source(DATA / "squad" / "dev-v1.1.json")
    by_theme: dict[str, list[str]] = {}
    for r in records:
        if r.context not in by_theme.setdefault(r.theme, []):
            by_theme[r.theme].append(r.context)
    where: dict[str, tuple[str, int]] = {}  # paragraph → (document, offset of the paragraph in it)
    for paragraphs in by_theme.values():
        for lo in range(0, len(paragraphs), group):
            chunk = paragraphs[lo : lo + group]
            document, offset = "\n\n".join(chunk), 0
            for p in chunk:
                where[p] = (document, offset)
                offset += len(p) + 2
    long = [QARecord(r.id, r.theme, where[r.context][0], r.question,
                     tuple(Answer(a.text, a.start + where[r.context][1]) for a in r.answers))
            for r in records]
    return random.Random(seed).sample(long, min(limit, len(long)))


def subjqa_documents(limit: int, seed: int) -> list[QARecord]:
    records = [r for r in load_source(DATA / "subjqa" / "electronics" / "test.csv") if not r.is_impossible]
    return random.Random(seed).sample(records, min(limit, len(records)))


def compare_long(name: str, records: list[QARecord], predictor: OnnxPredictor, sentence_filter: SentenceFilter,
                 warmup: int = 5) -> list[dict]:
    """F1 and latency of sliding windows vs sentence filtering on the same questions."""
    def sliding(r):
        return predictor.answer(r.question, r.context, r.id), r.context

    def filtered(r):
        pred, kept = read_filtered(predictor, sentence_filter, r.question, r.context, r.id)
        return pred, kept.text

    rows = []
    for method, fn in (("sliding windows", sliding), ("sentence filter (bm25)", filtered)):
        for r in records[:warmup]:
            fn(r)
        times, f1, exact, windows = [], [], [], []
        for r in records:
            t0 = time.perf_counter()
            pred, context_read = fn(r)
            times.append((time.perf_counter() - t0) * 1e3)
            f1.append(answer_f1(r.answer_texts, pred.text))
            exact.append(answer_exact(r.answer_texts, pred.text))
            windows.append(len(predictor.featurize([make_record(r.question, context_read)])))  # untimed
        rows.append({"documents": name, "method": method, "questions": len(records), "f1": float(np.mean(f1)),
                     "exact": float(np.mean(exact)), "windows_mean": float(np.mean(windows)),
                     "latency_ms_mean": float(np.mean(times)), "latency_ms_p50": float(np.percentile(times, 50)),
                     "latency_ms_p95": float(np.percentile(times, 95))})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --------------------------------------------------------------------------- main
def fmt(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if isinstance(v, float):
            out[k] = f"{v:.1f}" if "_ms" in k or k == "windows_mean" or k == "paragraphs_read_mean" else f"{v:.3f}"
        else:
            out[k] = v
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reader", type=Path, default=reference_reader("minilm_squad2", ROOT, onnx=True),
                        help="an ONNX reader dir from `metaqa export` (default: the minilm_squad2 reference's int8 export)")
    parser.add_argument("--retrievers", nargs="+", default=["bm25", "dense", "hybrid"])
    parser.add_argument("--data", nargs="+", default=["squad_v2_dev", "devrev_csv"])
    parser.add_argument("--sample", type=int, default=1000, help="SQuAD v2 dev questions evaluated (seeded)")
    parser.add_argument("--calibration", type=int, default=300, help="questions set apart to calibrate thresholds")
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--long-sample", type=int, default=300, help="questions per long-document set")
    parser.add_argument("--group", type=int, default=8, help="SQuAD paragraphs per long document")
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--no-baseline", action="store_true", help="skip the always-answer bm25 top-1 row")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_pipeline.json")
    args = parser.parse_args()
    if args.reader is None:
        parser.error("no --reader and no int8 export of the minilm_squad2 reference reader")
    print(f"reader: {args.reader}")
    if not DATA.exists():
        print(f"skip: {DATA} not found (../shared/data beside the repo)")
        return
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    runs: list[dict] = []
    if not args.skip_pipeline:
        with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            for data in args.data:
                for retriever in args.retrievers:
                    runs.append(run_pipeline_eval(data, retriever, args, Path(tmp) / f"{data}_{retriever}"))
                    print(json.dumps(runs[-1]), flush=True)
                if not args.no_baseline:  # the reader's quality without any "no paragraph" decision
                    runs.append(run_pipeline_eval(data, "bm25", args, Path(tmp) / f"{data}_always", ALWAYS_ANSWER,
                                                  "bm25 top-1, always answer"))
                    print(json.dumps(runs[-1]), flush=True)
        print(markdown_table([fmt(r) for r in runs], PIPELINE_KEYS))

    long_rows: list[dict] = []
    if not args.skip_long:
        predictor = OnnxPredictor(args.reader, threads=args.threads, reader=ReaderConfig(decode=DecodeConfig(version_2=False)))
        sentence_filter = SentenceFilter(predictor.tokenizer, predictor.reader.max_seq_length)
        long_rows += compare_long(f"SQuAD v1.1 dev, {args.group} paragraphs per document",
                                  squad_long_documents(args.group, args.long_sample, args.seed),
                                  predictor, sentence_filter)
        reviews = subjqa_documents(10**6, args.seed)  # every answerable question, shuffled
        long_rows += compare_long("SubjQA electronics test reviews (answerable)", reviews[: args.long_sample],
                                  predictor, sentence_filter)
        longer = [r for r in reviews if len(predictor.featurize([r])) > 1]  # more than one reader window
        long_rows += compare_long("SubjQA electronics, reviews longer than one window (answerable)",
                                  longer[: args.long_sample], predictor, sentence_filter)
        print(markdown_table([fmt(r) for r in long_rows], LONG_KEYS))

    calibrated = [r for r in runs if r["retriever"] in args.retrievers]
    squad = [r for r in calibrated if r["data"] == "squad_v2_dev"] or calibrated
    best = max(squad, key=lambda r: r["theme_score"]) if squad else {}
    payload = {
        **{k: best.get(k) for k in ("para_acc", "f1", "latency_ms_mean", "latency_ms_p95", "retriever")},
        "runs": runs,
        "long_document": long_rows,
        "reader": str(args.reader),
        "sample": args.sample, "calibration_questions": args.calibration, "top_k": args.top_k,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "date": dt.date.today().isoformat(),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix().split(str(ROOT) + "/")[-1], *sys.argv[1:]]),
        "threads": args.threads,
        "machine": machine_info(),
    }
    payload["command_pipeline"] = payload["command_long"] = payload["command"]
    if args.out.exists() and (args.skip_pipeline or args.skip_long):  # keep the part that was not re-run
        previous = json.loads(args.out.read_text())
        if args.skip_pipeline:
            for k in ("para_acc", "f1", "latency_ms_mean", "latency_ms_p95", "retriever", "runs", "sample",
                      "calibration_questions", "top_k"):
                payload[k] = previous.get(k)
            payload["command_pipeline"] = previous.get("command_pipeline", previous.get("command"))
        if args.skip_long:
            payload["long_document"] = previous.get("long_document", [])
            payload["command_long"] = previous.get("command_long", previous.get("command"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
