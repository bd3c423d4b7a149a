"""`metaqa compress`: a smaller reader cut from a trained one, then trained (distilled) to recover.

Steps, in this order, each chosen in the `compress` config group (`compress=[truncate,prune,distill]`):
0. `reshape` (alone, instead of 1–2): a student of another architecture (`compress.reshape.architecture`,
   a conf/model name such as bert_mini), its embeddings the teacher's projected by PCA to its width.
1. `truncate`: keep k of the teacher's layers (`metaqa.models.compress.choose_layers`, or
   `choose=probe`: chosen on `probe_batches` training batches by `probe_layers`).
2. `prune`: remove the least important heads and FFN neurons (gradient × activation on
   `calibration_batches` training batches).
3. train the student with `metaqa train`'s machinery and config (data, trainer, callbacks,
   validation on the dev split): distilled from the teacher with `distill`
   (`metaqa.models.distill.DistillModule`: teacher logits cached once), on gold spans without it.
The student before training is `<run>/student_init`; the trained one `<run>/reader`, a normal
reader dir. Metrics add the teacher's and student's parameter counts and what was removed.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from metaqa.config import CONF_DIR, ConfigError
from metaqa.models.compress import (
    choose_layers,
    parameter_count,
    probe_layers,
    project_embeddings,
    prune,
    truncate,
)
from metaqa.models.factory import build_qa_model, load_tokenizer
from metaqa.stages import train
from metaqa.tracking.run import run_stage

log = logging.getLogger(__name__)


def calibration_batches(cfg: DictConfig, tokenizer, n: int) -> list[dict]:
    """The first `n` training batches (labelled windows): importance scores, the layer probe."""
    datamodule = hydra.utils.instantiate(cfg.datamodule, tokenizer=tokenizer,
                                         limit_train=n * int(cfg.datamodule.batch_size), limit_val=1)
    datamodule.setup("fit")
    batches = []
    for batch in datamodule.train_dataloader():
        batches.append(batch)
        if len(batches) == n:
            break
    return batches


def build_student(cfg: DictConfig, teacher, tokenizer) -> tuple[object, dict]:
    student, facts = teacher, {"teacher_params": parameter_count(teacher),
                               "teacher_layers": teacher.config.num_hidden_layers}
    steps = cfg.compress
    if "reshape" in steps:  # another architecture, not a cut of the teacher: nothing to truncate or prune
        arch = OmegaConf.load(CONF_DIR / "model" / f"{steps.reshape.architecture}.yaml")
        student = build_qa_model(arch, vocab_size=teacher.config.vocab_size)
        if steps.reshape.embeddings not in ("pca", "random"):
            raise ConfigError("compress.reshape.embeddings", repr(steps.reshape.embeddings), "pca or random")
        if steps.reshape.embeddings == "pca":
            project_embeddings(teacher, student)
        facts["student_architecture"] = str(steps.reshape.architecture)
    if "truncate" in steps:
        k, how = int(steps.truncate.layers), steps.truncate.choose
        if how == "probe":
            batches = calibration_batches(cfg, tokenizer, int(steps.truncate.probe_batches))
            layers, facts["layer_probe"] = probe_layers(teacher, k, batches)
            log.info("layer probe kept %s (dropped in order: %s)", layers, [r["dropped"] for r in facts["layer_probe"]])
        else:
            layers = choose_layers(teacher.config.num_hidden_layers, k,
                                   OmegaConf.to_object(how) if OmegaConf.is_list(how) else how)
        student = truncate(student, layers)
        facts["kept_layers"] = layers
    if "prune" in steps:
        student = prune(student, calibration_batches(cfg, tokenizer, int(steps.prune.calibration_batches)),
                        float(steps.prune.heads), float(steps.prune.ffn))
        facts.update(pruned_heads=sum(len(h) for h in student.config.pruned_heads.values()),
                     intermediate_size=student.config.intermediate_size)
    facts.update(student_params=parameter_count(student), student_layers=student.config.num_hidden_layers)
    facts["params_ratio"] = facts["student_params"] / facts["teacher_params"]
    return student, facts


def run(cfg: DictConfig) -> dict:
    from transformers import AutoModelForQuestionAnswering

    teacher_dir = Path(cfg.teacher_dir)
    if not (teacher_dir / "config.json").is_file():
        raise ConfigError("teacher_dir", f"{teacher_dir} is not a reader dir (no config.json)",
                          "pass teacher_dir=<a `metaqa train` run>/reader")
    unknown = set(cfg.compress) - {"reshape", "truncate", "prune", "distill"}
    if unknown or not cfg.compress:
        raise ConfigError("compress", f"steps {sorted(cfg.compress)}",
                          "choose from compress=[truncate,prune,distill] (or [reshape,distill])")
    if "reshape" in cfg.compress and {"truncate", "prune"} & set(cfg.compress):
        raise ConfigError("compress", f"steps {sorted(cfg.compress)}: a reshaped student is a new architecture, "
                          "not a cut of the teacher", "compress=[reshape,distill]")
    tokenizer = load_tokenizer({"tokenizer": str(teacher_dir)})
    teacher = AutoModelForQuestionAnswering.from_pretrained(str(teacher_dir), local_files_only=True)
    student, facts = build_student(cfg, teacher, tokenizer)
    init_dir = Path(cfg.model.pretrained)
    student.save_pretrained(init_dir)
    tokenizer.save_pretrained(init_dir)
    log.info("student: %d layers, %.1fM parameters (%.0f%% of the teacher's) → %s", facts["student_layers"],
             facts["student_params"] / 1e6, 100 * facts["params_ratio"], init_dir)
    del teacher, student
    with open_dict(cfg):  # hidden-state transfer pairs each kept layer with the teacher layer it came from
        cfg.module.teacher_layers = facts.get("kept_layers")
    metrics = train.run(cfg)
    metrics.update({k: v for k, v in facts.items() if isinstance(v, (int, float))})
    metrics["kept_layers"] = str(facts.get("kept_layers", "all"))
    if "student_architecture" in facts:
        metrics["student_architecture"] = facts["student_architecture"]
    if "layer_probe" in facts:  # the probe's rounds: which layer went, at what loss
        metrics["layer_probe"] = str([(r["dropped"], round(r["loss"], 4)) for r in facts["layer_probe"]])
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="compress")
def main(cfg: DictConfig) -> float | None:
    return run_stage("compress", run, cfg)
