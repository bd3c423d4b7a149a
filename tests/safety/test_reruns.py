"""Reruns are keyed by the resolved config: a sweep job or a chain step that finished with another
config runs again (and says why); scripts reuse a run only for the very same config."""
import json
import logging

from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict, read_write

import metaqa
from metaqa.stages import run as chain
from metaqa.tracking import run as tracking
from metaqa.tracking.run import run_stage

ONLY_PREP = ["steps.synth=null", "steps.meta_train=null", "steps.finetune=null", "steps.export=null",
             "steps.bench=null", "steps.report=null"]


def sweep_job(stage_cfg, tmp_path, **values):
    """An eval config as job 0 of a multirun, output dir tmp_path/job, with `values` set."""
    cfg = stage_cfg("eval", ["model_dir=/nowhere", "limit=5"], out=tmp_path / "job")
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = "MULTIRUN"
        cfg.hydra.sweep.dir = str(tmp_path)
        cfg.hydra.job.num = 0
    with open_dict(cfg):
        cfg.update(values)
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_a_sweep_job_reruns_when_its_config_changed(stage_cfg, tmp_path, caplog):
    calls = []

    def ok(cfg):
        calls.append(cfg.batch_size)
        return {"f1": float(len(calls))}

    assert run_stage("eval", ok, sweep_job(stage_cfg, tmp_path)) == 1.0
    summary = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert summary["metaqa_version"] == metaqa.__version__ and len(summary["config_hash"]) == 16
    assert run_stage("eval", ok, sweep_job(stage_cfg, tmp_path)) == 1.0  # same config: skipped
    with caplog.at_level(logging.INFO, logger="metaqa.tracking.run"):
        # the same overrides, another config (as after editing conf/eval.yaml): run again
        assert run_stage("eval", ok, sweep_job(stage_cfg, tmp_path, batch_size=8)) == 2.0
    assert calls == [64, 8] and "with another config" in caplog.text


def test_a_chain_step_reruns_when_its_overrides_changed(stage_cfg, tmp_path, caplog):
    out = tmp_path / "chain"
    run_stage("run", chain.run, stage_cfg("run", ONLY_PREP, out=out))
    assert json.loads((out / "data" / "manifest.json").read_text())["seed"] == 0
    reseeded = [*ONLY_PREP, 'steps.prep.overrides=["data.prep_dir=${paths.output_dir}/data","data.seed=1"]']
    with caplog.at_level(logging.INFO):
        chain.run(stage_cfg("run", reseeded, out=out))
    assert json.loads((out / "data" / "manifest.json").read_text())["seed"] == 1
    assert "prep: finished before, but with another config" in caplog.text
    stamp = (out / "prep" / "summary.json").stat().st_mtime_ns
    chain.run(stage_cfg("run", reseeded, out=out))  # unchanged now: skipped
    assert (out / "prep" / "summary.json").stat().st_mtime_ns == stamp


def test_scripts_reuse_a_run_only_for_the_same_config(stage_cfg, tmp_path):
    cfg = stage_cfg("eval", ["model_dir=/nowhere", "limit=5"], out=tmp_path / "run")
    assert tracking.cached_run(tmp_path / "run", cfg) is None
    run_stage("eval", lambda c: {"f1": 1.0}, cfg)
    assert tracking.cached_run(tmp_path / "run", cfg)["metrics"] == {"f1": 1.0}
    other = stage_cfg("eval", ["model_dir=/nowhere", "limit=6"], out=tmp_path / "run")
    assert tracking.cached_run(tmp_path / "run", other) is None


def test_resizing_the_ood_protocol_keeps_its_cells_and_a_new_version_does_not(stage_cfg, tmp_path):
    """`ood.sizes` selects cells (left out of the hash); `ood.version` names how they are computed."""
    def meta_cfg(*extra):
        return stage_cfg("meta_train", ["experiment=ood", *extra], out=tmp_path / "meta")

    base = tracking.config_hash(meta_cfg())
    assert base is not None
    assert tracking.config_hash(meta_cfg("ood.sizes.gpu.limit_eval=5", "ood.sizes.cpu.targets=[books]")) == base
    assert tracking.config_hash(meta_cfg("ood.version=99")) != base
    assert tracking.config_hash(meta_cfg("ood.sizes.cpu.meta_steps=7")) != base  # resolved into trainer.max_steps
