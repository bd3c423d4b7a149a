"""Writes that never leave half a file or half a folder behind after a crash, and never replace a
folder metaqa did not make.

Every output folder metaqa swaps in whole (shards, ONNX exports, bench variants, retrieval
indexes) carries a marker file, `.metaqa-output`, naming the stage that wrote it. Before any work,
`guard_output_dir` checks the folder a stage is about to replace: absent, empty or marked by the
same stage is fine; marked by another stage needs `overwrite=true`; anything else (your own
files) is never replaced, and neither is a folder that is, or holds, an input of the command.
"""
from __future__ import annotations

import csv
import glob
import io
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from metaqa import __version__
from metaqa.config import ConfigError

log = logging.getLogger(__name__)

MARKER = ".metaqa-output"


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` via a temp file in the same directory + `os.replace`: readers never see half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for any other file
    # (tempfile.mkstemp would make every result file 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)  # same filesystem, so the rename is atomic
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, payload: Any) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_jsonable))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """One JSON object per line, UTF-8 with non-ASCII kept as is."""
    return write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_csv(path: str | Path, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def replace_dir(built: str | Path, final: str | Path, stage: str | None = None) -> Path:
    """Swap a fully written folder in for `final` by renames on one filesystem; with `stage`, the
    folder is marked as that stage's output first (see `guard_output_dir`)."""
    built, final = Path(built), Path(final)
    if stage:
        write_json(built / MARKER, {"stage": stage, "metaqa_version": __version__})
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    built.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def output_stage(path: str | Path) -> str | None:
    """The stage named by a folder's marker; None when it has no (readable) marker."""
    try:
        return str(json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))["stage"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def guard_output_dir(*dirs: str | Path, field: str, stage: str, inputs: Iterable[str | Path | None] = (),
                     overwrite: bool = False) -> None:
    """Stop before any work unless each of `dirs` may be replaced by `stage`'s output: it is
    absent or empty, or marked by `stage` (a rerun), or marked by another stage and `overwrite`
    is set. A folder without the marker is never replaced, nor one that is or holds an input.
    Temp folders that dead metaqa processes left beside it are removed first."""
    for d in dirs:
        final = Path(d)
        remove_stale_temps(final)
        target = final.resolve()
        for item in inputs:
            source = Path(item).resolve() if item is not None else None
            if source is not None and (source == target or target in source.parents):
                raise ConfigError(field, f"{final} is, or holds, the input {item} of this command; "
                                  "replacing it would delete that input",
                                  f"pass {field}=<a new folder> (metaqa never deletes its own inputs)")
        if final.exists() and not final.is_dir():
            raise ConfigError(field, f"{final} is a file, not a folder", f"pass {field}=<a new folder>")
        if not final.exists() or not any(p.name != MARKER for p in final.iterdir()):
            continue
        owner = output_stage(final)
        if owner is None:
            raise ConfigError(field, f"{final} already holds files that metaqa did not write (no {MARKER} "
                              "marker); metaqa never replaces such a folder",
                              f"pass {field}=<a new or empty folder>, or move your files away")
        if owner != stage and not overwrite:
            raise ConfigError(field, f"{final} holds the output of `metaqa {owner}`, which this "
                              f"`metaqa {stage}` would replace",
                              f"pass {field}=<another folder>, or overwrite=true to replace it")


STALE = re.compile(r"\.(?:tmp|old)-(\d+)")


def remove_stale_temps(final: str | Path) -> list[Path]:
    """Remove `<final>.tmp-<pid>` / `<final>.old-<pid>` folders whose process is gone (a killed
    run); those of live processes are kept. Returns what was removed."""
    final = Path(final)
    removed = []
    if not final.parent.is_dir():
        return removed
    for path in final.parent.glob(f"{glob.escape(final.name)}.*-*"):
        match = STALE.fullmatch(path.name[len(final.name):])
        if match and path.is_dir() and not pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, left behind by process %s (no longer running)", path, match.group(1))
            removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
