"""`metaqa export`: a save_pretrained reader dir → an ONNX dir, gated on parity with PyTorch.

The variant (`export=fp32|optimized|int8_dynamic|int8_static|openvino_bf16`) is built in a temp dir beside
`export_dir`; the PyTorch model and the ONNX graph then read the same dev windows
(`export.parity.source`), and the temp dir is renamed to `export_dir` only when the gate
(`metaqa.export.parity`: F1 either way, answer agreement, logits; one question at a time and
batched) passes. Otherwise nothing is left behind and the error
names the failed check (`export.max_f1_drop`, `export.logits_atol`) and by how much.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from metaqa.config import CONF_DIR, ConfigError, check_reader_dir
from metaqa.data.shards import load_source
from metaqa.export.convert import MANIFEST, ONNX_NAME, build_variant, check_variant
from metaqa.export.parity import compare, enforce
from metaqa.fileio import guard_output_dir, replace_dir, write_json
from metaqa.inference import OnnxPredictor, ReaderConfig, TorchPredictor
from metaqa.tracking.run import run_stage

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    reader = ReaderConfig.from_cfg(cfg.reader)
    spec = OmegaConf.to_container(cfg.export, resolve=True)
    check_variant(spec)
    parity = spec["parity"]
    if not (parity.get("limit") is None or parity["limit"] > 0):
        raise ConfigError("export.parity.limit", f"{parity['limit']!r} is not > 0", "export.parity.limit=200")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Read every input before any work: a missing dev or calibration source fails in a second.
    dev_all = load_source(parity["source"], parity.get("format", "auto"), cfg.data.duplicate_ids)
    dev = dev_all[: parity.get("limit")]
    calibration = None
    quant = spec.get("quantization") or {}
    if quant.get("mode") == "static":
        cal = quant["calibration"]
        calibration = load_source(cal["source"], cal.get("format", "auto"))[: cal["limit"]]

    final = Path(cfg.export_dir)
    guard_output_dir(final, field="export_dir", stage="export", overwrite=cfg.get("overwrite", False),
                     inputs=[model_dir, parity["source"], (quant.get("calibration") or {}).get("source")])
    work = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    out = Path(cfg.paths.output_dir)
    started = time.perf_counter()
    try:
        log.info("exporting %s as %s", model_dir, spec["name"])
        built = build_variant(model_dir, spec, work, calibration, reader.max_seq_length, reader.doc_stride)
        export_seconds = time.perf_counter() - started
        log.info("parity gate on %d questions of %s (one at a time and batched)", len(dev), parity["source"])
        report = compare(TorchPredictor.from_dir(model_dir, reader),
                         OnnxPredictor(built, threads=cfg.threads or 0, reader=reader), dev,
                         variant=spec["name"], source=str(parity["source"]), batch_size=cfg.batch_size,
                         logits_atol=spec.get("logits_atol"), max_f1_drop=spec.get("max_f1_drop"),
                         min_same_answer=spec.get("min_same_answer"), min_questions=spec.get("min_questions", 200),
                         source_questions=len(dev_all))
        write_json(out / "parity.json", report.as_dict())
        enforce(report, str(final))
        model_mb = (built / ONNX_NAME).stat().st_size / 2**20
        write_json(built / MANIFEST, {
            "variant": spec, "source_model": str(model_dir.resolve()), "model_mb": model_mb,
            "reader": OmegaConf.to_container(cfg.reader, resolve=True), "parity": report.as_dict(),
        })
        replace_dir(built, final, stage="export")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    serving, batched = report.serving, report.batched
    print(f"ONNX {spec['name']} model in {final} ({model_mb:.1f} MB), gate on {report.questions} questions:")
    for name, m in (("one at a time", serving), ("batched", batched)):
        print(f"  {name:>13}: F1 {m.onnx_f1:.2f} vs PyTorch {m.torch_f1:.2f} ({m.f1_diff:+.2f}), "
              f"same answer {m.same_answer:.1%}, max |logit diff| {m.max_abs_logit_diff:.3g}")
    return {"torch_f1": serving.torch_f1, "onnx_f1": serving.onnx_f1, "f1_diff": serving.f1_diff,
            "same_answer": serving.same_answer, "max_abs_logit_diff": serving.max_abs_logit_diff,
            "batched/onnx_f1": batched.onnx_f1, "batched/f1_diff": batched.f1_diff,
            "batched/same_answer": batched.same_answer, "batched/max_abs_logit_diff": batched.max_abs_logit_diff,
            "model_mb": model_mb, "export_seconds": export_seconds, "questions": report.questions,
            "gate_warnings": len(report.warnings)}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> float | None:
    return run_stage("export", run, cfg)
