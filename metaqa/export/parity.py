"""The parity gate: an exported graph must read like the PyTorch model it came from.

Both models read the same windows (one `featurize`, same batching by length). Two checks:
- logits: max |ONNX − PyTorch| over every real (unpadded) token of every window, against the
  variant's `export.logits_atol` (null = reported only);
- F1: the official SQuAD v2 F1 of each model's answers on a dev source; the drop
  (PyTorch − ONNX, in F1 points) against `export.max_f1_drop`.
`metaqa export` writes nothing final unless both pass.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from metaqa.data.features import Features
from metaqa.data.records import QARecord
from metaqa.evaluation.postprocess import SpanPrediction, postprocess
from metaqa.models.inference import DecodeConfig, score, window_logits


class ParityError(RuntimeError):
    """The exported model does not match the PyTorch one closely enough; nothing was written."""

    def __init__(self, message: str, report: "ParityReport") -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ParityReport:
    variant: str
    source: str
    questions: int
    windows: int
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    torch_f1: float
    onnx_f1: float
    torch_exact: float
    onnx_exact: float
    f1_drop: float  # torch − onnx, F1 points (negative = ONNX scored higher)
    same_answer: float  # share of questions with identical answer text
    logits_atol: float | None = None
    max_f1_drop: float | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def logit_diffs(features: Features, torch_logits: tuple[np.ndarray, np.ndarray],
                onnx_logits: tuple[np.ndarray, np.ndarray]) -> tuple[float, float]:
    """(max, mean) |difference| of start and end logits over the real tokens of every window."""
    lengths = np.array([len(ids) for ids in features.encodings["input_ids"]])
    diffs = []
    for ref, got in zip(torch_logits, onnx_logits):
        width = min(ref.shape[1], got.shape[1])
        real = np.arange(width)[None, :] < lengths[:, None]
        diffs.append(np.abs(ref[:, :width] - got[:, :width])[real])
    every = np.concatenate(diffs) if diffs else np.zeros(0)
    return (float(every.max()), float(every.mean())) if every.size else (0.0, 0.0)


def _decode(records, features, start, end, decode: DecodeConfig) -> list[SpanPrediction]:
    return postprocess(records, features, start, end, n_best=decode.n_best,
                       max_answer_length=decode.max_answer_length,
                       null_threshold=decode.null_threshold, version_2=decode.version_2)


def compare(net: torch.nn.Module, predictor, records: Sequence[QARecord], *, variant: str = "",
            source: str = "", batch_size: int = 32, decode: DecodeConfig | None = None,
            logits_atol: float | None = None, max_f1_drop: float | None = 1.0) -> ParityReport:
    """Read `records` with the PyTorch `net` and the `OnnxPredictor`, compare, and judge.

    The windows come from the predictor's tokenizer and window settings; the returned report
    lists every failed check in `failures` (empty = passed). Raise with `enforce`.
    """
    if not records:
        raise ValueError(f"no parity questions in {source or 'the dev source'}: the gate needs a few dozen")
    decode = decode or predictor.decode
    features = predictor.featurize(records)
    ref = window_logits(net, features, predictor.tokenizer.pad_token_id, batch_size)
    got = predictor.window_logits(features, batch_size)
    max_diff, mean_diff = logit_diffs(features, ref, got)
    ref_preds = _decode(records, features, *ref, decode)
    got_preds = _decode(records, features, *got, decode)
    ref_metrics, _ = score(records, ref_preds)
    got_metrics, _ = score(records, got_preds)
    same = float(np.mean([a.text == b.text for a, b in zip(ref_preds, got_preds)]))
    report = ParityReport(
        variant=variant, source=str(source), questions=len(records), windows=len(features),
        max_abs_logit_diff=max_diff, mean_abs_logit_diff=mean_diff,
        torch_f1=float(ref_metrics["f1"]), onnx_f1=float(got_metrics["f1"]),
        torch_exact=float(ref_metrics["exact"]), onnx_exact=float(got_metrics["exact"]),
        f1_drop=float(ref_metrics["f1"] - got_metrics["f1"]), same_answer=same,
        logits_atol=logits_atol, max_f1_drop=max_f1_drop,
    )
    if logits_atol is not None and max_diff > logits_atol:
        report.failures.append(
            f"max |logit diff| {max_diff:.3g} over {len(features)} windows exceeds "
            f"export.logits_atol={logits_atol:g} (by {max_diff - logits_atol:.3g})")
    if max_f1_drop is not None and report.f1_drop > max_f1_drop:
        report.failures.append(
            f"F1 drop {report.f1_drop:.2f} points (PyTorch {report.torch_f1:.2f} → ONNX {report.onnx_f1:.2f} "
            f"on {len(records)} questions of {source or 'the dev source'}) exceeds export.max_f1_drop="
            f"{max_f1_drop:g} by {report.f1_drop - max_f1_drop:.2f} points")
    return report


def enforce(report: ParityReport, where: str = "") -> None:
    """Raise `ParityError` naming every failed check, its margin and the fixes."""
    if report.ok:
        return
    target = f" to {where}" if where else ""
    if report.variant.startswith("int8"):
        fix = ("export.quantization.per_channel=true, a gentler variant (export=optimized or export=fp32), "
               "or a looser export.max_f1_drop if this loss is acceptable")
    else:
        fix = ("an fp32 or optimised graph should match PyTorch to about 1e-5, so check that model_dir holds "
               "the weights that were exported; O3 approximates GELU and needs export.logits_atol=1e-2")
    raise ParityError(f"export refused, no {report.variant or 'ONNX'} model written{target}: "
                      + "; ".join(report.failures) + f". Fix: {fix}", report)
