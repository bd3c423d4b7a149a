"""Fine-tune MiniLM-L6 on the first N SQuAD v1.1 train questions; report dev F1/EM and throughput.

    python scripts/bench_reader.py                    # N = 2000, 8000 on CPU
    python scripts/bench_reader.py --sizes 2000 --full  # + the full train set (use a GPU)

Goes through the product: composes `conf/train.yaml` with overrides and calls the train stage,
whose final validation scores the whole SQuAD v1.1 dev set with the official metric.
Writes docs/results/bench_reader.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.evaluation.machine import machine_info  # noqa: E402
from metaqa.stages import train  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

SQUAD = ROOT.parent / "shared" / "data" / "squad"


def run_one(n_train: int | None, args, out_root: Path) -> dict:
    out = out_root / f"n{n_train or 'all'}"
    overrides = [
        "data=squad_v1", "model=minilm_l6", "logger=csv", "callbacks=default",
        f"trainer={'gpu' if torch.cuda.is_available() else 'cpu'}",
        f"trainer.max_epochs={args.epochs}", "trainer.enable_progress_bar=true",
        f"datamodule.train_source={SQUAD / 'train-v1.1.json'}",
        f"datamodule.val_source={SQUAD / 'dev-v1.1.json'}",
        f"datamodule.limit_train={n_train or 'null'}",
        f"datamodule.limit_val={args.limit_dev or 'null'}",
        f"datamodule.batch_size={args.batch_size}",
        f"datamodule.eval_batch_size={args.batch_size * 2}",
        f"module.optimizer.lr={args.lr}",
        f"seed={args.seed}",
    ]
    cfg = compose_stage("train", out, overrides, root_dir=ROOT)
    started = time.perf_counter()
    metrics = train.run(cfg)
    return {
        "n_train": metrics["train_questions"],
        "train_windows": metrics["train_windows"],
        "epochs": args.epochs,
        "dev_f1": round(metrics["val/f1"], 2),
        "dev_em": round(metrics["val/exact"], 2),
        "train_examples_per_s": round(metrics["train/examples_per_s"], 1),
        "wall_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--full", action="store_true", help="also train on all 87,599 questions")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit-dev", type=int, default=None, help="first N dev questions only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_reader.json")
    args = parser.parse_args()
    if not SQUAD.exists():
        print(f"skip: {SQUAD} not found (../shared/data beside the repo)")
        return
    sizes = list(args.sizes) + ([None] if args.full else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for n in sizes:
            rows.append(run_one(n, args, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print(markdown_table(rows, list(rows[0])))
    best = rows[-1]
    payload = {
        **{k: best[k] for k in ("n_train", "dev_f1", "dev_em", "train_examples_per_s")},
        "runs": rows,
        "date": dt.date.today().isoformat(),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix().split(str(ROOT) + "/")[-1], *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
