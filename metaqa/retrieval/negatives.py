"""Hard unanswerable questions for training a reader that can abstain (SQuAD v2-style).

SQuAD v2's unanswerable questions are written against a paragraph that looks relevant but does
not hold the answer. Without its train set, the nearest construction from answerable data is:
ask a question of the most similar *other* paragraph of the same article (BM25 over the
article's paragraphs, the question as the query) that does not contain any of its gold answers
(the containment check of the synth stage's negatives). A random same-article paragraph would
be an easy negative: most share no words with the question.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from metaqa.data.records import QARecord
from metaqa.retrieval.bm25 import BM25Index


def contains_answer(context: str, record: QARecord) -> bool:
    lowered = context.lower()
    return any(a.text.lower() in lowered for a in record.answers)


def hard_negatives(questions: Sequence[QARecord], paragraphs: Sequence[QARecord] | None = None,
                   fraction: float = 0.5, seed: int = 0, progress: bool = False) -> list[QARecord]:
    """Unanswerable twins of a seeded `fraction` of the answerable `questions`: same question,
    the best-BM25 paragraph of its theme among `paragraphs` (default: the questions' own) that
    is not its own and holds none of its answers; id `<id>-neg`. A question whose theme has no
    such paragraph gets none. fraction 0.5 of all-answerable data → about one third unanswerable."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction}: pass a share of the questions between 0 and 1")
    pool: dict[str, list[str]] = defaultdict(list)
    for r in paragraphs if paragraphs is not None else questions:
        pool[r.theme].append(r.context)
    pool = {theme: list(dict.fromkeys(texts)) for theme, texts in pool.items()}
    answerable = [r for r in questions if not r.is_impossible]
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(answerable), size=int(round(fraction * len(answerable))), replace=False))
    by_theme: dict[str, list[QARecord]] = defaultdict(list)
    for i in chosen:
        by_theme[answerable[i].theme].append(answerable[i])
    negatives = []
    for theme in tqdm(sorted(by_theme), desc="hard negatives", disable=not progress, leave=False):
        texts = pool.get(theme, [])
        if len(texts) < 2:
            continue
        index = BM25Index.build(texts)
        for record in by_theme[theme]:
            for j in np.argsort(-index.scores(record.question), kind="stable"):
                context = texts[int(j)]
                if context != record.context and not contains_answer(context, record):
                    negatives.append(QARecord(id=f"{record.id}-neg", theme=theme, context=context,
                                              question=record.question, is_impossible=True))
                    break
    return negatives
