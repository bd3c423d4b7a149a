"""What the readers had to warn about or repair, kept until the running stage collects it.

Readers are called deep inside stages (datamodules, task samplers, predictors), far from the
stage's summary; `note` logs a warning at once and keeps it, and `run_stage` `drain`s the notes
into the stage's `summary.json`, so a repaired offset or a renamed id is never silent.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)
KEEP = 50  # notes a summary.json keeps verbatim; the total is recorded beside them

_notes: list[str] = []


def note(source: str, message: str) -> None:
    """Log `message` about `source` (a file) as a warning and keep it for the stage's summary."""
    text = message if message.startswith(str(source)) else f"{source}: {message}"
    log.warning(text)
    _notes.append(text)


def drain() -> list[str]:
    """Every note since the last drain, oldest first; the collector is empty afterwards."""
    notes = list(_notes)
    _notes.clear()
    return notes
