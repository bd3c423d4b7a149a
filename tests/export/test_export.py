"""`metaqa export` on the tiny reader: every variant exports and runs, the parity gate refuses a
broken graph (leaving nothing behind), and the output dir loads in optimum."""
import json

import numpy as np
import onnx
import pytest
from omegaconf import OmegaConf
from onnx import numpy_helper

from metaqa.config import ConfigError
from metaqa.export import convert
from metaqa.export.parity import ParityError, compare, enforce
from metaqa.fileio import MARKER, write_json
from metaqa.inference import OnnxPredictor, TorchPredictor, make_record
from metaqa.stages import export as export_stage
from metaqa.tracking.run import run_stage
from tests.export.conftest import WINDOW, reader_cfg, tiny_reader, torch_answers

WINDOW_OVERRIDES = [f"reader.max_seq_length={WINDOW['max_seq_length']}", f"reader.doc_stride={WINDOW['doc_stride']}"]


def export_cfg(stage_cfg, reader, gold, *overrides):
    return stage_cfg("export", [f"model_dir={reader[0]}", f"export.parity.source={gold}",
                                *WINDOW_OVERRIDES, *overrides])


def corrupt(onnx_path, scale=0.5, seed=0):
    """Add large noise to every weight matrix of the graph (a deliberately broken export)."""
    model = onnx.load(str(onnx_path))
    rng = np.random.default_rng(seed)
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim >= 2:
            init.CopyFrom(numpy_helper.from_array(w + rng.normal(0, scale, w.shape).astype(np.float32), init.name))
    onnx.save(model, str(onnx_path))


@pytest.mark.parametrize("variant,extra", [
    ("fp32", []),
    ("optimized", []),
    ("int8_dynamic", ["export.max_f1_drop=100", "export.min_same_answer=0"]),  # random tiny logits: int8 may flip answers
    ("int8_static", ["export.max_f1_drop=100", "export.min_same_answer=0"]),
])
def test_every_variant_exports_passes_the_gate_and_answers(stage_cfg, reader, self_gold, tmp_path, variant, extra):
    from optimum.onnxruntime import ORTModelForQuestionAnswering

    overrides = [f"export={variant}", *extra]
    if variant == "int8_static":
        overrides += [f"export.quantization.calibration.source={self_gold}", "export.quantization.calibration.limit=6"]
    cfg = export_cfg(stage_cfg, reader, self_gold, *overrides)
    metrics = run_stage("export", export_stage.run, cfg)
    assert metrics is None  # optimized_metric: null
    out = tmp_path / "export" / "onnx"
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.onnx"]
    assert {"config.json", "tokenizer.json", "export.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.parent.glob("onnx.tmp-*"))
    summary = json.loads((tmp_path / "export" / "summary.json").read_text())
    assert summary["status"] == "ok"
    m = summary["metrics"]
    assert m["questions"] == 12 and m["torch_f1"] == pytest.approx(100.0)
    if variant in ("fp32", "optimized"):
        assert m["f1_diff"] == 0.0 and m["same_answer"] == 1.0 and m["max_abs_logit_diff"] < 1e-4
        assert m["batched/f1_diff"] == 0.0 and m["batched/max_abs_logit_diff"] < 1e-4
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["variant"]["name"] == variant and manifest["parity"]["ok"]

    # loads in optimum as is, and in the predictor
    ort_model = ORTModelForQuestionAnswering.from_pretrained(out)
    tok = OnnxPredictor(out, reader=reader_cfg()).tokenizer
    logits = ort_model(**tok("Who wrote it?", "Ada Lovelace wrote it.", return_tensors="pt")).start_logits
    assert logits.shape[0] == 1 and np.isfinite(logits.numpy()).all()
    answer = OnnxPredictor(out, reader=reader_cfg()).answer("Who wrote it?", "Ada Lovelace wrote it in London.")
    assert answer.id == "q0" and np.isfinite(answer.null_score)


def test_the_openvino_variant_is_the_fp32_graph_run_by_openvino_wherever_the_dir_is_loaded(
        stage_cfg, reader, self_gold, tmp_path):
    from metaqa.inference import load_predictor
    from metaqa.inference.engine import OpenVinoSession

    precision = openvino_precision()
    cfg = export_cfg(stage_cfg, reader, self_gold, "export=openvino_bf16", f"export.runtime.precision={precision}")
    run_stage("export", export_stage.run, cfg)
    out = tmp_path / "export" / "onnx"
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["variant"]["runtime"] == {"name": "openvino", "precision": precision} and manifest["parity"]["ok"]
    served = load_predictor(out, reader_cfg(), threads=1)  # what eval, bench, pipeline and serve call
    assert isinstance(served.session, OpenVinoSession) and "openvino" in repr(served)
    ort = OnnxPredictor(out, threads=1, reader=reader_cfg(), runtime={"name": "onnxruntime"})
    features = ort.featurize([make_record("Who wrote it?", "Ada Lovelace wrote it in London in 1843. " * 40)])
    batch = ort.pad(features, np.arange(len(features)))  # several windows: a real batch
    assert len(features) > 1
    atol = 1.0 if precision == "bf16" else 1e-4
    for a, b in zip(ort.run(batch), served.run(batch)):
        assert a.shape == b.shape and np.max(np.abs(a - b)) < atol


def test_gate_refuses_a_corrupted_graph_and_writes_nothing(stage_cfg, reader, self_gold, tmp_path, monkeypatch):
    real = convert.export_fp32

    def broken_export(model_dir, out_dir):
        out = real(model_dir, out_dir)
        corrupt(out / "model.onnx")
        return out

    monkeypatch.setattr(convert, "export_fp32", broken_export)
    previous = tmp_path / "export" / "onnx"
    previous.mkdir(parents=True)
    (previous / "keep.txt").write_text("an earlier good export")
    write_json(previous / MARKER, {"stage": "export"})  # as metaqa export marks its output
    cfg = export_cfg(stage_cfg, reader, self_gold)
    with pytest.raises(ParityError, match=r"serving: F1 moved -[\d.]+ points .* more than export.max_f1_drop=1 either way") as err:
        run_stage("export", export_stage.run, cfg)
    assert "export.logits_atol=0.0001" in str(err.value)
    assert err.value.report.serving.f1_diff < -1.0 and err.value.report.batched.f1_diff < -1.0
    assert sorted(p.name for p in previous.parent.iterdir()) == ["onnx", "parity.json", "summary.json"]
    assert sorted(p.name for p in previous.iterdir()) == [MARKER, "keep.txt"]  # the earlier export is untouched
    parity = json.loads((tmp_path / "export" / "parity.json").read_text())
    assert parity["ok"] is False and parity["serving"]["f1_diff"] == pytest.approx(err.value.report.serving.f1_diff)
    summary = json.loads((tmp_path / "export" / "summary.json").read_text())
    assert summary["status"] == "failed" and "export.max_f1_drop" in summary["error"]


def test_gate_flags_a_model_with_other_weights(fp32_dir, tokenizer, sample_records, tmp_path):
    other = tiny_reader(tmp_path / "other", tokenizer, seed=1)
    predictor = OnnxPredictor(fp32_dir, reader=reader_cfg())
    reference = TorchPredictor(other, tokenizer, reader_cfg())
    report = compare(reference, predictor, sample_records, variant="fp32", logits_atol=1e-4, max_f1_drop=None,
                     min_same_answer=None)
    assert report.serving.max_abs_logit_diff > 1e-3 and report.serving.same_answer < 1.0
    with pytest.raises(ParityError, match=r"serving: max \|logit diff\| .* exceeds export.logits_atol=0.0001"):
        enforce(report)
    assert compare(reference, predictor, sample_records, logits_atol=None, max_f1_drop=None, min_same_answer=None).ok


def test_same_weights_pass_the_gate(fp32_dir, reader, sample_records):
    onnx_p = OnnxPredictor(fp32_dir, reader=reader_cfg())
    report = compare(TorchPredictor(reader[1], onnx_p.tokenizer, reader_cfg()), onnx_p, sample_records, logits_atol=1e-4)
    assert report.ok and report.serving.max_abs_logit_diff < 1e-4 and report.serving.same_answer == 1.0
    assert report.batched.max_abs_logit_diff < 1e-4 and report.batched.same_answer == 1.0
    assert report.questions == 12 and report.warnings and "fewer than 200" in report.warnings[0]
    enforce(report)  # no error


def test_gate_is_two_sided_an_onnx_model_that_scores_higher_is_refused(tokenizer, sample_records, tmp_path):
    """Gold = model B's answers; PyTorch = model A, ONNX = model B: ONNX scores *higher* (100)
    and answers differently, which the old one-sided gate passed."""
    from metaqa.data.records import Answer, QARecord
    from metaqa.export.convert import build_variant

    a = tiny_reader(tmp_path / "a", tokenizer, seed=1)
    b_dir = tmp_path / "b"
    b = tiny_reader(b_dir, tokenizer, seed=2)
    gold = [QARecord(r.id, r.theme, r.context, r.question, (Answer(p.text, p.start),) if p.text else (), not p.text)
            for r, p in zip(sample_records, torch_answers(b, tokenizer, sample_records))]
    onnx_b = OnnxPredictor(build_variant(b_dir, {"name": "fp32"}, tmp_path / "b_onnx"), reader=reader_cfg())
    report = compare(TorchPredictor(a, tokenizer, reader_cfg()), onnx_b, gold, variant="fp32", max_f1_drop=1.0,
                     min_same_answer=0.9)
    assert report.serving.onnx_f1 == pytest.approx(100.0) and report.serving.f1_diff > 1.0
    assert any("F1 moved +" in f for f in report.failures) and any("agree with PyTorch" in f for f in report.failures)
    with pytest.raises(ParityError, match="either way"):
        enforce(report)


def test_bad_configs_fail_before_any_work(stage_cfg, reader, self_gold, tmp_path):
    with pytest.raises(ConfigError, match="export.optimization.level"):
        export_stage.run(export_cfg(stage_cfg, reader, self_gold, "export=optimized", "export.optimization.level=O4"))
    with pytest.raises(ConfigError, match="export.quantization.isa"):
        export_stage.run(export_cfg(stage_cfg, reader, self_gold, "export=int8_dynamic", "export.quantization.isa=sse"))
    with pytest.raises(ConfigError, match="export.quantization.reduce_range"):
        export_stage.run(export_cfg(stage_cfg, reader, self_gold, "export=int8_dynamic",
                                    "export.quantization.reduce_range=true"))
    with pytest.raises(ConfigError, match="model_dir"):
        export_stage.run(stage_cfg("export", [f"model_dir={tmp_path / 'nope'}"]))
    with pytest.raises(FileNotFoundError, match="metaqa prep"):  # default dev source not prepared here
        export_stage.run(stage_cfg("export", [f"model_dir={reader[0]}"]))
    with pytest.raises(ValueError, match="reduce_range"):
        convert.quantization_config("avx512_vnni", False, reduce_range=True)
    with pytest.raises(ConfigError, match="export.runtime.precision"):
        export_stage.run(export_cfg(stage_cfg, reader, self_gold, "export=openvino_bf16", "export.runtime.precision=fp16"))
    with pytest.raises(ConfigError, match="export.runtime"):  # OpenVINO runs onnxruntime's int8 graph 4x slower
        export_stage.run(export_cfg(stage_cfg, reader, self_gold, "export=int8_dynamic",
                                    "+export.runtime={name:openvino,precision:f32}"))
    with pytest.raises(ConfigError, match="export.runtime.name"):
        export_stage.run(export_cfg(stage_cfg, reader, self_gold, "+export.runtime={name:tvm}"))
    assert not (tmp_path / "export" / "onnx").exists()


def openvino_precision() -> str:
    """bf16 where this CPU has a bf16 path, else f32 (the variant refuses bf16 there: tested below)."""
    from metaqa.inference.engine import openvino_bf16_capable

    return "bf16" if openvino_bf16_capable() else "f32"


@pytest.mark.parametrize("variant", ["fp32", "optimized", "int8_dynamic", "int8_static", "openvino_bf16"])
def test_variant_configs_compose(stage_cfg, variant):
    precision = [f"export.runtime.precision={openvino_precision()}"] if variant == "openvino_bf16" else []
    cfg = stage_cfg("export", ["model_dir=/tmp/x", f"export={variant}", *precision])
    assert cfg.export.parity.limit == (1000 if variant == "openvino_bf16" else 200)  # bf16's near-tie flips need more
    assert cfg.export.parity.source.endswith("/dev")  # the shared gate source, kept under the variant's limit
    assert cfg.export.name == variant and cfg.export.max_f1_drop == 1.0
    convert.check_variant(OmegaConf.to_container(cfg.export, resolve=True))


@pytest.mark.parametrize("base", ["export", "predict"])
def test_base_configs_resolve_with_a_model_dir(stage_cfg, base):
    from metaqa.tracking.run import resolved_config

    assert resolved_config(stage_cfg(base, ["model_dir=/tmp/x"]))


def test_int8_keeps_excluded_nodes_in_fp32(reader, sample_records, tmp_path):
    """`quantization.exclude` leaves those nodes float (the QA head here), dynamic and static; a
    pattern that matches nothing is refused."""
    import onnx

    def ops(model_dir, needle):
        graph = onnx.load(str(next(model_dir.glob("*.onnx")))).graph
        return [n.op_type for n in graph.node if needle in n.name]

    plain = convert.build_variant(reader[0], {"name": "int8_dynamic", "quantization": {
        "mode": "dynamic", "isa": "avx512_vnni"}}, tmp_path / "plain")
    kept = convert.build_variant(reader[0], {"name": "int8_dynamic", "quantization": {
        "mode": "dynamic", "isa": "avx512_vnni", "exclude": ["qa_outputs"]}}, tmp_path / "kept")
    assert "MatMulInteger" in ops(plain, "qa_outputs") and "MatMulInteger" not in ops(kept, "qa_outputs")
    assert "MatMul" in ops(kept, "qa_outputs")
    static = convert.build_variant(reader[0], {"name": "int8_static", "quantization": {
        "mode": "static", "isa": "avx512_vnni", "exclude": ["qa_outputs"],
        "calibration": {"method": "minmax", "source": "x", "limit": 4}}},
        tmp_path / "static", calibration_records=sample_records[:4], max_seq_length=128, doc_stride=32)
    graph = onnx.load(str(next(static.glob("*.onnx")))).graph
    floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    head = next(n for n in graph.node if "qa_outputs" in n.name and n.op_type == "MatMul")
    assert head.input[1] in floats  # the head's weight stays fp32 ...
    assert sum(n.op_type == "DequantizeLinear" for n in graph.node) > 10  # ... the encoder's are QDQ
    with pytest.raises(ValueError, match="matches no node"):
        convert.build_variant(reader[0], {"name": "int8_dynamic", "quantization": {
            "mode": "dynamic", "isa": "avx512_vnni", "exclude": ["no_such_node"]}}, tmp_path / "bad")
