"""Clear errors and honest exit codes from the command line: a non-numeric numeric field is a
ConfigError before any work, a sweep with failed jobs exits non-zero after every job ran, `metaqa
--help` says what `demo` runs, and a chain's report does not count the chain dir as a run."""
import os
import subprocess
import sys

import pytest

from metaqa.cli import usage
from metaqa.config import ConfigError
from metaqa.stages import report, train
from metaqa.tracking.run import run_stage
from tests.safety.conftest import SAMPLE
from tests.safety.test_reruns import ONLY_PREP


def metaqa(*args, cwd):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "metaqa.cli", *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override,field", [("trainer.max_steps=abc", "trainer.max_steps"),
                                            ("datamodule.batch_size=1.5", "datamodule.batch_size"),
                                            ("module.optimizer.lr=fast", "module.optimizer.lr")])
def test_a_word_in_a_numeric_field_is_a_config_error(stage_cfg, override, field):
    cfg = stage_cfg("train", ["model=tiny", override])
    with pytest.raises(ConfigError, match=f"config `{field}`"):
        run_stage("train", train.run, cfg)


def test_a_sweep_with_a_failed_job_exits_non_zero_after_every_job(tmp_path):
    sweep = tmp_path / "sweep"
    done = metaqa("prep", "-m", f"data.path={tmp_path / 'missing.csv'},{SAMPLE}", "data=devrev_csv",
                  "data.prep_dir=${paths.output_dir}/data", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    assert (sweep / "1" / "data" / "manifest.json").exists()  # the job after the failed one ran
    assert done.stderr.strip().splitlines()[-1].startswith("metaqa prep: 1 job(s) of the sweep failed")
    assert str(sweep / "0") in done.stderr and str(sweep / "1") not in done.stderr.splitlines()[-1]


def test_help_describes_demo_as_the_whole_chain():
    line = next(line for line in usage().splitlines() if line.strip().startswith("demo"))
    assert "prep → synth → meta-train → finetune → export → bench → report" in line


def test_a_chain_report_lists_the_steps_not_the_chain_dir(stage_cfg, tmp_path):
    chain = tmp_path / "chain"
    done = metaqa("run", "model=tiny", *[s for s in ONLY_PREP if s != "steps.report=null"],
                  f"hydra.run.dir={chain}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 runs: 1 ok, 0 failed, 0 without a summary.json" in (chain / "report" / "report.md").read_text()
    report.run(stage_cfg("report", [f"dir={chain}", f"out={tmp_path / 'again'}"]))  # after the chain finished
    assert "1 runs: 1 ok, 0 failed" in (tmp_path / "again" / "report.md").read_text()
