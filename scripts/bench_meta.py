"""Meta-learning vs the multitask baseline: meta-train on SQuAD v1.1 themes, k-shot adapt to SubjQA.

    python scripts/bench_meta.py                          # the CPU-sized run recorded in RESULTS.md
    python scripts/bench_meta.py --steps 2000 --domains electronics grocery restaurants tripadvisor \
        --ks 0 16 64 256 --limit-eval 0                   # the issue's full protocol (use a GPU)

For each method (`meta=none` = multitask, `meta=fomaml`, ...) and seed: `metaqa meta-train` from the
packaged MiniLM on SQuAD v1.1 train (442 article titles = tasks), then for each SubjQA domain and
k: `metaqa finetune` with k examples drawn from the domain's train split, scored on its test
split. Both methods see the same episodes (same seed) and the same k examples. Then the step
cost: examples/s of each algorithm on the same episodes, measured one after another in this
process. Writes docs/results/bench_meta.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.evaluation.machine import machine_info  # noqa: E402
from metaqa.models.reference import reference_reader  # noqa: E402
from metaqa.stages import finetune, meta_train  # noqa: E402
from metaqa.tracking.run import cached_run, run_cached  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def stage_cfg(name: str, out: Path, overrides: list[str]):
    return compose_stage(name, out, overrides, root_dir=ROOT)


def meta_overrides(args, method: str, seed: int, steps: int) -> list[str]:
    return [
        "model=minilm_l6", f"model.pretrained={args.init}", f"meta={method}", f"seed={seed}", "logger=csv",
        f"trainer={'gpu' if torch.cuda.is_available() else 'cpu'}", f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        f"datamodule.train_source={DATA / 'squad' / 'train-v1.1.json'}", "datamodule.val_source=null",
        f"datamodule.limit_train={args.limit_train or 'null'}",
        f"reader.max_seq_length={args.max_seq_length}", f"reader.doc_stride={args.doc_stride}",
        f"meta.tasks_per_step={args.tasks}", f"meta.n_support={args.shots}", f"meta.n_query={args.shots}",
        f"meta.outer_optimizer.lr={args.outer_lr}",
    ]


def meta_train_one(args, method: str, seed: int, out_root: Path) -> Path:
    out = out_root / f"{method}_seed{seed}"
    cfg = stage_cfg("meta_train", out, meta_overrides(args, method, seed, args.steps))
    if cached_run(out, cfg) is not None:  # rerunning the bench reuses runs of the same config
        return out / "reader"
    started = time.perf_counter()
    metrics = run_cached("meta_train", meta_train.run, cfg)["metrics"]
    print(f"meta-train {method} seed {seed}: {args.steps} steps in {time.perf_counter() - started:.0f} s, "
          f"{metrics.get('train/examples_per_s', 0):.1f} windows/s", flush=True)
    return out / "reader"


def adapt_one(args, reader: Path, domain: str, k: int, seed: int, out: Path) -> dict:
    subjqa = DATA / "subjqa" / domain
    return run_cached("finetune", finetune.run, stage_cfg("finetune", out, [
        f"model_dir={reader}", "data=subj_qa", f"data.domain={domain}", "logger=none",
        f"trainer={'gpu' if torch.cuda.is_available() else 'cpu'}", "trainer.enable_progress_bar=false",
        f"train_source={subjqa / 'train.csv'}", f"eval_source={subjqa / 'test.csv'}",
        f"k={k}", f"seed={seed}", f"epochs={args.epochs}",
        f"limit_eval={args.limit_eval or 'null'}",
        f"reader.max_seq_length={args.max_seq_length}", f"reader.doc_stride={args.doc_stride}",
    ]))["metrics"]


def step_cost(args, out_root: Path) -> dict[str, float]:
    """Windows/s of each algorithm on the same episodes (same seed), one after another."""
    rates = {}
    for method in ("none", "fomaml", "reptile", "maml"):
        out = out_root / f"cost_{method}"
        metrics = run_cached("meta_train", meta_train.run, stage_cfg("meta_train", out, [
            *meta_overrides(args, method, 0, args.cost_steps), "logger=none", "callbacks=none",
            "+callbacks.throughput._target_=metaqa.tracking.callbacks.Throughput"]))["metrics"]
        rates[method] = metrics["train/examples_per_s"]
        print(f"step cost {method}: {rates[method]:.1f} windows/s", flush=True)
    return rates


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["none", "fomaml"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--domains", nargs="+", default=["electronics", "restaurants"])
    parser.add_argument("--ks", nargs="+", type=int, default=[0, 16, 64])
    parser.add_argument("--init", default=str(reference_reader("minilm_squad2", ROOT) or "packaged"),
                        help="start of meta-training: a reader dir (default: the minilm_squad2 reference reader "
                             "when present) or packaged (the MiniLM sentence encoder)")
    parser.add_argument("--steps", type=int, default=60, help="meta-steps (episodes) per run")
    parser.add_argument("--tasks", type=int, default=4, help="themes per episode")
    parser.add_argument("--shots", type=int, default=4, help="support (= query) questions per task")
    parser.add_argument("--outer-lr", type=float, default=5e-5)
    parser.add_argument("--limit-train", type=int, default=0, help="first N SQuAD train questions (0 = all)")
    parser.add_argument("--limit-eval", type=int, default=150, help="first N test questions per domain (0 = all)")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs over the k examples")
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--doc-stride", type=int, default=96)
    parser.add_argument("--cost-steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_meta")
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    if not (DATA / "squad" / "train-v1.1.json").exists():
        sys.exit(f"needs {DATA} (../shared/data beside the repo)")
    threads = torch.get_num_threads()

    rows = []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for method in args.methods:
            for seed in args.seeds:
                reader = meta_train_one(args, method, seed, args.out)
                for domain in args.domains:
                    for k in args.ks:
                        m = adapt_one(args, reader, domain, k, seed, args.out / f"{method}_seed{seed}" / f"{domain}_k{k}")
                        rows.append({"method": method, "seed": seed, "domain": domain, "k": k,
                                     "f1": m["after/f1"], "before_f1": m["before/f1"], "em": m["after/exact"],
                                     "has_ans_f1": m.get("after/HasAns_f1"), "no_ans_f1": m.get("after/NoAns_f1"),
                                     "best_f1": m.get("after/best_f1")})
                        print(f"{method} seed {seed} {domain} k={k}: F1 {m['before/f1']:.2f} → {m['after/f1']:.2f}",
                              flush=True)
        rates = {} if args.skip_cost else step_cost(args, args.out)

    table, gains = [], {}
    for k in args.ks:
        row = {"k": k}
        for method in args.methods:
            mine = [r for r in rows if r["method"] == method and r["k"] == k]
            row[f"{method} F1"] = mean_sd([r["f1"] for r in mine])
            row[f"{method} HasAns F1"] = mean_sd([r["has_ans_f1"] or 0.0 for r in mine])
            row[f"{method} best F1"] = mean_sd([r["best_f1"] or 0.0 for r in mine])
        base = [r["f1"] for r in rows if r["method"] == "none" and r["k"] == k]
        for method in args.methods:
            if method != "none" and base:
                mine = [r["f1"] for r in rows if r["method"] == method and r["k"] == k]
                gains[(method, k)] = statistics.mean(mine) - statistics.mean(base)
                row[f"{method} − none"] = f"{gains[(method, k)]:+.2f}"
        table.append(row)
    print(f"\nSubjQA F1 after k-shot fine-tuning, mean ± sd over {len(args.seeds)} seeds x "
          f"{len(args.domains)} domains ({', '.join(args.domains)}):\n")
    print(markdown_table(table, list(table[0])))
    if rates:
        cost = [{"algorithm": m, "windows_per_s": f"{r:.1f}", "cost vs multitask": f"{rates['none'] / r:.2f}x"}
                for m, r in rates.items()]
        print(f"\nStep cost, same episodes ({args.tasks} tasks x {args.shots}+{args.shots} questions), "
              f"{args.cost_steps} steps each:\n")
        print(markdown_table(cost, list(cost[0])))

    main_method = next((m for m in args.methods if m != "none"), None)
    result = {
        "date": dt.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
        "threads": threads, "machine": machine_info(),
        "init": args.init, "meta_method": main_method, "meta_steps": args.steps, "seeds": args.seeds, "domains": args.domains,
        "limit_eval": args.limit_eval,
        **{f"f1_gain_k{k}": round(gains[(main_method, k)], 2) if (main_method, k) in gains else None
           for k in (0, 16, 64, 256)},
        **{f"step_cost_ratio_{m}": round(rates["none"] / rates[m], 3) if m in rates else None
           for m in ("fomaml", "reptile", "maml")},
        "runs": rows,
    }
    path = ROOT / "docs" / "results" / "bench_meta.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
