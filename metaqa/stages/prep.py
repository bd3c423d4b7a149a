"""`metaqa prep`: read a QA dataset, validate it, split it by theme, write shards + manifest."""
from __future__ import annotations

import dataclasses
import logging

import hydra
from omegaconf import DictConfig

from metaqa.config import CONF_DIR, check_input_file
from metaqa.data.formats import read_records
from metaqa.data.shards import (
    choose_heldout_themes,
    manifest_rows,
    split_records,
    write_shards,
)
from metaqa.fileio import guard_output_dir, write_json
from metaqa.retrieval.negatives import entity_swap_negatives, hard_negatives, rewrite_negatives
from metaqa.synth.candidates import SPACY_MODEL, load_spacy
from metaqa.tracking.run import run_stage
from metaqa.tracking.tables import markdown_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    data = cfg.data
    path = check_input_file(cfg, "data.path")
    extra = [e.path for e in data.get("extra_unanswerable") or []]
    guard_output_dir(data.prep_dir, field="data.prep_dir", stage="prep", inputs=[path, *extra],
                     overwrite=cfg.overwrite)
    # warnings and repairs go to the log and summary.json (metaqa.data.readlog); an empty file stops here
    result = read_records(path, data.format, data.get("duplicate_ids", "rename"))
    records = result.records + extra_unanswerable(cfg)
    heldout = choose_heldout_themes((r.theme for r in records), list(data.heldout_themes or []),
                                    data.heldout_theme_fraction, data.seed)
    splits = split_records(records, heldout, data.dev_fraction, data.seed)
    add_negatives(splits, records, data.get("negatives"), data.seed)
    manifest = manifest_rows(splits, heldout)
    metrics = {
        "questions": len(records),
        "themes": len(manifest),
        "heldout_themes": len(heldout),
        "repaired": result.repaired,
        "unanswerable": sum(r.is_impossible for rows in splits.values() for r in rows),
        **{f"n_{s}": len(v) for s, v in splits.items()},
    }
    meta = {"source": str(path), "format": data.format, "seed": data.seed,
            "heldout_themes": heldout, "dev_fraction": data.dev_fraction, **metrics}
    out = write_shards(splits, manifest, data.prep_dir, meta)
    write_json(f"{cfg.paths.output_dir}/manifest.json", {**meta, "themes": manifest})
    columns = ["theme", "role", "paragraphs", "questions", "answerable_share", "n_train", "n_dev", "n_test"]
    print(markdown_table(manifest[:50], columns))
    if len(manifest) > 50:
        print(f"… {len(manifest) - 50} more themes in {out}/manifest.csv")
    log.info("shards → %s (%d train / %d dev / %d test questions)", out,
             metrics["n_train"], metrics["n_dev"], metrics["n_test"])
    return metrics


def add_negatives(splits: dict[str, list], records: list, negatives: DictConfig | None, seed: int) -> None:
    """Unanswerable twins of answerable questions (metaqa.retrieval.negatives), built per split so
    a question and its twin never straddle two: `fraction` of them get a BM25 hard-negative
    paragraph, `entity_swap` of them a same-paragraph question with one entity swapped, `negation`,
    `antonym` and `noun_swap` of them a same-paragraph question negated, with a word turned to its
    opposite, or with a common noun swapped."""
    if not negatives:
        return
    seed = negatives.get("seed", seed)
    negation, antonym = negatives.get("negation", 0.0), negatives.get("antonym", 0.0)
    noun_swap = negatives.get("noun_swap", 0.0)
    nlp = None
    if negatives.get("entity_swap") or negation or noun_swap:  # the parse only where a rewrite needs it
        nlp = load_spacy(negatives.get("spacy_model") or SPACY_MODEL, noun_chunks=bool(negation or noun_swap))
    for rows in splits.values():
        answerable = list(rows)  # a snapshot: no construction draws from another's twins
        if negatives.get("fraction"):
            rows.extend(hard_negatives(answerable, records, negatives.fraction, seed, progress=True))
        if negatives.get("entity_swap"):
            rows.extend(entity_swap_negatives(answerable, nlp, negatives.entity_swap, seed, progress=True))
        if negation or antonym or noun_swap:
            rows.extend(rewrite_negatives(answerable, nlp, negation, antonym, noun_swap, seed=seed, progress=True))


def extra_unanswerable(cfg: DictConfig) -> list:
    """The unanswerable questions of each `data.extra_unanswerable` file ({path, format}), e.g.
    the DevRev sample's, added to the main source (SQuAD v1.1 has none of its own); their ids
    get the file's name as a prefix."""
    rows = []
    for i, extra in enumerate(cfg.data.get("extra_unanswerable") or []):
        path = check_input_file(cfg, f"data.extra_unanswerable.{i}.path")
        found = [dataclasses.replace(r, id=f"{path.stem}:{r.id}")  # ids unique beside the main source's
                 for r in read_records(path, extra.get("format", "auto")).records if r.is_impossible]
        log.info("%s: %d unanswerable questions added", path, len(found))
        rows.extend(found)
    return rows


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prep")
def main(cfg: DictConfig) -> float | None:
    return run_stage("prep", run, cfg)
