"""Run bookkeeping for every stage: summary.json on success or failure, W&B always finished,
the sweeper's `optimized_metric` returned (lightning-hydra-template's task_wrapper)."""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import hydra
from omegaconf import DictConfig, OmegaConf

from metaqa.fileio import write_json

log = logging.getLogger(__name__)
SUMMARY = "summary.json"


def finish_wandb() -> None:
    """Close the W&B run, else the next job of a multirun logs into this one."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish()


def run_stage(stage: str, run: Callable[[DictConfig], dict], cfg: DictConfig) -> float | None:
    """Run a stage, record its outcome in <output_dir>/summary.json, return the optimised metric."""
    out = Path(cfg.paths.output_dir)
    started = time.time()
    summary: dict[str, Any] = {"stage": stage, "output_dir": str(out)}
    try:
        metrics = run(cfg) or {}
        summary.update(status="ok", metrics=metrics)
    except Exception as err:
        summary.update(status="failed", error=f"{type(err).__name__}: {err}",
                       traceback=traceback.format_exc())
        raise
    finally:
        summary["seconds"] = round(time.time() - started, 2)
        summary["overrides"] = _overrides()
        write_json(out / SUMMARY, summary)
        finish_wandb()
    metric_name = cfg.get("optimized_metric")
    if metric_name:
        if metric_name not in metrics:
            raise KeyError(f"optimized_metric '{metric_name}' not among the metrics: {sorted(metrics)}")
        return float(metrics[metric_name])
    return None


def _overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a config group node (loggers, callbacks)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(node) for node in cfg.values()
            if isinstance(node, DictConfig) and "_target_" in node]


def resolved_config(cfg: DictConfig) -> dict:
    """The config as plain data, resolved, without Hydra's own node (present in composed configs)."""
    return {k: OmegaConf.to_container(cfg[k], resolve=True, throw_on_missing=True)
            if OmegaConf.is_config(cfg[k]) else cfg[k] for k in cfg if k != "hydra"}


def log_hyperparams(loggers: list, cfg: DictConfig) -> None:
    resolved = resolved_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(resolved)
