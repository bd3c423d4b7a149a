"""Run bookkeeping for every stage: summary.json on success or failure,
the outcome in W&B when a wandb logger is configured, W&B always finished, the sweeper's
`optimized_metric` returned (lightning-hydra-template's task_wrapper).

In a multirun a failing job is recorded and the sweep goes on, and a job that already finished
is skipped, so rerunning a sweep into the same `hydra.sweep.dir` resumes it (see `run_stage`).
"The same" means the same resolved config: every summary.json holds a hash of it (`config_hash`)
and the metaqa version, and a job whose config changed runs again."""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from metaqa import __version__
from metaqa.config import check_numbers, check_selection_split
from metaqa.data import readlog
from metaqa.fileio import write_json

log = logging.getLogger(__name__)
SUMMARY = "summary.json"
WANDB_FILES = ("*.json", "*.csv", "*.png", "*.md")  # small result files at the top of a run dir
WANDB_FILE_LIMIT = 20 * 2**20
# Keys that steer the bookkeeping, not what a run computes: left out of the config hash (dotted for
# nested ones). `ood.sizes` only selects the OOD protocol's cells; what a cell computes is resolved into
# its own keys (trainer.max_steps, the overrides), so resizing the protocol keeps the cells it ran.
RUN_CONTROL_KEYS = ("skip_done", "fail_fast", "overwrite", "optimized_metric", "ood.sizes")
# Job dirs of this process's sweep that failed, for the exit status of `metaqa <stage> -m`.
FAILED_JOBS: list[str] = []


def finish_wandb(exit_code: int = 0) -> None:
    """Close the W&B run, else the next job of a multirun logs into this one."""
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def run_stage(stage: str, run: Callable[[DictConfig], dict], cfg: DictConfig) -> float | list[float] | None:
    """Run a stage, record its outcome in <output_dir>/summary.json, return the optimised metric(s).

    Inside a multirun (`-m`, or a hparams_search config):
    - a job that raises is recorded (status failed, error, traceback) and returns NaN, which
      Optuna counts as a failed trial, so the sweep goes on; `+fail_fast=true` re-raises instead;
    - a job whose summary.json already says ok for the same overrides is skipped and returns its
      stored metric: rerunning a sweep resumes it (`+skip_done=false` runs every job again).
    A single run always runs and re-raises (`+skip_done=true` skips it when done). An interrupt
    (Ctrl-C, SIGTERM) is recorded as status interrupted and stops the sweep; a rerun resumes it.
    """
    out = Path(cfg.paths.output_dir)
    job = job_info()
    check_selection_split(stage, cfg, job["multirun"])  # before any work, and fatal even in a sweep
    if cfg.get("skip_done", job["multirun"]):
        done = finished_summary(out, stage, cfg)
        if done is not None:
            log.info("%s: done before with the same config (%s says ok), skipped; +skip_done=false reruns it",
                     out, SUMMARY)
            return objective(cfg, done.get("metrics") or {}, strict=True)
    started = time.time()
    summary: dict[str, Any] = {"stage": stage, "output_dir": str(out), "metaqa_version": __version__,
                               "config_hash": config_hash(cfg)}
    metrics = None
    readlog.drain()  # notes from before this job (an earlier job of the sweep) are not its own
    try:
        check_numbers(cfg)
        metrics = run(cfg) or {}
        summary.update(status="ok", metrics=metrics)
    except Exception as err:
        summary.update(status="failed", error=f"{type(err).__name__}: {err}",
                       traceback=traceback.format_exc())
        if not job["multirun"] or cfg.get("fail_fast", False):
            raise
        if is_sweep_job(out):
            FAILED_JOBS.append(str(out))
        log.error("%s failed: %s (recorded in %s; the sweep goes on)", stage, summary["error"], out / SUMMARY)
    except BaseException as err:  # Ctrl-C, SIGTERM (Lightning's SIGTERMException), exit: stop the sweep too
        summary.update(status="interrupted", error=f"{type(err).__name__}: {err}".rstrip(": "))
        raise
    finally:
        summary["seconds"] = round(time.time() - started, 2)
        summary["overrides"] = job["overrides"]
        summary["choices"] = job["choices"]
        summary["optimized_metric"] = OmegaConf.to_container(cfg.optimized_metric) \
            if OmegaConf.is_config(cfg.get("optimized_metric")) else cfg.get("optimized_metric")
        notes = readlog.drain()  # every read warning and repair of this job (logged as they came)
        if notes:
            summary.update(read_warnings=notes[: readlog.KEEP], read_warnings_total=len(notes))
        write_json(out / SUMMARY, summary)
        log_summary_to_wandb(cfg, summary, out)
        finish_wandb(exit_code=0 if summary.get("status") == "ok" else 1)
    if metrics is None:  # failed inside a multirun
        names = cfg.get("optimized_metric")
        return None if not names else math.nan if isinstance(names, str) else [math.nan] * len(names)
    return objective(cfg, metrics, strict=job["multirun"])


def objective(cfg: DictConfig, metrics: dict, strict: bool = True) -> float | list[float] | None:
    """`optimized_metric` (a metric name, or a list of names for a multi-objective sweeper) read
    from the stage's metrics. Missing: an error for a sweeper (`strict`), a warning for a single
    run (e.g. a train run without validation data has no val/f1, and its work is done)."""
    names = cfg.get("optimized_metric")
    if not names:
        return None
    wanted = [names] if isinstance(names, str) else list(names)
    missing = [n for n in wanted if n not in metrics]
    if missing:
        message = f"optimized_metric {missing} not among the metrics: {sorted(metrics)}"
        if strict:
            raise KeyError(message)
        log.warning("%s (no objective returned)", message)
        return None
    values = [float(metrics[n]) for n in wanted]
    return values[0] if isinstance(names, str) else values


def finished_summary(out: str | Path, stage: str | None, cfg: DictConfig) -> dict | None:
    """The summary of a run that finished ok in `out` with this config (same config hash, same
    metaqa version, same stage when given), else None; says why a finished run does not count."""
    out = Path(out)
    try:
        done = json.loads((out / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    if done.get("status") != "ok" or (stage is not None and done.get("stage") != stage):
        return None
    wanted = config_hash(cfg)
    if done.get("config_hash") != wanted or wanted is None:
        log.info("%s: finished before, but with another config (hash %s, now %s): running it again",
                 out, done.get("config_hash") or "not recorded", wanted)
        return None
    if done.get("metaqa_version") != __version__:
        log.info("%s: finished before with metaqa %s (now %s): running it again",
                 out, done.get("metaqa_version"), __version__)
        return None
    return done


def cached_run(out: str | Path, cfg: DictConfig) -> dict | None:
    """For scripts that reuse runs: the summary of `out` when a run of this very config finished
    there (`finished_summary`), else None. Write summaries with `run_stage` (or use `run_cached`)."""
    return finished_summary(out, None, cfg)


def run_cached(stage: str, run: Callable[[DictConfig], dict], cfg: DictConfig) -> dict:
    """For scripts: the summary of `cfg`'s run, reused when its output dir holds a finished run of
    this very config (`cached_run`), else run now (`run_stage` records it)."""
    out = Path(cfg.paths.output_dir)
    done = cached_run(out, cfg)
    if done is None:
        run_stage(stage, run, cfg)
        done = json.loads((out / SUMMARY).read_text())
    return done


def config_hash(cfg: DictConfig) -> str | None:
    """A short hash of the resolved config: Hydra's node, the bookkeeping keys (RUN_CONTROL_KEYS)
    and the output dir's own path left out, so a moved run dir keeps its hash. None when the
    config does not resolve (the stage itself then reports the missing value)."""
    try:
        resolved = resolved_config(cfg)
    except (OmegaConfBaseException, ValueError):  # a missing value, an unset ${hydra:} field
        return None
    paths = resolved.get("paths")
    out = str(paths.pop("output_dir", "")) if isinstance(paths, dict) else ""
    for key in RUN_CONTROL_KEYS:
        *parents, leaf = key.split(".")
        node = resolved
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    text = json.dumps(resolved, sort_keys=True, default=str)
    if out:
        text = text.replace(out, "<output_dir>")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def is_sweep_job(out: Path) -> bool:
    """`out` is a job of a multirun itself (not a step a chain runs inside one)."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and Path(str(HydraConfig.get().runtime.output_dir)) == out


def job_info() -> dict[str, Any]:
    """This Hydra job: multirun or not, its task overrides, its config-group choices, and in a
    multirun the sweep's name (its dir's name) and a run name (job number + overrides)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    info: dict[str, Any] = {"multirun": False, "overrides": [], "choices": {}, "sweep": None, "name": None}
    if not HydraConfig.initialized():
        return info
    hc = HydraConfig.get()
    choices = OmegaConf.select(hc, "runtime.choices") or {}
    info.update(overrides=list(hc.overrides.task),
                choices={k: v for k, v in choices.items() if v is not None and not k.startswith("hydra")})
    if hc.get("mode") == RunMode.MULTIRUN:
        info.update(multirun=True, sweep=Path(str(hc.sweep.dir)).name,
                    name=f"{hc.job.num}:{hc.job.override_dirname}" if hc.job.override_dirname else str(hc.job.num))
    return info


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of `a/b` keys; lists as JSON text."""
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(flatten(value, f"{prefix}{key}/"))
        return flat
    return {prefix.rstrip("/"): json.dumps(node) if isinstance(node, (list, tuple)) else node}


def wandb_init_kwargs(node: DictConfig) -> dict[str, Any]:
    """`wandb.init` arguments from a WandbLogger config node (save_dir -> dir), sweep defaults filled."""
    spec = {**OmegaConf.to_container(node, resolve=True), **wandb_sweep_defaults(node)}
    kwargs = {k: spec[k] for k in ("project", "entity", "group", "job_type", "tags", "mode", "name", "notes")
              if spec.get(k) is not None}
    if spec.get("save_dir"):
        Path(spec["save_dir"]).mkdir(parents=True, exist_ok=True)
        kwargs["dir"] = spec["save_dir"]
    return kwargs


def wandb_sweep_defaults(node: DictConfig) -> dict[str, Any]:
    """In a multirun, W&B runs of one sweep share a group (the sweep dir's name) and are named by
    job number + overrides, unless the logger config sets `group` / `name`."""
    job = job_info()
    if not job["multirun"]:
        return {}
    return {k: job[v] for k, v in (("group", "sweep"), ("name", "name")) if node.get(k) is None}


def log_summary_to_wandb(cfg: DictConfig, summary: dict, out: Path) -> None:
    """With a wandb logger configured, every job ends with one W&B run that holds its resolved
    config, status, metrics, per-theme F1/EM, error and small result files: the stage's own run (Lightning's
    WandbLogger), or one started here when the stage has none or failed before it started."""
    node = (cfg.get("logger") or {}).get("wandb")
    if not node:
        return
    try:
        import wandb

        run = wandb.run
        if run is None:
            try:
                config = resolved_config(cfg)
            except Exception:  # e.g. a missing value: the overrides still say what ran
                config = {"overrides": summary.get("overrides")}
            run = wandb.init(**wandb_init_kwargs(node), config=config)
        from metaqa.tracking.report import per_theme_columns, read_run  # (report imports this module)

        flat = {k: v for k, v in flatten(summary.get("metrics") or {}).items()
                if isinstance(v, (int, float, str, bool)) or v is None}
        flat.update(per_theme_columns(read_run(out, out)))  # val_per_theme.json, metrics.json, per_theme.json
        run.summary.update({**flat, "status": summary.get("status"), "seconds": summary.get("seconds")})
        if summary.get("error"):
            run.summary["error"] = summary["error"]
        for pattern in WANDB_FILES:
            for path in sorted(out.glob(pattern)):
                if path.is_file() and path.stat().st_size <= WANDB_FILE_LIMIT:
                    wandb.save(str(path), base_path=str(out), policy="now")
    except Exception as err:  # tracking never changes a job's outcome
        log.warning("W&B: could not record the run summary (%s); %s has it", err, out / SUMMARY)


def instantiate_list(cfg: DictConfig | None) -> list:
    """Instantiate every `_target_` entry of a config group node (loggers, callbacks)."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(node, **(wandb_sweep_defaults(node) if "Wandb" in str(node._target_) else {}))
            for node in cfg.values() if isinstance(node, DictConfig) and "_target_" in node]


def resolved_config(cfg: DictConfig) -> dict:
    """The config as plain data, resolved, without Hydra's own node (present in composed configs)."""
    return {k: OmegaConf.to_container(cfg[k], resolve=True, throw_on_missing=True)
            if OmegaConf.is_config(cfg[k]) else cfg[k] for k in cfg if k != "hydra"}


def log_hyperparams(loggers: list, cfg: DictConfig) -> None:
    resolved = resolved_config(cfg)
    for logger in loggers:
        logger.log_hyperparams(resolved)


class SweepFailures(Callback):
    """A Hydra callback (conf/hydra/default.yaml) that runs in the sweep's own process: after the
    last job it adds the jobs of this sweep whose summary.json says failed to FAILED_JOBS, so
    `metaqa <stage> -m` exits 1 whatever the launcher (submitit and Ray run the jobs in other
    processes, where `run_stage` cannot reach this process's list)."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time()

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        for path in sorted(sweep_dir.glob(f"*/{SUMMARY}")) + sorted(sweep_dir.glob(f"*/*/{SUMMARY}")):
            try:
                summary = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            fresh = path.stat().st_mtime >= getattr(self, "started", 0) - 1
            if fresh and summary.get("status") == "failed" and str(path.parent) not in FAILED_JOBS:
                FAILED_JOBS.append(str(path.parent))
