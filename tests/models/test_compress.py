"""Compression on the tiny model: the distillation loss is its formula, truncated and pruned
readers have the shapes and parameter counts they should, export to ONNX and match their PyTorch
selves there, load with `transformers.pipeline`; the teacher's logits are computed once however
many epochs the student trains; the stage writes a smaller reader dir."""
from __future__ import annotations

import ast
import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from metaqa.config import CONF_DIR, ConfigError
from metaqa.data.datamodule import QADataModule
from metaqa.models.compress import (
    choose_layers,
    distill_loss,
    heads_to_prune,
    hidden_state_loss,
    parameter_count,
    prune,
    truncate,
)
from metaqa.models.factory import build_qa_model

ARCH = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 512}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tokenizer):
    """A 4-layer, 4-head tiny reader saved like `metaqa train` saves one."""
    torch.manual_seed(0)
    cfg = {**OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml")), "architecture": ARCH}
    net = build_qa_model(cfg, vocab_size=len(tokenizer)).eval()
    path = tmp_path_factory.mktemp("teacher")
    net.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path, net


@pytest.fixture(scope="module")
def windows(tokenizer):
    """A few labelled training batches of the sample data."""
    from metaqa.config import PACKAGE_DIR

    dm = QADataModule(tokenizer, train_source=str(PACKAGE_DIR / "data" / "sample" / "sample_qa.csv"),
                      val_source=None, max_seq_length=128, doc_stride=32, batch_size=4, limit_train=16)
    dm.setup("fit")
    return dm, [b for _, b in zip(range(3), dm.train_dataloader())]


def test_distill_loss_is_its_formula():
    g = torch.Generator().manual_seed(0)
    s_start, s_end, t_start, t_end = (torch.randn(3, 7, generator=g) for _ in range(4))
    gold_s, gold_e = torch.tensor([0, 2, 4]), torch.tensor([1, 3, 4])
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    T, alpha = 2.0, 0.3

    def kl(s, t):  # Σ_i p_t log(p_t / p_s) over real positions, mean over the batch
        total = 0.0
        for row in range(3):
            m = mask[row]
            p_t = torch.softmax(t[row, m] / T, -1)
            total += float((p_t * (torch.log(p_t) - torch.log_softmax(s[row, m] / T, -1))).sum())
        return total / 3

    def ce(s, gold):
        return float(np.mean([-torch.log_softmax(s[row, mask[row]], -1)[gold[row]] for row in range(3)]))

    expected = alpha * T ** 2 * (kl(s_start, t_start) + kl(s_end, t_end)) / 2 \
        + (1 - alpha) * (ce(s_start, gold_s) + ce(s_end, gold_e)) / 2
    got = distill_loss(s_start, s_end, t_start, t_end, gold_s, gold_e, T, alpha, mask)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # alpha = 0 is the gold loss alone, as HF computes it for an unmasked window
    plain = distill_loss(s_start, s_end, t_start, t_end, gold_s, gold_e, T, 0.0)
    assert float(plain) == pytest.approx(float((F.cross_entropy(s_start, gold_s) + F.cross_entropy(s_end, gold_e)) / 2))


def test_hidden_state_loss_pairs_each_student_layer_with_its_teacher_layer():
    torch.manual_seed(0)
    teacher = [torch.randn(2, 5, 8) for _ in range(5)]  # embeddings + 4 layers
    student = [teacher[0], teacher[2] + 1.0, teacher[4]]  # 2 layers: teacher layers 1 (off by 1) and 3
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert torch.isclose(hidden_state_loss(student, teacher, [1, 3], mask), torch.tensor(0.5))  # (1 + 0) / 2
    mask[:, 3:] = False  # padding does not count
    student[1] = student[1].clone()
    student[1][:, 3:] += 100.0
    assert torch.isclose(hidden_state_loss(student, teacher, [1, 3], mask), torch.tensor(0.5))
    assert hidden_state_loss(teacher, teacher) == 0  # same depth: layer i with layer i
    with pytest.raises(ValueError, match="2 student layers"):
        hidden_state_loss(student, teacher, [3])


def test_attention_relation_loss_is_minilmv2s_kl_of_self_relations():
    from metaqa.models.compress import attention_relation_loss

    torch.manual_seed(0)
    teacher = [torch.randn(2, 4, 6) for _ in range(3)]
    student = [torch.randn(2, 4, 3) for _ in range(3)]  # another width (a pruned student): same relations' shape
    assert attention_relation_loss(teacher, teacher, heads=3) == 0
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])

    def by_hand(s, t):  # one relation head, loops over real tokens only
        total, count = 0.0, 0
        for b in range(2):
            n = int(mask[b].sum())
            ps = torch.softmax(s[b, :n] @ s[b, :n].T / s.shape[-1] ** 0.5, -1)
            pt = torch.softmax(t[b, :n] @ t[b, :n].T / t.shape[-1] ** 0.5, -1)
            total += (pt * (pt.log() - ps.log())).sum()
            count += n
        return total / count

    expected = sum(by_hand(s, t) for s, t in zip(student, teacher)) / 3
    assert torch.isclose(attention_relation_loss(student, teacher, heads=1, mask=mask), expected, atol=1e-5)
    with pytest.raises(ValueError, match="relation heads"):
        attention_relation_loss(student, teacher, heads=2)


def test_layer_choice():
    assert choose_layers(6, 3) == [1, 3, 5] and choose_layers(6, 4, "first") == [0, 1, 2, 3]
    assert choose_layers(6, 2, [0, 5]) == [0, 5]
    with pytest.raises(ValueError):
        choose_layers(6, 7)


def test_layer_probe_drops_the_layer_whose_removal_costs_least(teacher, windows):
    from metaqa.models.compress import mean_loss, probe_layers

    _, net = teacher
    dm, _ = windows
    batches = [b for b, _ in zip(dm.train_dataloader(), range(2))]
    n = net.config.num_hidden_layers
    kept, rounds = probe_layers(net, n - 1, batches)
    # one round is exhaustive: the kept set is the best single drop
    by_drop = {i: mean_loss(truncate(net, [j for j in range(n) if j != i]), batches) for i in range(n)}
    assert kept == [j for j in range(n) if j != min(by_drop, key=by_drop.get)]
    assert rounds == [{"dropped": min(by_drop, key=by_drop.get), "loss": pytest.approx(min(by_drop.values()))}]
    kept, rounds = probe_layers(net, 2, batches)
    assert kept == sorted(kept) and len(kept) == 2 and len(rounds) == n - 2
    with pytest.raises(ValueError, match="keep 1"):
        probe_layers(net, n + 1, batches)


def test_projected_embeddings_are_the_teachers_principal_directions(teacher, tokenizer):
    from metaqa.models.compress import project_embeddings

    _, net = teacher
    words = net.base_model.embeddings.word_embeddings.weight.detach().numpy().astype(np.float64)
    narrow = OmegaConf.load(CONF_DIR / "model" / "tiny.yaml")
    narrow.architecture.hidden_size, narrow.architecture.intermediate_size = 16, 32
    student = build_qa_model(narrow, vocab_size=len(tokenizer))
    project_embeddings(net, student)
    centred = words - words.mean(0)
    _, _, vh = np.linalg.svd(centred, full_matrices=False)
    got = student.base_model.embeddings.word_embeddings.weight.detach().numpy()
    # the same subspace whatever the signs SVD picks: projecting back onto the top-16 directions is equal
    np.testing.assert_allclose(np.abs(got.T @ got), np.abs((centred @ vh[:16].T).T @ (centred @ vh[:16].T)),
                               rtol=1e-3, atol=1e-3)
    wide = build_qa_model(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"), vocab_size=len(tokenizer))
    project_embeddings(net, wide)  # as wide as the teacher: a rotation, every distance kept
    rotated = wide.base_model.embeddings.word_embeddings.weight.detach().numpy()
    for i, j in ((0, 1), (5, 900), (100, 2000)):
        assert np.linalg.norm(rotated[i] - rotated[j]) == pytest.approx(np.linalg.norm(words[i] - words[j]), rel=1e-4)


def test_heads_to_prune_keeps_one_head_per_layer():
    importance = torch.tensor([[0.1, 0.2], [0.9, 0.8], [0.05, 0.06]])
    assert heads_to_prune(importance, 0.5) == {0: [0], 1: [1], 2: [0]}


def onnx_matches_torch(student, tokenizer, tmp_path, records) -> None:
    from metaqa.export.convert import build_variant
    from metaqa.inference import OnnxPredictor, ReaderConfig, TorchPredictor

    student.save_pretrained(tmp_path / "reader")
    tokenizer.save_pretrained(tmp_path / "reader")
    onnx_dir = build_variant(tmp_path / "reader", {"name": "fp32"}, tmp_path / "onnx")
    cfg = ReaderConfig(max_seq_length=128, doc_stride=32)
    features = OnnxPredictor(onnx_dir, reader=cfg).featurize(records)
    onnx_start, _ = OnnxPredictor(onnx_dir, reader=cfg).window_logits(features)
    torch_start, _ = TorchPredictor(student.eval(), tokenizer, cfg).window_logits(features)
    np.testing.assert_allclose(onnx_start, torch_start, atol=1e-4)


def test_truncated_reader_shapes_count_and_onnx(teacher, tokenizer, tmp_path, windows):
    _, net = teacher
    student = truncate(net, [1, 3])
    assert student.config.num_hidden_layers == 2 and len(student.base_model.encoder.layer) == 2
    per_layer = sum(p.numel() for p in net.base_model.encoder.layer[0].parameters())
    assert parameter_count(student) == parameter_count(net) - 2 * per_layer
    assert torch.equal(student.base_model.encoder.layer[0].attention.self.query.weight,
                       net.base_model.encoder.layer[1].attention.self.query.weight)
    dm, _ = windows
    onnx_matches_torch(student, tokenizer, tmp_path, dm.train_records[:4])


def test_pruned_reader_is_smaller_for_real_exports_and_loads_in_pipeline(teacher, tokenizer, tmp_path, windows):
    from transformers import pipeline

    _, net = teacher
    dm, batches = windows
    student = prune(net, batches, heads=0.25, ffn=0.5)
    head = ARCH["hidden_size"] // ARCH["num_attention_heads"]
    removed = sum(len(h) for h in student.config.pruned_heads.values())
    assert removed == 4  # a quarter of 16 heads
    queries = [layer.attention.self.query.out_features for layer in student.base_model.encoder.layer]
    assert sum(queries) == (16 - removed) * head
    assert all(layer.intermediate.dense.out_features == 32 for layer in student.base_model.encoder.layer)
    assert student.config.intermediate_size == 32
    # each removed head: q, k, v rows (3 × (head·hidden + head)) and the output projection's columns
    h = ARCH["hidden_size"]
    head_params = removed * (3 * (head * h + head) + head * h)
    ffn_params = ARCH["num_hidden_layers"] * 32 * (h + 1 + h)  # 32 neurons: in-weights + bias + out-weights
    assert parameter_count(net) - parameter_count(student) == head_params + ffn_params

    onnx_matches_torch(student, tokenizer, tmp_path, dm.train_records[:4])
    qa = pipeline("question-answering", model=str(tmp_path / "reader"), tokenizer=str(tmp_path / "reader"))
    reloaded = qa.model
    assert reloaded.config.pruned_heads and parameter_count(reloaded) == parameter_count(student)
    answer = qa(question=dm.train_records[0].question, context=dm.train_records[0].context)
    assert answer["answer"] in dm.train_records[0].context


def test_teacher_logits_are_computed_once_across_epochs(teacher, tokenizer, windows):
    from metaqa.models.distill import DistillModule

    teacher_dir, net = teacher
    dm, _ = windows
    student = truncate(net, [0, 3]).train()
    module = DistillModule(student, lambda params: torch.optim.AdamW(params, lr=1e-3), str(teacher_dir),
                           temperature=2.0, alpha=0.5, teacher_batch_size=8)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    windows_n = len(dm.train_features)
    assert trainer.current_epoch == 3
    assert module.teacher.passes == -(-windows_n // 8)  # one pass over the windows, not one per epoch
    with torch.inference_mode():  # the cache holds the teacher's own logits (float16)
        first = net(**{k: torch.tensor([v[0]]) for k, v in dm.train_features.encodings.items()
                       if k in ("input_ids", "attention_mask", "token_type_ids")})
    np.testing.assert_allclose(module.teacher.start[0], first.start_logits[0].numpy(), atol=1e-2)


def test_teacher_cache_pass_in_bf16_stays_close_to_fp32(teacher, windows):
    from metaqa.models.distill import TeacherCache

    teacher_dir, _ = teacher
    dm, _ = windows
    fp32, bf16 = TeacherCache(str(teacher_dir), 8), TeacherCache(str(teacher_dir), 8)
    fp32.ensure(dm.train_features, dm.tokenizer.pad_token_id)
    bf16.ensure(dm.train_features, dm.tokenizer.pad_token_id, bf16=True)
    assert bf16.passes == fp32.passes
    diffs = [np.abs(a.astype(np.float32) - b.astype(np.float32)) for a, b in zip(fp32.start, bf16.start)]
    assert max(d.max() for d in diffs) < 0.1  # bf16 keeps 8 bits of mantissa: small, nonzero differences
    assert any(d.max() > 0 for d in diffs)  # the pass really ran in bf16


def test_compress_stage_writes_a_smaller_reader(stage_cfg, teacher, tmp_path):
    from metaqa.stages import compress, prep

    teacher_dir, net = teacher
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    cfg = stage_cfg("compress", [f"teacher_dir={teacher_dir}", "compress=[truncate,prune,distill]",
                                 "compress.truncate.layers=2", "compress.prune.calibration_batches=2",
                                 f"data.prep_dir={tmp_path / 'data'}", "debug=fast", "trainer.max_steps=2",
                                 "reader.max_seq_length=128", "reader.doc_stride=32"])
    metrics = compress.run(cfg)
    out = tmp_path / "compress"
    reader = json.loads((next(out.rglob("reader/config.json"))).read_text())
    assert reader["num_hidden_layers"] == 2 and reader["intermediate_size"] == 32
    assert metrics["student_params"] < metrics["teacher_params"] and metrics["kept_layers"] == "[1, 3]"
    assert "val/f1" in metrics

    probed = compress.run(stage_cfg("compress", [
        f"teacher_dir={teacher_dir}", "compress=[truncate,distill]", "compress.truncate.layers=2",
        "compress.truncate.choose=probe", "compress.truncate.probe_batches=2", f"data.prep_dir={tmp_path / 'data'}",
        "debug=fast", "trainer.max_steps=2", "reader.max_seq_length=128", "reader.doc_stride=32"],
        out=tmp_path / "probed"))
    kept, rounds = ast.literal_eval(probed["kept_layers"]), ast.literal_eval(probed["layer_probe"])
    assert len(kept) == 2 and len(rounds) == net.config.num_hidden_layers - 2


def test_a_reshaped_student_of_another_width_trains_and_loads(stage_cfg, teacher, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    from metaqa.stages import compress, prep

    teacher_dir, _ = teacher
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    common = [f"teacher_dir={teacher_dir}", f"data.prep_dir={tmp_path / 'data'}", "debug=fast", "trainer.max_steps=2",
              "reader.max_seq_length=128", "reader.doc_stride=32"]
    # bert-mini is wider than the tiny teacher: random embeddings (PCA needs a narrower student)
    metrics = compress.run(stage_cfg("compress", [*common, "compress=[reshape,distill]",
                                                  "compress.reshape.embeddings=random"]))
    reader = AutoModelForQuestionAnswering.from_pretrained(next((tmp_path / "compress").rglob("reader/config.json")).parent)
    assert (reader.config.hidden_size, reader.config.num_hidden_layers) == (256, 4)  # bert-mini's shape
    assert metrics["student_architecture"] == "bert_mini" and "val/f1" in metrics
    with pytest.raises(ValueError, match="above the teacher's"):
        compress.run(stage_cfg("compress", [*common, "compress=[reshape,distill]"], out=tmp_path / "wide"))
    metrics = compress.run(stage_cfg("compress", [*common, "compress=[reshape,distill]", "compress.reshape.architecture=tiny"],
                                     out=tmp_path / "pca"))
    assert metrics["student_architecture"] == "tiny" and "val/f1" in metrics
    with pytest.raises(ConfigError, match="new architecture"):
        compress.run(stage_cfg("compress", [*common, "compress=[reshape,truncate,distill]"], out=tmp_path / "bad"))


def test_attention_relation_transfer_trains_a_pruned_student(stage_cfg, teacher, tmp_path):
    import csv

    from metaqa.stages import compress, prep

    teacher_dir, _ = teacher
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    cfg = stage_cfg("compress", [f"teacher_dir={teacher_dir}", "compress=[prune,distill]", "compress.prune.heads=0.25",
                                 "compress.prune.calibration_batches=1", "compress.distill.relation_weight=1.0",
                                 "compress.distill.relation_heads=2", f"data.prep_dir={tmp_path / 'data'}",
                                 "debug=fast", "trainer.max_steps=3", "logger=csv", "trainer.log_every_n_steps=1",
                                 "reader.max_seq_length=128", "reader.doc_stride=32"])
    metrics = compress.run(cfg)
    assert metrics["pruned_heads"] > 0 and "val/f1" in metrics
    rows = [r for f in (tmp_path / "compress").rglob("metrics.csv") for r in csv.DictReader(f.open())]
    relation = [float(r["train/relation_loss"]) for r in rows if r.get("train/relation_loss")]
    assert relation and all(v > 0 for v in relation)  # a pruned student's relations differ from the teacher's


def test_hidden_state_transfer_trains_a_truncated_student_from_the_live_teacher(stage_cfg, teacher, tmp_path):
    from metaqa.stages import compress, prep

    teacher_dir, _ = teacher
    prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'data'}"]))
    cfg = stage_cfg("compress", [f"teacher_dir={teacher_dir}", "compress.truncate.layers=2",
                                 "compress.distill.hidden_weight=1.0", f"data.prep_dir={tmp_path / 'data'}",
                                 "debug=fast", "trainer.max_steps=2", "reader.max_seq_length=128",
                                 "reader.doc_stride=32", "logger=csv"])
    compress.run(cfg)
    assert list(cfg.module.teacher_layers) == [1, 3]  # the stage told the module where each layer came from
    logged = (next((tmp_path / "compress").rglob("metrics.csv"))).read_text().splitlines()
    assert "train/hidden_loss" in logged[0]
