"""`metaqa <stage> [hydra overrides]`: one console script, one Hydra app per stage."""
from __future__ import annotations

import importlib
import sys

import metaqa.config  # noqa: F401  (registers the OmegaConf resolvers before Hydra composes)

STAGES = {
    "prep": ("metaqa.stages.prep", "read, validate and shard QA data by theme"),
    "train": ("metaqa.stages.train", "fine-tune a reader (Lightning)"),
    "eval": ("metaqa.stages.eval", "score a save_pretrained reader dir (SQuAD v2 metric)"),
    "export": ("metaqa.stages.export", "reader dir → ONNX (fp32, optimized, int8), gated on parity with PyTorch"),
    "compress": ("metaqa.stages.compress", "a smaller reader from a trained one: truncate layers, prune heads/FFN, distill"),
    "predict": ("metaqa.stages.predict", "answer questions with an exported ONNX dir (onnxruntime)"),
    "bench": ("metaqa.stages.bench", "export variants vs transformers.pipeline: latency p50/p95/p99, throughput, size, F1"),
    "synth": ("metaqa.stages.synth", "generate QA pairs for unannotated paragraphs (NER → cloze questions → roundtrip filter)"),
    "meta_train": ("metaqa.stages.meta_train", "meta-learn a reader across themes (MAML, FOMAML, Reptile; multitask baseline)"),
    "adapt_mlm": ("metaqa.stages.adapt_mlm", "domain-adaptive masked-LM pretraining of a reader's encoder on unlabelled target text"),
    "finetune": ("metaqa.stages.finetune", "adapt a (meta-)reader to one target theme with k examples; F1 before/after"),
    "serve": ("metaqa.stages.serve", "an ONNX reader as an HTTP JSON service (FastAPI): POST /answer, GET /health, page at /"),
    "pipeline": ("metaqa.stages.pipeline", "question + theme → retrieve paragraphs → read → answer"),
    "pipeline_eval": ("metaqa.stages.pipeline_eval", "paragraph accuracy, F1, latency and DevRev theme score of the pipeline"),
    "report": ("metaqa.stages.report", "one table + plots over every run of a run or sweep dir"),
    "run": ("metaqa.stages.run", "chain stages from one config: metaqa run experiment=chain"),
    "demo": ("metaqa.stages.demo", "the whole chain on the embedded sample: prep → synth → meta-train → finetune → export → bench → report"),
}


def usage() -> str:
    lines = ["usage: metaqa <stage> [hydra overrides] [--help | --cfg job | -m ...]", "", "stages:"]
    lines += [f"  {name.replace('_', '-'):<14} {about}" for name, (_, about) in STAGES.items()]
    lines += ["", "e.g. metaqa train model=tiny trainer.max_steps=10", "     metaqa train --help"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if argv else 2)
    stage = argv[0].replace("-", "_") if argv[0].replace("-", "_") in STAGES else argv[0]
    if stage not in STAGES:
        print(f"metaqa: unknown stage '{argv[0]}'\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(STAGES[stage][0])
    sys.argv = [f"metaqa {stage}", *argv[1:]]  # Hydra parses sys.argv
    module.main()
    exit_if_jobs_failed(argv[0])


def exit_if_jobs_failed(stage: str) -> None:
    """A sweep runs every job even when some fail (run_stage records them); its exit status then
    says so, after the last job, with the failed jobs' dirs."""
    from metaqa.tracking.run import FAILED_JOBS, SUMMARY

    if FAILED_JOBS:
        print(f"metaqa {stage}: {len(FAILED_JOBS)} job(s) of the sweep failed (error and traceback in each "
              f"{SUMMARY}; rerunning the same command reruns only them): {', '.join(FAILED_JOBS)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
