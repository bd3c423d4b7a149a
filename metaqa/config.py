"""Config helpers shared by every stage: OmegaConf resolvers and early validation.

Validation follows LeRobot's habit: fail before any work starts, naming the field and the fix.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)
PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR.parent / "conf"


def register_resolvers() -> None:
    for name, fn in {
        "metaqa_package": lambda: str(PACKAGE_DIR),
        "metaqa_repo": lambda: str(PACKAGE_DIR.parent),
        # = hydra:runtime.cwd (jobs never chdir), but resolvable before Hydra sets its config: a
        # launcher plugin's config (submitit's `${hydra.sweep.dir}/.submitit`) is resolved then
        "metaqa_cwd": lambda: os.getcwd(),
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


def check_reader_dir(model_dir: str | Path, allow_pickle: bool = False, field: str = "model_dir") -> Path:
    """A `save_pretrained` reader dir (what `metaqa train` writes to <run>/reader): a config whose
    architecture is `*ForQuestionAnswering` and weights that hold the trained QA head
    (`qa_outputs.weight`), read without loading them. Pickle weights (`pytorch_model.bin`, `.pt`)
    are refused unless `allow_pickle` (unpickling a file can run any code in it). `field`: the config
    key that named the dir, for the messages."""
    path = Path(model_dir)
    fix = f"pass {field}=<train run>/reader (a dir written by metaqa train, meta-train or finetune)"
    if not path.is_dir():
        raise ConfigError(field, f"{path} is not a directory", fix)
    if any(path.glob("*.onnx")):
        source = _exported_from(path)
        raise ConfigError(field, f"{path} is an ONNX export (model.onnx), not a PyTorch reader",
                          f"answer questions with it: `metaqa predict model_dir={path}`; or pass the reader "
                          f"it was exported from{f' ({field}={source})' if source else ''}")
    if not (path / "config.json").exists():
        raise ConfigError(field, f"{path} is not a save_pretrained dir (no config.json)", fix)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(field, f"{path}/config.json is not valid JSON ({err})",
                          "re-save the reader with save_pretrained, or " + fix) from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise ConfigError(field, f"{path}/config.json is not a transformers model config (no model_type)",
                          "re-save the reader with save_pretrained, or " + fix)
    architectures = config.get("architectures") or []
    heads = _weight_names(path, allow_pickle, field)
    if not any(a.endswith("ForQuestionAnswering") for a in architectures) or not any(
            k.endswith("qa_outputs.weight") for k in heads):
        raise ConfigError(field, f"{path} holds a {'/'.join(architectures) or config['model_type']} "
                          "without a trained question-answering head (no qa_outputs weights); its answers "
                          "would come from a randomly initialised head",
                          f"train a reader from it first (`metaqa train model.pretrained={path}`), then {fix}")
    return path


def _exported_from(onnx_dir: Path) -> str | None:
    try:
        return json.loads((onnx_dir / "export.json").read_text(encoding="utf-8")).get("source_model")
    except (OSError, ValueError, AttributeError):
        return None


def _weight_names(path: Path, allow_pickle: bool, field: str) -> list[str]:
    """The tensor names of a save_pretrained dir's weights, read from the safetensors headers (or the
    shard index); pickle weights only with `allow_pickle`."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        return list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    if (path / "model.safetensors").exists():
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path / "model.safetensors"), framework="pt") as f:
                return list(f.keys())
        except (OSError, SafetensorError) as err:
            raise ConfigError(field, f"{path}/model.safetensors is unreadable ({err})",
                              "re-save the reader with save_pretrained") from None
    pickles = sorted(p for pattern in PICKLE_WEIGHTS for p in path.glob(pattern))
    if not pickles:
        raise ConfigError(field, f"{path} has no weights (no model.safetensors)",
                          "pass a dir written by save_pretrained (metaqa train writes <run>/reader)")
    if not allow_pickle:
        raise ConfigError(field, f"{path} holds pickle weights ({pickles[0].name}) and no model.safetensors; "
                          "loading a pickle can run any code it contains",
                          "re-save the reader as safetensors (model.save_pretrained(dir)), or pass "
                          "allow_pickle=true if you trust where the file came from")
    import pickle

    import torch

    try:
        state = torch.load(pickles[0], map_location="meta", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ConfigError(field, f"{pickles[0]} is not a plain state dict of tensors ({type(err).__name__})",
                          "re-save the reader with save_pretrained (safetensors)") from None
    return list(state) if isinstance(state, dict) else []


PICKLE_WEIGHTS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt")


# Numeric fields by their leaf name, wherever they sit (trainer, datamodule, meta, …): a string
# given on the command line (`trainer.max_steps=abc`) fails here, not deep inside a library.
INT_FIELDS = frozenset({
    "max_steps", "max_epochs", "min_steps", "epochs", "batch_size", "eval_batch_size", "max_seq_length",
    "doc_stride", "seed", "k", "limit", "limit_train", "limit_val", "limit_eval", "limit_synthetic",
    "limit_paragraphs", "warmup", "repeats", "n_best", "max_answer_length", "num_workers", "inner_steps",
    "tasks_per_step", "n_support", "n_query", "accumulate_grad_batches", "log_every_n_steps",
    "check_val_every_n_epoch", "batch_paragraphs", "ner_limit", "noun_chunk_limit",
})
FLOAT_FIELDS = frozenset({
    "lr", "inner_lr", "weight_decay", "warmup_ratio", "gradient_clip_val", "null_threshold", "dev_fraction",
    "heldout_theme_fraction", "max_f1_drop", "logits_atol", "val_check_interval",
})


def check_numbers(cfg: DictConfig, where: str = "") -> None:
    """Every numeric field of a stage config (see INT_FIELDS, FLOAT_FIELDS) is a number or null."""
    for key in cfg:
        if not where and key == "hydra":
            continue
        try:
            value = cfg[key]
        except OmegaConfBaseException:  # a missing (???) or unresolvable value: the stage names it itself
            continue
        field = f"{where}{key}"
        if isinstance(value, DictConfig):
            check_numbers(value, f"{field}.")
        elif value is None or key not in INT_FIELDS | FLOAT_FIELDS:
            continue
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(field, f"{value!r} is not a number", f"{field}=<a number>, e.g. {field}=10")
        elif key in INT_FIELDS and not isinstance(value, int):
            raise ConfigError(field, f"{value!r} is not a whole number", f"{field}={int(value)}")


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
        log.warning(
            "%s=%s is a test split: this sweep reports on it; do not pick settings by it", key, source)
