"""A `save_pretrained` reader dir → an ONNX dir, with optimum-onnx 0.1.0.

Five variants (the `export` config group):
- `fp32`: `ORTModelForQuestionAnswering.from_pretrained(dir, export=True)`, saved as is;
- `optimized`: the fp32 graph through `ORTOptimizer` at `AutoOptimizationConfig.O1`..`O3`
  (O2/O3 fuse attention, LayerNorm and GELU; O3 also approximates GELU);
- `int8_dynamic`: `ORTQuantizer` + `AutoQuantizationConfig.<isa>(is_static=False)` (weights int8,
  activations quantised on the fly);
- `int8_static`: the same with `is_static=True` (QDQ) and activation ranges calibrated with
  `AutoCalibrationConfig.minmax` on tokenised calibration questions.
- `openvino_bf16`: the fp32 graph, run by OpenVINO's CPU plugin at bf16 inference precision
  (`runtime: {name: openvino, precision: bf16}` in export.json; the engine reads it on load).
Either int8 variant can keep the most sensitive nodes in fp32 (`quantization.exclude`: node-name
substrings, e.g. `[qa_outputs]`).

Quantisation always starts from the *exported* (unfused) graph: quantising the fused one fails
ORT's shape inference. Every variant dir ends up with one `model.onnx` (optimum's `_optimized` /
`_quantized` suffixes are not used), the model's `config.json` and its fast tokenizer, so both
`OnnxPredictor(dir)` and `ORTModelForQuestionAnswering.from_pretrained(dir)` load it as is.
"""
from __future__ import annotations

import inspect
import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

from metaqa.config import ConfigError
from metaqa.data.features import featurize
from metaqa.data.records import QARecord
from metaqa.inference.engine import MANIFEST, ONNX_NAME, OV_PRECISIONS, RUNTIMES, onnx_file

log = logging.getLogger(__name__)

OPT_LEVELS = ("O1", "O2", "O3")  # O4 is fp16 mixed precision: GPU only
ISAS = ("avx512_vnni", "avx512", "avx2", "arm64")  # AutoQuantizationConfig's CPU targets
QUANT_MODES = ("dynamic", "static")


# --------------------------------------------------------------------------- validation
def check_variant(spec: dict[str, Any]) -> None:
    """Validate an `export` config node before any work starts (errors name the field and fix)."""
    opt, quant = spec.get("optimization"), spec.get("quantization")
    if opt and quant:
        raise ConfigError("export", "optimization and quantization are both set",
                          "pick one variant: export=optimized or export=int8_dynamic / int8_static "
                          "(int8 is quantised from the unfused export; a fused graph fails shape inference)")
    if opt:
        if opt.get("level") not in OPT_LEVELS:
            raise ConfigError("export.optimization.level", f"{opt.get('level')!r} is not one of {OPT_LEVELS}",
                              "export.optimization.level=O2 (O4 is fp16 for GPUs only)")
    if quant:
        if quant.get("mode") not in QUANT_MODES:
            raise ConfigError("export.quantization.mode", f"{quant.get('mode')!r} is not one of {QUANT_MODES}",
                              "export=int8_dynamic or export=int8_static")
        if quant.get("isa") not in ISAS:
            raise ConfigError("export.quantization.isa", f"{quant.get('isa')!r} is not one of {ISAS}",
                              "export.quantization.isa=avx512_vnni (recent x86), avx2 (older x86) or arm64")
        if quant.get("reduce_range") and quant["isa"] in ("avx512_vnni", "arm64"):
            raise ConfigError("export.quantization.reduce_range", f"not an option of isa={quant['isa']}",
                              "export.quantization.reduce_range=false, or isa=avx2 / avx512")
        if quant["mode"] == "static":
            cal = quant.get("calibration") or {}
            if not cal.get("source"):
                raise ConfigError("export.quantization.calibration.source", "no calibration data",
                                  "export.quantization.calibration.source=<shard dir or data file>")
            if cal.get("method", "minmax") != "minmax":  # percentiles / entropy: see quantize_static
                raise ConfigError("export.quantization.calibration.method", f"{cal.get('method')!r} is not supported",
                                  "export.quantization.calibration.method=minmax")
            if not (cal.get("limit") or 0) > 0:
                raise ConfigError("export.quantization.calibration.limit", f"{cal.get('limit')!r} is not > 0",
                                  "export.quantization.calibration.limit=32 (questions)")
    check_runtime(spec)
    atol = spec.get("logits_atol")
    if atol is not None and not atol > 0:
        raise ConfigError("export.logits_atol", f"{atol!r} is not > 0", "a positive tolerance, or null (no logit gate)")
    drop = spec.get("max_f1_drop")
    if drop is not None and not drop >= 0:
        raise ConfigError("export.max_f1_drop", f"{drop!r} is negative", "export.max_f1_drop=1.0 (F1 points)")




def check_runtime(spec: dict[str, Any]) -> None:
    """`export.runtime`: onnxruntime (default) or OpenVINO, which must be installed and, for bf16,
    have a bf16 path on this CPU (it would silently run f32 otherwise)."""
    runtime = spec.get("runtime") or {"name": "onnxruntime"}
    if runtime.get("name") not in RUNTIMES:
        raise ConfigError("export.runtime.name", f"{runtime.get('name')!r} is not one of {RUNTIMES}",
                          "export=fp32 (onnxruntime) or export=openvino_bf16")
    if runtime["name"] != "openvino":
        return
    if spec.get("optimization") or spec.get("quantization"):  # measured: 0.24× onnxruntime's int8
        raise ConfigError("export.runtime", "OpenVINO runs the plain fp32 graph here",
                          "export=openvino_bf16 as it is; onnxruntime's fused or int8 graphs run slower on OpenVINO")
    precision = runtime.get("precision", "bf16")
    if precision not in OV_PRECISIONS:
        raise ConfigError("export.runtime.precision", f"{precision!r} is not one of {OV_PRECISIONS}",
                          "export.runtime.precision=bf16 (AMX / AVX512-BF16 CPUs) or f32")
    try:
        from metaqa.inference.engine import openvino_bf16_capable
        capable = openvino_bf16_capable()
    except ImportError:
        raise ConfigError("export.runtime.name", "openvino is not installed",
                          "pip install 'metaqa[openvino]', or export=fp32 / int8_dynamic (onnxruntime)") from None
    if precision == "bf16" and not capable:
        raise ConfigError("export.runtime.precision", "this CPU has no bf16 path (no AMX, no AVX512-BF16)",
                          "export.runtime.precision=f32, or export=int8_dynamic (onnxruntime)")


# --------------------------------------------------------------------------- steps
def export_fp32(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Trace the PyTorch reader to ONNX (`model.onnx`) and save it with its config and tokenizer."""
    from optimum.onnxruntime import ORTModelForQuestionAnswering
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=_tracer_warning())  # expected when tracing BERT
        model = ORTModelForQuestionAnswering.from_pretrained(str(model_dir), export=True, provider="CPUExecutionProvider")
    model.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True).save_pretrained(out_dir)
    return out_dir


def optimize(exported_dir: str | Path, out_dir: str | Path, level: str = "O2") -> Path:
    """ORT transformer graph optimisations (fusions) at `level` O1..O3, for CPU."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    if level not in OPT_LEVELS:
        raise ValueError(f"optimisation level {level!r} is not one of {OPT_LEVELS}")
    config = getattr(AutoOptimizationConfig, level)(for_gpu=False)
    optimizer = ORTOptimizer.from_pretrained(str(exported_dir))
    optimizer.optimize(config, save_dir=str(out_dir), file_suffix=None)
    return _complete(exported_dir, out_dir)


def excluded_nodes(onnx_path: str | Path, patterns: Sequence[str]) -> list[str]:
    """Graph node names containing any of `patterns` (e.g. "qa_outputs", "layer.5/"): kept in
    fp32 by the quantizer; a pattern matching nothing is an error, not a silent no-op."""
    import onnx

    names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node]
    chosen = []
    for pattern in patterns:
        hits = [n for n in names if pattern in n]
        if not hits:
            raise ValueError(f"export.quantization.exclude: {pattern!r} matches no node of {onnx_path}")
        chosen.extend(hits)
    return sorted(set(chosen))


def quantization_config(isa: str, is_static: bool, per_channel: bool = False, reduce_range: bool = False,
                        nodes_to_exclude: Sequence[str] = ()):
    """`AutoQuantizationConfig.<isa>(is_static, per_channel[, reduce_range], nodes_to_exclude)`."""
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if isa not in ISAS:
        raise ValueError(f"isa {isa!r} is not one of {ISAS}")
    factory = getattr(AutoQuantizationConfig, isa)
    kwargs: dict[str, Any] = {"is_static": is_static, "per_channel": per_channel,
                              "nodes_to_exclude": list(nodes_to_exclude)}
    if "reduce_range" in inspect.signature(factory).parameters:  # avx2 / avx512, not vnni / arm64
        kwargs["reduce_range"] = reduce_range
    elif reduce_range:
        raise ValueError(f"reduce_range is not an option of AutoQuantizationConfig.{isa}; use isa=avx2")
    return factory(**kwargs)


def quantize_dynamic(exported_dir: str | Path, out_dir: str | Path, isa: str = "avx512_vnni",
                     per_channel: bool = False, reduce_range: bool = False, exclude: Sequence[str] = ()) -> Path:
    """int8 weights, activations quantised at run time; from the exported (unfused) graph."""
    from optimum.onnxruntime import ORTQuantizer

    config = quantization_config(isa, False, per_channel, reduce_range,
                                 excluded_nodes(onnx_file(exported_dir), exclude) if exclude else ())
    quantizer = ORTQuantizer.from_pretrained(Path(exported_dir), file_name=onnx_file(exported_dir).name)
    with _quiet_onnxruntime():
        quantizer.quantize(config, save_dir=str(out_dir), file_suffix=None)
    return _complete(exported_dir, out_dir)


class CalibrationSet(list):
    """The part of a `datasets.Dataset` that optimum's calibration reads (`datasets` is not needed).

    `AutoCalibrationConfig.minmax` reads `info.builder_name`, `info.config_name`, `split` and
    `num_rows`; `ORTQuantizer.fit` iterates rows of {input name: token list}.
    """

    def __init__(self, rows: Sequence[dict], name: str = "metaqa") -> None:
        super().__init__(rows)
        self.info = SimpleNamespace(builder_name=name, config_name=None)
        self.split = "calibration"

    @property
    def num_rows(self) -> int:
        return len(self)


def calibration_set(tokenizer, records: Sequence[QARecord], input_names: Sequence[str],
                    max_seq_length: int = 384, doc_stride: int = 128) -> CalibrationSet:
    """One row per window of `records`, holding only the graph's inputs (others break the session)."""
    if not records:
        raise ValueError("no calibration questions: check export.quantization.calibration.source / limit")
    features = featurize(tokenizer, records, max_seq_length, doc_stride, with_labels=False)
    rows = [{k: features.encodings[k][f] for k in input_names} for f in range(len(features))]
    return CalibrationSet(rows)


def quantize_static(exported_dir: str | Path, out_dir: str | Path, records: Sequence[QARecord],
                    isa: str = "avx512_vnni", per_channel: bool = False, reduce_range: bool = False,
                    moving_average: bool = False, max_seq_length: int = 384, doc_stride: int = 128,
                    exclude: Sequence[str] = ()) -> Path:
    """int8 weights and activations (QDQ); activation ranges from min/max over calibration windows.
    (Percentile / entropy calibration, onnxruntime's HistogramCalibrater, were tried: on these
    graphs they stop with "Too many bins for data range", so min/max is the one offered.)

    Calibration keeps every intermediate tensor of every window in memory until the end
    (onnxruntime's MinMaxCalibrater), so a few dozen questions is the right size.
    """
    import onnx
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoCalibrationConfig
    from transformers import AutoTokenizer

    exported_dir, out_dir = Path(exported_dir), Path(out_dir)
    source = onnx_file(exported_dir)
    input_names = [i.name for i in onnx.load(str(source), load_external_data=False).graph.input]
    tokenizer = AutoTokenizer.from_pretrained(str(exported_dir), local_files_only=True)
    dataset = calibration_set(tokenizer, records, input_names, max_seq_length, doc_stride)
    config = quantization_config(isa, True, per_channel, reduce_range,
                                 excluded_nodes(source, exclude) if exclude else ())
    calibration = AutoCalibrationConfig.minmax(dataset, moving_average=moving_average)
    quantizer = ORTQuantizer.from_pretrained(exported_dir, file_name=source.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    augmented = out_dir.parent / f"{out_dir.name}.augmented.onnx"  # optimum's default is the cwd
    with _quiet_onnxruntime():
        ranges = quantizer.fit(
            dataset=dataset,
            calibration_config=calibration,
            onnx_augmented_model_name=augmented,
            operators_to_quantize=config.operators_to_quantize,
        )
        augmented.unlink(missing_ok=True)
        quantizer.quantize(config, save_dir=str(out_dir), file_suffix=None, calibration_tensors_range=ranges)
    log.info("static int8: calibrated on %d windows of %d questions", len(dataset), len(records))
    return _complete(exported_dir, out_dir)


def build_variant(model_dir: str | Path, spec: dict[str, Any], work_dir: str | Path,
                  calibration_records: Sequence[QARecord] | None = None,
                  max_seq_length: int = 384, doc_stride: int = 128) -> Path:
    """Export `model_dir` into `work_dir/exported`, then the variant `spec` (an `export` config node).

    Returns the dir holding the variant (`work_dir/exported` itself for fp32 and openvino_bf16), with
    an export.json that names the variant (and so its runtime).
    """
    check_variant(spec)
    work_dir = Path(work_dir)
    exported = export_fp32(model_dir, work_dir / "exported")
    opt, quant = spec.get("optimization"), spec.get("quantization")
    target = work_dir / str(spec.get("name") or "variant")
    if opt:
        built = optimize(exported, target, opt["level"])
    elif quant and quant["mode"] == "dynamic":
        built = quantize_dynamic(exported, target, quant["isa"], bool(quant.get("per_channel")),
                                 bool(quant.get("reduce_range")), list(quant.get("exclude") or ()))
    elif quant and quant["mode"] == "static":
        cal = quant.get("calibration") or {}
        built = quantize_static(exported, target, calibration_records or [], quant["isa"],
                                bool(quant.get("per_channel")), bool(quant.get("reduce_range")),
                                bool(cal.get("moving_average")), max_seq_length, doc_stride,
                                list(quant.get("exclude") or ()))
    else:
        built = exported
    # the variant travels with the graph: whoever loads the dir runs it on the runtime it names
    # (`metaqa export` rewrites this file with the source model and the parity report)
    (built / MANIFEST).write_text(json.dumps({"variant": spec}, indent=2), encoding="utf-8")
    return built


def _complete(source_dir: str | Path, out_dir: str | Path) -> Path:
    """Make sure a derived dir has `model.onnx`, `config.json` and the tokenizer (optimum copies
    them from the source dir today; this keeps it true if that changes)."""
    import shutil

    source_dir, out_dir = Path(source_dir), Path(out_dir)
    graph = onnx_file(out_dir)
    if graph.name != ONNX_NAME:
        graph.rename(out_dir / ONNX_NAME)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.txt"):
        if (source_dir / name).exists() and not (out_dir / name).exists():
            shutil.copy2(source_dir / name, out_dir / name)
    return out_dir


class _OnnxRuntimeNoise(logging.Filter):
    """onnxruntime's quantiser logs on the root logger: one INFO line per tensor ("Quantization
    parameters for tensor ... not specified") and, for static QDQ, a WARNING per LayerNorm ("Expected
    bias ... to be an initializer"; the exporter folds those biases into the graph). Both are benign."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "onnxruntime" not in record.pathname:
            return True
        return record.levelno >= logging.WARNING and "to be an initializer" not in record.getMessage()


@contextmanager
def _quiet_onnxruntime():
    root, noise = logging.getLogger(), _OnnxRuntimeNoise()
    root.addFilter(noise)
    try:
        yield
    finally:
        root.removeFilter(noise)


def _tracer_warning() -> type[Warning]:
    try:
        from torch.jit import TracerWarning

        return TracerWarning
    except ImportError:  # pragma: no cover
        return UserWarning
