"""What a figure was measured on: CPU model, cores, the ISA flags that decide int8 / bf16 speed,
the thread settings in force, and library versions. Every benchmark result carries it."""
from __future__ import annotations

import os
import platform
from pathlib import Path

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM", "RAYON_NUM_THREADS")


def cpu_info(cpuinfo: str | None = None) -> dict:
    """CPU model and ISA flags from /proc/cpuinfo (or the text given), plus the core count."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    model, flags = platform.processor() or platform.machine(), set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return {"cpu_model": model, "cpu_count": os.cpu_count(), **{f: f in flags for f in ISA_FLAGS}}


def thread_settings() -> dict:
    """Threads in force now: torch intra-op and the environment variables that steer OMP, MKL and
    the tokenizers' thread pool (onnxruntime threads are a session option, recorded per row)."""
    settings = {name.lower(): os.environ.get(name) for name in THREAD_ENV}
    try:
        import torch

        settings["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return settings


def machine_info() -> dict:
    """CPU, threads and versions, for `docs/results/*.json` and bench.json."""
    info = {**cpu_info(), "python": platform.python_version()}
    for module in ("torch", "transformers", "onnxruntime"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    return info
