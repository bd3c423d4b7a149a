"""run_stage inside a multirun: a failing job is recorded and the sweep goes on, a finished job
is skipped on a rerun (resume), optimized_metric may name one metric or a list (multi-objective)."""
import json
import math

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

from metaqa.tracking.run import flatten, run_stage


@pytest.fixture
def job_cfg(stage_cfg, tmp_path):
    """A composed eval config as job 0 of a multirun (or a single run) with output dir tmp_path/job."""

    def make(multirun: bool = True, overrides=("limit=5",), **extra):
        cfg = stage_cfg("eval", ["model_dir=/nowhere", *overrides], out=tmp_path / "job")
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.mode = "MULTIRUN" if multirun else "RUN"
            cfg.hydra.sweep.dir = str(tmp_path)
            cfg.hydra.job.num = 0
        with open_dict(cfg):
            cfg.update(extra)
        HydraConfig.instance().set_config(cfg)
        return cfg

    return make


def boom(cfg):
    raise FileNotFoundError("train_source /data/missing does not exist")


def summary(tmp_path) -> dict:
    return json.loads((tmp_path / "job" / "summary.json").read_text())


def test_failed_job_in_a_multirun_is_recorded_and_returns_nan(job_cfg, tmp_path):
    assert math.isnan(run_stage("eval", boom, job_cfg()))  # optimized_metric: f1 -> NaN, no raise
    s = summary(tmp_path)
    assert s["status"] == "failed" and s["error"] == "FileNotFoundError: train_source /data/missing does not exist"
    assert "Traceback" in s["traceback"] and s["overrides"][-2:] == ["model_dir=/nowhere", "limit=5"]
    assert s["choices"]["data"] == "sample"
    multi = job_cfg(optimized_metric=["f1", "p50_ms"])
    values = run_stage("eval", boom, multi)
    assert len(values) == 2 and all(math.isnan(v) for v in values)


def test_failure_raises_in_a_single_run_or_with_fail_fast(job_cfg, tmp_path):
    with pytest.raises(FileNotFoundError):
        run_stage("eval", boom, job_cfg(multirun=False))
    assert summary(tmp_path)["status"] == "failed"
    with pytest.raises(FileNotFoundError):
        run_stage("eval", boom, job_cfg(fail_fast=True))


def test_rerun_skips_a_finished_job_with_the_same_overrides(job_cfg, tmp_path):
    calls = []

    def ok(cfg):
        calls.append(1)
        return {"f1": 50.0 + len(calls), "p50_ms": 3.0}

    assert run_stage("eval", ok, job_cfg()) == 51.0
    first = (tmp_path / "job" / "summary.json").read_bytes()
    assert run_stage("eval", ok, job_cfg()) == 51.0  # resumed: the stored metric, not run again
    assert len(calls) == 1 and (tmp_path / "job" / "summary.json").read_bytes() == first
    assert run_stage("eval", ok, job_cfg(skip_done=False)) == 52.0  # forced
    assert run_stage("eval", ok, job_cfg(overrides=("limit=6",))) == 53.0  # other job, same dir
    assert run_stage("eval", ok, job_cfg(multirun=False)) == 54.0  # single runs always run
    assert run_stage("eval", ok, job_cfg(optimized_metric=["f1", "p50_ms"])) == [54.0, 3.0]
    (tmp_path / "job" / "summary.json").write_text(json.dumps({**summary(tmp_path), "status": "failed"}))
    assert run_stage("eval", ok, job_cfg()) == 55.0  # a failed job is run again


def test_missing_optimized_metric_is_named(job_cfg):
    with pytest.raises(KeyError, match="latency"):
        run_stage("eval", lambda cfg: {"f1": 1.0}, job_cfg(optimized_metric=["f1", "latency"], skip_done=False))


def test_flatten_nests_keys_and_keeps_lists_as_text():
    assert flatten({"a": {"b": 1, "c": {"d": 2.5}}, "e": [1, 2], "f": None}) == {
        "a/b": 1, "a/c/d": 2.5, "e": "[1, 2]", "f": None}


def test_an_interrupt_is_recorded_and_stops_the_sweep(job_cfg, tmp_path):
    def interrupted(cfg):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stage("eval", interrupted, job_cfg())
    assert summary(tmp_path)["status"] == "interrupted" and summary(tmp_path)["error"] == "KeyboardInterrupt"
