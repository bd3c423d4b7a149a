"""How a Lightning Trainer is built for every training stage (train, meta-train, finetune): the
numeric precision chosen from the hardware, the thread settings, and both logged.

`trainer.precision: auto` picks `bf16-mixed` on a GPU and on a CPU whose ISA multiplies bf16
natively (AVX512-BF16 or AMX), else `32-true`: without those instructions bf16 is emulated and
slower than fp32. Measured on a 2-core AMD EPYC with AVX512-BF16 (docs/RESULTS.md, "Training
throughput"): 40 steps of 16 SQuAD windows, 5.79 windows/s fp32 vs 8.65 bf16-mixed.
Validation and every exported reader stay fp32 (the reader module turns autocast off there).
"""
from __future__ import annotations

import logging
import os
import resource
import sys
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from metaqa.evaluation.machine import cpu_info

log = logging.getLogger(__name__)
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_precision(requested: str | int, accelerator: str, cpu: dict | None = None) -> tuple[str, str]:
    """(Lightning precision, why): `auto` decided from the accelerator and CPU flags, anything
    else kept as asked."""
    if str(requested) != "auto":
        return str(requested), "set in the config"
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
            return "16-mixed", "GPU without bf16"
        return "bf16-mixed", "GPU"
    cpu = cpu_info() if cpu is None else cpu
    native = [flag for flag in BF16_CPU_FLAGS if cpu.get(flag)]
    if native:
        return "bf16-mixed", f"CPU has {'+'.join(native)}"
    return "32-true", "CPU without AVX512-BF16 or AMX (bf16 would be emulated)"


def set_training_threads(threads: int | None) -> dict:
    """torch intra-op threads = `threads` (null: torch's default, i.e. OMP_NUM_THREADS or the
    physical cores), the tokenizers' pool off once the data is tokenised (its threads would
    compete with torch's). Returns the settings, for the log and the run's metrics."""
    if threads:
        torch.set_num_threads(int(threads))
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    return {"torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "tokenizers_parallelism": False}


def build_trainer(trainer_cfg: DictConfig, **kwargs: Any):
    """Instantiate `trainer_cfg` (a conf/trainer group) with `precision: auto` resolved and the
    metaqa-only keys (`threads`) taken out; logs what was chosen. Returns (trainer, settings)."""
    cfg = OmegaConf.to_container(trainer_cfg, resolve=True)
    threads = set_training_threads(cfg.pop("threads", None))
    precision, why = resolve_precision(cfg.get("precision", "32-true"), str(cfg.get("accelerator", "cpu")))
    cfg["precision"] = precision
    log.info("training precision %s (%s); %d torch threads", precision, why, threads["torch_threads"])
    settings = {"precision": precision, "precision_reason": why, **threads}
    return hydra.utils.instantiate(cfg, **kwargs), settings


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)
