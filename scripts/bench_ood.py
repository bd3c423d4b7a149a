"""Out-of-domain protocol (conf/experiment/ood.yaml): meta-learning vs multitask on SubjQA domains,
with intervals.

    python scripts/bench_ood.py                    # the CPU-sized setting of the protocol
    python scripts/bench_ood.py --size gpu         # the full one (scripts/gpu_suite.sh)
    python scripts/bench_ood.py --arms multitask fomaml --targets electronics --ks 0 16 --meta-seeds 0 \
        --shot-seeds 0 --meta-steps 2 --limit-eval 20 --adaptations none mlm synth --mlm-steps 4 \
        --synth-paragraphs 20   # a smoke run (→ bench_ood_smoke.json)
    python scripts/bench_ood.py --step-cost 8      # + each algorithm's cost per meta-step on the same episodes

For each arm (`ood.arms`: multitask = `meta=none`, fomaml, reptile with SGD or AdamW as the outer
optimiser, second-order maml at `ood.maml_steps_fraction` of the steps), adaptation and meta seed:
`metaqa meta-train experiment=ood` from `--init` (default: the minilm_squad2 reference reader) on
the same episodes. Then for each SubjQA target domain, k and shot seed: `metaqa finetune` with k
examples drawn stratified by answerability from the domain's train split (dev for books and
movies, which have none), the null threshold by `ood.threshold_folds`-fold cross-validation on
the k examples and the epoch count by early stopping on the same folds (`ood.early_stopping`),
scored on the domain's test split (first `limit_eval` questions).

Statistics: per (arm, domain, k) the mean F1 over meta seeds × shot seeds with a 95% bootstrap
interval over questions × seeds (`metaqa.evaluation.stats`), and the paired difference against
multitask (same questions, seed i against seed i); the SubjQA average weights every domain
equally. The oracle-threshold F1 (`best_f1`, it reads the gold answers) is reported beside,
labelled as such. `wall_s` per arm: its meta-training plus all its fine-tuning runs, and `meta_train_wall_s` alone;
every arm sees the same meta-training examples (`meta_train_questions`: same episodes, same
steps; maml at its fraction), so the wall times say what equal examples cost each arm.

Step cost (`--step-cost N`): windows/s of every algorithm (none, fomaml, reptile, maml) for N
meta-steps on the protocol's episodes (same seed), one after another in this process, as
`step_cost` in the json: what "equal examples seen" costs each arm in time.

Adaptations (`ood.adaptations`), per target domain before the k-shot step, on the domain's
unlabelled text (the k-shot pool's paragraphs; never its test split): `mlm` (`metaqa adapt-mlm`,
whole-word masking), `synth` (`metaqa synth` questions roundtrip-filtered by the arm's reader,
added to the k examples), `mlm+synth`. A variant is reported as `<arm>+<adaptation>`; every gain
is against plain multitask.

Writes docs/results/bench_ood.json, docs/results/bench_ood.png (F1 vs k per variant) and prints tables.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from hydra import initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from metaqa.config import CONF_DIR, compose_stage  # noqa: E402
from metaqa.evaluation.stats import bootstrap_mean_ci, paired_diff_ci  # noqa: E402
from metaqa.models.reference import reference_reader  # noqa: E402
from metaqa.stages import adapt_mlm, finetune, meta_train, synth  # noqa: E402
from metaqa.tracking.results import write_results  # noqa: E402
from metaqa.tracking.run import run_cached  # noqa: E402
from metaqa.tracking.tables import markdown_table  # noqa: E402

DATA = Path(os.environ.get("METAQA_SHARED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "outputs" / "ood"
TRAINER = "gpu" if torch.cuda.is_available() else "cpu"


def protocol(args) -> dict:
    """ood.yaml's `ood` node, its size's settings on top, then the command line's."""
    ood = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "experiment" / "ood.yaml")["ood"])
    ood.update(ood["sizes"][args.size])
    for key in ("arms", "targets", "ks", "shot_seeds", "meta_seeds", "meta_steps", "limit_eval", "adaptations"):
        if getattr(args, key) is not None:
            ood[key] = getattr(args, key)
    if args.mlm_steps is not None:
        ood["mlm"] = {**ood["mlm"], "steps": args.mlm_steps, "head_warmup_steps": min(ood["mlm"]["head_warmup_steps"],
                                                                                      args.mlm_steps // 2)}
    if args.synth_paragraphs is not None:
        ood["synth"] = {**ood["synth"], "paragraphs": args.synth_paragraphs}
    if isinstance(ood["arms"], dict):
        ood["arms"] = list(ood["arms"])
    return ood


def meta_train_cfg(out: Path, overrides: list[str], seed: int, steps: int, args):
    """`metaqa meta-train experiment=ood` from `--init` for `steps` episodes, plus `overrides`."""
    return compose_stage("meta_train", out, [
        "experiment=ood", *overrides, f"model.pretrained={args.init}", f"model.tokenizer={args.init}",
        f"seed={seed}", f"trainer={TRAINER}", f"trainer.max_steps={steps}", "trainer.enable_progress_bar=false",
        f"paths.shared_data={DATA}"], root_dir=ROOT)


def meta_train_arm(arm: str, seed: int, ood: dict, args) -> tuple[Path, float, int]:
    """The arm's meta-trained reader, its seconds, and the source questions its episodes held."""
    steps = ood["meta_steps"] if arm != "maml" else max(1, int(ood["meta_steps"] * ood["maml_steps_fraction"]))
    out = OUT / f"v{ood['version']}" / "meta" / f"{arm}_seed{seed}_s{steps}"
    arm_overrides = OmegaConf.load(CONF_DIR / "experiment" / "ood.yaml")["ood"]["arms"][arm]
    cfg = meta_train_cfg(out, [*arm_overrides, "logger=csv"], seed, steps, args)
    summary = run_cached("meta_train", meta_train.run, cfg)
    questions = steps * cfg.meta.tasks_per_step * (cfg.meta.n_support + cfg.meta.n_query)
    return out / "reader", float(summary.get("seconds") or 0.0), questions


def step_cost(ood: dict, args) -> dict:
    """Windows/s of each algorithm on the same episodes (same seed), one after another."""
    rates = {}
    for algorithm in ("none", "fomaml", "reptile", "maml"):
        out = OUT / f"v{ood['version']}" / "step_cost" / f"{algorithm}_s{args.step_cost}"
        summary = run_cached("meta_train", meta_train.run, meta_train_cfg(out, [
            f"meta={algorithm}", "logger=none", "callbacks=none",
            "+callbacks.throughput._target_=metaqa.tracking.callbacks.Throughput"], 0, args.step_cost, args))
        rates[algorithm] = float(summary["metrics"]["train/examples_per_s"])
        print(f"step cost {algorithm}: {rates[algorithm]:.1f} windows/s", flush=True)
    return {"steps": args.step_cost, "windows_per_s": {a: round(r, 2) for a, r in rates.items()},
            "cost_vs_multitask": {a: round(rates["none"] / r, 3) for a, r in rates.items()}}


def k_shot_pool(domain: str, ood: dict) -> Path:
    subjqa = DATA / "subjqa" / domain
    return subjqa / ("dev.csv" if domain in ood["no_train_split"] else "train.csv")


def adapt_to_domain(reader: Path, arm: str, seed: int, domain: str, adaptation: str, ood: dict) -> tuple[Path, Path | None, float]:
    """The reader and synthetic questions the k-shot step starts from, after `adaptation` on the
    domain's unlabelled text (the k-shot pool's paragraphs; never the test split)."""
    root = OUT / f"v{ood['version']}" / "adapt" / f"{arm}_seed{seed}" / domain
    pool, seconds, synthetic = k_shot_pool(domain, ood), 0.0, None
    if "synth" in adaptation.split("+"):  # roundtrip-filtered by the arm's own reader, before any MLM
        out = root / "synth"
        summary = run_cached("synth", synth.run, compose_stage("synth", out, [
            f"input={pool}", f"limit_paragraphs={ood['synth']['paragraphs']}", "progress=false",
            f"reader_dir={reader}", f"negatives.per_paragraph={ood['synth']['negatives_per_paragraph']}",
            f"seed={seed}", f"paths.shared_data={DATA}"], root_dir=ROOT))
        synthetic, seconds = out / "synthetic.csv", seconds + float(summary.get("seconds") or 0.0)
    if "mlm" in adaptation.split("+"):
        out = root / "mlm"
        summary = run_cached("adapt_mlm", adapt_mlm.run, compose_stage("adapt_mlm", out, [
            f"model_dir={reader}", f"text_source={pool}", f"steps={ood['mlm']['steps']}",
            f"head_warmup_steps={ood['mlm']['head_warmup_steps']}", f"seed={seed}", f"trainer={TRAINER}",
            "trainer.enable_progress_bar=false", "logger=csv", f"paths.shared_data={DATA}"], root_dir=ROOT))
        reader, seconds = out / "reader", seconds + float(summary.get("seconds") or 0.0)
    return reader, synthetic, seconds


def adapt(reader: Path, synthetic: Path | None, variant: str, seed: int, domain: str, k: int, shot_seed: int,
          ood: dict) -> tuple[dict, dict, float]:
    subjqa = DATA / "subjqa" / domain
    out = OUT / f"v{ood['version']}" / "finetune" / f"{variant}_seed{seed}" / f"{domain}_k{k}_shot{shot_seed}"
    cfg = compose_stage("finetune", out, [
        f"model_dir={reader}", "data=subj_qa", f"data.domain={domain}", "logger=none", f"trainer={TRAINER}",
        "trainer.enable_progress_bar=false", f"train_source={k_shot_pool(domain, ood)}",
        f"eval_source={subjqa / 'test.csv'}", f"k={k}", f"seed={shot_seed}", f"epochs={ood['finetune_epochs']}",
        "draw=stratified", f"threshold.folds={ood['threshold_folds']}",
        f"early_stopping={ood['early_stopping']}", f"limit_eval={ood['limit_eval'] or 'null'}",
        f"synthetic_source={synthetic or 'null'}", "reader.max_seq_length=256", "reader.doc_stride=96",
        f"paths.shared_data={DATA}"], root_dir=ROOT)
    summary = run_cached("finetune", finetune.run, cfg)
    per_q = json.loads((out / "per_question.json").read_text())["after"]
    return summary["metrics"], per_q, float(summary.get("seconds") or 0.0)


RUN_MEANS = {"has_ans_f1": "HasAns_f1", "no_ans_f1": "NoAns_f1", "null_threshold": "null_threshold",
             "schedule_share": "schedule_share", "oracle_best_f1": "best_f1"}  # the oracle reads the gold answers


def mean_of(runs: list[dict], key: str) -> float | None:
    """The mean of `key` over the runs that have it (HasAns F1 is absent when a test slice has no answerable question)."""
    values = [float(m[key]) for m in runs if m.get(key) is not None]
    return round(float(np.mean(values)), 2) if values else None


def domain_matrix(runs: list[dict]) -> tuple[np.ndarray, list[str]]:
    """(seed combinations, questions) F1 matrix; every run scored the same questions."""
    ids = sorted(runs[0])
    return np.array([[run[q][0] for q in ids] for run in runs]), ids


def averaged(matrices: list[np.ndarray]) -> np.ndarray:
    """Columns of every domain side by side, scaled so the plain mean is the mean of domain means."""
    total = sum(m.shape[1] for m in matrices)
    return np.concatenate([m * total / (len(matrices) * m.shape[1]) for m in matrices], axis=1)


def plot(figures: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for arm, row in figures["arms"].items():
        ks = [k for k in figures["ks"] if f"f1_k{k}" in row]
        mid = [row[f"f1_k{k}"] for k in ks]
        err = [[m - row[f"f1_k{k}_ci_low"] for k, m in zip(ks, mid)], [row[f"f1_k{k}_ci_high"] - m for k, m in zip(ks, mid)]]
        ax.errorbar([str(k) for k in ks], mid, yerr=err, marker="o", capsize=3, label=arm)
    ax.set_xlabel("k (labelled target examples)")
    ax.set_ylabel("F1, SubjQA test (domain average)")
    ax.set_title(f"OOD protocol v{figures['protocol_version']}: F1 vs k (95% bootstrap intervals)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["cpu", "gpu"], default="gpu" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--init", default=str(reference_reader("minilm_squad2", ROOT) or "packaged"))
    parser.add_argument("--arms", nargs="+", default=None)
    parser.add_argument("--targets", nargs="+", default=None)
    parser.add_argument("--ks", nargs="+", type=int, default=None)
    parser.add_argument("--shot-seeds", dest="shot_seeds", nargs="+", type=int, default=None)
    parser.add_argument("--meta-seeds", dest="meta_seeds", nargs="+", type=int, default=None)
    parser.add_argument("--meta-steps", dest="meta_steps", type=int, default=None)
    parser.add_argument("--limit-eval", dest="limit_eval", type=int, default=None)
    parser.add_argument("--adaptations", nargs="+", default=None, choices=["none", "mlm", "synth", "mlm+synth"])
    parser.add_argument("--mlm-steps", dest="mlm_steps", type=int, default=None)
    parser.add_argument("--synth-paragraphs", dest="synth_paragraphs", type=int, default=None)
    parser.add_argument("--step-cost", dest="step_cost", type=int, default=0,
                        help="also time N meta-steps of every algorithm on the protocol's episodes (0: skip)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: docs/results/bench_ood.json, or bench_ood_smoke.json when the command line "
                             "changes the protocol's cells (the json records which cells it holds either way)")
    args = parser.parse_args()
    if not (DATA / "subjqa").exists():
        print(f"skip: {DATA / 'subjqa'} not found (../shared/data beside the repo)")
        return
    ood = protocol(args)
    if any(getattr(args, k) is not None for k in ("arms", "targets", "ks", "shot_seeds", "meta_seeds", "meta_steps",
                                                   "limit_eval", "adaptations", "mlm_steps", "synth_paragraphs")):
        args.out = args.out or ROOT / "docs" / "results" / "bench_ood_smoke.json"  # not the protocol's size as set
    args.out = args.out or ROOT / "docs" / "results" / "bench_ood.json"
    if "multitask" not in ood["arms"] or "none" not in ood["adaptations"]:
        parser.error("multitask without adaptation is the baseline every gain is measured against: keep "
                     "multitask in --arms and none in --adaptations")
    print(f"OOD protocol v{ood['version']} ({args.size}), init {args.init}: arms {ood['arms']}, targets "
          f"{ood['targets']}, adaptations {ood['adaptations']}, k {ood['ks']}, shot seeds {ood['shot_seeds']}, "
          f"meta seeds {ood['meta_seeds']}")
    scores: dict = {}  # arm → domain → k → [per-question dict per (meta seed, shot seed)]
    finals: dict = {}  # arm → domain → k → [finetune metrics per (meta seed, shot seed)]
    wall: dict = {}       # variant → seconds: meta-training + adaptation + every fine-tuning run
    meta_wall: dict = {}  # variant → seconds of meta-training alone (equal examples, unequal time)
    seen: dict = {}       # variant → source questions in its meta-training episodes, over meta seeds
    variants = [arm if a == "none" else f"{arm}+{a}" for arm in ood["arms"] for a in ood["adaptations"]]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for arm in ood["arms"]:
            for adaptation in ood["adaptations"]:
                variant = arm if adaptation == "none" else f"{arm}+{adaptation}"
                wall[variant], meta_wall[variant], seen[variant] = 0.0, 0.0, 0
                for seed in ood["meta_seeds"]:
                    meta_reader, seconds, questions = meta_train_arm(arm, seed, ood, args)
                    wall[variant] += seconds  # each variant counts its arm's meta-training
                    meta_wall[variant] += seconds
                    seen[variant] += questions
                    for domain in ood["targets"]:
                        reader, synthetic, seconds = adapt_to_domain(meta_reader, arm, seed, domain, adaptation, ood)
                        wall[variant] += seconds
                        for k in ood["ks"]:
                            for shot_seed in ood["shot_seeds"] if k else [0]:  # k = 0 draws nothing
                                metrics, per_q, seconds = adapt(reader, synthetic, variant, seed, domain, k,
                                                                shot_seed, ood)
                                wall[variant] += seconds
                                scores.setdefault(variant, {}).setdefault(domain, {}).setdefault(k, []).append(per_q)
                                finals.setdefault(variant, {}).setdefault(domain, {}).setdefault(k, []).append(metrics)
        cost = step_cost(ood, args) if args.step_cost else None
    rows, arms = [], {}
    for arm in variants:
        summary = {"wall_s": round(wall[arm], 1), "meta_train_wall_s": round(meta_wall[arm], 1),
                   "meta_train_questions": seen[arm]}
        for k in ood["ks"]:
            mats = {d: domain_matrix(scores[arm][d][k])[0] for d in ood["targets"]}
            base = {d: domain_matrix(scores["multitask"][d][k])[0] for d in ood["targets"]}
            domain_rows = []
            for d in ood["targets"]:
                mean, lo, hi = bootstrap_mean_ci(mats[d])
                row = {"arm": arm, "domain": d, "k": k, "f1": round(mean, 2), "ci_low": round(lo, 2),
                       "ci_high": round(hi, 2), "runs": len(mats[d]), "questions": mats[d].shape[1],
                       **{name: mean_of(finals[arm][d][k], f"after/{key}") for name, key in RUN_MEANS.items()}}
                if arm != "multitask":
                    diff = paired_diff_ci(mats[d], base[d])
                    row.update(gain_vs_multitask=round(diff[0], 2), gain_ci_low=round(diff[1], 2),
                               gain_ci_high=round(diff[2], 2))
                domain_rows.append(row)
            rows += domain_rows
            mean, lo, hi = bootstrap_mean_ci(averaged(list(mats.values())))
            summary.update({f"f1_k{k}": round(mean, 2), f"f1_k{k}_ci_low": round(lo, 2), f"f1_k{k}_ci_high": round(hi, 2)})
            for name in ("has_ans_f1", "no_ans_f1", "oracle_best_f1"):  # domain average
                values = [row[name] for row in domain_rows if row[name] is not None]
                summary[f"{name}_k{k}"] = round(float(np.mean(values)), 2) if values else None
            if arm != "multitask":
                diff = paired_diff_ci(averaged(list(mats.values())), averaged(list(base.values())))
                summary.update({f"gain_vs_multitask_k{k}": round(diff[0], 2),
                                f"gain_vs_multitask_k{k}_ci_low": round(diff[1], 2),
                                f"gain_vs_multitask_k{k}_ci_high": round(diff[2], 2)})
        arms[arm] = summary
    gains = [(arm, k, s[f"gain_vs_multitask_k{k}"], s[f"gain_vs_multitask_k{k}_ci_low"])
             for arm, s in arms.items() if arm != "multitask" for k in (16, 64) if f"gain_vs_multitask_k{k}" in s]
    goal = any(g >= 3 and lo > 0 for _, _, g, lo in gains)
    figures = {"protocol_version": ood["version"], "size": args.size, "init": args.init, "ks": ood["ks"],
               "adaptations": ood["adaptations"], "mlm": ood["mlm"], "synth": ood["synth"],
               "targets": ood["targets"], "early_stopping": ood["early_stopping"], "shot_seeds": ood["shot_seeds"],
               "meta_seeds": ood["meta_seeds"],
               "meta_steps": ood["meta_steps"], "limit_eval": ood["limit_eval"], "arms": arms,
               "goal_best_arm_plus_3_f1_at_k16_64_ci_excludes_0": goal, "step_cost": cost, "rows": rows}
    png = args.out.with_suffix(".png")
    plot(figures, png)
    print(markdown_table([{"arm": a, **s} for a, s in arms.items()], ["arm", "wall_s", "meta_train_wall_s", *[f"f1_k{k}" for k in ood["ks"]],
                                                                       *[f"gain_vs_multitask_k{k}" for k in (16, 64)]]))
    print(markdown_table(rows, list(dict.fromkeys(key for row in rows for key in row))))
    if cost:
        print(markdown_table([{"algorithm": a, "windows_per_s": r, "cost_vs_multitask": cost["cost_vs_multitask"][a]}
                              for a, r in cost["windows_per_s"].items()], ["algorithm", "windows_per_s", "cost_vs_multitask"]))
    print(f"wrote {write_results(args.out, figures, None)} and {png}")


if __name__ == "__main__":
    main()
