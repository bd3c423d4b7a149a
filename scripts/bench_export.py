"""Export latency: MiniLM-L6 and bert-mini ONNX variants vs transformers.pipeline, on SQuAD v2 dev.

    python scripts/bench_export.py --reader outputs/readers/minilm_squad1_10k/reader

1. `metaqa bench` on the given MiniLM reader (fp32, optimized, int8_dynamic, int8_static; 1 and 2
   threads; the first --limit SQuAD v2 dev questions; static int8 calibrated on SQuAD v1.1 train).
2. The same for the bert-mini architecture (random weights: latency does not depend on them, F1
   does, so bert-mini F1 is not reported).
3. Where the time of the best variant goes, 1 thread: tokenise, onnxruntime, postprocess.
4. PyTorch bf16 autocast vs fp32 (the CPU's AVX512-BF16 path), model forward only, 1 thread.
Writes docs/results/bench_export.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra import initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.data.shards import load_source  # noqa: E402
from metaqa.inference import OnnxPredictor  # noqa: E402
from metaqa.models.factory import build_qa_model, load_tokenizer  # noqa: E402
from metaqa.stages import bench  # noqa: E402
from metaqa.tracking.callbacks import save_reader  # noqa: E402
from metaqa.tracking.results import write_results  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DEV = DATA / "squad" / "dev-v2.0.json"


def run_bench(out: Path, reader: Path, variants: list[str], threads: list[int], limit: int) -> dict:
    cfg = compose_stage("bench", out, root_dir=ROOT, overrides=[
        f"model_dir={reader}",
        f"variants=[{','.join(variants)}]", f"threads=[{','.join(map(str, threads))}]",
        f"source={DEV}", f"limit={limit}", "data=squad_v2_dev",
        f"+variant_overrides.int8_static.quantization.calibration.source={DATA / 'squad' / 'train-v1.1.json'}",
    ])
    headline = bench.run(cfg)
    return {"headline": headline, **json.loads((out / "bench.json").read_text())}


def median_ms(fn, items, warmup: int = 10) -> float:
    for item in items[:warmup]:
        fn(item)
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def breakdown(onnx_dir: Path, records) -> dict[str, float]:
    """Median ms per question of each step of OnnxPredictor.answer, 1 thread."""
    predictor = OnnxPredictor(onnx_dir, threads=1)
    feats = [predictor.featurize([r]) for r in records]
    batches = [predictor.pad(f, np.arange(len(f))) for f in feats]
    logits = [predictor.run(b) for b in batches]
    return {
        "tokenise_ms": median_ms(lambda r: predictor.featurize([r]), records),
        "pad_to_arrays_ms": median_ms(lambda f: predictor.pad(f, np.arange(len(f))), feats),
        "onnxruntime_ms": median_ms(predictor.run, batches),
        "postprocess_ms": median_ms(lambda i: predictor.decode([records[i]], feats[i], *logits[i]),
                                    list(range(len(records)))),
        "end_to_end_ms": median_ms(lambda r: predictor.answer(r.question, r.context), records),
    }


def bf16_vs_fp32(reader: Path, records) -> dict[str, float]:
    """PyTorch model forward per question, fp32 vs bf16 autocast, 1 thread."""
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(reader, local_files_only=True)
    net = AutoModelForQuestionAnswering.from_pretrained(reader, local_files_only=True).eval()
    inputs = [tokenizer(r.question, r.context, truncation="only_second", max_length=384, return_tensors="pt")
              for r in records]

    def fp32(x):
        with torch.inference_mode():
            return net(**x)

    def bf16(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return net(**x)

    return {"torch_fp32_forward_ms": median_ms(fp32, inputs), "torch_bf16_autocast_forward_ms": median_ms(bf16, inputs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reader", type=Path, required=True, help="a SQuAD-trained MiniLM save_pretrained dir")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_export")
    args = parser.parse_args()
    if not DEV.exists():
        sys.exit(f"needs {DEV} (../shared/data beside the repo)")
    records = load_source(DEV)[: args.limit]

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        minilm = run_bench(args.out / "minilm", args.reader, ["fp32", "optimized", "int8_dynamic", "int8_static"],
                           args.threads, args.limit)
        tokenizer = load_tokenizer({"tokenizer": "packaged"})
        torch.manual_seed(0)
        arch = OmegaConf.load(CONF_DIR / "model" / "bert_mini.yaml")
        mini_dir = save_reader(build_qa_model(arch, vocab_size=len(tokenizer)), tokenizer, args.out / "bert_mini_random")
        mini = run_bench(args.out / "bert_mini", mini_dir, ["fp32", "optimized", "int8_dynamic"], [1], args.limit)

    best = minilm["headline"]
    parts = breakdown(Path(minilm["variants"][best["best_variant"]]["dir"]), records)
    bf16 = bf16_vs_fp32(args.reader, records)
    mini_rows = [r for r in mini["rows"] if r["threads"] == 1]
    mini_best = min((r for r in mini_rows if r["runtime"] == "onnxruntime"), key=lambda r: r["p50_ms"])

    for name, result in (("MiniLM-L6 (SQuAD v1.1 reader)", minilm), ("bert-mini (random weights; F1 meaningless)", mini)):
        print(f"\n{name}, {result['headline']['questions']} SQuAD v2 dev questions:\n")
        print(bench.table(result["rows"]))
    print(f"\nWhere the {best['best_variant']} time goes (median ms per question, 1 thread):\n")
    print(markdown_table([{k: round(v, 3) for k, v in parts.items()}], list(parts)))
    print("\nPyTorch model forward, median ms per question, 1 thread:\n")
    print(markdown_table([{k: round(v, 2) for k, v in bf16.items()}], list(bf16)))

    result = {
        "questions": best["questions"],
        "pipeline_fp32_p50_ms": best["pipeline_fp32_p50_ms"], "best_p50_ms": best["best_p50_ms"],
        "best_variant": best["best_variant"], "speedup_vs_pipeline": best["speedup_vs_pipeline"],
        "bert_mini_best_p50_ms": mini_best["p50_ms"], "bert_mini_best_variant": mini_best["variant"],
        "bert_mini_speedup_vs_pipeline": mini_best["speedup_vs_pipeline"],
        "int8_f1_drop": best["int8_f1_drop"], "int8_f1_reference": best["int8_f1_reference"],
        "minilm_rows": minilm["rows"], "bert_mini_rows": mini_rows,
        "breakdown_ms": parts, **bf16,
    }
    path = write_results(ROOT / "docs" / "results" / "bench_export.json", result, best["threads"])
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
