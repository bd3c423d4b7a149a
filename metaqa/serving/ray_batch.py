"""Batch inference on Ray Data: the ONNX reader over many files of questions, on one machine or a cluster.

    predict_dataset(["questions/*.jsonl"], "export/onnx", "out/", actors=2, threads_per_actor=1)

The input (files, folders or globs) is cut into deterministic **shards** on the driver: JSONL
files into runs of `shard_rows` non-blank lines (by byte offset, so a worker reads only its slice),
Parquet files by row group, and the other QA formats (SQuAD JSON, DevRev / SubjQA CSV, shard
dirs; read whole by `metaqa.data`) into chunks of `shard_rows` questions. Ray Data then reads the
shards (`flat_map`), answers them with `map_batches` over an actor pool — one `OnnxPredictor`
per actor, `threads_per_actor` intra-op threads each — and streams the answers back; the driver
writes each shard's file when its last row arrives (atomically: temp file + rename).

- **Resume**: a shard whose output file exists is not read again; `manifest.json` pins the inputs
  and settings, and a re-run with different ones is refused (use a new output dir).
- **Bad rows** (not JSON, not an object, missing/empty question or context, a model error on that
  row alone) go to `errors.jsonl` with the file, line and reason; the other rows are written.
- Output rows: id, answer, score, start, end, null_score (as `metaqa predict`), plus `source`
  (file) and `line` (JSONL line / Parquet row / question index in the file).

Why the driver writes (not `Dataset.write_parquet`): resume needs one file per deterministic
shard, written only once complete; Ray's writers name files per block. The answers are small
(about 100 bytes a question), so the driver is not the bottleneck at this scale.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from metaqa.fileio import write_jsonl, write_text_atomic

# The reader (and with it torch) is imported where it is used: a worker that only reads shards
# starts in a fraction of a second.

log = logging.getLogger(__name__)

STREAMED = (".jsonl", ".parquet")  # read by the workers, row by row
WHOLE = (".json", ".csv", ".jsonl.gz")  # read on the driver by metaqa.data (their rows are not independent)
OUTPUT_FORMATS = ("jsonl", "parquet")


@dataclass(frozen=True)
class Shard:
    name: str                # output file stem: "<input stem>-<k>"
    kind: str                # "jsonl" | "parquet" | "records"
    path: str
    rows: int                # questions (non-blank lines / rows) it holds
    nbytes: int              # its size on disk (or as JSON): sizes Ray Data's blocks
    start: int = 0           # jsonl: byte offset; parquet: row group
    stop: int = 0            # jsonl: byte offset after the last line
    first_line: int = 1      # jsonl: line number of the first byte; others: row index of the first row
    records: str = ""        # "records": JSON [[id, question, context], ...] (one column type for every kind)


# --------------------------------------------------------------------------- input → shards
def resolve_inputs(specs: str | Sequence[str]) -> list[Path]:
    """Files from file paths, folders (their supported files) and globs; sorted, each once."""
    files: list[Path] = []
    for spec in [specs] if isinstance(specs, (str, os.PathLike)) else specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and _supported(p))
            if not found and any(path.glob("*.json")):
                found = [path]  # a prep shard dir: read whole by metaqa.data
        elif path.is_file():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
        if not found:
            raise FileNotFoundError(f"{spec}: no input files (pass a file, a folder of .jsonl/.parquet/.json/.csv "
                                    "files or a glob such as 'data/*.jsonl')")
        files.extend(found)
    return sorted(dict.fromkeys(p.resolve() for p in files))


def _supported(path: Path) -> bool:
    return path.name.endswith(STREAMED + WHOLE)


def plan_shards(files: Sequence[Path], shard_rows: int, fmt: str = "auto") -> list[Shard]:
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    shards: list[Shard] = []
    for path in files:
        stem = path.name.split(".")[0] if path.is_file() else path.name
        if path.is_file() and path.suffix == ".jsonl" and fmt in ("auto", "jsonl"):
            shards.extend(_jsonl_shards(path, stem, shard_rows))
        elif path.is_file() and path.suffix == ".parquet":
            shards.extend(_parquet_shards(path, stem))
        else:
            from metaqa.export.io import read_questions

            records, _ = read_questions(path, fmt)
            for k, lo in enumerate(range(0, len(records), shard_rows)):
                chunk = [(r.id, r.question, r.context) for r in records[lo: lo + shard_rows]]
                text = json.dumps(chunk, ensure_ascii=False)
                shards.append(Shard(f"{stem}-{k:05d}", "records", str(path), len(chunk), len(text.encode()),
                                    first_line=lo, records=text))
    names = [s.name for s in shards]
    if len(set(names)) != len(names):
        clash = sorted({n for n in names if names.count(n) > 1})[0]
        raise ValueError(f"two inputs share the file stem of shard {clash!r}: rename one, or predict them separately")
    return shards


def _jsonl_shards(path: Path, stem: str, shard_rows: int) -> Iterator[Shard]:
    """Runs of `shard_rows` non-blank lines, located by byte offsets (one pass over the file)."""
    k = rows = 0
    start = offset = 0
    first_line = line_no = 1
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                if rows == 0:
                    start, first_line = offset, line_no
                rows += 1
            offset += len(raw)
            line_no += 1
            if rows == shard_rows:
                yield Shard(f"{stem}-{k:05d}", "jsonl", str(path), rows, offset - start, start, offset, first_line)
                k, rows = k + 1, 0
    if rows:
        yield Shard(f"{stem}-{k:05d}", "jsonl", str(path), rows, offset - start, start, offset, first_line)


def _parquet_shards(path: Path, stem: str) -> Iterator[Shard]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    first = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if group.num_rows:
            yield Shard(f"{stem}-{g:05d}", "parquet", str(path), group.num_rows, group.total_byte_size, start=g,
                        first_line=first)
        first += group.num_rows


def read_shard(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A shard's rows as {shard, line, id, question, context, error}; a bad row gets its reason
    in `error` (and is not answered) instead of stopping the job."""
    shard = item["name"]
    if item["kind"] == "jsonl":
        with open(item["path"], "rb") as f:
            f.seek(item["start"])
            data = f.read(item["stop"] - item["start"])
        for n, raw in enumerate(data.split(b"\n"), item["first_line"]):
            if raw.strip():
                yield _row(shard, n, *_parse_line(raw, n))
    elif item["kind"] == "parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(item["path"]).read_row_group(item["start"])
        for n, obj in enumerate(table.to_pylist(), item["first_line"]):
            yield _row(shard, n, *_fields(obj, f"row{n}"))
    else:
        for n, (id_, question, context) in enumerate(json.loads(item["records"]), item["first_line"]):
            yield _row(shard, n, id_, question, context, "")


def _parse_line(raw: bytes, n: int) -> tuple[str, str, str, str]:
    try:
        obj = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"line{n}", "", "", f"not valid JSON ({getattr(err, 'msg', err)}); one object per line: " \
                                   '{"question": "...", "context": "..."}'
    if not isinstance(obj, dict):
        return f"line{n}", "", "", f"a JSON {type(obj).__name__}, not an object"
    return _fields(obj, f"line{n}")


def _fields(obj: dict, default_id: str) -> tuple[str, str, str, str]:
    id_ = str(obj.get("id") if obj.get("id") is not None else default_id)
    question, context = obj.get("question"), obj.get("context")
    for key, value in (("question", question), ("context", context)):
        if not isinstance(value, str) or not value.strip():
            return id_, "", "", f"`{key}` is missing, empty or not a string"
    return id_, question, context, ""


def _row(shard: str, line: int, id_: str, question: str, context: str, error: str) -> dict[str, Any]:
    return {"shard": shard, "line": line, "id": id_, "question": question, "context": context, "error": error}


# --------------------------------------------------------------------------- the actor
class ReaderActor:
    """One reader replica in Ray Data's actor pool: answers a batch of rows (pyarrow in and out)."""

    def __init__(self, model_dir: str, threads: int, reader: dict, batch_size: int) -> None:
        from metaqa.inference import OnnxPredictor, ReaderConfig

        self.predictor = OnnxPredictor(model_dir, threads=threads, reader=ReaderConfig.from_cfg(reader))
        self.batch_size = batch_size

    def __call__(self, batch):
        import pyarrow as pa

        from metaqa.export.io import prediction_row

        rows = batch.to_pylist()
        good = [r for r in rows if not r["error"]]
        results = iter(self._answer(good) if good else [])
        out = []
        for r in rows:
            result = None if r["error"] else next(results)
            error = r["error"] or (result if isinstance(result, str) else "")
            pred = prediction_row(result) if result is not None and not error else {}
            out.append({"shard": r["shard"], "line": r["line"], "id": r["id"], "error": error,
                        **{k: pred.get(k) for k in ANSWER_FIELDS}})
        return pa.Table.from_pylist(out, schema=_actor_schema())

    def _answer(self, rows: list[dict]) -> list:
        """A prediction (or an error message) per row: the batch at once, row by row if it fails."""
        from metaqa.inference import make_record

        records = [make_record(r["question"], r["context"], r["id"]) for r in rows]
        try:
            return self._predict(records)
        except Exception:  # one bad row must not cost its batch-mates: retry them one at a time
            results = []
            for record in records:
                try:
                    results.extend(self._predict([record]))
                except Exception as err:
                    results.append(f"model error: {type(err).__name__}: {err}")
            return results

    def _predict(self, records: list) -> list:
        # the same dispatch as `metaqa predict`: batch_size=1 is the serving path (one question a call)
        if self.batch_size == 1:
            return self.predictor.answer_each(records)
        return self.predictor.predict(records, self.batch_size)


ANSWER_FIELDS = ("answer", "score", "start", "end", "null_score")


@lru_cache(maxsize=None)
def _actor_schema():
    import pyarrow as pa

    return pa.schema([("shard", pa.string()), ("line", pa.int64()), ("id", pa.string()), ("error", pa.string()),
                      ("answer", pa.string()), ("score", pa.float64()), ("start", pa.int64()), ("end", pa.int64()),
                      ("null_score", pa.float64())])


# --------------------------------------------------------------------------- the job
def predict_dataset(inputs: str | Sequence[str], model_dir: str | Path, output_dir: str | Path, *,
                    reader: dict | None = None, fmt: str = "auto", actors: int = 2, threads_per_actor: int = 1,
                    batch_rows: int = 256, batch_size: int = 32, shard_rows: int = 10_000,
                    output_format: str = "jsonl", address: str | None = None, num_cpus: int | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Answer every question of `inputs` into shard files under `output_dir`; a summary dict."""
    import ray

    from metaqa.inference import OnnxPredictor

    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    model_dir = Path(model_dir).resolve()
    OnnxPredictor(model_dir, threads=1)  # fail here, naming the dir, rather than inside an actor
    out = Path(output_dir)
    files = resolve_inputs(inputs)
    shards = plan_shards(files, shard_rows, fmt)
    settings = {"inputs": [str(p) for p in files], "model_dir": str(model_dir), "shard_rows": shard_rows,
                "format": fmt, "output_format": output_format, "reader": reader or {}, "batch_size": batch_size}
    _check_manifest(out, settings)
    done = {s.name for s in shards if _shard_path(out, s.name, output_format).exists()}
    pending = [s for s in shards if s.name not in done]
    log.info("%d shards (%d questions): %d done, %d to answer", len(shards), sum(s.rows for s in shards),
             len(done), len(pending))
    started = time.perf_counter()
    answered = written = 0
    clock = _Clock()
    if pending:
        started_ray = not ray.is_initialized()
        if started_ray:
            ray.init(address=address, num_cpus=num_cpus if address is None else None,
                     include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        try:
            for shard, rows in _stream(pending, model_dir, reader or {}, actors, threads_per_actor, batch_rows,
                                       batch_size, progress, clock):
                answered += sum(bool(r["answer"]) for r in rows if not r["error"])
                written += _write_shard(out, shard, rows, output_format)
        finally:
            if started_ray:
                ray.shutdown()
    seconds = time.perf_counter() - started
    errors = _merge_errors(out)
    questions = sum(s.rows for s in pending)
    return {"shards": len(shards), "shards_skipped": len(done), "questions": questions, "written": written,
            "answered": answered, "errors": errors, "seconds": seconds,
            "questions_per_s": questions / seconds if questions else 0.0,
            "startup_s": clock.first - started if clock.first else None,
            "steady_questions_per_s": clock.steady_rate(), "output_dir": str(out)}


class _Clock:
    """When answers came back: the first batch marks the end of start-up (actors up, first batch
    read); the rate after it is the steady state that a long job runs at."""

    def __init__(self) -> None:
        self.first = self.last = None
        self.after_first = 0

    def tick(self, rows: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.after_first += rows
        self.last = now

    def steady_rate(self) -> float | None:
        if self.first is None or self.last == self.first:
            return None
        return self.after_first / (self.last - self.first)


def _stream(pending: list[Shard], model_dir: Path, reader: dict, actors: int, threads: int, batch_rows: int,
            batch_size: int, progress: bool, clock: _Clock) -> Iterator[tuple[Shard, list[dict]]]:
    """(shard, its rows in input order) as each shard's last answer comes back."""
    import ray
    from ray.data import ActorPoolStrategy, DataContext
    from tqdm import tqdm

    # Ray Data hands an actor whole blocks, and a shard is read as one block unless told otherwise:
    # blocks of about `batch_rows` rows let every actor work on every shard.
    context = DataContext.get_current()
    block_size = context.target_max_block_size
    context.target_max_block_size = max(64 * 1024, int(batch_rows * max(s.nbytes / s.rows for s in pending) * 1.2))
    try:
        ds = (ray.data.from_items([asdict(s) for s in pending], override_num_blocks=len(pending))
              # light work: no CPU reserved (it must not wait for the actors'), as many readers as actors
              .flat_map(read_shard, num_cpus=0, concurrency=actors)
              .map_batches(ReaderActor, batch_size=batch_rows, batch_format="pyarrow",
                           compute=ActorPoolStrategy(size=actors), num_cpus=threads,
                           fn_constructor_kwargs={"model_dir": str(model_dir), "threads": threads, "reader": reader,
                                                  "batch_size": batch_size}))
        by_name = {s.name: s for s in pending}
        buffers: dict[str, list[dict]] = defaultdict(list)
        with tqdm(total=sum(s.rows for s in pending), desc="predict (ray)", unit="q", disable=not progress) as bar:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                clock.tick(batch.num_rows)
                for row in batch.to_pylist():
                    buffer = buffers[row["shard"]]
                    buffer.append(row)
                    if len(buffer) == by_name[row["shard"]].rows:
                        yield by_name[row["shard"]], sorted(buffers.pop(row["shard"]), key=lambda r: r["line"])
                bar.update(batch.num_rows)
    finally:
        context.target_max_block_size = block_size
    if buffers:  # a shard that never completed would be silently missing: say so
        raise RuntimeError(f"shards incomplete after the stream ended: {sorted(buffers)}")


def _shard_path(out: Path, name: str, output_format: str) -> Path:
    return out / "shards" / f"{name}.{output_format}"


def _write_shard(out: Path, shard: Shard, rows: list[dict], output_format: str) -> int:
    """Errors first (per-shard file), then the answers file: its existence marks the shard done."""
    bad = [{"source": shard.path, "line": r["line"], "id": r["id"], "reason": r["error"]} for r in rows if r["error"]]
    error_path = out / "errors" / f"{shard.name}.jsonl"
    if bad:
        write_jsonl(error_path, bad)
    else:
        error_path.unlink(missing_ok=True)
    good = [{"id": r["id"], "answer": r["answer"], "score": r["score"], "start": r["start"], "end": r["end"],
             "null_score": r["null_score"], "source": shard.path, "line": r["line"]} for r in rows if not r["error"]]
    path = _shard_path(out, shard.name, output_format)
    if output_format == "jsonl":
        write_jsonl(path, good)
    else:
        _write_parquet_atomic(path, good)
    return len(good)


def _write_parquet_atomic(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    schema = pa.schema([("id", pa.string()), ("answer", pa.string()), ("score", pa.float64()), ("start", pa.int64()),
                        ("end", pa.int64()), ("null_score", pa.float64()), ("source", pa.string()),
                        ("line", pa.int64())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    os.replace(tmp, path)


def _merge_errors(out: Path) -> int:
    """errors.jsonl = every shard's errors (rebuilt each run, so a resumed job never repeats one)."""
    rows = [json.loads(line) for p in sorted((out / "errors").glob("*.jsonl")) for line in p.read_text().splitlines()]
    if rows or (out / "errors.jsonl").exists():
        write_jsonl(out / "errors.jsonl", rows)
    return len(rows)


def _check_manifest(out: Path, settings: dict) -> None:
    path = out / "manifest.json"
    if path.exists():
        before = json.loads(path.read_text())
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            raise ValueError(f"{out} holds a job with other {', '.join(changed)}: its finished shards would not "
                             "match; pass a new output dir (or delete this one)")
        return
    write_text_atomic(path, json.dumps(settings, indent=2))


def read_outputs(output_dir: str | Path) -> Iterable[dict]:
    """Every answer row of a finished job, shard by shard (for tests, scoring and `metaqa report`)."""
    import pyarrow.parquet as pq

    for path in sorted((Path(output_dir) / "shards").iterdir()):
        if path.suffix == ".jsonl":
            yield from (json.loads(line) for line in path.read_text().splitlines())
        elif path.suffix == ".parquet":
            yield from pq.read_table(path).to_pylist()
