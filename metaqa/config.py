"""Config helpers shared by every stage: OmegaConf resolvers and early validation.

Validation follows LeRobot's habit: fail before any work starts, naming the field and the fix.
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR.parent / "conf"


def register_resolvers() -> None:
    for name, fn in {
        "metaqa_package": lambda: str(PACKAGE_DIR),
        "metaqa_repo": lambda: str(PACKAGE_DIR.parent),
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()


class ConfigError(ValueError):
    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(f"config `{field}`: {problem}. Fix: {fix}")


def check_windows(max_seq_length: int, doc_stride: int, where: str) -> None:
    if not 32 <= max_seq_length <= 512:
        raise ConfigError(f"{where}.max_seq_length", f"{max_seq_length} is outside [32, 512]",
                          f"{where}.max_seq_length=384 (the models have 512 positions)")
    if not 0 < doc_stride < max_seq_length // 2:
        raise ConfigError(f"{where}.doc_stride", f"{doc_stride} must be in (0, max_seq_length/2)",
                          f"{where}.doc_stride=128 with max_seq_length=384")


def check_reader_dir(model_dir: str | Path) -> Path:
    """A `save_pretrained` reader dir (what `metaqa train` writes to <run>/reader)."""
    path = Path(model_dir)
    if not (path / "config.json").exists():
        raise ConfigError("model_dir", f"{path} is not a save_pretrained dir (no config.json)",
                          "pass model_dir=<train run>/reader")
    return path


def check_input_file(cfg: DictConfig, key: str) -> Path:
    path = Path(OmegaConf.select(cfg, key))
    if not path.exists():
        raise ConfigError(key, f"{path} does not exist",
                          f"pass {key}=<path to your file> (or put ../shared/data beside the repo)")
    return path


def compose_stage(stage: str, output_dir: str | Path, overrides=(), root_dir: str | Path | None = None) -> DictConfig:
    """A stage's config as `metaqa <stage>` would see it, for scripts and tests: composed with
    Hydra's own node, its runtime output dir set, and registered as the current Hydra config (so
    `${hydra:…}` resolves and stages can compose sub-configs). Needs an initialised Hydra
    (`hydra.initialize_config_dir(str(CONF_DIR))`)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    root = [f"paths.root_dir={root_dir}"] if root_dir is not None else []
    cfg = compose(config_name=stage, return_hydra_config=True,
                  overrides=[*root, f"paths.output_dir={output_dir}", *overrides])
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(output_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg


# Where each stage's `optimized_metric` is computed (what a sweep selects on).
OBJECTIVE_SOURCE = {"train": "datamodule.val_source", "meta_train": "datamodule.val_source",
                    "finetune": "eval_source", "eval": "source", "pipeline_eval": "source"}
# Stages that select on their validation split even in a single run (checkpoint `best`).
SELECTS_ON_VALIDATION = ("train", "meta_train")


def is_test_split(source: str | Path | None) -> bool:
    """A source named as a test split: a `test` shard dir (or a file inside one), or a file whose
    name is `test` / `test-…` / `test_…` / `test.…` (SubjQA's test.csv)."""
    if source in (None, ""):
        return False
    path = Path(str(source))
    stem = path.name.split(".")[0].lower()
    return stem == "test" or stem.startswith(("test-", "test_")) or path.parent.name.lower() == "test"


def check_selection_split(stage: str, cfg: DictConfig, multirun: bool, optimizing: bool | None = None) -> None:
    """Model selection and search objectives never read a test split (unless the user says so).

    Refused: train / meta-train validating on a test split (checkpoint `best` picks on it), and a
    search (an optimising sweeper such as Optuna) whose objective is computed on one. A plain grid
    sweep of eval / finetune over a test split reports, it does not select: a warning only.
    `optimizing` defaults to "the sweeper is Optuna" in a multirun."""
    key = OBJECTIVE_SOURCE.get(stage)
    if key is None or cfg.get("allow_test_selection", False):
        return
    source = OmegaConf.select(cfg, key, default=None)
    if not is_test_split(source):
        return
    if optimizing is None:
        optimizing = multirun and "optuna" in str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")).lower()
    if stage in SELECTS_ON_VALIDATION or (optimizing and cfg.get("optimized_metric")):
        what = "the search's objective" if optimizing else "checkpoint selection (best.ckpt)"
        raise ConfigError(key, f"{source} is a test split, and {what} would be chosen on it",
                          f"validate on in-domain dev questions ({key}=<prep dir>/dev), or pass "
                          "+allow_test_selection=true if you really mean to select on test")
    if multirun:
        import logging

        logging.getLogger(__name__).warning(
            "%s=%s is a test split: this sweep reports on it; do not pick settings by it", key, source)
