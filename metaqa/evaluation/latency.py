"""Timing helpers for latency benchmarks: per-call wall times, percentile summaries, throughput,
thread limits and on-disk model size. Library code: no stage, no config, no logging of results.

Times come from `time.perf_counter` and are reported in milliseconds. Percentiles use numpy's
linear interpolation, so p50 <= p95 <= p99 always holds for the same samples.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
PERCENTILES = (50, 95, 99)
WEIGHT_SUFFIXES = (".onnx", ".onnx_data", ".data", ".safetensors", ".bin", ".pt")


def time_calls(fn: Callable[[T], Any], items: Sequence[T], warmup: int = 10,
               repeats: int = 1) -> tuple[np.ndarray, list[Any]]:
    """Call `fn(item)` for every item, `repeats` passes, after `warmup` untimed calls.

    Warm-up calls cycle over the items (so `warmup` may exceed `len(items)`). Returns (the wall
    time of every timed call in ms, in call order, shape (repeats * len(items),), the outputs
    of the first timed pass).
    """
    if not items:
        raise ValueError("no items to time")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup={warmup}, repeats={repeats}: need warmup >= 0 and repeats >= 1")
    for item in itertools.islice(itertools.cycle(items), warmup):
        fn(item)
    times = np.empty(repeats * len(items), dtype=np.float64)
    outputs: list[Any] = []
    k = 0
    for r in range(repeats):
        for item in items:
            t0 = time.perf_counter()
            out = fn(item)
            times[k] = (time.perf_counter() - t0) * 1e3
            k += 1
            if r == 0:
                outputs.append(out)
    return times, outputs


def time_once(fn: Callable[[], T], repeats: int = 1) -> tuple[float, T]:
    """(median wall seconds over `repeats` calls of `fn()`, the last call's output)."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: need 1 or more")
    seconds, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - t0)
    return float(np.median(seconds)), out


def throughput(fn: Callable[[], Any], n_items: int, repeats: int = 1) -> tuple[float, Any]:
    """(items per second of one `fn()` call that processes `n_items`, median over `repeats`; output)."""
    seconds, out = time_once(fn, repeats)
    return (n_items / seconds if seconds > 0 else float("inf")), out


def latency_stats(times_ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """p50/p95/p99/mean/std/min/max (ms) and n of a sample of per-call latencies."""
    x = np.asarray(times_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no latencies to summarise")
    p = np.percentile(x, PERCENTILES)
    stats = {f"p{q}_ms": float(v) for q, v in zip(PERCENTILES, p)}
    stats.update(mean_ms=float(x.mean()), std_ms=float(x.std()), min_ms=float(x.min()),
                 max_ms=float(x.max()), n=int(x.size))
    return stats


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `torch.set_num_threads(threads)` (None / 0: unchanged), then restore."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_size_mb(model_dir: str | Path) -> float:
    """MiB of the weights in a model dir (ONNX graph + external data, or safetensors / bin);
    tokenizer and config files are not counted. A safetensors file wins over a .bin duplicate."""
    path = Path(model_dir)
    if path.is_file():
        return path.stat().st_size / 2**20
    files = [p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    if any(p.suffix == ".safetensors" for p in files):
        files = [p for p in files if p.suffix not in (".bin", ".pt")]
    if not files:
        raise FileNotFoundError(f"{path}: no weight files ({', '.join(WEIGHT_SUFFIXES)}) inside")
    return sum(p.stat().st_size for p in files) / 2**20
