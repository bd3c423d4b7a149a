"""Themes (domains) → deterministic splits and per-theme shard files.

Two kinds of held-out data: whole *themes* kept out of training (`test`, the out-of-domain
ground) and, within the training themes, a fraction of *questions* kept for in-domain
validation (`dev`). Shards are SQuAD v2 JSON, one file per theme and split, plus a manifest
that records which file holds which theme.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

from metaqa.data import readlog
from metaqa.data.formats import read_records, read_squad_json, unique_ids, write_squad_json
from metaqa.data.records import QARecord
from metaqa.fileio import replace_dir, write_csv

SPLITS = ("train", "dev", "test")
MANIFEST = "manifest.json"
SLUG_BYTES = 100  # a file name's stem, in UTF-8 bytes: far below the usual 255-byte limit


def _digest(theme: str, digits: int) -> str:
    return hashlib.blake2b(theme.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()[:digits]


def _slug(theme: str) -> str:
    """Letters and digits of any script (NFKC-normalised), `_` for the rest, capped with a hash."""
    slug = re.sub(r"[^\w.-]+", "_", unicodedata.normalize("NFKC", theme)).strip("_.-")
    if len(slug.encode()) > SLUG_BYTES:
        cut = slug.encode()[: SLUG_BYTES - 9].decode("utf-8", "ignore").rstrip("_.-")
        slug = f"{cut}-{_digest(theme, 8)}"
    return slug or f"theme-{_digest(theme, 8)}"


def theme_files(themes: Iterable[str]) -> dict[str, str]:
    """theme → shard file name, one file per theme: a short hash suffix where two themes' slugs
    would meet (`C++`/`C`, `a b`/`a_b`; compared case-blind, for macOS and Windows disks)."""
    names = {t: _slug(t) for t in sorted(set(themes))}
    for digits in (8, 16):  # a hashed slug could meet another theme's plain one: hash both, longer
        meets = Counter(n.casefold() for n in names.values())
        names = {t: n if meets[n.casefold()] == 1 else f"{_slug(t)}-{_digest(t, digits)}" for t, n in names.items()}
    return {t: f"{n}.json" for t, n in names.items()}


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
    """One row per theme: its shard file, role, paragraphs, questions and split sizes."""
    files = theme_files(r.theme for records in splits.values() for r in records)
    rows: dict[str, dict] = {}
    for split, records in splits.items():
        for r in records:
            row = rows.setdefault(r.theme, {
                "theme": r.theme, "file": files[r.theme],
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
    """Write every shard (into the manifest's `file` for its theme) and the manifest into a temp
    dir, check that each split reads back as the very questions given, then swap it in: never
    half-written, never short."""
    out_dir = Path(out_dir)
    files = {row["theme"]: row["file"] for row in manifest}
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for split, records in splits.items():
            by_theme: dict[str, list[QARecord]] = defaultdict(list)
            for r in records:
                by_theme[r.theme].append(r)
            (tmp / split).mkdir(parents=True, exist_ok=True)
            for theme, rows in by_theme.items():
                write_squad_json(rows, tmp / split / files[theme])
            _check_written(tmp / split, records, out_dir / split)
        (tmp / MANIFEST).write_text(json.dumps({**meta, "themes": manifest}, indent=2, ensure_ascii=False),
                                    encoding="utf-8")
        write_csv(tmp / "manifest.csv", manifest, list(manifest[0]) if manifest else ["theme"])
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return replace_dir(tmp, out_dir, stage="prep")


def _check_written(split_dir: Path, records: Sequence[QARecord], final: Path) -> None:
    """The shards of one split hold exactly `records`' ids, each once (the manifest's counts)."""
    wanted = Counter(r.id for r in records)
    got = Counter(r.id for f in split_dir.glob("*.json") for r in read_squad_json(f).records)
    if got != wanted:
        lost, extra = sorted((wanted - got).elements()), sorted((got - wanted).elements())
        raise ValueError(
            f"{final}: the shards read back {sum(got.values())} of {len(records)} questions "
            f"(missing ids {lost[:5]}, unexpected {extra[:5]}); nothing was written. Fix: give every "
            f"theme its own `file` in the manifest (metaqa.data.shards.manifest_rows does)")


def load_source(source: str | Path, fmt: str = "auto", duplicate_ids: str = "rename") -> list[QARecord]:
    """Records from a data file (any supported format) or a shard dir (every *.json in it); ids
    are unique over the whole dir too (see `metaqa.data.formats.unique_ids`)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"{path}: no *.json shards inside")
        records, places = [], []
        for f in files:
            read = read_records(f, "squad_json", duplicate_ids)
            records.extend(read.records)
            places.extend(f"{f.name} row {row}" for row in read.rows)
        records, warning = unique_ids(records, str(path), places, unit="place", policy=duplicate_ids)
        if warning:
            readlog.note(str(path), warning)
        return records
    if not path.exists():
        hint = ""
        if path.name in SPLITS:
            hint = " Run `metaqa prep data=<name>` first, or point the datamodule at a data file."
        raise FileNotFoundError(f"{path} does not exist.{hint}")
    return read_records(path, fmt, duplicate_ids).records
