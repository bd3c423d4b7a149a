"""`metaqa export`: a save_pretrained reader dir → an ONNX dir, gated on parity with PyTorch.

The variant (`export=fp32|optimized|int8_dynamic|int8_static`) is built in a temp dir beside
`export_dir`; the PyTorch model and the ONNX graph then read the same dev windows
(`export.parity.source`), and the temp dir is renamed to `export_dir` only when the logits and
the F1 drop are inside the variant's tolerances. Otherwise nothing is left behind and the error
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
from transformers import AutoModelForQuestionAnswering

from metaqa.config import CONF_DIR, ConfigError, check_reader_dir, check_windows
from metaqa.data.shards import load_source
from metaqa.export.convert import MANIFEST, ONNX_NAME, build_variant, check_variant
from metaqa.export.parity import compare, enforce
from metaqa.export.predictor import OnnxPredictor
from metaqa.fileio import guard_output_dir, replace_dir, write_json
from metaqa.models.inference import DecodeConfig
from metaqa.tracking.run import run_stage

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    model_dir = check_reader_dir(cfg.model_dir, cfg.get("allow_pickle", False))
    check_windows(cfg.max_seq_length, cfg.doc_stride, "export")
    spec = OmegaConf.to_container(cfg.export, resolve=True)
    check_variant(spec)
    parity = spec["parity"]
    if not (parity.get("limit") is None or parity["limit"] > 0):
        raise ConfigError("export.parity.limit", f"{parity['limit']!r} is not > 0", "export.parity.limit=200")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Read every input before any work: a missing dev or calibration source fails in a second.
    dev = load_source(parity["source"], parity.get("format", "auto"))[: parity.get("limit")]
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
        built = build_variant(model_dir, spec, work, calibration, cfg.max_seq_length, cfg.doc_stride)
        export_seconds = time.perf_counter() - started
        net = AutoModelForQuestionAnswering.from_pretrained(model_dir, local_files_only=True)
        predictor = OnnxPredictor(built, threads=cfg.threads or 0, max_seq_length=cfg.max_seq_length,
                                  doc_stride=cfg.doc_stride, decode=DecodeConfig(**cfg.decode))
        log.info("parity gate on %d questions of %s", len(dev), parity["source"])
        report = compare(net, predictor, dev, variant=spec["name"], source=str(parity["source"]),
                         batch_size=cfg.batch_size, logits_atol=spec.get("logits_atol"),
                         max_f1_drop=spec.get("max_f1_drop"))
        write_json(out / "parity.json", report.as_dict())
        enforce(report, str(final))
        model_mb = (built / ONNX_NAME).stat().st_size / 2**20
        write_json(built / MANIFEST, {
            "variant": spec, "source_model": str(model_dir.resolve()), "model_mb": model_mb,
            "max_seq_length": cfg.max_seq_length, "doc_stride": cfg.doc_stride,
            "decode": OmegaConf.to_container(cfg.decode, resolve=True), "parity": report.as_dict(),
        })
        replace_dir(built, final, stage="export")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log.info("%s: %.1f MB, F1 %.2f (PyTorch %.2f), max |logit diff| %.3g", final, model_mb,
             report.onnx_f1, report.torch_f1, report.max_abs_logit_diff)
    print(f"ONNX {spec['name']} model in {final} ({model_mb:.1f} MB): F1 {report.onnx_f1:.2f} vs PyTorch "
          f"{report.torch_f1:.2f} (drop {report.f1_drop:.2f}), same answer {report.same_answer:.1%}, "
          f"max |logit diff| {report.max_abs_logit_diff:.3g}")
    return {"torch_f1": report.torch_f1, "onnx_f1": report.onnx_f1, "f1_drop": report.f1_drop,
            "same_answer": report.same_answer, "max_abs_logit_diff": report.max_abs_logit_diff,
            "model_mb": model_mb, "export_seconds": export_seconds, "questions": report.questions}


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="export")
def main(cfg: DictConfig) -> float | None:
    return run_stage("export", run, cfg)
