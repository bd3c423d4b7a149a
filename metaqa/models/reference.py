"""Where the reference readers live (`scripts/bench_reader.py --reference`), so every benchmark
starts from them when they exist and says which one it used.

`outputs/readers/<name>/reader` is the full-data run; a session-sized run
(`--max-steps N`) is `outputs/readers/<name>_steps<N>/reader`, used when the full one is absent
(the one with the most steps, counting those of the run a warm start began from). Its int8 ONNX export, when made, sits beside it as `<run>_int8`.
"""
from __future__ import annotations

import re
from pathlib import Path


def reference_run(name: str, root: str | Path) -> Path | None:
    readers = Path(root) / "outputs" / "readers"
    full = readers / name
    if (full / "reader" / "config.json").is_file():
        return full
    budgeted = {p: steps for p in readers.glob(f"{name}_steps*")
                if (steps := budgeted_steps(name, p.name)) and (p / "reader" / "config.json").is_file()}
    return max(budgeted, key=budgeted.get, default=None)


def budgeted_steps(name: str, run: str) -> int | None:
    """Training steps behind budgeted run dir `run` of reference `name`: `<name>_steps<N>` has N; a
    warm start `<name>_steps<N>_from_<parent>` adds its parent's when the parent is one of these too
    (`_from_minilm_squad1` counts N). None for anything else, such as a `_first<M>` smoke run."""
    match = re.fullmatch(rf"{re.escape(name)}_steps(\d+)(?:_from_(.+))?", run)
    if match is None:
        return None
    return int(match.group(1)) + (budgeted_steps(name, match.group(2) or "") or 0)


def reference_reader(name: str, root: str | Path, onnx: bool = False) -> Path | None:
    """The reader dir (or, `onnx=True`, its int8 ONNX export dir) of reference `name`, or None."""
    run = reference_run(name, root)
    if run is None:
        return None
    path = run.with_name(run.name + "_int8") if onnx else run / "reader"
    return path if path.is_dir() else None
