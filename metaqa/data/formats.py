"""Readers and writers at the edge: every on-disk QA format becomes a list of `QARecord`.

Four input formats are understood:

* DevRev CSV (`Theme, Paragraph, Question, Answer_possible, Answer_text, Answer_start`), whose
  answer fields are Python-list strings such as `['Cabinet Office']` / `[162]` / `[]`;
* SQuAD JSON, v1.1 and v2.0 (`data[].title`, `paragraphs[].context`, `qas[]`);
* SubjQA CSV (`domain, question, review, human_ans_spans, human_ans_indices, ...`);
* MRQA JSONL (an optional `{"header": ...}` line, then `{context, qas: [{qid, question,
  detected_answers: [{text, char_spans: [[start, end]]}]}]}` per line, span ends inclusive),
  plain or gzipped.

All readers funnel every row through one validator, `_make_record`, so the rules are the same
everywhere: required fields present, context and question non-empty, an answer start that does
not point at its text is repaired to the nearest occurrence (and counted), an answer text that
is nowhere in the context is an error. Errors are `DataValidationError`s naming the file, the
row (and the line where it is cheap to know) and the fix. Readers hold everything in memory and
writers write a temporary file that is renamed into place, so a bad file or a crash never leaves
half-written output behind.

`read_records` is the one door for labelled data: it refuses a file without questions, makes
repeated question ids unique (`<id>#2`) or refuses them (`duplicate_ids="error"`), and hands every
warning and repair to `metaqa.data.readlog`, so they reach the running stage's log and summary.
"""
from __future__ import annotations

import ast
import codecs
import csv
import gzip
import io
import json
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from metaqa.config import ConfigError
from metaqa.data import readlog
from metaqa.data.records import Answer, DataValidationError, QARecord
from metaqa.fileio import write_text_atomic

FORMATS = ("auto", "devrev_csv", "squad_json", "subjqa_csv", "mrqa_jsonl")
DUPLICATE_IDS = ("rename", "error")  # what `read_records` does with a question id seen before
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz")

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
    rows: list[int | None] = field(default_factory=list)  # each record's row (a line, for JSONL)


class _Log:
    """Collects repairs and warnings while a file is read; warnings are bounded."""

    def __init__(self) -> None:
        self.repaired = 0
        self.text_repaired = 0
        self.rows: list[int | None] = []
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
        return ReadResult(records, self.repaired, warnings, str(path), self.text_repaired, list(self.rows))


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
_MRQA_FIELDS = _Fields("context", "question", "detected_answers[].text", "detected_answers[].char_spans",
                       "detected_answers")


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
    log.rows.append(loc.row)
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
    """The whole file as text (gunzipped if `.gz`): UTF-8 with an optional BOM, bad bytes reported precisely."""
    _check_exists(path)
    data = path.read_bytes()
    if path.suffix.lower() == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataValidationError(str(path), None, f"not a readable gzip file ({e})",
                                      "re-compress it with gzip, or drop the .gz of a plain file") from None
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
SQUAD_LAYOUT = "SQuAD layout: {data: [{title, paragraphs: [{context, qas: [{id, question, answers}]}]}]}"
MRQA_LINE = ('{"context": ..., "qas": [{"qid", "question", '
             '"detected_answers": [{"text", "char_spans": [[start, end]]}]}]}')
MRQA_LAYOUT = f"MRQA layout, one object per line: {MRQA_LINE}"


def _fail(path: Path, loc: _Loc | None, problem: str, fix: str) -> DataValidationError:
    return loc.error(problem, fix) if loc else DataValidationError(str(path), None, problem, fix)


def _need(obj: Any, keys: Sequence[str], path: Path, where: str, loc: _Loc | None = None,
          layout: str = SQUAD_LAYOUT) -> None:
    """Check that `obj` is a dict with `keys`; the error names what is missing and what is there."""
    if not isinstance(obj, dict):
        raise _fail(path, loc, f"{where} should be a JSON object, found {type(obj).__name__}", f"follow the {layout}")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise _fail(path, loc, f"{where} is missing key(s) {missing}; keys found: {sorted(obj)}",
                    f"add {missing} ({layout})")


def _need_list(value: Any, path: Path, where: str, loc: _Loc | None = None, layout: str = SQUAD_LAYOUT) -> list:
    if not isinstance(value, list):
        raise _fail(path, loc, f"{where} should be a list, found {type(value).__name__}", f"follow the {layout}")
    return value


def _need_str(value: Any, path: Path, where: str, loc: _Loc | None = None) -> str:
    if not isinstance(value, str):
        raise _fail(path, loc, f"{where} should be a string, found {type(value).__name__}: {str(value)[:40]!r}",
                    "write it as a JSON string")
    return value


def _question_id(value: Any, loc: _Loc) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise loc.error(f"the question id is {value!r}, not a string", "give every question a string id")
    return str(value)


def _json_answers(answers_raw: Any, path: Path, loc: _Loc) -> list[tuple[str, int]]:
    """SQuAD `answers: [{text, answer_start}]` as (text, start) pairs, types checked."""
    answers = []
    for ans in _need_list(answers_raw, path, "`answers`", loc):
        _need(ans, ["text", "answer_start"], path, "an answer", loc)
        if not isinstance(ans["text"], str) or type(ans["answer_start"]) is not int:
            raise loc.error(f"answer {ans!r} needs a string `text` and an integer `answer_start`",
                            "fix the types of the answer fields")
        answers.append((ans["text"], ans["answer_start"]))
    return answers


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise DataValidationError(str(path), None, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                                  "fix the JSON syntax (e.g. `python -m json.tool FILE`)") from None


def _title(article: dict, a: int, path: Path) -> str | None:
    """An article's title (its theme), or None where it has none (absent or null)."""
    title = article.get("title")
    if title is None:
        return None
    if isinstance(title, bool) or not isinstance(title, (str, int)):
        raise DataValidationError(str(path), None, f"article {a} `title` is {str(title)[:40]!r}, not a string",
                                  "write the title as a JSON string (or leave it out)")
    return str(title)


def _untitled_theme(para: dict, a: int, path: Path) -> str:
    """The theme of a paragraph whose article has no title (a release that identifies documents
    per paragraph): its `document_id`, else `<file stem>:<article index>`."""
    doc_id = para.get("document_id")
    if isinstance(doc_id, (str, int)) and not isinstance(doc_id, bool) and str(doc_id).strip():
        return str(doc_id)
    return f"{path.stem}:{a}"


def read_squad_json(path: str | os.PathLike) -> ReadResult:
    """Read SQuAD v1.1 / v2.0 JSON; keeps every gold answer, ignores `plausible_answers`.

    Liberal where the meaning is clear: an article without `title` takes its theme from each
    paragraph's `document_id` (or `<file stem>:<article index>`), with a warning; a question
    without `is_impossible` is unanswerable exactly when it has no answers (SQuAD v1)."""
    path = Path(path)
    log = _Log()
    doc = _load_json(path)
    _need(doc, ["data"], path, "the top level")
    records = []
    untitled = 0
    row = 0  # questions are the rows: 1-based over the whole file
    for a, article in enumerate(_need_list(doc["data"], path, "`data` (the articles)"), 1):
        _need(article, ["paragraphs"], path, f"article {a}")
        title = _title(article, a, path)
        untitled += title is None
        for p, para in enumerate(_need_list(article["paragraphs"], path, f"article {a} `paragraphs`"), 1):
            where = f"article {a}" + (f" ({title!r})" if title is not None else "") + f" paragraph {p}"
            _need(para, ["context", "qas"], path, where)
            theme = title if title is not None else _untitled_theme(para, a, path)
            context = _need_str(para["context"], path, f"{where} `context`")
            for qa in _need_list(para["qas"], path, f"{where} `qas`"):
                row += 1
                loc = _Loc(str(path), row, None, f"question id={qa.get('id')!r}" if isinstance(qa, dict) else "")
                _need(qa, ["id", "question"], path, "the question", loc)
                answers = _json_answers(qa.get("answers", []), path, loc)
                # v2 files flag unanswerables; a file without the flag (v1) is answerable
                # unless its answer list is empty.
                is_impossible = qa.get("is_impossible", not answers)
                if not isinstance(is_impossible, bool):
                    raise loc.error(f"`is_impossible` is {is_impossible!r}, not a boolean", "use true or false")
                records.append(_make_record(
                    loc, _SQUAD_FIELDS, log,
                    id=_question_id(qa["id"], loc), theme=theme, context=context,
                    question=_need_str(qa["question"], path, "`question`", loc),
                    answers=answers, is_impossible=is_impossible,
                ))
    if untitled:
        log.warn(f"{path}: {untitled} article(s) have no `title`; their themes are the paragraphs' "
                 f"`document_id` (or '{path.stem}:<article index>')")
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


# --------------------------------------------------------------------------- MRQA JSONL
def _need_dict(value: Any, path: Path, where: str, loc: _Loc) -> dict:
    _need(value, [], path, where, loc, MRQA_LAYOUT)
    return value


def _mrqa_span(context: str, found: dict, loc: _Loc, log: _Log) -> tuple[str, int]:
    """One detected answer as (text, start): its first `char_spans` entry, whose end is inclusive."""
    text = found.get("text")
    spans = found.get("char_spans")
    span = spans[0] if isinstance(spans, list) and spans else None
    if not isinstance(text, str) or not (isinstance(span, list) and len(span) == 2
                                         and all(type(x) is int for x in span)):
        raise loc.error(f"detected answer {str(found)[:80]} needs a string `text` and `char_spans` [[start, end]]",
                        "write detected_answers as [{text, char_spans: [[start, end]]}] (end inclusive)")
    start, end = span
    piece = context[start : end + 1] if 0 <= start <= end < len(context) else ""
    if piece != text and piece.strip() and piece.casefold() == text.casefold():
        # MRQA matched answers to contexts ignoring case: the context's own spelling is the answer
        log.text_repaired += 1
        log.warn(f"{loc}: detected answer {text!r} is {piece!r} in the context; using the context's text")
        return piece, start
    return text, start  # a span that does not point at the text: the validator repairs or refuses


def _mrqa_answers(context: str, qa: dict, path: Path, loc: _Loc, log: _Log) -> list[tuple[str, int]]:
    detected = _need_list(qa.get("detected_answers", []), path, "`detected_answers`", loc, MRQA_LAYOUT)
    if detected:
        return [_mrqa_span(context, _need_dict(found, path, "a detected answer", loc), loc, log)
                for found in detected]
    # no detected spans: plain answer strings, located at their first occurrence
    texts = _need_list(qa.get("answers", []), path, "`answers`", loc, MRQA_LAYOUT)
    return [(t, context.find(t)) for t in (_need_str(t, path, "an answer", loc) for t in texts)]


def jsonl_objects(path: str | os.PathLike, example: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file (plain or .gz); anything
    but an object stops with the line as the row and `example` as the fix."""
    path = Path(path)
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataValidationError(str(path), n, f"not valid JSON ({e.msg})",
                                      f"one object per line: {example}") from None
        if not isinstance(obj, dict):
            raise DataValidationError(str(path), n, f"a JSON {type(obj).__name__}, not an object",
                                      f"one object per line: {example}")
        yield n, obj


def read_mrqa_jsonl(path: str | os.PathLike) -> ReadResult:
    """Read MRQA-style JSONL (plain or .gz); theme = the line's `title`, else the header's
    `dataset`, else the file's stem. A row is a line (one context, its questions)."""
    path = Path(path)
    log = _Log()
    theme = path.name.split(".")[0]
    records = []
    for n, obj in jsonl_objects(path, MRQA_LINE):
        if "header" in obj:
            dataset = obj["header"].get("dataset") if isinstance(obj["header"], dict) else None
            theme = dataset if isinstance(dataset, str) and dataset.strip() else theme
            continue
        _need(obj, ["context", "qas"], path, f"line {n}", layout=MRQA_LAYOUT)
        context = _need_str(obj["context"], path, f"line {n} `context`")
        title = obj.get("title")
        for qa in _need_list(obj["qas"], path, f"line {n} `qas`", layout=MRQA_LAYOUT):
            loc = _Loc(str(path), n, None, f"qid={qa.get('qid')!r}" if isinstance(qa, dict) else "")
            _need(qa, ["qid", "question"], path, "the question", loc, MRQA_LAYOUT)
            answers = _mrqa_answers(context, qa, path, loc, log)
            records.append(_make_record(
                loc, _MRQA_FIELDS, log,
                id=_question_id(qa["qid"], loc),
                theme=title if isinstance(title, str) and title.strip() else theme, context=context,
                question=_need_str(qa["question"], path, "`question`", loc),
                answers=answers, is_impossible=not answers,
            ))
    return log.result(records, path)


# --------------------------------------------------------------------------- dispatch
def _csv_header(path: Path) -> list[str]:
    """First CSV row only, for format detection (decoding errors surface in the real read)."""
    _check_exists(path)
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        return next(csv.reader(f), [])


def is_jsonl(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(JSONL_SUFFIXES)


def jsonl_kind(path: str | os.PathLike) -> str | None:
    """`mrqa_jsonl` (labelled: a header line or `qas`) or `questions_jsonl` (`question`/`context`
    per line, for `metaqa predict`), told apart by the keys of the first object line; None when
    that line says neither (each reader then names what is wrong with it)."""
    path = Path(path)
    _check_exists(path)
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", errors="replace") as f:
            first = next((line for line in f if line.strip()), "")
        obj = json.loads(first) if first else {}
    except (OSError, EOFError, json.JSONDecodeError):
        return None
    if not isinstance(obj, dict):
        return None
    if {"header", "qas"} & set(obj):
        return "mrqa_jsonl"
    return "questions_jsonl" if "question" in obj else None


def detect_format(path: Path) -> str:
    """A reader format from the extension, and for CSV / JSONL from the content."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "squad_json"
    if suffix == ".csv":
        return "subjqa_csv" if "human_ans_spans" in _csv_header(path) else "devrev_csv"
    if is_jsonl(path):
        if jsonl_kind(path) == "questions_jsonl":
            raise DataValidationError(
                str(path), None, "holds questions with no answers (`question`/`context` per line)",
                "answer them with `metaqa predict input=<file>`; labelled JSONL is MRQA-style (fmt=mrqa_jsonl: "
                "`context` and `qas` with `detected_answers` per line)")
        return "mrqa_jsonl"
    _check_exists(path)
    raise DataValidationError(str(path), None, f"cannot detect the format from the extension {suffix!r}",
                              f"pass fmt= one of {FORMATS[1:]}, or rename to .json / .csv / .jsonl")


def unique_ids(records: Sequence[QARecord], source: str, places: Sequence[str], unit: str = "row",
               policy: str = "rename") -> tuple[list[QARecord], str | None]:
    """Records whose ids are unique, plus a warning naming the repeats (None if there were none).

    A repeated id would collapse two questions into one in scores, predictions and splits, so
    later copies become `<id>#2`, `<id>#3` … (never an id already in the data), or, with
    `policy="error"`, the first repeat stops the read naming both places. `places[i]` says where
    record i is (a row or line number) and `unit` what it counts."""
    if policy not in DUPLICATE_IDS:
        raise ConfigError("duplicate_ids", f"{policy!r} is not one of {DUPLICATE_IDS}",
                          "duplicate_ids=rename (later copies become <id>#2, <id>#3 …) or duplicate_ids=error")
    where: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        where[r.id].append(i)
    repeats = {qid: idx for qid, idx in where.items() if len(idx) > 1}
    if not repeats:
        return list(records), None
    if policy == "error":
        qid, idx = min(repeats.items(), key=lambda item: item[1][1])  # the first repeat in the file
        raise DataValidationError(source, None, f"question id {qid!r} appears more than once: {unit}s "
                                  f"{places[idx[0]]} and {places[idx[1]]}",
                                  "give every question its own id, or set duplicate_ids=rename to rename "
                                  "repeats to '<id>#2', '<id>#3' …")
    out, taken = list(records), set(where)
    for qid, idx in repeats.items():
        n = 1
        for i in idx[1:]:
            n += 1
            while f"{qid}#{n}" in taken:
                n += 1
            taken.add(f"{qid}#{n}")
            out[i] = replace(out[i], id=f"{qid}#{n}")
    shown = "; ".join(f"{qid!r} at {unit}s {', '.join(places[i] for i in idx)}"
                      for qid, idx in list(repeats.items())[:5])
    more = f" and {len(repeats) - 5} more" if len(repeats) > 5 else ""
    return out, (f"{source}: {len(repeats)} duplicate question id(s), later copies renamed "
                 f"'<id>#2', '<id>#3' …: {shown}{more}")


def read_records(path: str | os.PathLike, fmt: str = "auto", duplicate_ids: str = "rename") -> ReadResult:
    """Read any supported file (`fmt="auto"`: by extension, and for CSV / JSONL by content).

    A file without questions stops here, repeated ids are made unique (or refused, see
    `unique_ids`), and every warning and repair is noted in `metaqa.data.readlog`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    reader = {"devrev_csv": read_devrev_csv, "squad_json": read_squad_json, "subjqa_csv": read_subjqa_csv,
              "mrqa_jsonl": read_mrqa_jsonl}[fmt]
    result = reader(path)
    if not result.records:
        raise DataValidationError(str(path), None, f"holds no questions (read as {fmt})",
                                  "add questions (rows under the header, or `qas` in the paragraphs), "
                                  "or point at the file that has them")
    rows = [str(row) for row in result.rows]
    result.records, warning = unique_ids(result.records, str(path), rows, policy=duplicate_ids)
    if warning:
        result.warnings.append(warning)
    if result.repaired:
        readlog.note(str(path), f"repaired {result.repaired} answer start(s) to the nearest occurrence "
                                "of the answer text")
    for message in result.warnings:
        readlog.note(str(path), message)
    return result


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
