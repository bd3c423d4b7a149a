"""The parity gate: an exported graph must read like the PyTorch model it came from, on the path
that serves it.

Both models read the same windows (one `featurize`), two ways:
- `serving`: each question's windows in a run of their own (`Predictor.answer`, what `predict`,
  the pipeline and the latency bench do);
- `batched`: windows of similar length batched across questions (`Predictor.predict`).
Dynamic int8 quantises activations per run, so the two can differ for the same question; the
gate judges both. Per way, three two-sided checks:
- F1: |F1(PyTorch) − F1(ONNX)| on the dev questions, by the scoring contract, against
  `export.max_f1_drop` — an ONNX model that scores *higher* has changed its answers too;
- agreement: the share of questions with the same answer text, against `export.min_same_answer`;
- logits: max |ONNX − PyTorch| over every real token of every window, against `export.logits_atol`
  (every variant has one; int8's is loose, fp32's tight).
Fewer than `export.min_questions` questions (when the source has no more) is a warning in the log
and in parity.json: one flipped answer then moves F1 by more than the tolerance.
`metaqa export` writes nothing final unless every check passes.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from metaqa.data.features import Features
from metaqa.data.records import QARecord
from metaqa.evaluation.scoring import score
from metaqa.inference import Predictor

log = logging.getLogger(__name__)
MODES = ("serving", "batched")


class ParityError(RuntimeError):
    """The exported model does not match the PyTorch one closely enough; nothing was written."""

    def __init__(self, message: str, report: "ParityReport") -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ModeParity:
    """One way of reading (serving or batched): both models' scores and how far apart they are."""

    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    torch_f1: float
    onnx_f1: float
    torch_exact: float
    onnx_exact: float
    f1_diff: float  # ONNX − PyTorch, F1 points (either sign fails when |f1_diff| > max_f1_drop)
    same_answer: float  # share of questions with identical answer text


@dataclass
class ParityReport:
    variant: str
    source: str
    questions: int
    windows: int
    serving: ModeParity
    batched: ModeParity
    logits_atol: float | None = None
    max_f1_drop: float | None = None
    min_same_answer: float | None = None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

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


def _mode(records, features, reference: Predictor, exported: Predictor, ref_logits, got_logits) -> ModeParity:
    version_2 = exported.reader.decode.version_2
    ref_preds = exported.decode(records, features, *ref_logits)  # one decoder for both sides
    got_preds = exported.decode(records, features, *got_logits)
    ref_metrics, _ = score(records, ref_preds, version_2)
    got_metrics, _ = score(records, got_preds, version_2)
    max_diff, mean_diff = logit_diffs(features, ref_logits, got_logits)
    return ModeParity(
        max_abs_logit_diff=max_diff, mean_abs_logit_diff=mean_diff,
        torch_f1=float(ref_metrics["f1"]), onnx_f1=float(got_metrics["f1"]),
        torch_exact=float(ref_metrics["exact"]), onnx_exact=float(got_metrics["exact"]),
        f1_diff=float(got_metrics["f1"] - ref_metrics["f1"]),
        same_answer=float(np.mean([a.text == b.text for a, b in zip(ref_preds, got_preds)])))


def compare(reference: Predictor, exported: Predictor, records: Sequence[QARecord], *, variant: str = "",
            source: str = "", batch_size: int = 32, logits_atol: float | None = None,
            max_f1_drop: float | None = 1.0, min_same_answer: float | None = 0.9,
            min_questions: int = 200, source_questions: int | None = None) -> ParityReport:
    """Read `records` with the PyTorch `reference` and the `exported` predictor both ways, and judge.

    `source_questions`: how many questions the dev source holds (the warning for a small gate is
    only given when it held more than were read). Failed checks are listed in `failures`."""
    if not records:
        raise ValueError(f"no parity questions in {source or 'the dev source'}: the gate needs a few dozen")
    features = exported.featurize(records)
    modes = {
        "serving": _mode(records, features, reference, exported,
                         reference.logits_each(features), exported.logits_each(features)),
        "batched": _mode(records, features, reference, exported,
                         reference.window_logits(features, batch_size), exported.window_logits(features, batch_size)),
    }
    report = ParityReport(variant=variant, source=str(source), questions=len(records), windows=len(features),
                          **modes, logits_atol=logits_atol, max_f1_drop=max_f1_drop, min_same_answer=min_same_answer)
    where = f"{len(records)} questions of {source or 'the dev source'}"
    if len(records) < min_questions:
        more = "" if source_questions is None or source_questions <= len(records) else \
            f" (the source has {source_questions}: raise export.parity.limit)"
        report.warnings.append(f"the gate read {len(records)} questions, fewer than {min_questions}{more}: one "
                               f"changed answer moves F1 by {100 / len(records):.2f} points")
    for name, m in modes.items():
        if logits_atol is not None and m.max_abs_logit_diff > logits_atol:
            report.failures.append(
                f"{name}: max |logit diff| {m.max_abs_logit_diff:.3g} over {len(features)} windows exceeds "
                f"export.logits_atol={logits_atol:g}")
        if max_f1_drop is not None and abs(m.f1_diff) > max_f1_drop:
            report.failures.append(
                f"{name}: F1 moved {m.f1_diff:+.2f} points (PyTorch {m.torch_f1:.2f} → ONNX {m.onnx_f1:.2f} on "
                f"{where}), more than export.max_f1_drop={max_f1_drop:g} either way")
        if min_same_answer is not None and m.same_answer < min_same_answer:
            report.failures.append(
                f"{name}: {m.same_answer:.1%} of answers agree with PyTorch, below "
                f"export.min_same_answer={min_same_answer:g}")
    for warning in report.warnings:
        log.warning("parity gate: %s", warning)
    return report


def enforce(report: ParityReport, where: str = "") -> None:
    """Raise `ParityError` naming every failed check, its margin and the fixes."""
    if report.ok:
        return
    target = f" to {where}" if where else ""
    if report.variant.startswith("int8"):
        fix = ("export.quantization.per_channel=true, a gentler variant (export=optimized or export=fp32), "
               "or looser export.max_f1_drop / export.min_same_answer / export.logits_atol if this loss is acceptable")
    elif "bf16" in report.variant:  # rounding flips a few near-tied answers: the F1 on few questions is noisy
        fix = ("bf16 rounds activations, so a few near-tied answers flip; a larger gate (export.parity.limit=2000) "
               "measures the change with less noise, or export=fp32 / runtime.precision=f32 for exact parity")
    else:
        fix = ("an fp32 or optimised graph should match PyTorch to about 1e-5, so check that model_dir holds "
               "the weights that were exported; O3 approximates GELU and needs export.logits_atol=1e-2")
    raise ParityError(f"export refused, no {report.variant or 'ONNX'} model written{target}: "
                      + "; ".join(report.failures) + f". Fix: {fix}", report)
