"""Readers and writers at the edge: every on-disk QA format becomes a list of `QARecord`.

Three input formats are understood:

* DevRev CSV (`Theme, Paragraph, Question, Answer_possible, Answer_text, Answer_start`), whose
  answer fields are Python-list strings such as `['Cabinet Office']` / `[162]` / `[]`;
* SQuAD JSON, v1.1 and v2.0 (`data[].title`, `paragraphs[].context`, `qas[]`);
* SubjQA CSV (`domain, question, review, human_ans_spans, human_ans_indices, ...`).

All readers funnel every row through one validator, `_make_record`, so the rules are the same
everywhere: required fields present, context and question non-empty, an answer start that does
not point at its text is repaired to the nearest occurrence (and counted), an answer text that
is nowhere in the context is an error. Errors are `DataValidationError`s naming the file, the
row (and the line where it is cheap to know) and the fix. Readers hold everything in memory and
writers write a temporary file that is renamed into place, so a bad file or a crash never leaves
half-written output behind.
"""
from __future__ import annotations

import ast
import codecs
import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from metaqa.data.records import Answer, DataValidationError, QARecord
from metaqa.fileio import write_text_atomic

FORMATS = ("auto", "devrev_csv", "squad_json", "subjqa_csv")

DEVREV_COLUMNS = ("Theme", "Paragraph", "Question", "Answer_possible", "Answer_text", "Answer_start")
DEVREV_ID_COLUMN = "Unnamed: 0"  # the pandas index that DevRev's files carry; used as id if unique
SUBJQA_COLUMNS = ("domain", "question", "review", "human_ans_spans", "human_ans_indices")
SUBJQA_ID_COLUMN = "q_review_id"
SUBJQA_NO_ANSWER = "ANSWERNOTFOUND"
SUBJQA_MARKER = " " + SUBJQA_NO_ANSWER  # appended to every review so annotators could select it

MAX_WARNINGS = 20  # warnings kept verbatim; the rest are only counted
UTF8_FIX = "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"


# --------------------------------------------------------------------------- result + bookkeeping
@dataclass
class ReadResult:
    """What a reader returns: the records plus what it had to repair on the way."""

    records: list[QARecord]
    repaired: int = 0  # answer starts moved to the nearest occurrence of the answer text
    warnings: list[str] = field(default_factory=list)  # first MAX_WARNINGS, then a count line
    path: str = ""
    text_repaired: int = 0  # SubjQA only: answer text taken from the annotated indices


class _Log:
    """Collects repairs and warnings while a file is read; warnings are bounded."""

    def __init__(self) -> None:
        self.repaired = 0
        self.text_repaired = 0
        self._warnings: list[str] = []
        self._dropped = 0

    def warn(self, message: str) -> None:
        if len(self._warnings) < MAX_WARNINGS:
            self._warnings.append(message)
        else:
            self._dropped += 1  # a 10k-row file with a systematic offset bug stays readable

    def result(self, records: list[QARecord], path: Path) -> ReadResult:
        warnings = list(self._warnings)
        if self._dropped:
            warnings.append(f"... and {self._dropped} more warnings not shown")
        return ReadResult(records, self.repaired, warnings, str(path), self.text_repaired)


@dataclass(frozen=True)
class _Loc:
    """Where a row lives, for error messages: file, 1-based data row, 1-based first line."""

    path: str
    row: int | None
    line: int | None = None
    label: str = ""  # extra context, e.g. a SQuAD question id

    def __str__(self) -> str:
        parts = [self.path]
        if self.row is not None:
            parts.append(f"row {self.row}" + (f" (line {self.line})" if self.line else ""))
        if self.label:
            parts.append(self.label)
        return ", ".join(parts)

    def error(self, problem: str, fix: str) -> DataValidationError:
        # DataValidationError prints "path, row N"; we want "row N (line L)" too, so the location
        # goes into the message and `.row` is set afterwards for code that inspects it.
        where = ""
        if self.row is not None:
            where = f"row {self.row}" + (f" (line {self.line})" if self.line else "")
        if self.label:
            where = f"{where} [{self.label}]" if where else self.label
        err = DataValidationError(self.path, None, f"{where}: {problem}" if where else problem, fix)
        err.row = self.row
        return err


@dataclass(frozen=True)
class _Fields:
    """The source format's own names for each field, so errors speak the user's vocabulary."""

    context: str
    question: str
    answer: str
    start: str
    possible: str


_DEVREV_FIELDS = _Fields("Paragraph", "Question", "Answer_text", "Answer_start", "Answer_possible")
_SQUAD_FIELDS = _Fields("context", "question", "answers[].text", "answers[].answer_start", "is_impossible")
_SUBJQA_FIELDS = _Fields("review", "question", "human_ans_spans", "human_ans_indices", "human_ans_spans")


# --------------------------------------------------------------------------- the one validator
def _occurrences(context: str, text: str) -> Iterator[int]:
    """Every start offset of `text` in `context`, overlapping ones included."""
    i = context.find(text)
    while i != -1:
        yield i
        i = context.find(text, i + 1)


def _make_record(
    loc: _Loc,
    fields: _Fields,
    log: _Log,
    *,
    id: str,
    theme: str,
    context: str,
    question: str,
    answers: Sequence[tuple[str, int]],
    is_impossible: bool,
) -> QARecord:
    """Validate one row and build its record; repairs answer starts, rejects what it cannot fix."""
    if not context.strip():
        raise loc.error(f"empty context (`{fields.context}`)", "fill the field in or drop the row")
    if not question.strip():
        raise loc.error(f"empty question (`{fields.question}`)", "fill the field in or drop the row")
    if is_impossible and answers:
        raise loc.error(
            f"`{fields.possible}` marks the question unanswerable but answers are given: {list(answers)}",
            f"either mark it answerable or empty `{fields.answer}` / `{fields.start}`",
        )
    if not is_impossible and not answers:
        raise loc.error(
            f"the question is marked answerable but `{fields.answer}` is empty",
            f"give the answer text and start, or mark the question unanswerable (`{fields.possible}`)",
        )
    checked: list[Answer] = []
    for text, start in answers:
        if not text.strip():
            raise loc.error(
                f"answer text `{fields.answer}` is empty or whitespace ({text!r})",
                "give the answer span as it appears in the context, or mark the question unanswerable",
            )
        if context.startswith(text, start) and start >= 0:
            checked.append(Answer(text, start))
            continue
        found = list(_occurrences(context, text))
        if not found:
            raise loc.error(
                f"answer {text!r} (`{fields.answer}`) does not occur in the context (`{fields.context}`)",
                "correct the answer so it is an exact substring of the context, or drop the row",
            )
        # The nearest occurrence is the annotator's most likely intent (off-by-a-few offsets
        # come from tokenisers, BOMs or whitespace normalisation upstream).
        nearest = min(found, key=lambda f: abs(f - start))
        log.repaired += 1
        log.warn(f"{loc}: `{fields.start}` {start} does not point at {text!r}; repaired to {nearest}")
        checked.append(Answer(text, nearest))
    return QARecord(
        id=id, theme=theme, context=context, question=question,
        answers=tuple(checked), is_impossible=is_impossible,
    )


# --------------------------------------------------------------------------- reading raw text
def _check_exists(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (check the path; relative paths are "
                                f"resolved from {Path.cwd()})")
    if not path.is_file():
        raise DataValidationError(str(path), None, "not a regular file", "pass the path of a data file")


def _read_text(path: Path) -> str:
    """The whole file as text: UTF-8 with an optional BOM, bad bytes reported precisely."""
    _check_exists(path)
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + skip
        line = data.count(b"\n", 0, offset) + 1  # cheap: one memchr pass over the prefix
        bad = data[offset : offset + 4]
        raise DataValidationError(
            str(path), None,
            f"not valid UTF-8: byte {bad[:1]!r} at byte offset {offset} (line {line}), near {bad!r}",
            UTF8_FIX,
        ) from None


def _csv_rows(path: Path, required: Sequence[str]) -> tuple[list[str], Iterator[tuple[_Loc, dict[str, str]]]]:
    """Header plus (location, row-as-dict) for each data row; checks required columns first."""
    csv.field_size_limit(2**31 - 1)  # SubjQA reviews exceed the 128 KiB default
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))  # newline="": keep newlines in quoted fields
    try:
        header = next(reader)
    except StopIteration:
        raise DataValidationError(str(path), None, "empty file (no header row)",
                                  f"write a header with the columns {list(required)}") from None
    except csv.Error as e:
        raise DataValidationError(str(path), None, f"unreadable CSV header: {e}",
                                  "fix the first line of the file") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise DataValidationError(
            str(path), None, f"missing required column(s) {missing}; columns found: {header}",
            f"add the missing column(s) or rename the existing ones to {list(required)}",
        )

    def rows() -> Iterator[tuple[_Loc, dict[str, str]]]:
        row, last_line = 0, reader.line_num
        while True:
            first_line = last_line + 1  # the row starts on the line after the previous row ended
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise _Loc(str(path), row + 1, first_line).error(
                    f"malformed CSV: {e}", "check the quoting of this row (a field with a comma, "
                    "quote or newline must be wrapped in double quotes, with inner quotes doubled)",
                ) from None
            last_line = reader.line_num
            if not values:  # blank line: not a row
                continue
            row += 1
            loc = _Loc(str(path), row, first_line)
            if len(values) != len(header):
                raise loc.error(
                    f"has {len(values)} fields but the header has {len(header)}",
                    "quote fields that contain commas, or fix the number of columns",
                )
            yield loc, dict(zip(header, values))

    return header, rows()


def _literal(raw: str, loc: _Loc, column: str, shape: type, item: type, size: int | None = None) -> list:
    """Parse a list/tuple literal of `item`s safely: check the syntax tree before evaluating."""
    expected = f"a {shape.__name__} of {item.__name__}" + (f" with {size} items" if size else "")
    example = "['Cabinet Office']" if item is str else ("(150, 164)" if shape is tuple else "[162]")
    node_type = ast.List if shape is list else ast.Tuple
    try:
        tree = ast.parse(raw.strip(), mode="eval")
    except SyntaxError:
        tree = None
    ok = (
        tree is not None
        and isinstance(tree.body, node_type)
        # only constants of the exact type (bool is an int subclass: reject it explicitly)
        and all(isinstance(e, ast.Constant) and type(e.value) is item for e in tree.body.elts)
        and (size is None or len(tree.body.elts) == size)
    )
    if not ok:
        raise loc.error(
            f"`{column}` is not {expected}: {raw[:80]!r}",
            f"write it as a Python literal such as {example}",
        )
    return list(ast.literal_eval(tree))  # safe: the tree holds constants only (never `eval`)


def _unique_ids(values: list[str] | None) -> bool:
    return values is not None and all(values) and len(set(values)) == len(values)


# --------------------------------------------------------------------------- DevRev CSV
_TRUE, _FALSE = {"true", "1"}, {"false", "0"}


def _parse_bool(raw: str, loc: _Loc, column: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise loc.error(f"`{column}` is {raw!r}, not a boolean", "use True or False (or 1 / 0)")


def read_devrev_csv(path: str | os.PathLike) -> ReadResult:
    """Read a DevRev-style CSV (the Inter IIT 11.0 `train_data.csv` layout)."""
    path = Path(path)
    log = _Log()
    header, rows = _csv_rows(path, DEVREV_COLUMNS)
    parsed = list(rows)  # all rows in memory: ids depend on whether the id column is unique
    ids = [r[DEVREV_ID_COLUMN].strip() for _, r in parsed] if DEVREV_ID_COLUMN in header else None
    if ids is not None and not _unique_ids(ids):
        log.warn(f"{path}: `{DEVREV_ID_COLUMN}` has duplicate or empty values; ids are "
                 f"'{path.stem}-<row>' instead")
        ids = None
    records = []
    for i, (loc, r) in enumerate(parsed):
        possible = _parse_bool(r["Answer_possible"], loc, "Answer_possible")
        texts = _literal(r["Answer_text"], loc, "Answer_text", list, str)
        starts = _literal(r["Answer_start"], loc, "Answer_start", list, int)
        if len(texts) != len(starts):
            raise loc.error(
                f"`Answer_text` has {len(texts)} answers but `Answer_start` has {len(starts)}",
                "give one start per answer text",
            )
        records.append(_make_record(
            loc, _DEVREV_FIELDS, log,
            id=ids[i] if ids else f"{path.stem}-{loc.row}",
            theme=r["Theme"], context=r["Paragraph"], question=r["Question"],
            answers=list(zip(texts, starts)), is_impossible=not possible,
        ))
    return log.result(records, path)


# --------------------------------------------------------------------------- SQuAD JSON
def _need(obj: Any, keys: Sequence[str], path: Path, where: str, loc: _Loc | None = None) -> None:
    """Check that `obj` is a dict with `keys`; the error names what is missing and what is there."""
    if not isinstance(obj, dict):
        problem = f"{where} should be a JSON object, found {type(obj).__name__}"
        fix = "follow the SQuAD layout: {data: [{title, paragraphs: [{context, qas: [...]}]}]}"
        raise loc.error(problem, fix) if loc else DataValidationError(str(path), None, problem, fix)
    missing = [k for k in keys if k not in obj]
    if missing:
        problem = f"{where} is missing key(s) {missing}; keys found: {sorted(obj)}"
        fix = f"add {missing} (SQuAD layout: data[].title, paragraphs[].context/qas, qas[].id/question/answers)"
        raise loc.error(problem, fix) if loc else DataValidationError(str(path), None, problem, fix)


def read_squad_json(path: str | os.PathLike) -> ReadResult:
    """Read SQuAD v1.1 / v2.0 JSON; keeps every gold answer, ignores `plausible_answers`."""
    path = Path(path)
    log = _Log()
    text = _read_text(path)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataValidationError(str(path), None, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                                  "fix the JSON syntax (e.g. `python -m json.tool FILE`)") from None
    _need(doc, ["data"], path, "the top level")
    if not isinstance(doc["data"], list):
        raise DataValidationError(str(path), None, "`data` should be a list of articles",
                                  "wrap the articles in a list")
    records, seen = [], set()
    row = 0  # questions are the rows: 1-based over the whole file
    for a, article in enumerate(doc["data"], 1):
        _need(article, ["title", "paragraphs"], path, f"article {a}")
        for p, para in enumerate(article["paragraphs"], 1):
            _need(para, ["context", "qas"], path, f"article {a} ({article['title']!r}) paragraph {p}")
            for qa in para["qas"]:
                row += 1
                loc = _Loc(str(path), row, None, f"question id={qa.get('id')!r}" if isinstance(qa, dict) else "")
                _need(qa, ["id", "question"], path, "the question", loc)
                # v2 files flag unanswerables; a file without the flag (v1) is answerable
                # unless its answer list is empty.
                answers_raw = qa.get("answers", [])
                if not isinstance(answers_raw, list):
                    raise loc.error("`answers` should be a list", "write answers as [{text, answer_start}]")
                is_impossible = qa.get("is_impossible", not answers_raw)
                if not isinstance(is_impossible, bool):
                    raise loc.error(f"`is_impossible` is {is_impossible!r}, not a boolean", "use true or false")
                answers = []
                for ans in answers_raw:
                    _need(ans, ["text", "answer_start"], path, "an answer", loc)
                    if not isinstance(ans["text"], str) or type(ans["answer_start"]) is not int:
                        raise loc.error(f"answer {ans!r} needs a string `text` and an integer `answer_start`",
                                        "fix the types of the answer fields")
                    answers.append((ans["text"], ans["answer_start"]))
                qid = str(qa["id"])
                if qid in seen:
                    log.warn(f"{loc}: duplicate question id {qid!r}")
                seen.add(qid)
                if not isinstance(para["context"], str) or not isinstance(qa["question"], str):
                    raise loc.error("`context` and `question` must be strings", "fix their types")
                records.append(_make_record(
                    loc, _SQUAD_FIELDS, log,
                    id=qid, theme=str(article["title"]), context=para["context"],
                    question=qa["question"], answers=answers, is_impossible=is_impossible,
                ))
    return log.result(records, path)


# --------------------------------------------------------------------------- SubjQA CSV
def _squash(s: str) -> str:
    """Lower-cased letters and digits only: `would n't ,` and `wouldn't,` both become `wouldnt`."""
    return re.sub(r"[\W_]+", "", s.lower())


def _is_subsequence(needle: str, haystack: str) -> bool:
    it = iter(haystack)
    return all(ch in it for ch in needle)


def _subjqa_answer(context: str, span: str, start: int, end: int, loc: _Loc, log: _Log) -> tuple[str, int]:
    """Resolve a SubjQA answer to an exact substring of the context.

    `human_ans_indices` is the annotated character range; `human_ans_spans` is a tokenised copy
    of it (spaces around punctuation, `n't` split off, and for multi-part selections the
    words in between dropped), so ~20% of spans are not substrings of the review. When the span
    is not literally at `start` but its letters fit inside the annotated range, the range itself
    is the answer. Otherwise the span goes to the shared validator (repair or error).
    """
    if span.endswith(SUBJQA_MARKER):  # the annotator's selection ran into the appended marker
        span = span[: -len(SUBJQA_MARKER)]
    end = min(end, len(context))  # ...so the range may end past the stripped context
    if context.startswith(span, start):
        return span, start
    piece = context[start:end] if 0 <= start < end else ""
    if piece.strip() and _squash(span) and _is_subsequence(_squash(span), _squash(piece)):
        lead = len(piece) - len(piece.lstrip())
        log.text_repaired += 1
        log.warn(f"{loc}: `human_ans_spans` {span[:60]!r} is not in the review; "
                 f"using the annotated range {start}:{end} instead")
        return piece.strip(), start + lead
    return span, start


def read_subjqa_csv(path: str | os.PathLike) -> ReadResult:
    """Read one SubjQA split (e.g. `subjqa/books/test.csv`); theme = `domain`."""
    path = Path(path)
    log = _Log()
    header, rows = _csv_rows(path, SUBJQA_COLUMNS)
    parsed = list(rows)
    ids = [r[SUBJQA_ID_COLUMN].strip() for _, r in parsed] if SUBJQA_ID_COLUMN in header else None
    if ids is not None and not _unique_ids(ids):
        # Real SubjQA files repeat q_review_id (one row per annotator), so this is the norm.
        ids = None  # ids become <domain>-<split>-<row>: unique across SubjQA files too
    records = []
    for i, (loc, r) in enumerate(parsed):
        review = r["review"]
        # Every review ends with " ANSWERNOTFOUND" so annotators could select "no answer"; it
        # is not part of the text a model should read.
        context = review[: -len(SUBJQA_MARKER)] if review.endswith(SUBJQA_MARKER) else review
        span = r["human_ans_spans"]
        answers: list[tuple[str, int]] = []
        if span.strip() != SUBJQA_NO_ANSWER:
            start, end = _literal(r["human_ans_indices"], loc, "human_ans_indices", tuple, int, size=2)
            answers.append(_subjqa_answer(context, span, start, end, loc, log))
        records.append(_make_record(
            loc, _SUBJQA_FIELDS, log,
            id=ids[i] if ids else f"{r['domain']}-{path.stem}-{loc.row}",
            theme=r["domain"], context=context, question=r["question"],
            answers=answers, is_impossible=not answers,
        ))
    return log.result(records, path)


# --------------------------------------------------------------------------- dispatch
def _csv_header(path: Path) -> list[str]:
    """First CSV row only, for format detection (decoding errors surface in the real read)."""
    _check_exists(path)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        return next(csv.reader(f), [])


def read_records(path: str | os.PathLike, fmt: str = "auto") -> ReadResult:
    """Read any supported file; `fmt="auto"` picks by extension (and, for CSV, by header)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    path = Path(path)
    if fmt == "auto":
        suffix = path.suffix.lower()
        if suffix == ".json":
            fmt = "squad_json"
        elif suffix == ".csv":
            fmt = "subjqa_csv" if "human_ans_spans" in _csv_header(path) else "devrev_csv"
        else:
            _check_exists(path)
            raise DataValidationError(str(path), None, f"cannot detect the format from the extension {suffix!r}",
                                      f"pass fmt= one of {FORMATS[1:]}, or rename to .json / .csv")
    reader = {"devrev_csv": read_devrev_csv, "squad_json": read_squad_json, "subjqa_csv": read_subjqa_csv}[fmt]
    return reader(path)


# --------------------------------------------------------------------------- writers
def write_squad_json(records: Iterable[QARecord], path: str | os.PathLike, version: str = "v2.0") -> None:
    """Write SQuAD JSON: articles by theme, paragraphs by identical context, first-seen order."""
    if version not in ("v1.1", "v2.0"):
        raise ValueError(f"version must be 'v1.1' or 'v2.0', got {version!r}")
    records = list(records)
    if version == "v1.1" and any(r.is_impossible for r in records):
        n = sum(r.is_impossible for r in records)
        raise ValueError(f"{n} unanswerable record(s) cannot be written as SQuAD v1.1; use version='v2.0'")
    # dicts keep insertion order: theme -> context -> qas
    themes: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        qa: dict[str, Any] = {
            "id": r.id, "question": r.question,
            "answers": [{"text": a.text, "answer_start": a.start} for a in r.answers],
        }
        if version == "v2.0":
            qa["is_impossible"] = r.is_impossible
        themes.setdefault(r.theme, {}).setdefault(r.context, []).append(qa)
    doc = {
        "version": version,
        "data": [
            {"title": theme, "paragraphs": [{"context": c, "qas": qas} for c, qas in paras.items()]}
            for theme, paras in themes.items()
        ],
    }
    write_text_atomic(path, json.dumps(doc, ensure_ascii=False))


def write_devrev_csv(records: Iterable[QARecord], path: str | os.PathLike) -> None:
    """Write DevRev CSV; the id goes in `Unnamed: 0`, answers as list literals (`['x']`, `[12]`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([DEVREV_ID_COLUMN, *DEVREV_COLUMNS])
    for r in records:
        writer.writerow([
            r.id, r.theme, r.context, r.question, str(not r.is_impossible),
            repr([a.text for a in r.answers]),  # repr of a str list is a valid literal_eval input
            repr([a.start for a in r.answers]),
        ])
    write_text_atomic(path, buf.getvalue())
