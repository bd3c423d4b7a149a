"""Writes that never leave half a file or half a folder behind after a crash."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def write_json(path: str | Path, payload: Any) -> None:
    """Atomic JSON write (temp file + rename): readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable))
    tmp.replace(path)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x)}")


def replace_dir(built: str | Path, final: str | Path) -> Path:
    """Swap a fully written folder in for `final` by renames on one filesystem."""
    built, final = Path(built), Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    built.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final
