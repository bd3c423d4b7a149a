"""Crash-safe runs: train, meta-train and finetune killed with SIGKILL resume from last.ckpt
(`ckpt_path=last hydra.run.dir=<run>`) to the weights of an uninterrupted run; metrics.csv is
appended on resume; last.ckpt is written on its own schedule, whatever validation does."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metaqa.evaluation.latency import torch_threads
from metaqa.models.factory import build_qa_model
from metaqa.stages import finetune, meta_train, prep, train
from metaqa.tracking.callbacks import save_reader

REPO = Path(__file__).resolve().parents[2]
STAGES = {"train": train, "meta_train": meta_train, "finetune": finetune}
# 20 windows of the sample, 4 a batch: 5 batches an epoch
TRAIN = ["model=tiny", "datamodule.limit_train=16", "datamodule.batch_size=4", "datamodule.limit_val=8",
         "reader.max_seq_length=128", "reader.doc_stride=32", "trainer.log_every_n_steps=1",
         "trainer.enable_progress_bar=false"]
META = ["model=tiny", "meta.n_support=2", "meta.n_query=2", "meta.tasks_per_step=2", "datamodule.limit_val=8",
        "reader.max_seq_length=128", "reader.doc_stride=32", "trainer.enable_progress_bar=false"]
FINETUNE = ["reader.max_seq_length=128", "reader.doc_stride=32", "batch_size=4", "limit_eval=8", "k=12",
            "trainer.enable_progress_bar=false"]


@pytest.fixture
def prep_dir(stage_cfg, tmp_path):
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    with torch_threads(1):  # as the subprocesses: one thread is faster on a busy CPU, same sums
        yield tmp_path / "data"


def cli(stage: str, overrides: list[str], run_dir: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "metaqa.cli", stage, *overrides, f"hydra.run.dir={run_dir}"],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]


def kill_once_checkpointed(proc: subprocess.Popen, run_dir: Path, max_steps: int) -> int:
    """SIGKILL the run as soon as its first last.ckpt exists; the step that checkpoint holds."""
    last = run_dir / "checkpoints" / "last.ckpt"
    while proc.poll() is None and not last.exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run_dir / "reader").exists() and not (run_dir / "summary.json").exists()
    step = torch.load(last, weights_only=False, map_location="cpu")["global_step"]
    assert 0 < step < max_steps
    return step


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "reader" / "model.safetensors")), load_file(str(b / "reader" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    unequal = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not unequal, f"{len(unequal)} of {len(wa)} tensors differ, e.g. {unequal[:3]}"


def csv_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as file:
        return list(csv.DictReader(file))


def losses(run_dir: Path) -> list[tuple[str, str]]:
    return [(r["step"], r["train/loss"]) for r in csv_rows(run_dir) if r.get("train/loss")]


def straight_then_killed_and_resumed(stage: str, common: list[str], max_steps: int, stage_cfg, tmp_path) -> int:
    """An uninterrupted run in-process; the same run killed once last.ckpt exists, then resumed
    by the CLI; both end on the same weights. The step the resumed run started from."""
    STAGES[stage].run(stage_cfg(stage, common, out=tmp_path / "straight"))
    run_dir, command = tmp_path / "killed", stage.replace("_", "-")
    step = kill_once_checkpointed(cli(command, common, run_dir, tmp_path), run_dir, max_steps)
    finish(cli(command, [*common, "ckpt_path=last"], run_dir, tmp_path))
    assert_same_weights(run_dir, tmp_path / "straight")
    return step


def test_killed_train_run_resumes_mid_epoch_to_the_same_weights(prep_dir, stage_cfg, tmp_path):
    common = [f"data.prep_dir={prep_dir}", *TRAIN, "trainer.max_steps=24", "trainer.val_check_interval=10",
              "trainer.check_val_every_n_epoch=null",
              "callbacks.periodic_checkpoint.every_n_train_steps=7"]  # 7, 14, 21: all mid-epoch
    step = straight_then_killed_and_resumed("train", common, 24, stage_cfg, tmp_path)
    assert step % 5  # mid-epoch: the resumed run skipped the batches the killed one had consumed


def test_killed_train_run_with_token_budget_batches_resumes_to_the_same_weights(prep_dir, stage_cfg, tmp_path):
    common = [f"data.prep_dir={prep_dir}", *TRAIN, "datamodule.max_tokens=384", "trainer.max_steps=20",
              "trainer.val_check_interval=10", "trainer.check_val_every_n_epoch=null",
              "callbacks.periodic_checkpoint.every_n_train_steps=7"]
    straight_then_killed_and_resumed("train", common, 20, stage_cfg, tmp_path)


def test_killed_meta_train_run_resumes_to_the_same_weights(prep_dir, stage_cfg, tmp_path):
    common = [f"data.prep_dir={prep_dir}", *META, "trainer.max_steps=10",
              "callbacks.periodic_checkpoint.every_n_train_steps=3"]
    straight_then_killed_and_resumed("meta_train", common, 10, stage_cfg, tmp_path)


def test_killed_finetune_run_resumes_to_the_same_weights(prep_dir, stage_cfg, tmp_path, tokenizer):
    torch.manual_seed(0)
    net = build_qa_model({"architecture": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2,
                                           "num_attention_heads": 2, "intermediate_size": 64}},
                         vocab_size=len(tokenizer))
    reader = save_reader(net, tokenizer, tmp_path / "start")
    common = [f"data.prep_dir={prep_dir}", f"model_dir={reader}", *FINETUNE, "epochs=5",
              "callbacks.periodic_checkpoint.every_n_train_steps=3"]  # 5 epochs of 4 batches: 20 steps
    straight_then_killed_and_resumed("finetune", common, 20, stage_cfg, tmp_path)


def test_default_config_writes_last_ckpt_before_the_end(prep_dir, stage_cfg, tmp_path, crash_at):
    out = tmp_path / "run"
    quick = ["datamodule.limit_train=2", "datamodule.batch_size=1", "reader.max_seq_length=64",
             "reader.doc_stride=16", "trainer.log_every_n_steps=50"]  # 201 cheap steps
    cfg = stage_cfg("train", [f"data.prep_dir={prep_dir}", *TRAIN, *quick, "trainer.max_steps=1000",
                              *crash_at(201)], out=out)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.run(cfg)
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 200


def test_last_ckpt_moves_on_schedule_when_val_f1_does_not_improve(prep_dir, stage_cfg, tmp_path, crash_at):
    out = tmp_path / "run"
    common = [f"data.prep_dir={prep_dir}", *TRAIN, "trainer.max_steps=12", "trainer.val_check_interval=2",
              "module.optimizer.lr=0", "callbacks.periodic_checkpoint.every_n_train_steps=3"]  # flat val/f1
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.run(stage_cfg("train", [*common, *crash_at(10)], out=out))
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 9
    # the best-by-val/f1 checkpoint is separate: the first validation's, never beaten
    assert [p.name for p in (out / "checkpoints").glob("step*.ckpt")] == ["step000002.ckpt"]


def test_resume_appends_to_metrics_csv_without_duplicates(prep_dir, stage_cfg, tmp_path, crash_at):
    common = [f"data.prep_dir={prep_dir}", *TRAIN, "trainer.max_steps=12",
              "callbacks.periodic_checkpoint.every_n_train_steps=4"]
    train.run(stage_cfg("train", common, out=tmp_path / "straight"))
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.run(stage_cfg("train", [*common, *crash_at(6)], out=out))
    assert [s for s, _ in losses(out)] == [str(s) for s in range(6)]  # steps 4 and 5 are redone
    train.run(stage_cfg("train", [*common, "ckpt_path=last"], out=out))
    assert losses(out) == losses(tmp_path / "straight")  # every step once, the same losses
    assert {"val/f1", "train/examples_per_s"} <= set(csv_rows(out)[0])
