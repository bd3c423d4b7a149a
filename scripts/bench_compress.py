"""Compression benchmark: the teacher and its compressed students, F1 on SQuAD v1.1 dev against p50
latency per question (1 thread), every point on the same questions.

    python scripts/bench_compress.py --teacher outputs/readers/minilm_squad2_steps2000/reader
    python scripts/bench_compress.py --teacher <dir> --students trunc3 --train-questions 2000 --steps 20   # smoke

Students go through the product (`metaqa compress`, resumable: a finished student is skipped):
- `trunc4` / `trunc3`: 4 / 3 of the teacher's 6 layers (every other, the last kept), distilled;
  `trunc3_probe`: 3 layers chosen by the layer probe (`compress.truncate.choose=probe`), distilled;
- `prune`: all 6 layers, 25% of the heads and 50% of the FFN neurons removed by gradient ×
  activation, distilled; `prune_relation`: the same plus attention-relation transfer (MiniLMv2);
- `bert_mini`: bert-mini's shape (4 layers, width 256), embeddings from the teacher's by PCA, distilled;
each trained for `--steps` steps on the first `--train-questions` questions of the teacher's own
training data (`--data`/`--prep-dir`: the `squad1_hardneg` prep, SQuAD v1.1 train + hard negatives, by
default; `--data squad_v1 --prep-dir outputs/data/squad1_all` for `minilm_squad1`), validated on its dev
split, never on the evaluation set. Then `metaqa bench` per model (threads 1, `--questions`
SQuAD v1.1 dev questions, `--repeats` interleaved passes; the decoder always answers, as v1.1
asks): the teacher in `transformers.pipeline` (the anchor) and every model as fp32 and int8
(`int8_dynamic`: optimum's ORTQuantizer, what a user would pick) ONNX on metaqa's engine, and as
`openvino_bf16` (the fp32 graph on OpenVINO at bf16) where this CPU has a bf16 path (`--variants`).
Latency and F1 come from the same timed calls. With `--context-budgets 128 192`, every model also
reads at most that many tokens per question (longer contexts keep their question-relevant
sentences: less text per question), as extra points labelled `<model> ≤N tok`.

Writes docs/results/bench_compress.json (names as issue 14 lists them), docs/results/
bench_compress.png (the Pareto plot) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hydra import initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.models.reference import reference_reader  # noqa: E402
from metaqa.stages import bench, compress  # noqa: E402
from metaqa.tracking.results import write_results  # noqa: E402
from metaqa.tracking.run import run_cached  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = Path(os.environ.get("METAQA_SHARED_DATA", ROOT.parent / "shared" / "data"))
SQUAD = DATA / "squad"
OUT = ROOT / "outputs" / "compress"
STUDENTS = {
    "trunc4": ["compress=[truncate,distill]", "compress.truncate.layers=4"],
    "trunc3": ["compress=[truncate,distill]", "compress.truncate.layers=3"],
    # 3 layers chosen by the validation probe (greedy: drop the layer whose removal costs least)
    "trunc3_probe": ["compress=[truncate,distill]", "compress.truncate.layers=3", "compress.truncate.choose=probe"],
    # the same student matching the teacher's hidden states per kept layer (the teacher runs each step)
    "trunc3_hidden": ["compress=[truncate,distill]", "compress.truncate.layers=3", "compress.distill.hidden_weight=1.0"],
    "prune": ["compress=[prune,distill]", "compress.prune.heads=0.25", "compress.prune.ffn=0.5"],
    # bert-mini's shape (L4/H256), embeddings = the teacher's by PCA, the rest learnt from the teacher
    "bert_mini": ["compress=[reshape,distill]", "compress.reshape.architecture=bert_mini"],
    # the same with MiniLMv2 attention-relation transfer (the teacher runs each step)
    "prune_relation": ["compress=[prune,distill]", "compress.prune.heads=0.25", "compress.prune.ffn=0.5",
                       "compress.distill.relation_weight=1.0"],
}


def train_student(name: str, args) -> Path:
    out = OUT / f"{name}_n{args.train_questions}_s{args.steps}"
    cfg = compose_stage("compress", out, [
        f"teacher_dir={args.teacher}", *STUDENTS[name], f"data={args.data}", f"data.prep_dir={args.prep_dir}",
        f"datamodule.limit_train={args.train_questions}", f"datamodule.limit_val={args.val_questions}",
        f"datamodule.batch_size={args.batch_size}", f"datamodule.eval_batch_size={args.batch_size * 4}",
        f"trainer.max_steps={args.steps}", f"trainer.threads={args.threads}", f"module.optimizer.lr={args.lr}",
        "logger=csv", "callbacks=default", f"paths.shared_data={DATA}"], root_dir=ROOT)
    summary = run_cached("compress", compress.run, cfg)
    print(f"{name}: {json.dumps({k: v for k, v in summary['metrics'].items() if 'param' in k or 'val/f1' in k})}")
    return out / "reader"


def bench_model(name: str, model_dir: Path, args, anchor: bool, budget: int | None = None) -> list[dict]:
    """`metaqa bench` of one model (`--variants`; the pipeline too when `anchor`); with `budget`,
    reading at most that many tokens per question (`context_budget`), labelled `<name> ≤<budget> tok`."""
    label = f"{name} ≤{budget} tok" if budget else name
    out = OUT / "bench" / (f"{name}_ctx{budget}" if budget else name)
    cfg = compose_stage("bench", out, [
        f"model_dir={model_dir}", f"variants=[{','.join(args.variants)}]", f"include_pipeline={str(anchor).lower()}",
        "include_torch=false", f"source={SQUAD / 'dev-v1.1.json'}", f"limit={args.questions}", "threads=[1]",
        f"repeats={args.repeats}", "reader.decode.version_2=false", f"paths.shared_data={DATA}",
        f"context_budget={budget or 'null'}"], root_dir=ROOT)
    run_cached("bench", bench.run, cfg)
    rows = json.loads((out / "bench.json").read_text())["rows"]
    return [{**r, "model": label, "context_budget": budget} for r in rows]


def pareto_plot(points: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in points:
        marker = {bench.PIPELINE: "s", "fp32": "o", "int8_dynamic": "^", "openvino_bf16": "D"}.get(p["variant"], "o")
        ax.errorbar(p["p50_ms"], p["f1"], xerr=[[p["p50_ms"] - p["p50_ci_low"]], [p["p50_ci_high"] - p["p50_ms"]]],
                    fmt=marker, capsize=3)
        ax.annotate(f"{p['model']} {p['variant']}", (p["p50_ms"], p["f1"]), fontsize=7, xytext=(4, 3),
                    textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per question, ms (1 thread, log scale; bars: 95% bootstrap interval)")
    ax.set_ylabel("F1, SQuAD v1.1 dev (same questions)")
    ax.set_title("Compressed readers: accuracy vs latency")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def headline(rows: list[dict]) -> dict:
    pipe = next(r for r in rows if r["variant"] == bench.PIPELINE)
    teacher = next(r for r in rows if r["model"] == "teacher" and r["variant"] == "fp32")
    fp32 = {r["model"]: r for r in rows if r["variant"] == "fp32"}
    for r in rows:
        r["speedup_vs_pipeline"] = pipe["p50_ms"] / r["p50_ms"]
        if r["variant"] == "int8_dynamic":
            r["int8_f1_cost"] = fp32[r["model"]]["f1"] - r["f1"]
        if r["variant"] == "openvino_bf16":
            r["bf16_f1_cost"] = fp32[r["model"]]["f1"] - r["f1"]
    # every point but the teacher's own: students, and the teacher reading less text per question
    students = [r for r in rows if r["model"] != "teacher" and r["variant"] != bench.PIPELINE]
    within = [r for r in students if r["f1"] >= teacher["f1"] - 1.5]
    fastest_within = min(within, key=lambda r: r["p50_ms"]) if within else None
    under_1ms = [r for r in rows if r["p50_ms"] <= 1.0 and r["variant"] != bench.PIPELINE]
    fastest = min((r for r in rows if r["variant"] != bench.PIPELINE), key=lambda r: r["p50_ms"])
    return {
        "teacher_pipeline_p50_ms": pipe["p50_ms"], "teacher_pipeline_f1": pipe["f1"],
        "teacher_f1": teacher["f1"], "teacher_fp32_p50_ms": teacher["p50_ms"],
        "best_speedup_within_1_5_f1": fastest_within["speedup_vs_pipeline"] if fastest_within else None,
        "best_within_1_5_f1": f"{fastest_within['model']} {fastest_within['variant']}" if fastest_within else None,
        "best_f1_under_1ms": max(r["f1"] for r in under_1ms) if under_1ms else None,
        "fastest_p50_ms": fastest["p50_ms"], "fastest": f"{fastest['model']} {fastest['variant']}",
        "fastest_f1": fastest["f1"],
        "max_int8_f1_cost": max(r["int8_f1_cost"] for r in rows if "int8_f1_cost" in r),
    }


def default_variants() -> list[str]:
    try:
        from metaqa.inference.engine import openvino_bf16_capable
        return ["fp32", "int8_dynamic", *(["openvino_bf16"] if openvino_bf16_capable() else [])]
    except ImportError:
        return ["fp32", "int8_dynamic"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, default=reference_reader("minilm_squad2", ROOT),
                        help="a save_pretrained reader dir (default: the minilm_squad2 reference reader)")
    parser.add_argument("--prep-dir", type=Path, default=ROOT / "outputs" / "data" / "squad1_hardneg",
                        help="the teacher's training data (bench_reader.py --reference minilm_squad2 writes it)")
    parser.add_argument("--data", default="squad1_hardneg",
                        help="the data config of --prep-dir (squad_v1 for a v1.1-only teacher such as minilm_squad1)")
    parser.add_argument("--students", nargs="*", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--train-questions", type=int, default=8000)
    parser.add_argument("--val-questions", type=int, default=300)
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2, help="training threads (benchmarks run at 1)")
    parser.add_argument("--questions", type=int, default=500, help="SQuAD v1.1 dev questions per point")
    parser.add_argument("--context-budgets", type=int, nargs="*", default=[],
                        help="also every model reading at most N tokens per question (bench context_budget)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=default_variants(),
                        help="export variants per model (default: fp32, int8_dynamic, and openvino_bf16 where "
                             "OpenVINO is installed and this CPU has a bf16 path)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_compress.json")
    args = parser.parse_args()
    if args.teacher is None:
        parser.error("no --teacher and no minilm_squad2 reference reader (scripts/bench_reader.py --reference)")
    print(f"teacher: {args.teacher}")
    if not SQUAD.exists():
        print(f"skip: {SQUAD} not found (../shared/data beside the repo)")
        return
    if not (args.prep_dir / "train").exists():
        parser.error(f"{args.prep_dir}/train not found: run scripts/bench_reader.py --reference minilm_squad2 first")
    smoke = args.steps < 100 or args.questions < 500
    if smoke:
        args.out = args.out.with_name(args.out.stem + "_smoke.json")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        readers = {name: train_student(name, args) for name in args.students}
        rows = bench_model("teacher", args.teacher, args, anchor=True)
        for name, reader in readers.items():
            rows += bench_model(name, reader, args, anchor=False)
        for budget in args.context_budgets:
            for name, reader in {"teacher": args.teacher, **readers}.items():
                rows += bench_model(name, reader, args, anchor=False, budget=budget)
    figures = headline(rows)
    plot = args.out.with_suffix(".png")
    pareto_plot(rows, plot)
    keep = ["model", "variant", "context_budget", "p50_ms", "p50_ci_low", "p50_ci_high", "p99_ms", "f1", "exact",
            "speedup_vs_pipeline", "int8_f1_cost", "bf16_f1_cost"]
    figures.update(teacher=str(args.teacher), students={n: STUDENTS[n] for n in args.students},
                   training={"data": args.data, "prep_dir": str(args.prep_dir),
                             "train_questions": args.train_questions, "steps": args.steps,
                             "batch_size": args.batch_size, "lr": args.lr},
                   context_budgets=args.context_budgets, questions=args.questions, repeats=args.repeats,
                   plot=str(plot.relative_to(ROOT) if plot.is_relative_to(ROOT) else plot),
                   rows=[{k: r.get(k) for k in keep} for r in rows])
    print(markdown_table(figures["rows"], keep))
    print(f"wrote {write_results(args.out, figures, 1)}")


if __name__ == "__main__":
    main()
