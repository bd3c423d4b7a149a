"""Streaming driver: paragraphs in → synthetic `QARecord`s + per-theme stats out.

Paragraphs are the unique (theme, context) pairs of a DevRev CSV, a SQuAD JSON, a SubjQA CSV,
a JSONL file (`{"theme", "context"}` per line) or a plain text file (paragraphs separated by
blank lines). They are read lazily and processed in chunks of `batch_paragraphs`: spaCy's
`nlp.pipe` over the chunk, questions for every candidate, one reader pass for the roundtrip
filter and one for the negatives, then the chunk's records are written out and forgotten.
Memory stays flat: what grows with the input is one 8-byte hash per paragraph (for
de-duplication), the per-theme counters and the bounded negative pools. SQuAD JSON is a single
document, so it is parsed whole; its paragraphs are still processed chunk by chunk.

Every random choice (noise, negatives) comes from a generator seeded with (seed, paragraph
hash): a paragraph gets the same generated questions whatever the chunking or what comes before
it; its negatives are drawn from its theme's pool, which depends on the input order.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from metaqa.data.formats import (
    DEVREV_COLUMNS,
    SUBJQA_MARKER,
    UTF8_FIX,
    jsonl_kind,
    read_records,
    write_devrev_csv,
)
from metaqa.data.records import Answer, DataValidationError, QARecord
from metaqa.synth.candidates import Candidate, CandidateOptions, CandidateStats, ParagraphFilter, paragraph_candidates
from metaqa.synth.filters import Borrowed, NegativeSampler, RoundtripFilter
from metaqa.synth.questions import Question, QuestionFilter

INPUT_FORMATS = ("auto", "devrev_csv", "squad_json", "subjqa_csv", "mrqa_jsonl", "jsonl", "text")


# --------------------------------------------------------------------------- paragraphs in
@dataclass(frozen=True)
class Paragraph:
    theme: str
    context: str

    @property
    def key(self) -> bytes:
        return hashlib.blake2b(f"{self.theme}\x00{self.context}".encode(), digest_size=8).digest()

    @property
    def id(self) -> str:
        return self.key.hex()


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "squad_json"
    if suffix in (".jsonl", ".ndjson"):
        return "mrqa_jsonl" if jsonl_kind(path) == "mrqa_jsonl" else "jsonl"
    if suffix in (".txt", ".md"):
        return "text"
    if suffix == ".csv":
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
            header = next(csv.reader(f), [])
        return "subjqa_csv" if "review" in header and "domain" in header else "devrev_csv"
    raise DataValidationError(str(path), None, f"cannot detect the input format from the extension {suffix!r}",
                              f"pass format= one of {INPUT_FORMATS[1:]}, or use .csv / .json / .jsonl / .txt")


def _open_text(path: Path):
    return open(path, encoding="utf-8-sig", newline="")


def _csv_paragraphs(path: Path, theme_col: str, text_col: str, marker: str | None) -> Iterator[Paragraph]:
    csv.field_size_limit(2**31 - 1)  # SubjQA reviews exceed the 128 KiB default
    with _open_text(path) as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in (theme_col, text_col) if c not in header]
        if missing:
            raise DataValidationError(str(path), None, f"missing column(s) {missing}; columns found: {header}",
                                      f"add {missing} (paragraphs are read from `{text_col}`, themes from "
                                      f"`{theme_col}`) or pass format= the file's real format")
        for row in reader:
            text = row[text_col] or ""
            if marker and text.endswith(marker):
                text = text[: -len(marker)]  # SubjQA's appended ANSWERNOTFOUND is no part of the review
            yield Paragraph(row[theme_col] or "", text)


def _squad_paragraphs(path: Path) -> Iterator[Paragraph]:
    with _open_text(path) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            raise DataValidationError(str(path), None, f"invalid JSON at line {e.lineno}: {e.msg}",
                                      "fix the JSON syntax (e.g. `python -m json.tool FILE`)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise DataValidationError(str(path), None, "no `data` list of articles",
                                  "use the SQuAD layout {data: [{title, paragraphs: [{context, ...}]}]}")
    for a, article in enumerate(doc["data"], 1):
        if not isinstance(article, dict) or "paragraphs" not in article:
            raise DataValidationError(str(path), None, f"article {a} has no `paragraphs`",
                                      "give every article a title and a paragraphs list")
        for para in article["paragraphs"]:
            yield Paragraph(str(article.get("title", "")), str(para.get("context", "")))


def _jsonl_paragraphs(path: Path, theme: str) -> Iterator[Paragraph]:
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataValidationError(str(path), line_no, f"invalid JSON: {e.msg}",
                                          'write one object per line: {"theme": ..., "context": ...}') from None
            text = next((obj[k] for k in ("context", "paragraph", "text") if isinstance(obj.get(k), str)), None)
            if text is None:
                raise DataValidationError(str(path), line_no, f"no `context` string; keys found: {sorted(obj)}",
                                          'write one object per line: {"theme": ..., "context": ...}')
            yield Paragraph(str(obj.get("theme", theme)), text)


def _text_paragraphs(path: Path, theme: str) -> Iterator[Paragraph]:
    lines: list[str] = []
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                lines.append(line.strip())
            elif lines:
                yield Paragraph(theme, " ".join(lines))
                lines = []
    if lines:
        yield Paragraph(theme, " ".join(lines))


def iter_paragraphs(path: str | os.PathLike, fmt: str = "auto", theme: str | None = None,
                    counts: Counter | None = None) -> Iterator[Paragraph]:
    """Unique, non-empty (theme, context) pairs of a file, in file order, read lazily."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file (relative paths are resolved from {Path.cwd()}). "
                                f"Fix: input=<a DevRev CSV, SQuAD JSON, SubjQA CSV, JSONL or text file>")
    if fmt not in INPUT_FORMATS:
        raise DataValidationError(str(path), None, f"unknown format {fmt!r}", f"format= one of {INPUT_FORMATS}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    theme = theme or path.stem
    source = {
        "devrev_csv": lambda: _csv_paragraphs(path, DEVREV_COLUMNS[0], DEVREV_COLUMNS[1], None),
        "subjqa_csv": lambda: _csv_paragraphs(path, "domain", "review", SUBJQA_MARKER),
        "squad_json": lambda: _squad_paragraphs(path),
        "mrqa_jsonl": lambda: (Paragraph(r.theme, r.context) for r in read_records(path, "mrqa_jsonl").records),
        "jsonl": lambda: _jsonl_paragraphs(path, theme),
        "text": lambda: _text_paragraphs(path, theme),
    }[fmt]()
    counts = counts if counts is not None else Counter()
    seen: set[bytes] = set()
    try:
        for p in source:
            counts["rows"] += 1
            if not p.context.strip():
                counts["empty"] += 1
                continue
            if p.key in seen:
                continue
            seen.add(p.key)
            yield p
    except UnicodeDecodeError as e:
        raise DataValidationError(str(path), None, f"not valid UTF-8 ({e.reason} at byte {e.start} of a block)",
                                  UTF8_FIX) from None


# --------------------------------------------------------------------------- gold pairs (use_qa_data)
class GoldPairs:
    """Given QA pairs, matched to paragraphs of their theme by where their answer occurs.

    A gold record whose own context is the paragraph is taken as it is (unanswerable ones too);
    another answerable record of the same theme is added when its answer text occurs in the
    paragraph (at the first occurrence). The gold file is read whole: it is labelled data,
    small next to the paragraphs it serves.
    """

    def __init__(self, records: Sequence[QARecord], source: str = "") -> None:
        self.source = source
        self.by_theme: dict[str, list[QARecord]] = defaultdict(list)
        for r in records:
            self.by_theme[r.theme].append(r)

    @classmethod
    def load(cls, path: str | os.PathLike, fmt: str = "auto") -> "GoldPairs":
        return cls(read_records(path, fmt).records, str(path))

    def for_paragraph(self, p: Paragraph) -> list[tuple[str, tuple[Answer, ...], bool]]:
        """(question, answers in this paragraph, is_impossible) for every matching gold pair."""
        out, seen = [], set()
        for r in self.by_theme.get(p.theme, ()):
            if r.question in seen:
                continue
            if r.context == p.context:
                out.append((r.question, r.answers, r.is_impossible))
                seen.add(r.question)
                continue
            for a in r.answers:
                at = p.context.find(a.text)
                if at >= 0:
                    out.append((r.question, (Answer(a.text, at),), False))
                    seen.add(r.question)
                    break
        return out


# --------------------------------------------------------------------------- stats
def _theme_stats() -> dict:
    return {"paragraphs": 0, "paragraphs_skipped": 0, "sentences": 0, "sentences_kept": 0,
            "candidates": 0, "generated": 0, "kept_question_filter": 0, "roundtrip_checked": 0,
            "kept_roundtrip": 0, "negatives_proposed": 0, "negatives": 0, "gold": 0, "rows": 0, "unanswerable": 0,
            "entity_types": Counter(), "dropped": Counter()}


@dataclass
class SynthStats:
    """Per-theme counters: candidates, generated, kept after each filter, negatives, entity types."""

    themes: dict[str, dict] = field(default_factory=lambda: defaultdict(_theme_stats))
    input: Counter = field(default_factory=Counter)  # rows read, empty paragraphs

    def totals(self) -> dict:
        total = _theme_stats()
        for s in self.themes.values():
            for k, v in s.items():
                total[k] = total[k] + v
        return total

    def as_dict(self) -> dict:
        def plain(s: dict) -> dict:
            return {**s, "entity_types": dict(s["entity_types"].most_common()),
                    "dropped": dict(sorted(s["dropped"].items()))}

        return {"input": dict(self.input), "total": plain(self.totals()),
                "themes": {t: plain(s) for t, s in sorted(self.themes.items())}}


# --------------------------------------------------------------------------- the driver
@dataclass
class Dropped:
    """One generated item that did not make it into the output, and why."""

    theme: str
    paragraph: str  # paragraph id (hash of theme + context)
    question: str
    answer: str
    reason: str
    reader_answer: str = ""
    score: float | None = None

    def as_dict(self) -> dict:
        # JSON has no NaN or infinity: a score that is not finite is left out
        return {k: v for k, v in self.__dict__.items()
                if v is not None and not (isinstance(v, float) and not math.isfinite(v))}


@dataclass
class SynthOptions:
    candidates: CandidateOptions = field(default_factory=CandidateOptions)
    paragraph: ParagraphFilter = field(default_factory=ParagraphFilter)
    question: QuestionFilter = field(default_factory=QuestionFilter)
    batch_paragraphs: int = 64
    seed: int = 0


def _rng(seed: int, p: Paragraph, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, int.from_bytes(p.key, "little"), stream])


class Synthesizer:
    """Turns a stream of paragraphs into chunks of synthetic records, counting as it goes."""

    def __init__(self, nlp, generator, options: SynthOptions, roundtrip: RoundtripFilter | None = None,
                 negatives: NegativeSampler | None = None, gold: GoldPairs | None = None) -> None:
        if options.batch_paragraphs < 1:
            raise ValueError(f"batch_paragraphs={options.batch_paragraphs}: pass 1 or more")
        self.nlp, self.generator, self.options = nlp, generator, options
        self.roundtrip, self.negatives, self.gold = roundtrip, negatives, gold
        self.stats = SynthStats()

    def run(self, paragraphs: Iterable[Paragraph], progress: bool = False, total: int | None = None
            ) -> Iterator[tuple[list[QARecord], list[Dropped]]]:
        """(records, dropped) per chunk of `batch_paragraphs` paragraphs."""
        bar = tqdm(total=total, desc="synth", unit="para", disable=not progress, dynamic_ncols=True)
        chunk: list[Paragraph] = []
        try:
            for p in paragraphs:
                chunk.append(p)
                if len(chunk) == self.options.batch_paragraphs:
                    yield self._chunk(chunk)
                    bar.update(len(chunk))
                    chunk = []
            if chunk:
                yield self._chunk(chunk)
                bar.update(len(chunk))
        finally:
            bar.close()

    # ------------------------------------------------------------------ one chunk
    def _chunk(self, paragraphs: list[Paragraph]) -> tuple[list[QARecord], list[Dropped]]:
        dropped: list[Dropped] = []
        todo = self._paragraph_filter(paragraphs)
        pairs = self._questions(todo, self._candidates(todo), dropped)
        rows = [[self._record(p, i, q.text, (Answer(c.text, c.start),)) for i, (c, q) in enumerate(ps)]
                for p, ps in zip(todo, pairs)]
        if self.roundtrip is not None:
            rows = self._roundtrip(todo, rows, dropped)
        if self.gold is not None:
            self._add_gold(todo, rows)
        if self.negatives is not None:
            self._add_negatives(todo, rows, dropped)
        records = [r for rs in rows for r in rs]
        for r in records:
            self.stats.themes[r.theme]["rows"] += 1
            self.stats.themes[r.theme]["unanswerable"] += r.is_impossible
        return records, dropped

    def _paragraph_filter(self, paragraphs: list[Paragraph]) -> list[Paragraph]:
        todo = []
        for p in paragraphs:
            s = self.stats.themes[p.theme]
            s["paragraphs"] += 1
            bad = self.options.paragraph.reason(p.context)
            if bad:
                s["paragraphs_skipped"] += 1
                s["dropped"][bad] += 1
            else:
                todo.append(p)
        return todo

    def _candidates(self, todo: list[Paragraph]) -> list[list[Candidate]]:
        """Answer candidates per paragraph: one `nlp.pipe` pass over the chunk."""
        out = []
        for p, doc in zip(todo, self.nlp.pipe([p.context for p in todo], batch_size=len(todo) or 1)):
            cstats = CandidateStats()
            out.append(list(paragraph_candidates(doc, self.options.candidates, cstats)))
            s = self.stats.themes[p.theme]
            s["sentences"] += cstats.sentences
            s["sentences_kept"] += cstats.sentences_kept
            s["candidates"] += cstats.candidates
            s["entity_types"].update(cstats.entity_types)
            s["dropped"].update(cstats.dropped)
        return out

    def _questions(self, todo: list[Paragraph], candidates: list[list[Candidate]], dropped: list[Dropped]
                   ) -> list[list[tuple[Candidate, Question]]]:
        """Generated questions per paragraph, through the question filter, without duplicates."""
        jobs = [(p.context, cands, _rng(self.options.seed, p, 0)) for p, cands in zip(todo, candidates)]
        out = []
        for p, pairs in zip(todo, self.generator.generate_many(jobs)):
            s, kept, seen = self.stats.themes[p.theme], [], set()
            s["generated"] += len(pairs)
            for c, q in pairs:
                bad = self.options.question.reason(q.text) or ("question_duplicate" if (q.text, c.start) in seen
                                                               else None)
                if bad:
                    s["dropped"][bad] += 1
                    dropped.append(Dropped(p.theme, p.id, q.text, c.text, bad))
                    continue
                seen.add((q.text, c.start))
                kept.append((c, q))
            s["kept_question_filter"] += len(kept)
            out.append(kept)
        return out

    def _roundtrip(self, todo: list[Paragraph], rows: list[list[QARecord]], dropped: list[Dropped]
                   ) -> list[list[QARecord]]:
        """One reader pass over every generated question of the chunk."""
        verdicts = iter(self.roundtrip.check([r for rs in rows for r in rs]))
        out = []
        for p, rs in zip(todo, rows):
            s, kept = self.stats.themes[p.theme], []
            for r in rs:
                v = next(verdicts)
                if v.kept:
                    kept.append(r)
                    continue
                s["dropped"][v.reason] += 1
                dropped.append(Dropped(p.theme, p.id, r.question, r.answers[0].text, v.reason, v.reader_answer,
                                       v.score))
            s["roundtrip_checked"] += len(rs)
            s["kept_roundtrip"] += len(kept)
            out.append(kept)
        return out

    def _add_gold(self, todo: list[Paragraph], rows: list[list[QARecord]]) -> None:
        """Gold pairs (use_qa_data) of each paragraph, unless the same question is already there."""
        for p, rs in zip(todo, rows):
            have = {r.question for r in rs}
            for question, answers, impossible in self.gold.for_paragraph(p):
                if question not in have:
                    rs.append(self._record(p, len(rs), question, answers, impossible, prefix="g"))
                    have.add(question)
                    self.stats.themes[p.theme]["gold"] += 1

    def _add_negatives(self, todo: list[Paragraph], rows: list[list[QARecord]], dropped: list[Dropped]) -> None:
        """Questions of other paragraphs of the theme (this chunk's and earlier ones'), judged unanswerable."""
        for p, rs in zip(todo, rows):
            self.negatives.remember(p.theme, [Borrowed(r.question, r.answers[0].text, p.id) for r in rs if r.answers])
        proposals = []
        for k, p in enumerate(todo):
            for j, b in enumerate(self.negatives.propose(p.theme, p.id, _rng(self.options.seed, p, 1))):
                proposals.append((k, b, QARecord(f"syn-{p.id}-n{j}", p.theme, p.context, b.question, (), True)))
        for (k, b, record), v in zip(proposals, self.negatives.judge([(b, r) for _, b, r in proposals])):
            p = todo[k]
            s = self.stats.themes[p.theme]
            s["negatives_proposed"] += 1
            if v.kept:
                rows[k].append(record)
                s["negatives"] += 1
            else:
                s["dropped"][v.reason] += 1
                dropped.append(Dropped(p.theme, p.id, b.question, b.answer, v.reason, v.reader_answer, v.score))

    @staticmethod
    def _record(p: Paragraph, i: int, question: str, answers: tuple[Answer, ...], impossible: bool = False,
                prefix: str = "q") -> QARecord:
        return QARecord(f"syn-{p.id}-{prefix}{i}", p.theme, p.context, question,
                        () if impossible else answers, impossible)


# --------------------------------------------------------------------------- records out
class DevRevCsvStream:
    """Append chunks of records to a DevRev CSV without holding them all; renamed into place on close.

    Each chunk goes through `write_devrev_csv` (one writer, one format: what `metaqa prep` reads),
    and its rows, without the header, are appended to a temp file beside the target.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._out = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self._part = Path(self._tmp + ".part")
        self.rows, self._has_header = 0, False
        self.write([])  # the header, so an empty result is still a valid (empty) file

    def write(self, records: Sequence[QARecord]) -> None:
        write_devrev_csv(records, self._part)
        text = self._part.read_text(encoding="utf-8")
        self._out.write(text.partition("\n")[2] if self._has_header else text)
        self._has_header = True
        self.rows += len(records)

    def close(self) -> Path:
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        self._part.unlink(missing_ok=True)
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._out.close()
        self._part.unlink(missing_ok=True)
        Path(self._tmp).unlink(missing_ok=True)


class JsonlStream:
    """One JSON object per line, appended as it comes; renamed into place on close."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._out = io.TextIOWrapper(os.fdopen(fd, "wb"), encoding="utf-8", newline="")

    def write(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self._out.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> Path:
        self._out.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._out.close()
        Path(self._tmp).unlink(missing_ok=True)
