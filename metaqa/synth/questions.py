"""Questions for answer candidates: cloze-translation rules (no weights) or a seq2seq generator.

`ClozeGenerator` follows the two rule-based translators of Lewis et al. 2019 ("Unsupervised
Question Answering by Cloze Translation"), with the wh-word chosen by the answer's entity type:

* identity: the sentence with the wh-word in place of the answer, plus "?";
* noisy cloze: the answer removed, the words shuffled locally (each moves < `shuffle_window`
  places), dropped with p=`word_dropout`, blanked with p=`word_blank` (Lample et al. 2018's
  noise model), the wh-word put first and "?" appended.

`Seq2seqGenerator` runs any local Hugging Face sequence-to-sequence question generator whose
input is the context with the answer highlighted (the `t5-small-qg-hl` convention:
`generate question: ... <hl> answer <hl> ...`). It never downloads: a missing directory stops
with a message saying what to pass.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from metaqa.config import ConfigError
from metaqa.synth.candidates import Candidate

# The wh-word heuristic of Lewis et al. (their HEURISTIC_CLOZE_TYPE_QUESTION_MAP). Numeric types
# get one of "How much" / "How many" there at random; here counts (CARDINAL, ORDINAL) ask
# "How many" and amounts (MONEY, PERCENT, QUANTITY) "How much", so a seed changes nothing.
WH_BY_LABEL = {
    "PERSON": "Who", "NORP": "Who", "ORG": "Who",
    "GPE": "Where", "LOC": "Where", "FAC": "Where",
    "DATE": "When", "TIME": "When",
    "MONEY": "How much", "PERCENT": "How much", "QUANTITY": "How much",
    "CARDINAL": "How many", "ORDINAL": "How many",
}
DEFAULT_WH = "What"  # PRODUCT, EVENT, WORK_OF_ART, LAW, LANGUAGE, noun chunks
VARIANTS = ("identity", "noisy_cloze")
# numbers with separators (2,340 / 3.5), words with inner hyphens or apostrophes, punctuation
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|\w+(?:[-'’]\w+)*|[^\w\s]")


def wh_word(label: str) -> str:
    return WH_BY_LABEL.get(label, DEFAULT_WH)


@dataclass(frozen=True)
class Question:
    text: str
    variant: str  # identity | noisy_cloze | seq2seq | gold


@dataclass(frozen=True)
class QuestionFilter:
    min_words: int = 3  # (not in Lewis et al.) a noisy cloze of a short sentence can lose every word
    max_words: int = 40
    max_chars: int = 200
    max_word_chars: int = 20

    def reason(self, text: str) -> str | None:
        words = text.split()
        if not self.min_words <= len(words) <= self.max_words:
            return "question_words"
        if len(text) > self.max_chars:
            return "question_chars"
        if any(len(w) > self.max_word_chars for w in words):
            return "question_long_word"
        return None


def _as_question(text: str) -> str:
    """Single spaces, no trailing punctuation, one question mark."""
    return re.sub(r"\s+", " ", text).strip().rstrip(" ,.;:!?") + "?"


def identity_question(candidate: Candidate) -> str:
    s, i = candidate.sentence, candidate.start_in_sentence
    return _as_question(s[:i] + wh_word(candidate.label) + s[i + len(candidate.text):])


def noisy_cloze_question(candidate: Candidate, rng: np.random.Generator, shuffle_window: float = 3,
                         word_dropout: float = 0.1, word_blank: float = 0.2, blank_word: str = "BLANKWORD") -> str:
    s, i = candidate.sentence, candidate.start_in_sentence
    tokens = _TOKEN.findall(s[:i] + " " + s[i + len(candidate.text):])
    if shuffle_window > 0 and len(tokens) > 1:  # local shuffle: sort positions + U(0, k) noise
        order = np.argsort(np.arange(len(tokens)) + rng.uniform(0, shuffle_window, len(tokens)), kind="stable")
        tokens = [tokens[j] for j in order]
    keep = rng.random(len(tokens)) >= word_dropout
    blank = rng.random(len(tokens)) < word_blank
    tokens = [blank_word if b else t for t, k, b in zip(tokens, keep, blank) if k]
    return _as_question(" ".join([wh_word(candidate.label), *tokens]))


class ClozeGenerator:
    """Rule-based questions: one per candidate and variant (`identity`, `noisy_cloze`)."""

    name = "cloze"

    def __init__(self, variants: Sequence[str] = ("noisy_cloze",), shuffle_window: float = 3,
                 word_dropout: float = 0.1, word_blank: float = 0.2, blank_word: str = "BLANKWORD") -> None:
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise ConfigError("synth.variants", f"{list(variants)} is not a non-empty subset of {list(VARIANTS)}",
                              "synth.variants=[noisy_cloze] or [identity,noisy_cloze]")
        for name, p in (("word_dropout", word_dropout), ("word_blank", word_blank)):
            if not 0 <= p < 1:
                raise ConfigError(f"synth.noise.{name}", f"{p} is not a probability in [0, 1)",
                                  f"synth.noise.{name}=0.1")
        self.variants = tuple(variants)
        self.noise = dict(shuffle_window=shuffle_window, word_dropout=word_dropout,
                          word_blank=word_blank, blank_word=blank_word)

    def generate_many(self, jobs: Sequence[tuple[str, Sequence[Candidate], np.random.Generator]]
                      ) -> list[list[tuple[Candidate, Question]]]:
        """jobs: (paragraph, its candidates, its rng) → per paragraph, (candidate, question) pairs."""
        out = []
        for _paragraph, candidates, rng in jobs:
            pairs = []
            for c in candidates:
                for variant in self.variants:
                    text = (identity_question(c) if variant == "identity"
                            else noisy_cloze_question(c, rng, **self.noise))
                    pairs.append((c, Question(text, variant)))
            out.append(pairs)
        return out


class NoGenerator:
    """`synth=none`: no generated questions (gold pairs from `use_qa_data` and negatives only)."""

    name = "none"

    def generate_many(self, jobs):
        return [[] for _ in jobs]


class Seq2seqGenerator:
    """Any local HF seq2seq question generator fed the context with the answer highlighted."""

    name = "seq2seq"

    def __init__(self, model: str | None, template: str = "generate question: {context}", highlight: str = "<hl>",
                 context: str = "paragraph", max_input_length: int = 512, max_new_tokens: int = 32,
                 num_beams: int = 4, batch_size: int = 16, device: str = "auto") -> None:
        if not model:
            raise ConfigError("synth.model", "is null: the seq2seq generator needs local weights",
                              "synth.model=<save_pretrained dir of a question generator, e.g. a local copy "
                              "of valhalla/t5-small-qg-hl>, or synth=cloze (no weights needed)")
        path = Path(model).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError("synth.model", f"{path} is not a save_pretrained dir (no config.json); "
                              "metaqa never downloads weights",
                              "download the generator yourself (e.g. `huggingface-cli download "
                              "valhalla/t5-small-qg-hl --local-dir DIR`) and pass synth.model=DIR, or use synth=cloze")
        if context not in ("paragraph", "sentence"):
            raise ConfigError("synth.context", f"{context!r} is not paragraph or sentence", "synth.context=paragraph")
        if "{context}" not in template:
            raise ConfigError("synth.template", f"{template!r} has no {{context}} slot",
                              "synth.template='generate question: {context}'")
        import torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(path), local_files_only=True).eval()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model.to(self.device)
        self.template, self.highlight, self.context = template, highlight, context
        self.max_input_length, self.max_new_tokens = max_input_length, max_new_tokens
        self.num_beams, self.batch_size = num_beams, batch_size

    def source_text(self, paragraph: str, c: Candidate) -> str:
        """The generator's input: the context with ` <hl> answer <hl> ` around the answer."""
        text, start = (paragraph, c.start) if self.context == "paragraph" else (c.sentence, c.start_in_sentence)
        hl = self.highlight
        marked = f"{text[:start]}{hl} {c.text} {hl}{text[start + len(c.text):]}"
        return self.template.format(context=marked)

    def generate_many(self, jobs):
        import torch

        flat = [(i, c) for i, (_p, cands, _rng) in enumerate(jobs) for c in cands]
        sources = [self.source_text(jobs[i][0], c) for i, c in flat]
        texts: list[str] = []
        with torch.inference_mode():
            for lo in range(0, len(sources), self.batch_size):
                batch = self.tokenizer(sources[lo : lo + self.batch_size], return_tensors="pt", padding=True,
                                       truncation=True, max_length=self.max_input_length).to(self.device)
                batch.pop("token_type_ids", None)  # encoder-decoder models take ids and mask only
                ids = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                          do_sample=False)
                texts += self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        out: list[list[tuple[Candidate, Question]]] = [[] for _ in jobs]
        for (i, c), text in zip(flat, texts):
            out[i].append((c, Question(_as_question(text) if text.strip() else "", "seq2seq")))
        return out


def build_generator(spec) -> ClozeGenerator | Seq2seqGenerator | NoGenerator:
    """The generator a `synth` config group option names (`none`, `cloze`, `seq2seq`)."""
    kind = spec.get("generator")
    if kind == "none":
        return NoGenerator()
    if kind == "cloze":
        return ClozeGenerator(list(spec.get("variants") or ["noisy_cloze"]), **dict(spec.get("noise") or {}))
    if kind == "seq2seq":
        keys = ("template", "highlight", "context", "max_input_length", "max_new_tokens", "num_beams",
                "batch_size", "device")
        return Seq2seqGenerator(spec.get("model"), **{k: spec[k] for k in keys if k in spec})
    raise ConfigError("synth.generator", f"{kind!r} is not none, cloze or seq2seq", "synth=cloze (or none, seq2seq)")
