"""Themes (domains) → deterministic splits and per-theme shard files.

Two kinds of held-out data: whole *themes* kept out of training (`test`, the out-of-domain
ground) and, within the training themes, a fraction of *questions* kept for in-domain
validation (`dev`). Shards are SQuAD v2 JSON, one file per theme and split, plus a manifest.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from metaqa.data.formats import read_records, write_squad_json
from metaqa.data.records import QARecord
from metaqa.fileio import replace_dir, write_csv

SPLITS = ("train", "dev", "test")
MANIFEST = "manifest.json"


def theme_slug(theme: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", theme).strip("_.") or "theme"


def choose_heldout_themes(
    themes: Iterable[str], heldout: Sequence[str] | None, fraction: float, seed: int
) -> list[str]:
    """Explicit `heldout` themes, else a seeded `fraction` of the sorted themes (≥ 1 if > 1 theme)."""
    themes = sorted(set(themes))
    if heldout:
        unknown = sorted(set(heldout) - set(themes))
        if unknown:
            raise ValueError(
                f"held-out themes {unknown} are not in the data; themes found: {themes[:20]}"
                f"{' …' if len(themes) > 20 else ''}. Fix: prep.heldout_themes=[...] with names above"
            )
        return sorted(heldout)
    if fraction <= 0 or len(themes) < 2:
        return []
    n = min(len(themes) - 1, max(1, round(fraction * len(themes))))
    return sorted(random.Random(seed).sample(themes, n))


def split_records(
    records: Sequence[QARecord], heldout_themes: Sequence[str], dev_fraction: float, seed: int
) -> dict[str, list[QARecord]]:
    """Held-out themes → test; in the rest, a seeded `dev_fraction` of each theme's questions → dev."""
    by_theme: dict[str, list[QARecord]] = defaultdict(list)
    for r in records:
        by_theme[r.theme].append(r)
    out: dict[str, list[QARecord]] = {s: [] for s in SPLITS}
    rng = random.Random(seed)
    for theme in sorted(by_theme):
        rows = by_theme[theme]
        if theme in heldout_themes:
            out["test"].extend(rows)
            continue
        ids = sorted(r.id for r in rows)
        dev_ids = set(rng.sample(ids, int(round(dev_fraction * len(ids)))))
        out["train"].extend(r for r in rows if r.id not in dev_ids)
        out["dev"].extend(r for r in rows if r.id in dev_ids)
    return out


def manifest_rows(splits: dict[str, list[QARecord]], heldout_themes: Sequence[str]) -> list[dict]:
    rows: dict[str, dict] = {}
    for split, records in splits.items():
        for r in records:
            row = rows.setdefault(r.theme, {
                "theme": r.theme, "slug": theme_slug(r.theme),
                "role": "heldout" if r.theme in heldout_themes else "train",
                "contexts": set(), "questions": 0, "answerable": 0,
                **{f"n_{s}": 0 for s in SPLITS},
            })
            row["contexts"].add(r.context)
            row["questions"] += 1
            row["answerable"] += not r.is_impossible
            row[f"n_{split}"] += 1
    table = []
    for theme in sorted(rows):
        row = rows[theme]
        paragraphs = len(row.pop("contexts"))
        answerable = row.pop("answerable")
        table.append({**row, "paragraphs": paragraphs,
                      "answerable_share": round(answerable / row["questions"], 4)})
    return table


def write_shards(splits: dict[str, list[QARecord]], manifest: list[dict], out_dir: str | Path,
                 meta: dict) -> Path:
    """Write every shard and the manifest into a temp dir, then swap it in: never half-written."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split, records in splits.items():
        by_theme: dict[str, list[QARecord]] = defaultdict(list)
        for r in records:
            by_theme[r.theme].append(r)
        (tmp / split).mkdir(parents=True, exist_ok=True)
        for theme, rows in by_theme.items():
            write_squad_json(rows, tmp / split / f"{theme_slug(theme)}.json")
    (tmp / MANIFEST).write_text(json.dumps({**meta, "themes": manifest}, indent=2))
    write_csv(tmp / "manifest.csv", manifest, list(manifest[0]) if manifest else ["theme"])
    return replace_dir(tmp, out_dir, stage="prep")


def load_source(source: str | Path, fmt: str = "auto") -> list[QARecord]:
    """Records from a data file (any supported format) or a shard dir (every *.json in it)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.json shards inside")
        return [r for f in files for r in read_records(f, "squad_json").records]
    if not path.exists():
        hint = ""
        if path.name in SPLITS:
            hint = " Run `metaqa prep data=<name>` first, or point the datamodule at a data file."
        raise FileNotFoundError(f"{path} does not exist.{hint}")
    return read_records(path, fmt).records
