"""Stages end to end on the tiny model: prep → train → eval, resume, demo chain, CLI, bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import pipeline

from metaqa.data.records import DataValidationError
from metaqa.data.shards import load_source
from metaqa.evaluation.scoring import score_texts, texts_at_threshold
from metaqa.stages import eval as eval_stage
from metaqa.stages import prep, train
from metaqa.tracking.run import run_stage

FAST_TRAIN = ["model=tiny", "trainer.max_steps=6", "datamodule.batch_size=8",
              "reader.max_seq_length=128", "reader.doc_stride=32", "trainer.log_every_n_steps=1"]


@pytest.fixture
def prepared(stage_cfg, tmp_path):
    cfg = stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"])
    metrics = prep.run(cfg)
    return tmp_path / "data", metrics


def test_prep_on_embedded_sample(prepared):
    prep_dir, metrics = prepared
    manifest = json.loads((prep_dir / "manifest.json").read_text())
    roles = {t["theme"]: t["role"] for t in manifest["themes"]}
    assert len(roles) >= 6 and roles["Jazz"] == roles["Beekeeping"] == "heldout"
    assert metrics["n_test"] == sum(t["questions"] for t in manifest["themes"] if t["role"] == "heldout")
    assert metrics["n_train"] + metrics["n_dev"] + metrics["n_test"] == metrics["questions"] >= 120
    assert sorted(p.name for p in (prep_dir / "test").iterdir()) == ["Beekeeping.json", "Jazz.json"]


def test_prep_bad_input_names_row_and_writes_nothing(stage_cfg, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Theme,Paragraph,Question,Answer_possible,Answer_text,Answer_start\n"
                   "T,Some paragraph here.,Q?,True,['missing words'],[0]\n")
    cfg = stage_cfg("prep", [f"data.path={bad}", f"data.prep_dir={tmp_path / 'out'}", "data.heldout_themes=[]"])
    with pytest.raises(DataValidationError, match="row 1"):
        run_stage("prep", prep.run, cfg)
    assert not (tmp_path / "out").exists()
    assert json.loads((tmp_path / "prep" / "summary.json").read_text())["status"] == "failed"


def test_train_then_eval_then_pipeline_loads_reader(prepared, stage_cfg, tmp_path):
    prep_dir, _ = prepared
    cfg = stage_cfg("train", [f"data.prep_dir={prep_dir}", *FAST_TRAIN])
    value = run_stage("train", train.run, cfg)
    out = tmp_path / "train"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["metrics"]["global_step"] == 6
    assert value == summary["metrics"]["val/f1"] and 0.0 <= value <= 100.0
    assert (out / "checkpoints" / "last.ckpt").exists() and (out / "csv" / "metrics.csv").exists()
    validated = set(json.loads((out / "val_per_theme.json").read_text()))  # dev: held-out questions
    assert validated and not validated & {"Beekeeping", "Jazz"}  # of the training themes, never the test themes

    qa = pipeline("question-answering", model=str(out / "reader"), tokenizer=str(out / "reader"))
    answer = qa(question="Who?", context="Ada Lovelace wrote the first program.")
    assert {"answer", "score", "start", "end"} <= set(answer)

    ecfg = stage_cfg("eval", [f"data.prep_dir={prep_dir}", f"model_dir={out / 'reader'}",
                              "reader.max_seq_length=128", "reader.doc_stride=32"], out=tmp_path / "eval")
    metrics = eval_stage.run(ecfg)  # eval scores the held-out test themes
    assert metrics["total"] == 60 and {"HasAns_f1", "NoAns_f1", "best_f1_thresh"} <= set(metrics)
    preds = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    assert len(preds) == 60
    na = json.loads((tmp_path / "eval" / "na_probs.json").read_text())  # plain JSON, no Infinity
    assert set(na) == set(preds) and all(v is None or isinstance(v, float) for v in na.values())
    # spans.json + na_probs.json rescore any threshold: the run's own gives its predictions, the oracle's its best_f1
    spans = json.loads((tmp_path / "eval" / "spans.json").read_text())
    assert texts_at_threshold(spans, na, ecfg.reader.decode.null_threshold) == preds
    records = load_source(prep_dir / "test")
    at_oracle = score_texts(records, texts_at_threshold(spans, na, metrics["best_f1_thresh"]), version_2=True)
    assert at_oracle["f1"] == pytest.approx(metrics["best_f1"], abs=1e-6)
    # the eval stage and Lightning's validation score the same weights the same way (on dev)
    dcfg = stage_cfg("eval", [f"data.prep_dir={prep_dir}", f"model_dir={out / 'reader'}", f"source={prep_dir / 'dev'}",
                              "reader.max_seq_length=128", "reader.doc_stride=32"], out=tmp_path / "eval_dev")
    assert eval_stage.run(dcfg)["f1"] == pytest.approx(summary["metrics"]["val/f1"], abs=1e-6)


def test_selection_on_a_test_split_is_refused_unless_asked(prepared, stage_cfg, tmp_path):
    from metaqa.config import ConfigError, check_selection_split, is_test_split

    prep_dir, _ = prepared
    cfg = stage_cfg("train", [f"data.prep_dir={prep_dir}", *FAST_TRAIN, f"datamodule.val_source={prep_dir / 'test'}"])
    with pytest.raises(ConfigError, match=r"datamodule.val_source.*test split.*\+allow_test_selection=true"):
        run_stage("train", train.run, cfg)
    assert not (tmp_path / "train" / "checkpoints").exists()  # stopped before any work
    assert stage_cfg("train", [f"data.prep_dir={prep_dir}"]).datamodule.val_source.endswith("/dev")
    assert stage_cfg("meta_train", [f"data.prep_dir={prep_dir}"]).datamodule.val_source.endswith("/dev")
    # a sweep whose objective (finetune's after/f1) is computed on a test split stops too
    ft = stage_cfg("finetune", ["model_dir=/tmp/x", f"data.prep_dir={prep_dir}"])
    check_selection_split("finetune", ft, multirun=False)  # a single finetune scores test: fine
    check_selection_split("finetune", ft, multirun=True, optimizing=False)  # a grid reports (a warning)
    with pytest.raises(ConfigError, match="eval_source.*the search's objective"):
        check_selection_split("finetune", ft, multirun=True, optimizing=True)
    allowed = stage_cfg("finetune", ["model_dir=/tmp/x", f"data.prep_dir={prep_dir}", "+allow_test_selection=true"])
    check_selection_split("finetune", allowed, multirun=True, optimizing=True)
    optuna = stage_cfg("train", [f"data.prep_dir={prep_dir}", "+hparams_search=train_optuna"])
    assert "optuna" in optuna.hydra.sweeper._target_.lower() and optuna.datamodule.val_source.endswith("/dev")
    assert is_test_split("x/subjqa/books/test.csv") and is_test_split(prep_dir / "test" / "Jazz.json")
    assert not is_test_split("../shared/data/squad/dev-v1.1.json") and not is_test_split(tmp_path / "dev")


def test_resume_from_last_checkpoint_continues_the_run(prepared, stage_cfg, tmp_path):
    prep_dir, _ = prepared
    out = tmp_path / "run"
    train.run(stage_cfg("train", [f"data.prep_dir={prep_dir}", *FAST_TRAIN, "trainer.max_steps=4"], out=out))
    resumed = train.run(stage_cfg("train", [f"data.prep_dir={prep_dir}", *FAST_TRAIN, "trainer.max_steps=8",
                                            "ckpt_path=last"], out=out))
    assert resumed["global_step"] == 8


def test_ddp_sim_trains_on_two_cpu_processes(prepared, stage_cfg, tmp_path):
    prep_dir, _ = prepared
    cfg = stage_cfg("train", [f"data.prep_dir={prep_dir}", *FAST_TRAIN, "trainer=ddp_sim",
                              "trainer.max_steps=2", "logger=csv"])
    metrics = train.run(cfg)
    assert "val/f1" in metrics  # the spawned ranks send their metrics back
    assert (tmp_path / "train" / "reader" / "model.safetensors").exists()
    last = torch.load(tmp_path / "train" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 2


def test_missing_resume_checkpoint_is_a_config_error(prepared, stage_cfg, tmp_path):
    prep_dir, _ = prepared
    with pytest.raises(ValueError, match="ckpt_path"):
        train.run(stage_cfg("train", [f"data.prep_dir={prep_dir}", *FAST_TRAIN, "ckpt_path=last"]))


def test_wandb_logger_writes_an_offline_run(prepared, stage_cfg, tmp_path):
    prep_dir, _ = prepared
    cfg = stage_cfg("train", [f"data.prep_dir={prep_dir}", *FAST_TRAIN, "trainer.max_steps=2",
                              "logger=wandb", "callbacks=none"])
    run_stage("train", train.run, cfg)
    assert list((tmp_path / "train" / "wandb").glob("offline-run-*"))
    assert (tmp_path / "train" / "csv" / "metrics.csv").exists()


def test_demo_is_the_chain_on_the_sample(stage_cfg):
    from metaqa.tracking.run import resolved_config

    cfg = resolved_config(stage_cfg("demo"))
    assert list(cfg["steps"]) == ["prep", "synth", "meta_train", "finetune", "export", "bench", "report"]
    assert cfg["data"]["name"] == "sample" and cfg["optimized_metric"] == "finetune/after/f1"


def run_cli(*args, cwd):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "metaqa.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_help_cfg_and_unknown_stage(tmp_path):
    assert "train" in run_cli(cwd=tmp_path).stdout
    out = run_cli("train", "--cfg", "job", "model=tiny", cwd=tmp_path)
    assert out.returncode == 0 and "hidden_size: 32" in out.stdout
    assert "== Config ==" in run_cli("train", "--help", cwd=tmp_path).stdout
    bad = run_cli("bogus", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown stage" in bad.stderr
