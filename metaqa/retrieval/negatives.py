"""Hard unanswerable questions for training a reader that can abstain (SQuAD v2-style).

SQuAD v2's unanswerable questions are written against a paragraph that looks relevant but does
not hold the answer. Without its train set, two constructions from answerable data:

- `hard_negatives`: ask a question of the most similar *other* paragraph of the same article
  (BM25 over the article's paragraphs, the question as the query) that does not contain any of
  its gold answers (the containment check of the synth stage's negatives). A random same-article
  paragraph would be an easy negative: most share no words with the question. These teach "wrong
  paragraph"; SQuAD v2's are about the *right* paragraph.
- `entity_swap_negatives`: the question stays on its own paragraph, but one named entity of it
  that the paragraph mentions is swapped for another of the same type (spaCy NER label) that the
  article's other questions mention and this paragraph does not ("When did Beyoncé leave
  Destiny's Child?" → "… leave Jay Z?"): the "entity swap" kind, about a fifth of SQuAD v2's
  unanswerable questions (Rajpurkar et al. 2018, table 2).
- `rewrite_negatives`: the question stays on its own paragraph and is rewritten into two more of
  that table's kinds: *negation* ("When was the university founded?" → "When was the university
  not founded?": `not` placed from spaCy's dependency parse, see `negated`) and *antonym* ("the first treaty" → "the last treaty": a word of
  `ANTONYMS` swapped for its opposite when the paragraph does not use the opposite). Together about
  a third of SQuAD v2's unanswerable questions; the antonym list is hand-written because no
  lexicon (WordNet) can be downloaded at run time, and it holds only the comparatives, ordinals
  and directions that SQuAD questions ask about. Optionally a *noun swap* (`noun_swapped`: one
  common noun the paragraph uses swapped for another its article is asked about), a guess at the
  table's largest kind, "other neutral" (a plausible detail the paragraph lacks).
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from metaqa.data.records import QARecord
from metaqa.retrieval.bm25 import BM25Index

# NER labels worth swapping: a question about a different one of these is about something else
SWAP_LABELS = frozenset({"PERSON", "ORG", "GPE", "LOC", "NORP", "FAC", "EVENT", "WORK_OF_ART", "PRODUCT",
                         "LAW", "LANGUAGE", "DATE"})


# opposite pairs, both ways; a question word found here is swapped for its opposite
_PAIRS = [("first", "last"), ("largest", "smallest"), ("biggest", "smallest"), ("highest", "lowest"),
          ("most", "least"), ("earliest", "latest"), ("before", "after"), ("increase", "decrease"),
          ("increased", "decreased"), ("longest", "shortest"), ("oldest", "youngest"), ("best", "worst"),
          ("maximum", "minimum"), ("more", "fewer"), ("north", "south"), ("east", "west"),
          ("northern", "southern"), ("eastern", "western"), ("upper", "lower"), ("higher", "lower"),
          ("early", "late"), ("major", "minor"), ("positive", "negative"), ("won", "lost"),
          ("inside", "outside"), ("above", "below"), ("began", "ended"), ("start", "end"),
          ("rise", "fall"), ("strongest", "weakest"), ("richest", "poorest"), ("private", "public"),
          ("male", "female"), ("ancient", "modern"), ("legal", "illegal"), ("success", "failure"),
          ("larger", "smaller"), ("greatest", "least"), ("top", "bottom"), ("winter", "summer"),
          ("accepted", "rejected"), ("supported", "opposed")]
ANTONYMS = {**{a: b for a, b in _PAIRS}, **{b: a for a, b in _PAIRS if b not in dict(_PAIRS)}}


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


def different(replacement: str, entity: str, context: str) -> bool:
    """A swap that makes the question about something the paragraph does not mention: not in it,
    and neither a part nor an extension of the entity it replaces ("Sichuan" → "Sichuan Province")."""
    a, b = replacement.lower(), entity.lower()
    return a not in context and a not in b and b not in a


def entity_swap_negatives(questions: Sequence[QARecord], nlp, fraction: float = 0.25, seed: int = 0,
                          progress: bool = False) -> list[QARecord]:
    """Unanswerable same-paragraph twins of a seeded `fraction` of the answerable `questions`, made
    by swapping one entity (see the module doc); id `<id>-swap`. `nlp` is a spaCy pipeline with NER
    (`metaqa.synth.candidates.load_spacy`). Drawn among the questions that have a swappable entity
    (one of `SWAP_LABELS` their paragraph mentions, with a same-label replacement in the theme that
    it does not), so `fraction` is of all answerable questions while enough such questions exist."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction}: pass a share of the questions between 0 and 1")
    answerable = [r for r in questions if not r.is_impossible]
    docs = nlp.pipe((r.question for r in answerable), batch_size=256)
    mentions = [[(e.text, e.label_, e.start_char) for e in doc.ents if e.label_ in SWAP_LABELS]
                for doc in tqdm(docs, total=len(answerable), desc="question entities", disable=not progress,
                                leave=False)]
    pool: dict[tuple[str, str], set[str]] = defaultdict(set)  # (theme, label) → entity texts
    for r, ents in zip(answerable, mentions):
        for text, label, _ in ents:
            pool[r.theme, label].add(text)
    pool_sorted = {key: sorted(texts) for key, texts in pool.items()}  # set order is not seeded
    rng = np.random.default_rng(seed)
    swaps = []
    for r, ents in zip(answerable, mentions):
        context = r.context.lower()
        options = [(text, start, [t for t in pool_sorted[r.theme, label] if different(t, text, context)])
                   for text, label, start in ents if text.lower() in context]
        options = [o for o in options if o[2]]
        if options:
            swaps.append((r, options))
    negatives = []
    for i in sorted(rng.choice(len(swaps), size=min(len(swaps), int(round(fraction * len(answerable)))),
                               replace=False)):
        r, options = swaps[int(i)]
        text, start, replacements = options[int(rng.integers(len(options)))]
        new = replacements[int(rng.integers(len(replacements)))]
        question = r.question[:start] + new + r.question[start + len(text):]
        negatives.append(QARecord(id=f"{r.id}-swap", theme=r.theme, context=r.context, question=question,
                                  is_impossible=True))
    return negatives


def negated(doc) -> str | None:
    """`doc` (a parsed question) with `not` inserted, or None where the parse offers no safe place:
    where a root verb has an auxiliary, after the subject of an inverted question ("When did X
    start" → "When did X not start") or after the auxiliary of a plain one ("X is viewed as
    what" → "X is not viewed as what"); after a copular root ("What is the name" → "What is not
    the name"). Questions already negated stay."""
    if any(t.dep_ == "neg" for t in doc):
        return None
    root = next((t for t in doc if t.dep_ == "ROOT"), None)
    if root is None:
        return None
    auxes = [c for c in root.children if c.dep_ in ("aux", "auxpass") and c.i < root.i]
    if root.pos_ == "VERB" and auxes:
        subject = max((c.i for c in root.children if c.dep_.startswith("nsubj")), default=-1)
        if auxes[0].i > subject:  # "How many survivors were found" → "… were not found"
            at = auxes[0].idx + len(auxes[0].text)
            return doc.text[:at] + " not" + doc.text[at:]
        # inverted: "What will X be replaced" → "… X not be replaced", "When was X founded" → "… X not founded"
        at = next((a.idx for a in auxes if a.i > subject), root.idx)
        return doc.text[:at] + "not " + doc.text[at:]
    if root.pos_ == "AUX" and root.i + 1 < len(doc):
        at = root.idx + len(root.text)
        return doc.text[:at] + " not" + doc.text[at:]
    return None


def antonym_swapped(question: str, context: str, rng: np.random.Generator) -> str | None:
    """`question` with one `ANTONYMS` word swapped for its opposite (case kept), drawn among those
    whose opposite neither the paragraph nor the question uses; None when there is none."""
    words = set(re.findall(r"[a-z]+", (context + " " + question).lower()))
    # not a name ("Public Safety Officer"), not one side of a choice ("more or less likely")
    spots = [m for m in re.finditer(r"[A-Za-z]+", question)
             if m.group().lower() in ANTONYMS and ANTONYMS[m.group().lower()] not in words
             and not (m.start() > 0 and m.group()[0].isupper())
             and not re.search(r"\bor\b", question[max(0, m.start() - 4):m.end() + 4])]
    if not spots:
        return None
    m = spots[int(rng.integers(len(spots)))]
    new = ANTONYMS[m.group().lower()]
    new = new.capitalize() if m.group()[0].isupper() else new
    return question[:m.start()] + new + question[m.end():]


def question_nouns(questions: Sequence[QARecord], docs: Sequence) -> dict[str, list[tuple[str, str]]]:
    """theme → the sorted (noun, tag) pairs its parsed questions use: what the article is asked about."""
    pool: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for r, doc in zip(questions, docs):
        pool[r.theme].update((t.text.lower(), t.tag_) for t in doc if _swappable_noun(t))
    return {theme: sorted(nouns) for theme, nouns in pool.items()}  # set order is not seeded


def _swappable_noun(token) -> bool:
    return token.pos_ == "NOUN" and token.is_alpha and len(token.text) >= 3


def noun_swapped(doc, context: str, nouns: Sequence[tuple[str, str]], rng: np.random.Generator) -> str | None:
    """`doc` (a parsed question) with one common noun that its paragraph uses swapped for another
    noun of the same tag (singular / plural) from `nouns` (its article's questions, see
    `question_nouns`) that neither the paragraph nor the question uses, nor shares a stem with the
    noun it replaces ("tentacles" → "tentilla", not "tentacle"); None when there is none. SQuAD
    v2's "other" kind: the question reads as about the paragraph, with one detail it lacks."""
    words = set(re.findall(r"[a-z]+", (context + " " + doc.text).lower()))
    spots = []
    for t in doc:
        if _swappable_noun(t) and re.search(rf"\b{re.escape(t.text.lower())}\b", context.lower()):
            options = [n for n, tag in nouns if tag == t.tag_ and n not in words and n[:4] != t.text.lower()[:4]
                       and different(n, t.text, context.lower())]
            if options:
                spots.append((t, options))
    if not spots:
        return None
    token, options = spots[int(rng.integers(len(spots)))]
    new = options[int(rng.integers(len(options)))]
    new = new.capitalize() if token.text[0].isupper() else new
    return doc.text[:token.idx] + new + doc.text[token.idx + len(token.text):]


def rewrite_negatives(questions: Sequence[QARecord], nlp, negation: float = 0.1, antonym: float = 0.1,
                      noun_swap: float = 0.0, seed: int = 0, progress: bool = False) -> list[QARecord]:
    """Unanswerable same-paragraph rewrites (see the module doc) of a seeded `negation` share of the
    answerable `questions` (id `<id>-not`), an `antonym` share (id `<id>-ant`) and a `noun_swap`
    share (id `<id>-noun`, `noun_swapped`), each drawn among the questions the rewrite applies to.
    `nlp` needs the dependency parse and POS tags for negation and noun swaps
    (`load_spacy(noun_chunks=True)`); it is not run when both are 0."""
    for name, share in (("negation", negation), ("antonym", antonym), ("noun_swap", noun_swap)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name}={share}: pass a share of the questions between 0 and 1")
    answerable = [r for r in questions if not r.is_impossible]
    rng = np.random.default_rng(seed)
    docs = []
    if negation or noun_swap:
        docs = list(tqdm(nlp.pipe((r.question for r in answerable), batch_size=256), total=len(answerable),
                         desc="parsed questions", disable=not progress, leave=False))
    negatives = []
    if negation:
        rewritten = [(r, negated(doc)) for r, doc in zip(answerable, docs)]
        negatives += draw([(r, q) for r, q in rewritten if q], negation * len(answerable), "not", rng)
    if antonym:
        rewritten = [(r, antonym_swapped(r.question, r.context, rng)) for r in answerable]
        negatives += draw([(r, q) for r, q in rewritten if q], antonym * len(answerable), "ant", rng)
    if noun_swap:  # after the others, so adding it leaves their seeded draws as they were
        pool = question_nouns(answerable, docs)
        rewritten = [(r, noun_swapped(doc, r.context, pool[r.theme], rng)) for r, doc in zip(answerable, docs)]
        negatives += draw([(r, q) for r, q in rewritten if q], noun_swap * len(answerable), "noun", rng)
    return negatives


def draw(rewritten: list[tuple[QARecord, str]], size: float, suffix: str,
         rng: np.random.Generator) -> list[QARecord]:
    """A seeded draw of up to `size` (record, rewritten question) pairs as unanswerable twins."""
    chosen = sorted(rng.choice(len(rewritten), size=min(len(rewritten), int(round(size))), replace=False))
    return [QARecord(id=f"{rewritten[i][0].id}-{suffix}", theme=rewritten[i][0].theme,
                     context=rewritten[i][0].context, question=rewritten[i][1], is_impossible=True)
            for i in chosen]
