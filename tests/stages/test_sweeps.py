"""Sweeps from the command line on the tiny model: a 2x2 grid multirun where two jobs fail (their
train_source is missing), W&B offline runs (one per job), the report, and the rerun that resumes;
a 2-trial multi-objective Optuna sweep (F1 up, latency down) and its report."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from metaqa.stages import prep, report

TINY = ["model=tiny", "debug=fast", "reader.max_seq_length=128", "reader.doc_stride=32"]


@pytest.fixture
def prepared(stage_cfg, tmp_path):
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    return tmp_path / "data"


def metaqa(*args, cwd, returncode=0, timeout=300):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = subprocess.run([sys.executable, "-m", "metaqa.cli", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == returncode, out.stderr[-3000:]
    return out


def summaries(sweep: Path) -> dict[str, dict]:
    jobs = {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))}
    return {job: s for job, s in jobs.items() if s["stage"] != "report"}


def is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_sweep_keeps_going_reports_failures_and_resumes(prepared, stage_cfg, tmp_path):
    sweep, later = tmp_path / "grid", tmp_path / "later"  # `later` does not exist yet
    grid = ["-m", "train", *TINY, f"data.prep_dir={prepared}", "logger=wandb", "callbacks=latency",
            "module.optimizer.lr=1e-4,1e-3", f"datamodule.train_source={prepared / 'train'},{later}",
            f"hydra.sweep.dir={sweep}"]
    done = metaqa(*grid[1:2], *grid[:1], *grid[2:], cwd=tmp_path, returncode=1)  # metaqa train -m ...
    assert done.stderr.splitlines()[-1].endswith(f"failed (error and traceback in each summary.json; rerunning "
                                                 f"the same command reruns only them): {sweep / '1'}, {sweep / '3'}")
    runs = summaries(sweep)
    assert {k: s["status"] for k, s in runs.items()} == {"0": "ok", "1": "failed", "2": "ok", "3": "failed"}
    assert f"{later} does not exist" in runs["1"]["error"] and "Traceback" in runs["1"]["traceback"]
    assert runs["2"]["metrics"]["val/latency_p50_ms"] > 0 and runs["2"]["metrics"]["model_mb"] > 0
    for job in "0123":  # one offline W&B run per job, failed jobs included
        assert len(list((sweep / job / "wandb").glob("offline-run-*"))) == 1

    out = sweep / "report"
    report.run(stage_cfg("report", [f"dir={sweep}"], out=out))  # in-process; the CLI one is below
    md = (out / "report.md").read_text()
    assert "4 runs: 2 ok, 2 failed" in md and md.count(f"{later.name} does not exist") == 2
    assert "![F1 vs latency](f1_vs_latency.png)" in md
    assert is_png(out / "f1_vs_latency.png") and is_png(out / "per_theme_f1.png")
    assert len((out / "report.csv").read_text().splitlines()) == 5  # header + every job

    # Rerun after fixing the cause: finished jobs are skipped, failed ones run again.
    shutil.copytree(prepared / "train", later)
    before = {job: (sweep / job / "summary.json").read_bytes() for job in "02"}
    metaqa(*grid[1:2], *grid[:1], *grid[2:], cwd=tmp_path)
    runs = summaries(sweep)
    assert all(s["status"] == "ok" for s in runs.values()) and len(runs) == 4
    assert all((sweep / job / "summary.json").read_bytes() == before[job] for job in "02")
    report.run(stage_cfg("report", [f"dir={sweep}"], out=out))
    assert "4 runs: 4 ok, 0 failed" in (out / "report.md").read_text()


def test_optuna_two_objectives_two_trials(prepared, tmp_path):
    sweep = tmp_path / "optuna"
    metaqa("train", "+hparams_search=train_optuna_f1_latency", "hydra.sweeper.n_trials=2", *TINY,
           f"data.prep_dir={prepared}", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    runs = summaries(sweep)
    assert sorted(runs) == ["0", "1"] and all(s["status"] == "ok" for s in runs.values())
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    told = sorted(tuple(s["values"]) for s in results["solutions"])  # what the jobs returned
    stored = sorted((s["metrics"]["val/f1"], s["metrics"]["val/latency_p50_ms"]) for s in runs.values())
    assert told and set(told) <= set(stored)
    metaqa("report", f"dir={sweep}", cwd=tmp_path)
    assert "2 runs: 2 ok, 0 failed" in (sweep / "report" / "report.md").read_text()
    assert is_png(sweep / "report" / "f1_vs_latency.png")


RAY_WORKER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\(\w+ pid=\d+")
LAUNCHERS = {  # plugin module, overrides, where the launcher keeps its own job files
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", ["hydra.launcher.timeout_min=10"], ".submitit"),
    "ray": ("hydra_plugins.hydra_ray_launcher", ["+hydra.launcher.ray.init.num_cpus=2",
                                                 "+hydra.launcher.ray.init.include_dashboard=false"], None),
}


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_cluster_launcher_sweep_keeps_the_failure_and_resume_semantics(launcher, prepared, tmp_path):
    """The same grid through hydra-submitit-launcher's local executor and hydra-ray-launcher on a
    local Ray (jobs in their own processes): the failed job is reported and the exit status is 1,
    the rerun after the fix runs only that job."""
    plugin, overrides, own_files = LAUNCHERS[launcher]
    pytest.importorskip(plugin)
    sweep, later = tmp_path / "grid", tmp_path / "later"
    grid = ["train", "-m", f"hydra/launcher={launcher}", *overrides, *TINY,
            f"data.prep_dir={prepared}", "trainer.max_steps=2",
            f"datamodule.train_source={prepared / 'train'},{later}", f"hydra.sweep.dir={sweep}"]
    # each job is its own process (a Ray worker imports torch and Lightning anew): slow on a busy box
    done = metaqa(*grid, cwd=tmp_path, returncode=1, timeout=900)
    # Ray forwards its workers' output to the driver asynchronously: those lines ("(_run_job pid=…)")
    # may land after the sweep's summary, which is the driver's own last line
    own = [line for line in done.stderr.splitlines() if not RAY_WORKER_LINE.match(line)]
    assert own[-1].endswith(f"reruns only them): {sweep / '1'}")
    assert {k: s["status"] for k, s in summaries(sweep).items()} == {"0": "ok", "1": "failed"}
    if own_files:
        assert list((sweep / own_files).iterdir())  # e.g. submitit's own job folders
    shutil.copytree(prepared / "train", later)
    before = (sweep / "0" / "summary.json").read_bytes()
    metaqa(*grid, cwd=tmp_path, timeout=900)
    assert {k: s["status"] for k, s in summaries(sweep).items()} == {"0": "ok", "1": "ok"}
    assert (sweep / "0" / "summary.json").read_bytes() == before  # skipped: done with the same config
