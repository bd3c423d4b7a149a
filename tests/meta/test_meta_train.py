"""`metaqa meta-train` end to end on a tiny model: DDP over tasks, resume, every meta config."""
import json

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from metaqa.config import CONF_DIR
from metaqa.meta.module import MetaQAModule
from metaqa.stages import meta_train, prep

FAST_META = ["model=tiny", "meta.n_support=2", "meta.n_query=2", "meta.tasks_per_step=2",
             "reader.max_seq_length=128", "reader.doc_stride=32", "datamodule.limit_val=8",
             "trainer.log_every_n_steps=1", "logger=csv"]


@pytest.fixture
def prep_dir(stage_cfg, tmp_path):
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    return tmp_path / "data"


def weights(run_dir):
    return load_file(str(run_dir / "reader" / "model.safetensors"))


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=atol, msg=key)


@pytest.mark.parametrize("meta", sorted(p.stem for p in (CONF_DIR / "meta").glob("*.yaml")))
def test_every_meta_config_builds_its_module(stage_cfg, meta):
    cfg = stage_cfg("meta_train", ["model=tiny", f"meta={meta}"])
    from hydra.utils import instantiate

    module = instantiate(cfg.module, net=torch.nn.Linear(2, 2), _convert_="all")
    assert isinstance(module, MetaQAModule)
    assert module.hparams.algorithm == {"maml": "maml", "fomaml": "fomaml", "reptile": "reptile", "none": "none"}[meta]


def test_ddp_sim_ranks_stay_identical_and_match_one_process(prep_dir, stage_cfg, tmp_path):
    common = [f"data.prep_dir={prep_dir}", *FAST_META, "trainer.max_steps=3"]
    single = meta_train.run(stage_cfg("meta_train", common, out=tmp_path / "single"))
    ddp = meta_train.run(stage_cfg("meta_train", [*common, "trainer=ddp_sim"], out=tmp_path / "ddp"))
    digests = json.loads((tmp_path / "ddp" / "rank_digests.json").read_text())
    assert len(digests["digests"]) == 2 and digests["in_sync"]
    # same episodes, each rank adapts one of the two tasks; sums differ only in float order
    assert_same_weights(weights(tmp_path / "ddp"), weights(tmp_path / "single"), atol=1e-5)
    assert single["global_step"] == 3 and "val/f1" in ddp


@pytest.mark.parametrize("meta", ["fomaml", "reptile"])
def test_killed_run_resumes_to_the_same_parameters(prep_dir, stage_cfg, tmp_path, meta, crash_at):
    common = [f"data.prep_dir={prep_dir}", *FAST_META, f"meta={meta}", "trainer.max_steps=6",
              "callbacks.periodic_checkpoint.every_n_train_steps=3"]
    meta_train.run(stage_cfg("meta_train", common, out=tmp_path / "straight"))

    crashed = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        meta_train.run(stage_cfg("meta_train", [*common, *crash_at(4)], out=crashed))
    assert not (crashed / "reader").exists()  # nothing final was written by the crashed run
    resumed = meta_train.run(stage_cfg("meta_train", [*common, "ckpt_path=last"], out=crashed))
    assert resumed["global_step"] == 6
    assert_same_weights(weights(crashed), weights(tmp_path / "straight"), atol=0)


ARMS = OmegaConf.load(CONF_DIR / "experiment" / "ood.yaml").ood.arms


@pytest.mark.parametrize("arm", list(ARMS))
def test_ood_protocol_composes_for_every_arm(stage_cfg, arm):
    """Each arm of conf/experiment/ood.yaml is its override list away, and builds its outer optimiser."""
    from hydra.utils import instantiate

    from metaqa.tracking.run import resolved_config

    cfg = stage_cfg("meta_train", ["experiment=ood", *ARMS[arm]])
    resolved = resolved_config(cfg)
    assert resolved["datamodule"]["train_source"].endswith("squad/train-v1.1.json")
    assert resolved["trainer"]["max_steps"] == resolved["ood"]["sizes"]["cpu"]["meta_steps"]
    expected = {"multitask": ("none", True), "fomaml": ("maml", True), "reptile_sgd": ("reptile", True),
                "reptile_adamw": ("reptile", True), "maml": ("maml", False)}[arm]
    assert (resolved["module"]["algorithm"], resolved["module"]["first_order"]) == expected
    optimizer = instantiate(cfg.module.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert type(optimizer) is (torch.optim.SGD if arm == "reptile_sgd" else torch.optim.AdamW)
