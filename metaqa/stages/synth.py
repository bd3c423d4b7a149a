"""`metaqa synth`: paragraphs without questions → synthetic QA pairs (DevRev CSV) + stats.

spaCy finds answer candidates (named entities, optionally noun chunks), a generator writes a
question for each (`synth=cloze` rules, `synth=seq2seq` weights, `synth=none`), an optional
reader keeps the questions it can answer (roundtrip filter), and questions borrowed from
other paragraphs of the same theme become unanswerable negatives. Streams over the input.
"""
from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from metaqa.config import CONF_DIR, ConfigError, check_input_file
from metaqa.fileio import write_json
from metaqa.synth.candidates import (
    AnswerFilter,
    CandidateOptions,
    ParagraphFilter,
    SentenceFilter,
    load_spacy,
)
from metaqa.synth.filters import NegativeSampler, QAReader, RoundtripFilter
from metaqa.synth.generate import (
    DevRevCsvStream,
    GoldPairs,
    JsonlStream,
    Synthesizer,
    SynthOptions,
    iter_paragraphs,
)
from metaqa.synth.questions import QuestionFilter, build_generator
from metaqa.tracking.run import run_stage
from metaqa.tracking.tables import markdown_table

log = logging.getLogger(__name__)
TABLE_COLUMNS = ["theme", "paragraphs", "candidates", "generated", "kept_question_filter", "kept_roundtrip",
                 "negatives", "gold", "rows", "unanswerable"]


def _positive_or_null(cfg: DictConfig, key: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value is not None and (not isinstance(value, int) or value < 0):
        raise ConfigError(key, f"{value!r} is not a non-negative integer or null", f"{key}=2 (or null)")


def options_from(cfg: DictConfig) -> SynthOptions:
    _positive_or_null(cfg, "ner_limit")
    _positive_or_null(cfg, "noun_chunk_limit")
    _positive_or_null(cfg, "limit_paragraphs")
    f = OmegaConf.to_container(cfg.filters, resolve=True)
    return SynthOptions(
        candidates=CandidateOptions(cfg.ner_limit, bool(cfg.noun_chunks), cfg.noun_chunk_limit,
                                    SentenceFilter(**f["sentence"]), AnswerFilter(**f["answer"])),
        paragraph=ParagraphFilter(**f["paragraph"]),
        question=QuestionFilter(**f["question"]),
        batch_paragraphs=cfg.batch_paragraphs,
        seed=cfg.seed,
    )


def build_synthesizer(cfg: DictConfig) -> Synthesizer:
    """Everything the config names, loaded and checked before the first paragraph is read."""
    options = options_from(cfg)
    generator = build_generator(OmegaConf.to_container(cfg.synth, resolve=True))
    reader = None
    if cfg.reader_dir:
        reader = QAReader(cfg.reader_dir, cfg.roundtrip.batch_size, cfg.reader.max_seq_length,
                          cfg.reader.doc_stride, cfg.threads)
    roundtrip = RoundtripFilter(reader, cfg.roundtrip.threshold, cfg.roundtrip.score) if reader else None
    n = cfg.negatives
    negatives = (NegativeSampler(n.per_paragraph, n.pool_size, n.judge, reader, n.reader_max_margin,
                                 n.tfidf_max_similarity) if n.per_paragraph else None)
    gold = None
    if cfg.use_qa_data:
        gold = GoldPairs.load(check_input_file(cfg, "use_qa_data"))
    nlp = load_spacy(cfg.spacy_model, bool(cfg.noun_chunks))
    return Synthesizer(nlp, generator, options, roundtrip, negatives, gold)


def run(cfg: DictConfig) -> dict:
    path = check_input_file(cfg, "input")
    synth = build_synthesizer(cfg)
    counts: Counter = Counter()
    paragraphs = iter_paragraphs(path, cfg.format, cfg.theme, counts)
    if cfg.limit_paragraphs is not None:
        paragraphs = itertools.islice(paragraphs, cfg.limit_paragraphs)

    csv_out = DevRevCsvStream(cfg.output)
    dropped_out = JsonlStream(cfg.dropped) if cfg.dropped else None
    started = time.perf_counter()
    try:
        for records, dropped in synth.run(paragraphs, progress=cfg.progress, total=cfg.limit_paragraphs):
            csv_out.write(records)
            if dropped_out:
                dropped_out.write(d.as_dict() for d in dropped)
    except BaseException:
        csv_out.abort()
        if dropped_out:
            dropped_out.abort()
        raise
    seconds = time.perf_counter() - started
    csv_out.close()
    if dropped_out:
        dropped_out.close()

    synth.stats.input.update(counts)
    stats = synth.stats.as_dict()
    total = stats["total"]
    meta = {"input": str(path), "generator": cfg.synth.generator, "reader": cfg.reader_dir, "seed": cfg.seed,
            "ner_limit": cfg.ner_limit, "seconds": round(seconds, 2)}
    write_json(cfg.stats, {**meta, **stats})
    rows = [{"theme": t, **s} for t, s in stats["themes"].items()]
    columns = [c for c in TABLE_COLUMNS if synth.roundtrip or c != "kept_roundtrip"]
    print(markdown_table(rows[:30] + [{"theme": "**all**", **total}], columns))
    if len(rows) > 30:
        print(f"… {len(rows) - 30} more themes in {cfg.stats}")
    if total["dropped"]:
        print("dropped: " + ", ".join(f"{k} {v}" for k, v in total["dropped"].items()))
    log.info("%d rows → %s", csv_out.rows, Path(cfg.output))
    return {
        "paragraphs": total["paragraphs"],
        "rows": total["rows"],
        "generated": total["generated"],
        "kept_question_filter": total["kept_question_filter"],
        "kept_roundtrip": total["kept_roundtrip"] if synth.roundtrip else None,
        "negatives": total["negatives"],
        "gold": total["gold"],
        "unanswerable": total["unanswerable"],
        "paragraphs_per_s": total["paragraphs"] / seconds if seconds > 0 else 0.0,
        "seconds": seconds,
    }


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="synth")
def main(cfg: DictConfig) -> float | None:
    return run_stage("synth", run, cfg)
