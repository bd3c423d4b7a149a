"""Benchmark figures for `docs/results/<script>.json`: flat headline names plus the date, the exact
command, the threads and the machine (CPU model, cores, ISA flags), so runs compare by machine."""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

from metaqa.evaluation.machine import machine_info, thread_settings
from metaqa.fileio import write_json


def write_results(path: str | Path, figures: dict[str, Any], threads: int | None = None) -> Path:
    """Write `figures` with date, command, threads and machine first; returns the path."""
    payload = {"date": dt.date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
               "threads": threads, "thread_settings": thread_settings(), "machine": machine_info(), **figures}
    return write_json(path, payload)
