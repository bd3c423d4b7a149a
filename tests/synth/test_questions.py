"""Question generators: the cloze rules (identity, noisy cloze) and the seq2seq generator's contract."""
import numpy as np
import pytest

from metaqa.config import ConfigError
from metaqa.synth.candidates import Candidate
from metaqa.synth.questions import (
    ClozeGenerator,
    QuestionFilter,
    Seq2seqGenerator,
    build_generator,
    identity_question,
    noisy_cloze_question,
)

SENTENCE = "It was commissioned in 1987 by a consortium of four universities."
PARAGRAPH = "The observatory sits on a ridge. " + SENTENCE
DATE = Candidate("1987", PARAGRAPH.index("1987"), "DATE", SENTENCE, PARAGRAPH.index("It was"))


def test_identity_puts_the_wh_word_in_place_of_the_answer():
    assert identity_question(DATE) == "It was commissioned in When by a consortium of four universities?"


def test_noisy_cloze_removes_the_answer_and_is_seeded():
    q1 = noisy_cloze_question(DATE, np.random.default_rng(7))
    q2 = noisy_cloze_question(DATE, np.random.default_rng(7))
    q3 = noisy_cloze_question(DATE, np.random.default_rng(8))
    assert q1 == q2 != q3
    assert q1.startswith("When ") and q1.endswith("?") and "1987" not in q1
    # no noise at all: the sentence without the answer, wh-word first (Lewis et al.'s layout)
    clean = noisy_cloze_question(DATE, np.random.default_rng(0), shuffle_window=0, word_dropout=0, word_blank=0)
    assert clean == "When It was commissioned in by a consortium of four universities?"


def test_noisy_cloze_moves_words_only_locally():
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    sentence = "1999 " + " ".join(words)
    c = Candidate("1999", 0, "DATE", sentence, 0)
    for seed in range(20):
        q = noisy_cloze_question(c, np.random.default_rng(seed), shuffle_window=3, word_dropout=0, word_blank=0)
        out = q.rstrip("?").split()[1:]
        assert sorted(out) == sorted(words)
        assert all(abs(out.index(w) - i) < 3 for i, w in enumerate(words))


def test_cloze_generator_makes_one_question_per_variant():
    gen = ClozeGenerator(["identity", "noisy_cloze"])
    [pairs] = gen.generate_many([(PARAGRAPH, [DATE], np.random.default_rng(0))])
    assert [q.variant for _, q in pairs] == ["identity", "noisy_cloze"]
    assert all(c is DATE for c, _ in pairs)
    with pytest.raises(ConfigError, match="synth.variants"):
        ClozeGenerator(["paraphrase"])
    with pytest.raises(ConfigError, match="word_dropout"):
        ClozeGenerator(word_dropout=1.5)


def test_question_filter():
    f = QuestionFilter()
    assert f.reason("When?") == "question_words"
    assert f.reason("Who " + "word " * 45 + "?") == "question_words"
    assert f.reason("Who wrote " + "x" * 30 + "?") == "question_long_word"
    assert f.reason("Who wrote the first program?") is None


def test_seq2seq_without_weights_is_a_clear_error_never_a_download(tmp_path):
    with pytest.raises(ConfigError, match="synth.model.*is null"):
        build_generator({"generator": "seq2seq", "model": None})
    with pytest.raises(ConfigError, match="never downloads"):
        Seq2seqGenerator(str(tmp_path / "t5-small-qg-hl"))
    with pytest.raises(ConfigError, match="synth.generator"):
        build_generator({"generator": "gpt"})


def test_seq2seq_runs_a_local_generator_on_highlighted_answers(tmp_path, tokenizer):
    """A tiny random T5 with the packaged tokenizer: the mechanics, not the questions' quality."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id,
                      decoder_start_token_id=tokenizer.cls_token_id)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    gen = build_generator({"generator": "seq2seq", "model": str(tmp_path), "num_beams": 1, "max_new_tokens": 6,
                           "device": "cpu", "batch_size": 2})
    assert gen.source_text(PARAGRAPH, DATE) == (
        "generate question: The observatory sits on a ridge. It was commissioned in <hl> 1987 <hl> by a "
        "consortium of four universities.")
    gen.context = "sentence"
    assert gen.source_text(PARAGRAPH, DATE).startswith("generate question: It was commissioned in <hl> 1987")
    out = gen.generate_many([(PARAGRAPH, [DATE, DATE], None), (PARAGRAPH, [], None), (PARAGRAPH, [DATE], None)])
    assert [len(pairs) for pairs in out] == [2, 0, 1]
    assert all(q.variant == "seq2seq" and (q.text == "" or q.text.endswith("?")) for p in out for _, q in p)
