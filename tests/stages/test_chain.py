"""`metaqa run experiment=chain`: the whole chain on the embedded sample with a tiny model."""
import json

import pytest

from metaqa.stages import run as chain
from metaqa.tracking.run import run_stage

TINY_CHAIN = [
    "model=tiny",
    'steps.synth.overrides=["input=${data.path}","reader_dir=null","limit_paragraphs=8"]',
    'steps.meta_train.overrides=["data.prep_dir=${paths.output_dir}/data","trainer.max_steps=3",'
    '"meta.n_support=2","meta.n_query=2","reader.max_seq_length=128","reader.doc_stride=32",'
    '"datamodule.limit_val=8"]',
    'steps.finetune.overrides=["data.prep_dir=${paths.output_dir}/data",'
    '"model_dir=${paths.output_dir}/meta_train/reader","k=4","synthetic_source=${paths.output_dir}/synth/synthetic.csv",'
    '"limit_synthetic=8","limit_eval=8","reader.max_seq_length=128","reader.doc_stride=32","min_steps=2"]',
    'steps.export.overrides=["data.prep_dir=${paths.output_dir}/data","model_dir=${paths.output_dir}/finetune/reader",'
    '"export=fp32","export.max_f1_drop=100"]',
    'steps.bench.overrides=["data.prep_dir=${paths.output_dir}/data","model_dir=${paths.output_dir}/finetune/reader",'
    '"variants=[fp32]","threads=[1]","limit=8","warmup=1"]',
]


def test_chain_runs_every_stage_then_resumes_without_redoing(stage_cfg, tmp_path):
    out = tmp_path / "chain"
    metrics = run_stage("run", chain.run, stage_cfg("run", TINY_CHAIN, out=out))
    assert metrics is None  # no optimized_metric for a chain
    steps = ["prep", "synth", "meta_train", "finetune", "export", "bench", "report"]
    for step in steps:
        assert json.loads((out / step / "summary.json").read_text())["status"] == "ok", step
    assert (out / "finetune" / "reader" / "model.safetensors").exists()
    assert (out / "export" / "onnx" / "model.onnx").exists()
    assert (out / "report" / "report.md").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and "finetune/after/f1" in summary["metrics"]

    stamp = (out / "meta_train" / "summary.json").stat().st_mtime_ns
    (out / "bench" / "summary.json").unlink()  # as if the chain had died during bench
    chain.run(stage_cfg("run", TINY_CHAIN, out=out))
    assert (out / "meta_train" / "summary.json").stat().st_mtime_ns == stamp  # skipped
    assert json.loads((out / "bench" / "summary.json").read_text())["status"] == "ok"  # redone


def test_a_failing_step_stops_the_chain_and_names_it(stage_cfg, tmp_path):
    out = tmp_path / "chain"
    broken = [*TINY_CHAIN, 'steps.finetune.overrides=["model_dir=/nonexistent/reader"]']
    with pytest.raises(Exception, match="model_dir"):
        run_stage("run", chain.run, stage_cfg("run", broken, out=out))
    assert json.loads((out / "finetune" / "summary.json").read_text())["status"] == "failed"
    assert not (out / "export").exists()
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_seed_ablation_sweeps_models_and_meta_over_the_chain(stage_cfg):
    cfg = stage_cfg("run", ["experiment=seed_ablation"])
    params = cfg.hydra.sweeper.params
    assert set(params["model"].split(",")) == {"bert_mini", "electra_small"}
    assert set(params["meta"].split(",")) == {"none", "fomaml"}
    assert "int8_dynamic" in " ".join(cfg.steps.bench.overrides) and "fp32" in " ".join(cfg.steps.bench.overrides)
