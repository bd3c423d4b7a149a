"""`metaqa run experiment=<name>`: chain stages (prep → synth → meta-train → finetune → export →
bench → report), each with its own base config plus the step's overrides, artifacts by path.

A step writes into `<run dir>/<step name>/` and records `summary.json` there. Rerunning the chain
into the same dir (`hydra.run.dir=<run dir>`) skips the steps whose summary says ok for the same
resolved config and runs the rest, so a chain stopped by a crash resumes where it stopped, and a
step whose overrides (or inputs' paths) changed runs again. The config groups picked for the
chain (data, model, meta) are passed on to every step whose base config has that group.
"""
from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from metaqa.cli import STAGES
from metaqa.config import CONF_DIR, ConfigError
from metaqa.tracking.run import SUMMARY, finished_summary, run_stage

log = logging.getLogger(__name__)


class StepFailed(RuntimeError):
    pass


def stage_groups(stage: str) -> set[str]:
    """The config groups in a stage's defaults list (`data`, `model`, `meta`, …)."""
    defaults = OmegaConf.load(CONF_DIR / f"{stage}.yaml").get("defaults", [])
    return {next(iter(d)) for d in defaults if OmegaConf.is_dict(d)}


def step_done(out: Path) -> bool:
    try:
        return json.loads((out / SUMMARY).read_text()).get("status") == "ok"
    except (OSError, ValueError):
        return False


def run(cfg: DictConfig) -> dict:
    out = Path(cfg.paths.output_dir)
    steps = [(name, step) for name, step in cfg.steps.items() if step is not None and step.get("enabled", True)]
    if not steps:
        raise ConfigError("steps", "the chain has no steps", "pick a chain: `metaqa run experiment=chain`")
    choices = HydraConfig.get().runtime.choices
    results = {}
    for i, (name, step) in enumerate(steps, 1):
        if step.stage not in STAGES:
            raise ConfigError(f"steps.{name}.stage", f"unknown stage '{step.stage}'",
                              f"use one of {', '.join(STAGES)}")
        step_out = out / name
        groups = stage_groups(step.stage)
        passed = [f"{g}={choices[g]}" for g in cfg.forward_groups if g in groups and choices.get(g)]
        step_cfg = compose(config_name=step.stage, overrides=[
            f"paths.output_dir={step_out}", *passed, *step.get("overrides", [])])
        done = finished_summary(step_out, step.stage, step_cfg)
        if done is not None:
            log.info("%d/%d %s: done before with the same config, skipped", i, len(steps), name)
            results[name] = done.get("metrics", {})
            continue
        log.info("%d/%d %s (metaqa %s %s)", i, len(steps), name, step.stage, " ".join(step.get("overrides", [])))
        module = importlib.import_module(STAGES[step.stage][0])
        run_stage(step.stage, module.run, step_cfg)
        if not step_done(step_out):  # inside a sweep run_stage records a failure and returns
            raise StepFailed(f"step '{name}' failed: see {step_out / SUMMARY}")
        results[name] = json.loads((step_out / SUMMARY).read_text()).get("metrics", {})
    log.info("chain artifacts in %s", out)
    return {f"{name}/{k}": v for name, metrics in results.items() for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="run")
def main(cfg: DictConfig) -> float | None:
    return run_stage("run", run, cfg)
