"""Shared fixtures: the packaged tokenizer, Hydra-composed stage configs, shared-data paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from metaqa.config import CONF_DIR, compose_stage

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(relative: str) -> Path:
    """A file under ../shared/data, or skip the test cleanly when it is absent."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"needs {path} (../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def tokenizer():
    from metaqa.models.factory import load_tokenizer

    return load_tokenizer({"tokenizer": "packaged"})


@pytest.fixture
def hydra_ctx():
    """An initialised Hydra (as inside `metaqa <stage>`), so stages can compose sub-configs."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


@pytest.fixture
def stage_cfg(hydra_ctx, tmp_path):
    """compose(stage, overrides) with every path under tmp_path, as a Hydra run would see it."""

    def make(stage: str, overrides: list[str] = (), out: Path | None = None) -> DictConfig:
        return compose_stage(stage, out or tmp_path / stage, overrides, root_dir=tmp_path)

    return make


class CrashAtStep(pl.Callback):
    """Simulates a crashed job: raises when the run reaches `step` (after that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError(f"simulated crash at step {self.step}")


@pytest.fixture
def crash_at():
    """Overrides that add a CrashAtStep callback to a stage config: `[*crash_at(4)]`."""
    return lambda step: [f"+callbacks.crash._target_={CrashAtStep.__module__}.CrashAtStep",
                         f"+callbacks.crash.step={step}"]
