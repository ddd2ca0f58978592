"""Where and how code runs: CPU or CUDA, bf16 autocast where the hardware has it, seeding, the host's description."""
from __future__ import annotations

import contextlib
import os
import platform
import random
import warnings
from pathlib import Path

import numpy as np
import torch


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present, else CPU; an explicit choice that cannot be honoured is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    return dev


# oneDNN ISA caps under which its bf16 kernels stay native (its documented ONEDNN_MAX_CPU_ISA values)
BF16_ISAS = ("ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512",
             "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2")


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 dot products (AVX-512 BF16 or AMX), so bf16 autocast pays off.

    A cap on oneDNN's instruction set (ONEDNN_MAX_CPU_ISA, e.g. AVX2 to imitate an older CPU) turns those kernels
    into slow reference code, so under such a cap the answer is False, as on the older CPU itself.
    """
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    if cap and cap not in BF16_ISAS:
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_precision(device: torch.device, precision: str = "auto") -> str:
    """bf16 autocast where the hardware supports it, else fp32."""
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {precision!r}")
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        # honoured, since it was asked for, but without native kernels bf16 runs many times slower than fp32
        warnings.warn("bf16 was asked for on a CPU without native bf16 (AVX-512 BF16 or AMX): autocast emulates it, "
                      "many times slower than fp32; precision 'auto' picks fp32 here", RuntimeWarning, stacklevel=2)
    return precision


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` ('fp32' disables it)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), or the architecture where that is not readable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")  # what decides a CPU's conv speed here


def machine(device: torch.device | None = None) -> dict:
    """The host a speed was measured on: date (UTC), CPU model, its vector extensions, threads, device."""
    import datetime

    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    dev = torch.cuda.get_device_name(device) if device is not None and device.type == "cuda" else "cpu"
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"), "cpu": cpu_name(),
            "isa": "+".join(f for f in ISA_FLAGS if f in flags) or platform.machine(),
            "threads": torch.get_num_threads(), "device": dev}
