"""Where and how code runs: device and precision choice, seeding, provenance, atomic files, checkpoints."""
from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent  # the repository root, whatever the working directory


class CheckpointError(ValueError):
    """A file that is not a crackcore checkpoint, or one of another variant."""


def portable_path(path: str | Path) -> str:
    """A path inside the repository as a root-relative string, so records and configs compare across checkouts."""
    if not str(path):
        return ""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


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


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def git_dirty() -> bool | None:
    """True when tracked files differ from the commit: the commit alone then does not name the code that ran."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


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


def provenance(device: torch.device | None = None, precision: str | None = None) -> dict:
    """What a result needs next to it to be reproducible: versions, commit, machine, device, precision."""
    import torchvision

    info = {"crackcore": __import__("crackcore").__version__, "torch": str(torch.__version__),
            "torchvision": str(torchvision.__version__), "numpy": np.__version__, "python": platform.python_version(),
            "git_commit": git_commit(), "git_dirty": git_dirty(), "machine": platform.machine(),
            "cpu_threads": torch.get_num_threads()}
    if device is not None:
        info["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({cpu_name()})"
    if precision is not None:
        info["precision"] = precision
    return info


def atomic_write(path: str | Path, write) -> None:
    """Write via `write(tmp_path)` to a temporary file beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (checkpoints are tens of MB)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_json(path: str | Path, obj) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n"))


def _jsonable(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Atomic torch.save of a dict of tensors and plain values (loadable with weights_only=True)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path, variant: str | None = None) -> dict:
    """torch.load(weights_only=True) a crackcore checkpoint, checking it names the expected variant."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, or a pickle that needs arbitrary code: never unpickle it
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(f"{path} is not a readable crackcore checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or "model" not in state or "variant" not in state:
        raise CheckpointError(f"{path} is not a crackcore checkpoint (no 'model'/'variant' entries)")
    if variant is not None and state["variant"] != variant:
        raise CheckpointError(f"{path} holds a '{state['variant']}' model, not '{variant}'")
    return state


def load_model(path: str | Path, variant: str | None = None, device: str | torch.device = "cpu"):
    """Build the checkpoint's variant and load its weights (fp16 checkpoints are widened to fp32)."""
    from .models import build_model

    state = load_checkpoint(path, variant)
    model = build_model(state["variant"])
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    weights.setdefault("wh_scale", torch.tensor(1.0))  # older checkpoints' size heads regressed pixels unscaled
    model.load_state_dict(weights)
    return model.to(device).eval(), state
