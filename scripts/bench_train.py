"""Training throughput and quality: `metaqa train` against Hugging Face's own recipe, side by side.

    python scripts/bench_train.py --hf-fp32-steps 40              # N = 2000 and 8000, every arm
    python scripts/bench_train.py --sizes 2000 --arms metaqa hf_bf16

Arms, each in its own process (peak RSS per arm), same MiniLM-L6 start, first N SQuAD v1.1 train
questions, batch 16, lr 5e-5, linear schedule with 10% warm-up, weight decay 0.01, gradient clip
1.0, 1 epoch, seed 42, `--threads` torch threads:
- `metaqa`      — `metaqa train` with its defaults (precision from the hardware, length-grouped
                  batches, attention dropout 0 so attention runs in the fused SDPA kernel);
- `metaqa_attn_dropout` — the same with the checkpoint's attention dropout (0.1), as the HF arms train;
- `metaqa_fp32` — defaults but `trainer.precision=32-true`;
- `hf_fp32`     — `run_qa.py`'s preprocessing (windows padded to max_seq_length 384, its default)
                  + `transformers.Trainer` in fp32;
- `hf_bf16`     — the Trainer's fastest CPU settings: bf16, dynamic padding, `group_by_length`.
Every window of a batch is timed from batch start to optimiser step end (data loading left out)
on both sides; windows/s = training windows / those seconds. `hf_fp32` pads every batch to 384
tokens, so its time per step does not depend on the data: `--hf-fp32-steps` bounds it (its
windows/s is exact, its F1 is then not reported).

Both sides' readers are scored the same way after training: the same first `--limit-dev` SQuAD
v1.1 dev questions through metaqa's reader engine (fp32, windows 384/128, n-best 20, max answer
30) and the official v1.1 metric — so an F1 gap is a training difference, never a scorer one.
A reader trained in bf16 is also scored with its logits computed under bf16 autocast
(`dev_f1_bf16_eval`), which is what the Trainer's own evaluation loop does with `bf16=True`.

Writes docs/results/bench_train.json (figures at the largest N) and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SQUAD = ROOT.parent / "shared" / "data" / "squad"
ARMS = ("metaqa", "metaqa_attn_dropout", "metaqa_fp32", "hf_fp32", "hf_bf16")
HPARAMS = {"batch_size": 16, "lr": 5e-5, "warmup_ratio": 0.1, "weight_decay": 0.01, "epochs": 1,
           "max_seq_length": 384, "doc_stride": 128}


# --------------------------------------------------------------------------- the two recipes
def train_metaqa(args, out: Path, precision: str, extra: list[str]) -> tuple[object, object, dict]:
    from hydra import initialize_config_dir

    from metaqa.config import CONF_DIR, compose_stage
    from metaqa.stages import train

    overrides = [
        "data=squad_v1", "model=minilm_l6", "logger=csv", "callbacks=default", "trainer=cpu",
        f"trainer.precision={precision}", f"trainer.threads={args.threads}", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", f"datamodule.train_source={SQUAD / 'train-v1.1.json'}",
        "datamodule.val_source=null",  # scored below, the same way as the HF arms
        f"datamodule.limit_train={args.n}", f"datamodule.batch_size={HPARAMS['batch_size']}",
        f"module.optimizer.lr={HPARAMS['lr']}", f"module.warmup_ratio={HPARAMS['warmup_ratio']}",
        f"module.weight_decay={HPARAMS['weight_decay']}", f"seed={args.seed}",
        f"reader.max_seq_length={HPARAMS['max_seq_length']}", f"reader.doc_stride={HPARAMS['doc_stride']}",
        *extra, *args.metaqa_override,
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose_stage("train", out, overrides, root_dir=ROOT)
        metrics = train.run(cfg)
    from metaqa.inference import TorchPredictor

    reader = TorchPredictor.from_dir(out / "reader")
    return reader.net, reader.tokenizer, {
        "windows_per_s": metrics["train/examples_per_s"], "train_windows": metrics["train_windows"],
        "steps": metrics["global_step"], "precision": metrics["precision"], "overrides": [*extra, *args.metaqa_override]}


def prepare_train_features(examples: dict, tokenizer, pad_to_max_length: bool) -> dict:
    """`prepare_train_features` of transformers' examples/pytorch/question-answering/run_qa.py."""
    examples["question"] = [q.lstrip() for q in examples["question"]]
    tokenized = tokenizer(
        examples["question"], examples["context"], truncation="only_second",
        max_length=HPARAMS["max_seq_length"], stride=HPARAMS["doc_stride"], return_overflowing_tokens=True,
        return_offsets_mapping=True, padding="max_length" if pad_to_max_length else False)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    tokenized["start_positions"], tokenized["end_positions"] = [], []
    for i, offsets in enumerate(offset_mapping):
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id)
        sequence_ids = tokenized.sequence_ids(i)
        answers = examples["answers"][sample_mapping[i]]
        if len(answers["answer_start"]) == 0:
            tokenized["start_positions"].append(cls_index)
            tokenized["end_positions"].append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = 0
        while sequence_ids[token_start] != 1:
            token_start += 1
        token_end = len(input_ids) - 1
        while sequence_ids[token_end] != 1:
            token_end -= 1
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            tokenized["start_positions"].append(cls_index)
            tokenized["end_positions"].append(cls_index)
        else:
            while token_start < len(offsets) and offsets[token_start][0] <= start_char:
                token_start += 1
            tokenized["start_positions"].append(token_start - 1)
            while offsets[token_end][1] >= end_char:
                token_end -= 1
            tokenized["end_positions"].append(token_end + 1)
    return tokenized


def train_hf(args, out: Path, bf16: bool) -> tuple[object, object, dict]:
    import torch
    from transformers import (
        AutoModelForQuestionAnswering,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
        set_seed,
    )

    from metaqa.data.shards import load_source
    from metaqa.models.factory import packaged_model_dir

    records = load_source(str(SQUAD / "train-v1.1.json"))[: args.n]
    examples = {"question": [r.question for r in records], "context": [r.context for r in records],
                "answers": [{"text": [a.text for a in r.answers], "answer_start": [a.start for a in r.answers]}
                            for r in records]}
    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir(), local_files_only=True)
    features = prepare_train_features(examples, tokenizer, pad_to_max_length=not bf16)
    rows = [{k: features[k][i] for k in features} for i in range(len(features["input_ids"]))]
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    set_seed(args.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(packaged_model_dir(), local_files_only=True)

    class StepTimer(TrainerCallback):  # the same window as metaqa's Throughput callback
        seconds, windows, _t0 = 0.0, 0, 0.0

        def on_step_begin(self, *a, **k):
            self._t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.seconds += time.perf_counter() - self._t0

    timer = StepTimer()
    steps = args.hf_fp32_steps if (not bf16 and args.hf_fp32_steps) else -1
    training_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=HPARAMS["batch_size"], learning_rate=HPARAMS["lr"],
        num_train_epochs=HPARAMS["epochs"], max_steps=steps, warmup_ratio=HPARAMS["warmup_ratio"],
        weight_decay=HPARAMS["weight_decay"], max_grad_norm=1.0, seed=args.seed, bf16=bf16,
        group_by_length=bf16, use_cpu=True, save_strategy="no", report_to=[], logging_steps=50,
        dataloader_num_workers=0, disable_tqdm=True)
    collator = DataCollatorWithPadding(tokenizer) if bf16 else default_data_collator
    trainer = Trainer(model=model, args=training_args, train_dataset=rows, data_collator=collator,
                      callbacks=[timer])
    result = trainer.train()
    steps_done = result.global_step
    windows = min(steps_done * HPARAMS["batch_size"], len(rows))
    return trainer.model.eval(), tokenizer, {
        "windows_per_s": windows / timer.seconds, "train_windows": len(rows), "steps": steps_done,
        "precision": "bf16" if bf16 else "fp32", "bounded": steps > 0,
        "torch_threads": torch.get_num_threads()}


# --------------------------------------------------------------------------- one arm, one process
def worker(args) -> None:
    import torch

    from metaqa.data.shards import load_source
    from metaqa.evaluation.scoring import score
    from metaqa.inference import DecodeConfig, ReaderConfig, TorchPredictor
    from metaqa.models.training import peak_rss_mb

    torch.set_num_threads(args.threads)
    out = Path(args.work) / f"{args.worker}_n{args.n}"
    started = time.perf_counter()
    if args.worker.startswith("metaqa"):
        extra = ["model.attention_dropout=null"] if args.worker == "metaqa_attn_dropout" else []
        net, tokenizer, row = train_metaqa(args, out, "32-true" if args.worker == "metaqa_fp32" else "auto", extra)
    else:
        net, tokenizer, row = train_hf(args, out, bf16=args.worker == "hf_bf16")
    row.update(arm=args.worker, n_train=args.n, wall_s=round(time.perf_counter() - started, 1),
               peak_rss_mb=peak_rss_mb())
    if not row.get("bounded") and args.limit_dev:
        dev = load_source(str(SQUAD / "dev-v1.1.json"))[: args.limit_dev]
        reader = ReaderConfig(HPARAMS["max_seq_length"], HPARAMS["doc_stride"], DecodeConfig(version_2=False))
        predictor = TorchPredictor(net.float().eval(), tokenizer, reader)
        overall, _ = score(dev, predictor.predict(dev, batch_size=64), version_2=False)
        row.update(dev_f1=round(overall["f1"], 2), dev_em=round(overall["exact"], 2), dev_questions=len(dev))
        if row["precision"].startswith("bf16"):  # the same weights read under bf16 autocast, as the
            with torch.autocast("cpu", dtype=torch.bfloat16):  # Trainer's own evaluation would
                autocast, _ = score(dev, predictor.predict(dev, batch_size=64), version_2=False)
            row["dev_f1_bf16_eval"] = round(autocast["f1"], 2)
    row["windows_per_s"] = round(row["windows_per_s"], 2)
    Path(args.result).write_text(json.dumps(row))


def run_arm(arm: str, n: int, args, work: Path) -> dict:
    result = work / f"{arm}_n{n}.json"
    command = [sys.executable, __file__, "--worker", arm, "--n", str(n), "--work", str(work),
               "--result", str(result), "--threads", str(args.threads), "--seed", str(args.seed),
               "--limit-dev", str(args.limit_dev), "--hf-fp32-steps", str(args.hf_fp32_steps)]
    command += [f"--metaqa-override={o}" for o in args.metaqa_override]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    subprocess.run(command, check=True, env=env)
    return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--smallest-only", nargs="*", choices=ARMS, default=["metaqa_fp32", "hf_fp32"],
                        help="arms run at the smallest N only (their windows/s does not depend on N)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit-dev", type=int, default=1000, help="first N SQuAD v1.1 dev questions (0: no scoring)")
    parser.add_argument("--hf-fp32-steps", type=int, default=0,
                        help="bound hf_fp32 to this many steps (windows/s only; 0 = the full epoch)")
    parser.add_argument("--metaqa-override", action="append", default=[],
                        help="extra `metaqa train` override for the metaqa arms (e.g. datamodule.max_tokens=3072)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "bench_train.json")
    parser.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if not SQUAD.exists():
        print(f"skip: {SQUAD} not found (../shared/data beside the repo)")
        return
    from metaqa.tracking.results import write_results
    from metaqa.tracking.tables import markdown_table

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            for arm in args.arms:
                if arm in args.smallest_only and n != min(args.sizes):
                    continue
                rows.append(run_arm(arm, n, args, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    columns = ["arm", "n_train", "precision", "train_windows", "steps", "windows_per_s", "wall_s",
               "peak_rss_mb", "dev_f1", "dev_em", "dev_f1_bf16_eval"]
    print(markdown_table(rows, columns))
    top = max(args.sizes)
    at = {r["arm"]: r for r in rows if r["n_train"] == top}
    fp32_rate = next((r["windows_per_s"] for r in reversed(rows) if r["arm"] == "hf_fp32"), None)
    figures = {
        "n_train": top, "hparams": HPARAMS, "dev_questions": args.limit_dev,
        "metaqa_windows_per_s": at.get("metaqa", {}).get("windows_per_s"),
        "hf_fp32_windows_per_s": fp32_rate,
        "hf_bf16_windows_per_s": at.get("hf_bf16", {}).get("windows_per_s"),
        "metaqa_dev_f1": at.get("metaqa", {}).get("dev_f1"),
        "hf_dev_f1": at.get("hf_bf16", {}).get("dev_f1", at.get("hf_fp32", {}).get("dev_f1")),
        "peak_rss_mb": at.get("metaqa", {}).get("peak_rss_mb"),
        "runs": rows,
    }
    for name, peer in (("hf_fp32", figures["hf_fp32_windows_per_s"]), ("hf_bf16", figures["hf_bf16_windows_per_s"])):
        if peer and figures["metaqa_windows_per_s"]:
            figures[f"speedup_vs_{name}"] = round(figures["metaqa_windows_per_s"] / peer, 2)
    print(f"wrote {write_results(args.out, figures, args.threads)}")


if __name__ == "__main__":
    main()
