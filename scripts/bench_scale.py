"""Scale-out benchmark: Ray Data batch inference against the single process, and the HTTP service
under a bounded load.

    python scripts/bench_scale.py --reader <onnx dir>                     # both parts
    python scripts/bench_scale.py --reader <onnx dir> --questions 2000 --requests 100   # a smoke run

Part 1 (batch): the first `--questions` SQuAD v1.1 train questions as one JSONL file. The single
process answers them as `metaqa predict batch_size=1 threads=1` does (`OnnxPredictor.answer_each`,
one question a call, 1 onnxruntime thread); then `metaqa predict engine=ray` (`predict_dataset`)
with 1 and with 2 actors of 1 thread each, on a local Ray started before the clock (actor
start-up and the driver's writing are inside it). Figures: questions/s of each over the job's
wall time and in the steady state (after the first batch is back: actors up, imports done);
`scaling_efficiency_2` = Ray 2-actor steady questions/s / (2 × single-process questions/s)
(`_wall`: over the whole job), and whether every answer (text, start, end) is identical to the
single process's.

Part 2 (service): `metaqa serve` over the same ONNX dir in its own process, called on localhost by
a closed-loop client (`--requests` requests per level after a warm-up, `c` in flight at a time)
at each `--concurrency` level: p50/p99 latency, questions/s, errors (non-200 or failed calls) and
lost requests (sent, never answered). The client shares the machine's cores with the service.

Cost: core-hours (and USD at `--usd-per-core-hour`, an assumed price: pass your own) per million
paragraphs, one question each, from the single-process 1-thread rate.

Writes docs/results/bench_scale.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.data.shards import load_source  # noqa: E402
from metaqa.inference import OnnxPredictor, ReaderConfig  # noqa: E402
from metaqa.models.reference import reference_reader  # noqa: E402
from metaqa.tracking.results import write_results  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = Path(os.environ.get("METAQA_SHARED_DATA", ROOT.parent / "shared" / "data"))
SQUAD = DATA / "squad"


def questions_jsonl(n: int, path: Path) -> list:
    records = load_source(SQUAD / "train-v1.1.json")[:n]
    path.write_text("".join(json.dumps({"id": r.id, "question": r.question, "context": r.context}) + "\n"
                            for r in records))
    return records


# --------------------------------------------------------------------------- part 1: batch
def batch_part(reader_dir: Path, n: int, work: Path) -> dict:
    import ray

    from metaqa.serving.ray_batch import predict_dataset, read_outputs

    source = work / "questions.jsonl"
    records = questions_jsonl(n, source)
    predictor = OnnxPredictor(reader_dir, threads=1, reader=ReaderConfig())
    predictor.answer_each(records[:20])  # warm-up (session, allocator), as the actors get theirs in start-up
    started = time.perf_counter()
    single = predictor.answer_each(records, progress=True)
    single_s = time.perf_counter() - started
    reference = {p.id: (p.text, p.start if p.text else None, p.end if p.text else None) for p in single}
    del predictor
    row = {"questions": len(records), "single_process_s": round(single_s, 1),
           "single_process_qps": round(len(records) / single_s, 2)}
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        for actors in (1, 2):
            out = work / f"ray{actors}"
            summary = predict_dataset(str(source), reader_dir, out, actors=actors, threads_per_actor=1,
                                      batch_size=1, shard_rows=max(1, n // 8), progress=True)
            answers = {r["id"]: (r["answer"], r["start"], r["end"]) for r in read_outputs(out)}
            mismatches = sum(answers.get(k) != v for k, v in reference.items())
            row.update({f"ray_{actors}_s": round(summary["seconds"], 1),
                        f"ray_{actors}_qps": round(summary["questions_per_s"], 2),
                        f"ray_{actors}_startup_s": round(summary["startup_s"], 1),
                        f"ray_{actors}_steady_qps": round(summary["steady_questions_per_s"], 2),
                        f"ray_{actors}_mismatches": mismatches, f"ray_{actors}_errors": summary["errors"]})
    finally:
        ray.shutdown()
    # steady state (after the actors are up and the first batch is back: what a long job runs at),
    # and over the whole job's wall time (start-up included) beside it
    row["scaling_efficiency_2"] = round(row["ray_2_steady_qps"] / (2 * row["single_process_qps"]), 3)
    row["scaling_efficiency_2_wall"] = round(row["ray_2_qps"] / (2 * row["single_process_qps"]), 3)
    row["ray_2_vs_ray_1_steady"] = round(row["ray_2_steady_qps"] / row["ray_1_steady_qps"], 3)
    row["outputs_identical"] = row["ray_1_mismatches"] == 0 and row["ray_2_mismatches"] == 0
    return row


# --------------------------------------------------------------------------- part 2: service
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(reader_dir: Path, port: int, args, log_path: Path) -> subprocess.Popen:
    import httpx

    cmd = [sys.executable, "-m", "metaqa.cli", "serve", f"model_dir={reader_dir}", f"port={port}",
           f"threads={args.serve_threads}", f"max_batch={args.max_batch}", f"max_wait_ms={args.max_wait_ms}",
           "log_level=warning", f"hydra.run.dir={log_path.parent / 'serve_run'}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"the service did not come up; see {log_path}")


async def load_level(url: str, payloads: list[dict], concurrency: int, requests: int, warmup: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    answered = 0
    sent = 0
    queue = iter(range(warmup + requests))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, answered, sent
        for i in queue:
            body = payloads[i % len(payloads)]
            sent += i >= warmup
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/answer", json=body, timeout=60)
                ok = response.status_code == 200 and "answer" in response.json()
            except httpx.HTTPError:
                ok = False
            if i < warmup:
                continue
            answered += ok
            errors += not ok
            latencies.append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": sent, "answered": answered, "errors": errors,
            "lost": sent - answered - errors, "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2), "mean_ms": round(float(statistics.fmean(ms)), 2),
            "qps": round(answered / wall, 2)}


def service_part(reader_dir: Path, args, work: Path) -> dict:
    import httpx

    records = load_source(SQUAD / "dev-v1.1.json")[: max(args.requests, 200)]
    payloads = [{"question": r.question, "context": r.context, "id": r.id} for r in records]
    port = free_port()
    proc = start_service(reader_dir, port, args, work / "serve.log")
    try:
        levels = [asyncio.run(load_level(f"http://127.0.0.1:{port}", payloads, c, args.requests, args.warmup))
                  for c in args.concurrency]
        stats = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    by_c = {lv["concurrency"]: lv for lv in levels}
    out = {"settings": {"threads": args.serve_threads, "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                        "requests_per_level": args.requests, "warmup": args.warmup}, "levels": levels, "stats": stats}
    if 1 in by_c and max(by_c) > 1:
        top = max(by_c)
        out[f"p99_c{top}_over_p50_c1"] = round(by_c[top]["p99_ms"] / by_c[1]["p50_ms"], 2)
    out["errors_total"] = sum(lv["errors"] for lv in levels)
    out["lost_total"] = sum(lv["lost"] for lv in levels)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reader", type=Path, default=reference_reader("minilm_squad2", ROOT, onnx=True),
                        help="an ONNX reader dir from `metaqa export` (default: the minilm_squad2 reference's int8 export)")
    parser.add_argument("--reader-name", default=None, help="what the reader is, for the results file")
    parser.add_argument("--questions", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=600, help="requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--serve-threads", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5)
    parser.add_argument("--usd-per-core-hour", type=float, default=0.04,
                        help="assumed on-demand price of one core for an hour (the cost line uses it)")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_scale.json")
    args = parser.parse_args()
    if args.reader is None:
        parser.error("no --reader and no int8 export of the minilm_squad2 reference reader")
    print(f"reader: {args.reader}")
    if not SQUAD.exists():
        print(f"skip: {SQUAD} not found (../shared/data beside the repo)")
        return
    smoke = args.questions < 20_000 or args.requests < 600
    if smoke:
        args.out = args.out.with_name(args.out.stem + "_smoke.json")
    figures = json.loads(args.out.read_text()) if args.out.exists() else {}
    figures.update(reader=str(args.reader), reader_name=args.reader_name)
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        work = Path(tmp)
        if not args.skip_batch:
            figures["batch"] = batch = batch_part(args.reader, args.questions, work)
            figures["scaling_efficiency_2"] = batch["scaling_efficiency_2"]
            hours = 1e6 / batch["single_process_qps"] / 3600
            figures["cost_per_million_paragraphs"] = {
                "core_hours": round(hours, 2), "usd": round(hours * args.usd_per_core_hour, 2),
                "usd_per_core_hour_assumed": args.usd_per_core_hour,
                "basis": "single process, 1 onnxruntime thread, one question per paragraph"}
            print(markdown_table([batch], list(batch)))
        if not args.skip_service:
            figures["service"] = service_part(args.reader, args, work)
            print(markdown_table(figures["service"]["levels"], list(figures["service"]["levels"][0])))
    print(f"wrote {write_results(args.out, figures, 1)}")


if __name__ == "__main__":
    main()
