import json

import pytest

from metaqa.data.records import Answer, QARecord
from metaqa.data.shards import (
    choose_heldout_themes,
    load_source,
    manifest_rows,
    split_records,
    write_shards,
)


def make_records(themes=("A", "B", "C", "D"), per_theme=10):
    out = []
    for t in themes:
        for i in range(per_theme):
            ctx = f"Paragraph {i % 3} of theme {t} mentions apples, pears and plums."
            if i % 4 == 0:
                out.append(QARecord(f"{t}{i}", t, ctx, "What is missing?", (), True))
            else:
                out.append(QARecord(f"{t}{i}", t, ctx, "Which fruit?", (Answer("pears", ctx.index("pears")),)))
    return out


def test_heldout_themes_are_deterministic_and_explicit_ones_are_checked():
    themes = list("ABCDEFGHIJ")
    a = choose_heldout_themes(themes, None, 0.3, seed=1)
    assert a == choose_heldout_themes(reversed(themes), None, 0.3, seed=1) and len(a) == 3
    assert choose_heldout_themes(themes, ["C"], 0.3, seed=1) == ["C"]
    with pytest.raises(ValueError, match="not in the data"):
        choose_heldout_themes(themes, ["Z"], 0.3, seed=1)


def test_splits_are_disjoint_deterministic_and_hold_out_whole_themes():
    records = make_records()
    splits = split_records(records, ["D"], dev_fraction=0.2, seed=0)
    ids = {s: {r.id for r in rs} for s, rs in splits.items()}
    assert ids == {s: {r.id for r in rs} for s, rs in split_records(records[::-1], ["D"], 0.2, 0).items()}
    assert not (ids["train"] & ids["dev"]) and not (ids["train"] & ids["test"])
    assert {r.theme for r in splits["test"]} == {"D"}
    assert len(splits["dev"]) == 6 and len(splits["train"]) == 24  # 20% of each training theme


def test_write_shards_manifest_and_load_back(tmp_path):
    records = make_records()
    splits = split_records(records, ["D"], 0.2, 0)
    manifest = manifest_rows(splits, ["D"])
    row = {m["theme"]: m for m in manifest}["A"]
    assert row["paragraphs"] == 3 and row["questions"] == 10 and row["answerable_share"] == 0.7
    assert row["role"] == "train" and {m["theme"]: m for m in manifest}["D"]["role"] == "heldout"
    out = write_shards(splits, manifest, tmp_path / "prep", {"seed": 0})
    assert sorted(p.name for p in (out / "train").iterdir()) == ["A.json", "B.json", "C.json"]
    assert json.loads((out / "manifest.json").read_text())["themes"] == manifest
    assert len(load_source(out / "test")) == 10
    # rewriting swaps the whole folder; no temp dirs are left behind
    write_shards(splits, manifest, tmp_path / "prep", {"seed": 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]


def test_load_source_says_to_run_prep(tmp_path):
    with pytest.raises(FileNotFoundError, match="metaqa prep"):
        load_source(tmp_path / "nowhere" / "train")
