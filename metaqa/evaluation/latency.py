"""Timing helpers for latency benchmarks: per-call wall times, interleaved repeats over several
systems, medians with bootstrap intervals, throughput, pinned threads and on-disk model size.
Library code: no stage, no config, no logging of results.

Times come from `time.perf_counter` and are reported in milliseconds. Percentiles use numpy's
linear interpolation, so p50 <= p95 <= p99 always holds for the same samples.

Fair comparisons (`interleaved_times`): every system answers the same questions; each repeat is
one pass of every system over all questions, the systems' order rotating from repeat to repeat, so
a slow phase of the machine (another process, frequency changes) is shared instead of landing on
one system. A question's latency is its median over repeats; a system's p50 is the median over
questions, with a 95% bootstrap interval over questions (`median_ci`), and a ratio of two
systems' p50 resamples the same questions for both (`ratio_ci`).
"""
from __future__ import annotations

import itertools
import os
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


def interleaved_times(systems: dict[str, Callable[[T], Any]], items: Sequence[T], warmup: int = 10,
                      repeats: int = 3) -> tuple[dict[str, np.ndarray], dict[str, list[Any]]]:
    """Per system, (repeats, len(items)) wall times in ms and the outputs of its first pass.

    Each system gets `warmup` untimed calls first; then repeat r runs the systems in an order
    rotated by r, each over every item."""
    if not items or not systems:
        raise ValueError("no items or no systems to time")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup={warmup}, repeats={repeats}: need warmup >= 0 and repeats >= 1")
    names = list(systems)
    for name in names:
        for item in itertools.islice(itertools.cycle(items), warmup):
            systems[name](item)
    times = {name: np.empty((repeats, len(items))) for name in names}
    outputs: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            fn = systems[name]
            for i, item in enumerate(items):
                t0 = time.perf_counter()
                out = fn(item)
                times[name][r, i] = (time.perf_counter() - t0) * 1e3
                if r == 0:
                    outputs[name].append(out)
    return times, outputs


def per_item_ms(times: np.ndarray) -> np.ndarray:
    """A question's latency: the median of its repeats ((repeats, n) → (n,))."""
    return np.median(np.atleast_2d(times), axis=0)


def median_ci(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the median of `values` with a percentile-bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    boot = np.median(values[rng.integers(0, len(values), size=(n_boot, len(values)))], axis=1)
    lo, hi = np.percentile(boot, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(np.median(values)), float(lo), float(hi)


def ratio_ci(numerator: np.ndarray, denominator: np.ndarray, n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> tuple[float, float, float]:
    """(ratio, low, high) of median(numerator) / median(denominator) over the same items, paired:
    each bootstrap draw resamples the items once for both."""
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in shape: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    boot = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    lo, hi = np.percentile(boot, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(np.median(a) / np.median(b)), float(lo), float(hi)


@contextmanager
def pinned_threads(threads: int) -> Iterator[dict]:
    """Run the block with torch, OMP, MKL and the tokenizers pinned: torch intra-op threads =
    `threads`, OMP/MKL_NUM_THREADS = `threads` (read by libraries that start inside the block), and
    the tokenizers' pool off (TOKENIZERS_PARALLELISM=false: one question is one pair anyway).
    onnxruntime threads are a session option: pass the same number to the session. Yields the
    settings to record beside the figures; restores everything after."""
    import torch

    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    before_env = {k: os.environ.get(k) for k in env}
    before = torch.get_num_threads()
    os.environ.update(env)
    torch.set_num_threads(int(threads))
    try:
        yield {"torch_threads": torch.get_num_threads(), "ort_intra_op_threads": int(threads),
               "omp_num_threads": threads, "tokenizers_parallelism": False}
    finally:
        torch.set_num_threads(before)
        for k, v in before_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


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
