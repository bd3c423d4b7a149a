"""The canonical QA record: every reader produces it, every consumer takes it."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset of `text` inside the record's context


@dataclass(frozen=True)
class QARecord:
    id: str
    theme: str
    context: str
    question: str
    answers: tuple[Answer, ...] = field(default_factory=tuple)
    is_impossible: bool = False

    def __post_init__(self) -> None:
        if self.is_impossible and self.answers:
            raise ValueError(f"record {self.id}: unanswerable but has answers {self.answers}")
        if not self.is_impossible and not self.answers:
            raise ValueError(f"record {self.id}: answerable but has no answer")

    @property
    def answer_texts(self) -> list[str]:
        return [a.text for a in self.answers]


class DataValidationError(ValueError):
    """Bad input data: the message names the file, the row and the fix."""

    def __init__(self, path: str, row: int | None, problem: str, fix: str) -> None:
        where = f"{path}" + (f", row {row}" if row is not None else "")
        super().__init__(f"{where}: {problem}. Fix: {fix}")
        self.path, self.row, self.problem, self.fix = path, row, problem, fix
