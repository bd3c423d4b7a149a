"""Synthetic QA (`metaqa synth`): throughput, a reader trained on synthetic data only, and
zero-label domain adaptation on SubjQA.

    python scripts/bench_synth.py                                # all three parts, CPU-sized
    python scripts/bench_synth.py --parts b --sizes 2000 8000 20000 --limit-dev 0   # (use a GPU)

(a) throughput: paragraphs/s of `metaqa synth` (cloze questions) on SQuAD v1.1 train
    paragraphs, without and with the roundtrip filter (a SQuAD-trained reader, `--reader`);
    median of `--repeats` runs each, spaCy and the reader loaded before the clock starts.
(b) synthetic only (Lewis et al. 2019's setting): cloze questions for SQuAD v1.1 train
    paragraphs (no reader, no labels), the packaged MiniLM-L6 fine-tuned on the first N of
    them with the train stage, scored on SQuAD v1.1 dev (first `--limit-dev` questions).
    Paragraphs are taken round-robin over the 442 articles so the first N questions span them.
(c) zero labelled examples: the SQuAD reader (`--reader`) writes and filters synthetic data
    for one SubjQA domain's train-split reviews (questions ignored), then `metaqa finetune`
    with k=0 and that data; F1 on the domain's test split before (no fine-tuning) and after.

Every part goes through the product (composes conf/synth.yaml, train.yaml, finetune.yaml and
calls the stages' run()). Work dirs under --work are kept, and a rerun resumes from finished
parts. Writes docs/results/bench_synth.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
from pathlib import Path

import torch
from hydra import initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.data.shards import load_source  # noqa: E402
from metaqa.evaluation.machine import machine_info  # noqa: E402
from metaqa.evaluation.scoring import f1_interval  # noqa: E402
from metaqa.models.reference import reference_reader  # noqa: E402
from metaqa.stages import eval as eval_stage  # noqa: E402
from metaqa.stages import finetune, synth, train  # noqa: E402
from metaqa.tracking.run import run_cached  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SQUAD = DATA / "squad"
DEFAULT_READER = reference_reader("minilm_squad2", ROOT) or ROOT / "outputs" / "readers" / "minilm_squad1_10k" / "reader"


def stage_cfg(name: str, out: Path, overrides: list[str]):
    return compose_stage(name, out, overrides, root_dir=ROOT)


def cached(name: str, module, out: Path, overrides: list[str]) -> dict:
    """Stage `name` into `out`, run once per config: its metrics (plus `bench_wall_s`) are reused
    from <out>/summary.json while the config is the same (run_cached)."""
    done = run_cached(name, module.run, stage_cfg(name, out, overrides))
    return {**done["metrics"], "bench_wall_s": done["seconds"]}


def round_robin_squad(work: Path) -> Path:
    """SQuAD v1.1 train as one 'article' per paragraph, ordered paragraph 0 of every article,
    then paragraph 1, ...: the first N synthetic questions then come from every article."""
    path = work / "squad_train_round_robin.json"
    if path.exists():
        return path
    doc = json.loads((SQUAD / "train-v1.1.json").read_text())
    articles = [(a["title"], a["paragraphs"]) for a in doc["data"]]
    depth = max(len(p) for _, p in articles)
    data = [{"title": title, "paragraphs": [{"context": paras[i]["context"], "qas": []}]}
            for i in range(depth) for title, paras in articles if i < len(paras)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


def synth_overrides(source: Path, paragraphs: int, reader: Path | None, negatives: int, threads: int) -> list[str]:
    return [f"input={source}", f"limit_paragraphs={paragraphs}", "progress=false",
            f"reader_dir={reader or 'null'}", f"negatives.per_paragraph={negatives}", f"threads={threads}"]


# --------------------------------------------------------------------------- (a) throughput
def part_a(args, work: Path, source: Path) -> list[dict]:
    rows = []
    for label, reader in (("cloze", None), ("cloze + roundtrip", args.reader)):
        runs = []
        for r in range(args.repeats):
            out = work / "a" / f"{'filtered' if reader else 'cloze'}_{r}"
            runs.append(cached("synth", synth, out, synth_overrides(
                source, args.throughput_paragraphs, reader, 0, args.threads)))
        m = runs[0]
        rows.append({
            "generator": label, "paragraphs": m["paragraphs"], "questions": m["kept_question_filter"],
            "kept": m["kept_roundtrip"] if reader else m["kept_question_filter"],
            "paragraphs_per_s": round(statistics.median(x["paragraphs_per_s"] for x in runs), 2),
            "runs": len(runs),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --------------------------------------------------------------------------- (b) synthetic only
def part_b(args, work: Path, source: Path) -> list[dict]:
    out = work / "b" / "synth"
    gen = cached("synth", synth, out, synth_overrides(source, args.synth_paragraphs, None, 0, args.threads))
    print(f"(b) synthetic data: {gen['rows']} questions from {gen['paragraphs']} paragraphs", flush=True)
    if gen["rows"] < max(args.sizes):
        print(f"warning: only {gen['rows']} synthetic questions for sizes {args.sizes}; raise --synth-paragraphs")
    rows = []
    for n in args.sizes:
        run_dir = work / "b" / f"train_n{n}"
        overrides = [
            "data=squad_v1", "model=minilm_l6", "logger=csv", "callbacks=default",
            f"trainer={'gpu' if torch.cuda.is_available() else 'cpu'}", f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false",
            f"datamodule.train_source={out / 'synthetic.csv'}",
            f"datamodule.val_source={SQUAD / 'dev-v1.1.json'}",
            f"datamodule.limit_train={n}", f"datamodule.limit_val={args.limit_dev or 'null'}",
            f"datamodule.batch_size={args.batch_size}", f"datamodule.eval_batch_size={args.batch_size * 2}",
            f"module.optimizer.lr={args.lr}", f"seed={args.seed}",
        ]
        m = cached("train", train, run_dir, overrides)
        # the dev questions scored again by the eval stage, for per-question F1 and so an interval
        scored = cached("eval", eval_stage, run_dir / "eval_dev", [
            "data=squad_v1", f"model_dir={run_dir / 'reader'}", f"source={SQUAD / 'dev-v1.1.json'}",
            f"limit={args.limit_dev or 'null'}", f"batch_size={args.batch_size * 2}", f"threads={args.threads}"])
        dev = load_source(SQUAD / "dev-v1.1.json")[: args.limit_dev or None]
        texts = json.loads((run_dir / "eval_dev" / "predictions.json").read_text())
        low, high = f1_interval(dev, texts, version_2=False)
        if abs(scored["f1"] - m["val/f1"]) > 0.01:
            print(f"warning: eval stage F1 {scored['f1']:.2f} vs the training run's validation {m['val/f1']:.2f}")
        rows.append({"n_synthetic": m["train_questions"], "date": dt.date.today().isoformat(), "epochs": args.epochs,
                     "dev_questions": args.limit_dev or 10570,
                     "dev_f1": round(m["val/f1"], 2), "dev_f1_ci_low": round(low, 2), "dev_f1_ci_high": round(high, 2),
                     "dev_em": round(m["val/exact"], 2),
                     "train_examples_per_s": round(m.get("train/examples_per_s", 0.0), 1),
                     "wall_s": round(m["bench_wall_s"], 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --------------------------------------------------------------------------- (c) zero labels
def part_c(args, work: Path) -> list[dict]:
    rows = []
    for domain in args.domains:
        subjqa = DATA / "subjqa" / domain
        gen_dir = work / "c" / domain / "synth"
        gen = cached("synth", synth, gen_dir, [
            *synth_overrides(subjqa / "train.csv", args.reviews, args.reader, 1, args.threads),
            f"negatives.judge={args.negative_judge}"])
        ft_dir = work / "c" / domain / "finetune"
        m = cached("finetune", finetune, ft_dir, [
            f"model_dir={args.reader}", "data=subj_qa", f"data.domain={domain}", "logger=none",
            f"trainer={'gpu' if torch.cuda.is_available() else 'cpu'}", "trainer.enable_progress_bar=false",
            f"train_source={subjqa / 'test.csv'}", f"eval_source={subjqa / 'test.csv'}", "k=0",
            f"synthetic_source={gen_dir / 'synthetic.csv'}", f"epochs={args.ft_epochs}",
            f"limit_eval={args.limit_eval or 'null'}", f"seed={args.seed}",
        ])
        rows.append({"domain": domain, "reviews": gen["paragraphs"], "synthetic": m["synthetic"],
                     "negatives": gen["negatives"], "test_questions": m["eval_questions"],
                     "f1_before": round(m["before/f1"], 2), "f1_after": round(m["after/f1"], 2),
                     "gain_f1": round(m["f1_gain"], 2),
                     # best_f1: F1 at the best no-answer threshold (tuned on the test set itself)
                     "best_f1_before": round(m.get("before/best_f1", float("nan")), 2),
                     "best_f1_after": round(m.get("after/best_f1", float("nan")), 2),
                     "no_answer_share": round(100 * m.get("before/NoAns_total", 0) / m["eval_questions"], 2),
                     "HasAns_f1_before": round(m.get("before/HasAns_f1", float("nan")), 2),
                     "HasAns_f1_after": round(m.get("after/HasAns_f1", float("nan")), 2),
                     "NoAns_f1_before": round(m.get("before/NoAns_f1", float("nan")), 2),
                     "NoAns_f1_after": round(m.get("after/NoAns_f1", float("nan")), 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["a", "b", "c"], choices=["a", "b", "c"])
    parser.add_argument("--reader", type=Path, default=DEFAULT_READER,
                        help="SQuAD-trained reader dir (save_pretrained or ONNX) for (a) filtered and (c)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--throughput-paragraphs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--synth-paragraphs", type=int, default=2000, help="(b) paragraphs to generate from")
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000], help="(b) synthetic questions")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--limit-dev", type=int, default=1000, help="(b) first N dev questions; 0 = all")
    parser.add_argument("--domains", nargs="+", default=["electronics"])
    parser.add_argument("--reviews", type=int, default=300, help="(c) train-split reviews to generate from")
    parser.add_argument("--negative-judge", default="auto", choices=["auto", "reader", "tfidf"])
    parser.add_argument("--ft-epochs", type=int, default=2)
    parser.add_argument("--limit-eval", type=int, default=0, help="(c) first N test questions; 0 = all")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_synth")
    parser.add_argument("--note", default="", help="free text kept in the JSON (e.g. machine load)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_synth.json")
    args = parser.parse_args()
    if not SQUAD.exists():
        print(f"skip: {SQUAD} not found (../shared/data beside the repo)")
        return
    needs_reader = "c" in args.parts or "a" in args.parts
    if needs_reader and not (args.reader / "config.json").exists() and not any(args.reader.glob("*.onnx")):
        sys.exit(f"--reader {args.reader}: no reader there. Train one (`metaqa train data=squad_v1 ...`) "
                 f"and pass its <run>/reader, or run --parts b only")
    torch.set_num_threads(args.threads)

    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        source = round_robin_squad(args.work)
        if "a" in args.parts:
            rows = part_a(args, args.work, source)
            print(markdown_table(rows, list(rows[0])))
            results.update(paragraphs_per_s=rows[0]["paragraphs_per_s"],
                           paragraphs_per_s_filtered=rows[1]["paragraphs_per_s"], throughput=rows)
        if "b" in args.parts:
            rows = part_b(args, args.work, source)
            print(markdown_table(rows, list(rows[0])))
            # sizes not re-run keep their rows (each row says when it was measured)
            fresh = {r["n_synthetic"] for r in rows}
            rows = sorted([r for r in results.get("synthetic_only", []) if r["n_synthetic"] not in fresh] + rows,
                          key=lambda r: r["n_synthetic"])
            results.update(synthetic_only_dev_f1={str(r["n_synthetic"]): r["dev_f1"] for r in rows}, synthetic_only=rows)
        if "c" in args.parts:
            rows = part_c(args, args.work)
            print(markdown_table(rows, list(rows[0])))
            results.update(zero_shot_gain_f1=round(statistics.mean(r["gain_f1"] for r in rows), 2), zero_label=rows)
    # Parts not run keep their earlier figures: each part records when and how it was measured.
    for part in args.parts:
        results[f"measured_{part}"] = {"date": dt.date.today().isoformat(), "command": "python " + shlex.join(
            [Path(sys.argv[0]).as_posix().split(str(ROOT) + "/")[-1], *sys.argv[1:]])}
    results.update(
        reader=str(args.reader.resolve().relative_to(ROOT) if args.reader.resolve().is_relative_to(ROOT)
                   else args.reader),
        **({"note": args.note} if args.note else {}),
        date=dt.date.today().isoformat(),
        command="python " + shlex.join([Path(sys.argv[0]).as_posix().split(str(ROOT) + "/")[-1], *sys.argv[1:]]),
        threads=args.threads,
        machine=machine_info(),
    )
    headline = ["paragraphs_per_s", "paragraphs_per_s_filtered", "synthetic_only_dev_f1", "zero_shot_gain_f1"]
    ordered = {k: results.get(k) for k in headline} | {k: v for k, v in results.items() if k not in headline}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(ordered, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
