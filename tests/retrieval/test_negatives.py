"""Hard unanswerable twins: the most similar other paragraph of the article without the answer."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from metaqa.config import PACKAGE_DIR, ConfigError
from metaqa.data.records import Answer, QARecord
from metaqa.data.shards import load_source
from metaqa.retrieval.negatives import (
    ANTONYMS,
    antonym_swapped,
    different,
    entity_swap_negatives,
    hard_negatives,
    negated,
    noun_swapped,
    question_nouns,
    rewrite_negatives,
)
from metaqa.stages import prep
from metaqa.synth.candidates import load_spacy

PARAGRAPHS = [
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",  # own
    "Gustave Eiffel's company built the tower; the World's Fair of 1889 opened in May.",  # similar, has answer
    "The tower in Paris was built for the World's Fair and painted bronze.",  # similar, no answer
    "Croissants are a popular breakfast pastry.",  # dissimilar
]


def record(i: int, context: str, question: str, answer: str, theme: str = "Paris") -> QARecord:
    return QARecord(id=f"q{i}", theme=theme, context=context, question=question,
                    answers=(Answer(answer, context.index(answer)),))


def test_the_twin_asks_the_most_similar_paragraph_that_lacks_the_answer():
    q = record(0, PARAGRAPHS[0], "When was the tower for the World's Fair in Paris completed?", "1889")
    others = [record(i, p, "What?", p.split()[0]) for i, p in enumerate(PARAGRAPHS[1:], 1)]
    (neg,) = hard_negatives([q], [q, *others], fraction=1.0)
    assert neg.context == PARAGRAPHS[2]  # not its own, not the one holding "1889", not the random one
    assert neg.is_impossible and neg.answers == () and neg.question == q.question
    assert neg.id == "q0-neg" and neg.theme == "Paris"


def test_fraction_seed_and_themes():
    rows = [record(i, PARAGRAPHS[i % 3], f"question {i} about the tower?", "tower" if i % 3 != 0 else "1889")
            for i in range(30)]
    rows = [r for r in rows if r.answers[0].text in r.context]
    half = hard_negatives(rows, fraction=0.5, seed=1)
    assert half == hard_negatives(rows, fraction=0.5, seed=1)  # seeded
    assert len(half) <= round(0.5 * len(rows)) and half
    for neg in half:
        source = next(r for r in rows if r.id == neg.id.removesuffix("-neg"))
        assert neg.context != source.context and source.answers[0].text.lower() not in neg.context.lower()
    lonely = record(99, "A theme with one paragraph only.", "What?", "one", theme="Alone")
    assert hard_negatives([lonely], fraction=1.0) == []  # nothing to borrow from


def test_prep_with_both_kinds_of_negatives_keeps_each_twin_in_its_questions_split(stage_cfg, tmp_path):
    out = tmp_path / "data"
    metrics = prep.run(stage_cfg("prep", [f"data.prep_dir={out}", "+data.negatives.fraction=0.5",
                                          "+data.negatives.entity_swap=0.5", "+data.negatives.negation=0.3",
                                          "+data.negatives.noun_swap=0.3", "+data.negatives.seed=0"]))
    splits = {s: {r.id: r for r in load_source(str(out / s))} for s in ("train", "dev", "test")}
    for suffix in ("-neg", "-swap", "-not", "-noun"):
        twins = {s: [i for i in rows if i.endswith(suffix)] for s, rows in splits.items()}
        assert sum(map(len, twins.values())) > 0, suffix
        for split, ids in twins.items():
            for i in ids:
                source = splits[split][i.removesuffix(suffix)]  # its answerable source is in the same split
                assert splits[split][i].is_impossible and not source.is_impossible
                assert (splits[split][i].context == source.context) == (suffix != "-neg")
    assert metrics["unanswerable"] == sum(r.is_impossible for rows in splits.values() for r in rows.values())
    assert json.loads((tmp_path / "prep" / "manifest.json").read_text())["unanswerable"] == metrics["unanswerable"]


def test_prep_adds_the_unanswerable_rows_of_extra_files(stage_cfg, tmp_path):
    plain = prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'a'}"]))
    extra = "+data.extra_unanswerable=[{path:${paths.package_dir}/data/sample/sample_qa.csv,format:devrev_csv}]"
    more = prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'b'}", extra], out=tmp_path / "prep_b"))
    assert more["unanswerable"] == 2 * plain["unanswerable"]  # the same file's unanswerable rows, again
    assert more["questions"] == plain["questions"] + plain["unanswerable"]
    ids = [r.id for s in ("train", "dev", "test") for r in load_source(str(tmp_path / "b" / s))]
    assert len(ids) == len(set(ids)) and any(i.startswith("sample_qa:") for i in ids)
    # an extra file inside the folder the rerun would replace is an input: refused, not deleted
    inside = tmp_path / "b" / "extra.csv"
    shutil.copy(PACKAGE_DIR / "data" / "sample" / "sample_qa.csv", inside)
    with pytest.raises(ConfigError, match="holds, the input"):
        prep.run(stage_cfg("prep", [f"data.prep_dir={tmp_path / 'b'}",
                                    f"+data.extra_unanswerable=[{{path:{inside},format:devrev_csv}}]"],
                           out=tmp_path / "prep_c"))
    assert inside.exists()


def test_entity_swap_keeps_the_paragraph_and_swaps_in_an_entity_it_does_not_mention():
    nlp = load_spacy()
    tower = "The Eiffel Tower in Paris was completed in 1889 by Gustave Eiffel."
    bridge = "The Golden Gate Bridge in San Francisco opened in 1937."
    rows = [record(0, tower, "Who completed the tower in Paris?", "Gustave Eiffel", theme="Landmarks"),
            record(1, bridge, "When did the bridge in San Francisco open?", "1937", theme="Landmarks"),
            record(2, tower, "When was the tower in Paris completed?", "1889", theme="Landmarks")]
    negatives = entity_swap_negatives(rows, nlp, fraction=1.0, seed=0)
    assert negatives == entity_swap_negatives(rows, nlp, fraction=1.0, seed=0)  # seeded
    assert {n.id for n in negatives} == {"q0-swap", "q1-swap", "q2-swap"}
    for neg in negatives:
        source = next(r for r in rows if f"{r.id}-swap" == neg.id)
        assert neg.is_impossible and neg.answers == () and neg.context == source.context
        assert neg.question != source.question
        swapped_in = {"Paris": "San Francisco", "San Francisco": "Paris"}  # the only GPEs of the theme
        old = next(e for e in swapped_in if e in source.question)
        assert neg.question == source.question.replace(old, swapped_in[old])
    assert entity_swap_negatives(rows, nlp, fraction=0.0) == []
    # a theme of one paragraph has no entity the paragraph does not mention
    assert entity_swap_negatives([rows[0], rows[2]], nlp, fraction=1.0) == []


def test_a_swap_is_never_a_part_or_an_extension_of_the_entity():
    assert not different("Sichuan Province", "Sichuan", "an earthquake in sichuan")
    assert not different("Sichuan", "Sichuan Province", "the province")
    assert not different("Paris", "London", "london and paris")  # the paragraph mentions it
    assert different("Paris", "London", "a fog over london")


@pytest.mark.parametrize("question, expected", [
    ("When did Beyonce start becoming popular?", "When did Beyonce not start becoming popular?"),
    ("When was the university founded?", "When was the university not founded?"),
    ("How many survivors were found?", "How many survivors were not found?"),
    ("What will the current fleet be replaced with?", "What will the current fleet not be replaced with?"),
    ("What is the name of the treaty?", "What is not the name of the treaty?"),
    ("Who founded the company?", None),  # no auxiliary: "did not found" would need the lemma
    ("Why didn't he go?", None),  # already negated
])
def test_negation_follows_the_parse(question, expected):
    assert negated(load_spacy(noun_chunks=True)(question)) == expected


def test_an_antonym_swap_never_uses_a_word_the_paragraph_or_question_has():
    rng = np.random.default_rng(0)
    assert antonym_swapped("What was the first treaty?", "The treaty of 1920.", rng) == "What was the last treaty?"
    assert antonym_swapped("What was the first treaty?", "The last treaty, of 1920.", rng) is None
    assert antonym_swapped("Did prices rise or fall?", "Prices in 1920.", rng) is None  # a choice, not a claim
    assert antonym_swapped("Who heads the Public Safety office?", "It has one.", rng) is None  # a name
    assert antonym_swapped("Most of what?", "Cars.", rng) == "Least of what?"  # case kept
    assert all(ANTONYMS[b] for b in ANTONYMS.values())  # every opposite swaps back to something


def test_rewrites_are_seeded_same_paragraph_twins_in_the_asked_shares():
    context = "The first treaty was signed in 1920 in Paris and ratified by the senate."
    rows = [record(i, context, q, "1920") for i, q in enumerate([
        "When was the first treaty signed?", "In what year was the first treaty ratified?",
        "When was the treaty signed?", "Where was the first treaty signed?"] * 5)]
    nlp = load_spacy(noun_chunks=True)
    twins = rewrite_negatives(rows, nlp, negation=0.5, antonym=0.25, seed=3)
    assert twins == rewrite_negatives(rows, nlp, negation=0.5, antonym=0.25, seed=3)
    negations = [t for t in twins if t.id.endswith("-not")]
    antonyms = [t for t in twins if t.id.endswith("-ant")]
    assert len(negations) == 10 and len(antonyms) == 5
    by_id = {r.id: r for r in rows}
    for twin in twins:
        source = by_id[twin.id.rsplit("-", 1)[0]]
        assert twin.is_impossible and twin.answers == () and twin.context == source.context
    assert all(" not " in t.question for t in negations)
    assert all("last" in t.question and "first" not in t.question for t in antonyms)
    assert rewrite_negatives(rows, None, negation=0.0, antonym=0.0) == []  # no parse needed for none
    with pytest.raises(ValueError, match="negation=2"):
        rewrite_negatives(rows, nlp, negation=2)


def test_a_noun_swap_asks_about_a_noun_of_the_article_that_the_paragraph_lacks():
    context = "The tentacles of ctenophores are coiled. Each tentacle bears colloblasts that capture prey."
    questions = ["What shape are the tentacles typically?", "What do colloblasts capture?",
                 "Which muscles move the combs?", "What is the size of the cells?", "What is the shape of a tentacle?"]
    rows = [record(i, context, q, "coiled", theme="Ctenophora") for i, q in enumerate(questions)]
    nlp = load_spacy(noun_chunks=True)
    docs = list(nlp.pipe(questions))
    nouns = question_nouns(rows, docs)["Ctenophora"]
    assert ("muscles", "NNS") in nouns and ("size", "NN") in nouns
    rng = np.random.default_rng(0)
    swapped = noun_swapped(docs[0], context, nouns, rng)  # tentacles (in the paragraph) → a plural it lacks
    assert swapped in {"What shape are the muscles typically?", "What shape are the combs typically?",
                       "What shape are the cells typically?"}
    assert noun_swapped(docs[2], context, nouns, rng) is None  # none of its nouns is in the paragraph
    # never a variant of the noun it replaces, never a noun the question already has
    assert "tentacles" not in noun_swapped(docs[4], context, nouns, rng)


def test_noun_swaps_come_after_the_other_rewrites_and_leave_their_draws_alone():
    context = "The first treaty was signed in 1920 in Paris and ratified by the senate of the republic."
    questions = ["When was the first treaty signed?", "Who ratified the treaty?", "When did the senate ratify it?",
                 "Where was the treaty signed?", "Who drafted the constitution?"] * 4  # the last: a noun it lacks
    rows = [record(i, context, q, "1920") for i, q in enumerate(questions)]
    nlp = load_spacy(noun_chunks=True)
    without = rewrite_negatives(rows, nlp, negation=0.25, antonym=0.1, seed=1)
    with_nouns = rewrite_negatives(rows, nlp, negation=0.25, antonym=0.1, noun_swap=0.25, seed=1)
    assert with_nouns[: len(without)] == without
    nouns = with_nouns[len(without):]
    assert len(nouns) == 5 and all(t.id.endswith("-noun") and t.is_impossible for t in nouns)  # a quarter of 20
    by_id = {r.id: r for r in rows}
    for twin in nouns:
        source = by_id[twin.id.rsplit("-", 1)[0]]
        assert twin.context == source.context and twin.question != source.question
        changed = set(twin.question.rstrip("?").split()) - set(source.question.rstrip("?").split())
        assert changed == {"constitution"}
