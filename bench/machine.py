"""What a figure was measured on: the CPU by name, the instruction-set flags that decide its speed, its
core count, the date and the torch version. Used by the benchmark (the report's meta) and by
scripts/run_notebooks.py (beside the book's times). Nothing here imports torch: the torch version is
read from the installed package's metadata."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# The flags the appendix names: AVX2 (fp32 speed), and native bf16 (AVX512-BF16 or AMX-BF16), without
# which torch emulates bf16 far slower than fp32.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# the same list as mtl_helpers.encoder.NATIVE_BF16_FLAGS (this module does not import the package: no torch)
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")


def cpuinfo_field(name: str, text: str | None = None) -> str | None:
    """The first `name : value` line of /proc/cpuinfo (or of `text`), else None."""
    if text is None:
        try:
            text = CPUINFO.read_text()
        except OSError:
            return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def cpu_flags(text: str | None = None) -> set[str]:
    """The CPU's flags from /proc/cpuinfo (empty where there is none: macOS, Windows)."""
    return set((cpuinfo_field("flags", text) or "").split())


def cpu_model(text: str | None = None) -> str:
    return cpuinfo_field("model name", text) or platform.processor() or platform.machine() or "unknown CPU"


def native_bf16(flags: set[str]) -> bool:
    return any(flag in flags for flag in NATIVE_BF16)


def torch_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_description(text: str | None = None) -> dict:
    """The CPU a measurement came from: model name, the flags that matter (True/False; None where
    /proc/cpuinfo is missing), logical CPUs, torch version and the date (UTC)."""
    flags = cpu_flags(text)
    known = bool(flags)
    return {
        "cpu_model": cpu_model(text),
        "cpu_flags": {flag: (flag in flags) if known else None for flag in FLAGS},
        "native_bf16": native_bf16(flags) if known else None,
        "logical_cpus": os.cpu_count(),
        "torch": torch_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
