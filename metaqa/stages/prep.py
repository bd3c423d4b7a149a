"""`metaqa prep`: read a QA dataset, validate it, split it by theme, write shards + manifest."""
from __future__ import annotations

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
from metaqa.tracking.run import run_stage
from metaqa.tracking.tables import markdown_table

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    data = cfg.data
    path = check_input_file(cfg, "data.path")
    guard_output_dir(data.prep_dir, field="data.prep_dir", stage="prep", inputs=[path], overwrite=cfg.overwrite)
    # warnings and repairs go to the log and summary.json (metaqa.data.readlog); an empty file stops here
    result = read_records(path, data.format, data.get("duplicate_ids", "rename"))
    records = result.records
    heldout = choose_heldout_themes((r.theme for r in records), list(data.heldout_themes or []),
                                    data.heldout_theme_fraction, data.seed)
    splits = split_records(records, heldout, data.dev_fraction, data.seed)
    manifest = manifest_rows(splits, heldout)
    metrics = {
        "questions": len(records),
        "themes": len(manifest),
        "heldout_themes": len(heldout),
        "repaired": result.repaired,
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


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prep")
def main(cfg: DictConfig) -> float | None:
    return run_stage("prep", run, cfg)
