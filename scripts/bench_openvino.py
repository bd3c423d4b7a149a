"""OpenVINO vs onnxruntime on the same ONNX graphs (issue 14, item 7): is another runtime faster here?

    python scripts/bench_openvino.py --reader outputs/readers/minilm_squad2_steps2000/reader

Builds the reader's export variants (`--variants`, conf/export names, as `metaqa bench` does), then
times each graph end to end per question (metaqa's tokeniser, windows and decoder around the
runtime) on onnxruntime and on OpenVINO's CPU plugin, interleaved in one run (`metaqa bench`'s
`bench_threads`: warm-up, `--repeats` rotated passes, p50 with a bootstrap interval), at
`--threads` threads, on the first `--limit` SQuAD v2 dev questions; F1 of the timed answers.
OpenVINO runs each graph twice where the CPU has a bf16 path: `f32` (the same arithmetic as
onnxruntime) and `bf16` (OpenVINO's default inference precision on AMX / AVX512-BF16 CPUs).
Also: max |Δ logit| between the runtimes on every window, and whether the answers agree.

OpenVINO runs through the one engine (`OnnxPredictor(..., runtime={"name": "openvino", ...})`, what
`export=openvino_bf16` dirs load as). `openvino_wins`: the same arithmetic (f32) faster with an
interval above 1 on some graph; the bf16 rows are what the `openvino_bf16` variant ships.
Writes docs/results/bench_openvino.json and prints a Markdown table.
Needs `pip install 'metaqa[openvino]'`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from hydra import initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.data.shards import load_source  # noqa: E402
from metaqa.evaluation.latency import per_item_ms, ratio_ci  # noqa: E402
from metaqa.inference import OnnxPredictor, ReaderConfig  # noqa: E402
from metaqa.inference.engine import openvino_bf16_capable  # noqa: E402
from metaqa.stages import bench  # noqa: E402
from metaqa.tracking.results import write_results  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
DEV = DATA / "squad" / "dev-v2.0.json"


def logit_parity(a: OnnxPredictor, b: OnnxPredictor, records) -> float:
    """Max |start/end logit difference| between two predictors over every window of `records`."""
    worst = 0.0
    for r in records:
        features = a.featurize([r])
        batch = a.pad(features, np.arange(len(features)))
        for x, y in zip(a.run(batch), b.run(batch)):
            worst = max(worst, float(np.max(np.abs(x - y))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reader", type=Path, required=True, help="a save_pretrained reader dir")
    parser.add_argument("--variants", nargs="+", default=["fp32", "int8_dynamic", "int8_static"])
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--source", type=Path, default=DEV, help="questions (default: SQuAD v2 dev)")
    parser.add_argument("--calibration", type=Path, default=DATA / "squad" / "train-v1.1.json",
                        help="int8_static calibration questions")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "bench_openvino")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_openvino.json")
    args = parser.parse_args()
    import openvino as ov

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose_stage("bench", args.out_dir, root_dir=ROOT, overrides=[
            f"model_dir={args.reader}", f"variants=[{','.join(args.variants)}]", f"threads=[{args.threads}]",
            f"source={args.source}", f"limit={args.limit}", "data=squad_v2_dev", f"repeats={args.repeats}",
            "overwrite=true", f"+variant_overrides.int8_static.quantization.calibration.source={args.calibration}"])
    reader = ReaderConfig.from_cfg(cfg.reader)
    records = load_source(args.source)[: args.limit]
    specs = {name: bench.variant_spec(cfg, name) for name in args.variants}
    dirs = bench.build_variants(Path(args.reader), specs, args.out_dir / "onnx", bench.calibration_records(specs),
                                reader.max_seq_length, reader.doc_stride)
    precisions = ["f32", "bf16"] if openvino_bf16_capable() else ["f32"]
    systems, pairs, parity = {}, [], {}
    for name in args.variants:
        ort = OnnxPredictor(dirs[name], threads=args.threads, reader=reader)
        systems[f"{name} onnxruntime"] = bench.ReaderSystem(ort)
        for precision in precisions:
            label = f"{name} openvino {precision}"
            openvino = OnnxPredictor(dirs[name], threads=args.threads, reader=reader,
                                     runtime={"name": "openvino", "precision": precision})
            systems[label] = bench.ReaderSystem(openvino)
            pairs.append((name, precision, f"{name} onnxruntime", label))
            parity[label] = logit_parity(ort, openvino, records)
    rows, latencies = bench.bench_threads(systems, records, args.threads, cfg, reader.decode.version_2)
    per_item = {label.rsplit("@", 1)[0]: per_item_ms(np.reshape(times, (args.repeats, len(records))))
                for label, times in latencies.items()}
    by_label = {r["variant"]: r for r in rows}
    comparisons = []
    for name, precision, ort_label, ov_label in pairs:
        speedup, low, high = ratio_ci(per_item[ort_label], per_item[ov_label])
        comparisons.append({
            "graph": name, "openvino_precision": precision,
            "onnxruntime_p50_ms": by_label[ort_label]["p50_ms"], "openvino_p50_ms": by_label[ov_label]["p50_ms"],
            "openvino_speedup_vs_onnxruntime": speedup, "speedup_ci_low": low, "speedup_ci_high": high,
            "onnxruntime_f1": by_label[ort_label]["f1"], "openvino_f1": by_label[ov_label]["f1"],
            "max_abs_logit_diff": parity[ov_label]})
    # A win: the same arithmetic (f32 hint) faster with an interval above 1, on some graph.
    wins = [c for c in comparisons if c["openvino_precision"] == "f32" and c["speedup_ci_low"] > 1.0]
    fastest_ort = min((r for r in rows if r["runtime"] == "onnxruntime"), key=lambda r: r["p50_ms"])
    fastest_ov = min((r for r in rows if r["runtime"] == "openvino"), key=lambda r: r["p50_ms"])
    result = {
        "reader": str(args.reader), "source": str(args.source), "questions": len(records), "repeats": args.repeats,
        "threads": args.threads, "openvino": ov.__version__, "openvino_wins": bool(wins),
        "fastest_onnxruntime": fastest_ort["variant"], "fastest_onnxruntime_p50_ms": fastest_ort["p50_ms"],
        "fastest_openvino": fastest_ov["variant"], "fastest_openvino_p50_ms": fastest_ov["p50_ms"],
        "fastest_openvino_f1": fastest_ov["f1"], "fastest_onnxruntime_f1": fastest_ort["f1"],
        "comparisons": comparisons, "rows": rows,
    }
    print(markdown_table([{k: round(v, 3) if isinstance(v, float) else v for k, v in c.items()} for c in comparisons],
                         list(comparisons[0])))
    print(f"\nwrote {write_results(args.out, result, args.threads)}")


if __name__ == "__main__":
    main()
