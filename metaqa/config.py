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
