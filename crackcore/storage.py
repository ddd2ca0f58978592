"""What a run leaves behind: atomic files, JSON, checkpoints (loaded with weights_only=True), and their provenance.

Paths inside the repository are recorded relative to its root (`ROOT`), so records compare across checkouts.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from .device import cpu_name


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
