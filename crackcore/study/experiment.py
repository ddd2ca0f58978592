"""The paper's experiment as incremental steps shared by the notebooks and the Makefile: data → train → evaluate.

Two profiles: `paper` (§IV-B and §V-A protocol, results committed under results/) and `quick` (a few dozen images,
two epochs, fp32 so the numbers are identical run to run; everything under scratch/quick/). Each `ensure_*` step
does its work only when its output is missing or was made from other inputs, so re-running a notebook after an
interruption resumes instead of starting over.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import synth, synth_crack, synth_files, synth_surface
from ..data.synth import SynthConfig
from ..data.synth_files import write_dataset
from ..engine.evaluate import EvalConfig, evaluate, wide_pool_key
from ..engine.config import ConfigMismatch, TrainConfig, comparable, recorded_config
from ..engine.train import train
from ..flags import with_flags
from ..models import STRIDE, VARIANTS
from ..paper import PAPER_SPLITS
from ..storage import ROOT, file_sha256, load_checkpoint, portable_path, save_checkpoint, save_json


@dataclass(frozen=True)
class Profile:
    """How big a run is and where it writes; notebooks take its name as their `profile` parameter.

    A profile chooses sizes only: the split sizes, and through `train` how long training runs. Every training knob
    keeps its one home in `TrainConfig`, whose defaults are §IV-B's protocol.
    """

    name: str
    train_size: int
    test_size: int
    background_size: int
    data: Path  # the synthetic data set
    runs: Path  # one training run folder per variant and seed
    results: Path  # figures/, tables/, metrics/ of this profile
    train: TrainConfig = TrainConfig()  # §IV-B's protocol or a shorter one; variant, data, out, seed set per run

    def results_dir(self, kind: str) -> Path:
        """results/{figures,tables,metrics,...} for this profile, created on demand."""
        d = self.results / kind
        d.mkdir(parents=True, exist_ok=True)
        return d


PROFILES = {
    "paper": Profile("paper", PAPER_SPLITS["train"], PAPER_SPLITS["test"], PAPER_SPLITS["background"],
                     ROOT / "data" / "synth", ROOT / "runs" / "paper", ROOT / "results"),
    # two epochs in fp32, so that the numbers are the same run to run on one machine
    "quick": Profile("quick", 48, 24, 48, ROOT / "scratch" / "quick" / "data", ROOT / "runs" / "quick",
                     ROOT / "scratch" / "quick", TrainConfig(epochs=2, lr_drop_epoch=1, precision="fp32")),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[name]


def synth_config(profile: Profile, seed: int = 0):
    """The generator's defaults with this profile's split sizes (a quick set is a prefix of the paper set)."""

    return dataclasses.replace(SynthConfig(), seed=seed, n_train=profile.train_size, n_test=profile.test_size,
                               n_background=profile.background_size, n_shift=profile.test_size,
                               n_shift_background=profile.test_size)


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_fingerprint(profile: Profile, seed: int = 0) -> str:
    """Changes whenever the generator's settings or its source change: then the data are regenerated."""

    src = b"".join(Path(m.__file__).read_bytes() for m in (synth, synth_crack, synth_surface, synth_files))
    return fingerprint([dataclasses.asdict(synth_config(profile, seed)), hashlib.sha256(src).hexdigest()])


def ensure_data(profile: Profile, seed: int = 0, progress: bool = True) -> str:
    """Generate this profile's synthetic data unless the same generator already wrote them; returns the pixels' hash.

    Models depend on the pixels' hash, not on the source: a refactoring that draws the same images retrains nothing.
    """

    root, src = profile.data, source_fingerprint(profile, seed)
    stamp = root / "FINGERPRINT.json"
    if stamp.exists():
        known = json.loads(stamp.read_text())
        if known["source"] == src:
            return known["pixels"]
    if root.exists():
        shutil.rmtree(root)
    summary = write_dataset(root, synth_config(profile, seed), progress=progress)
    stamp.write_text(json.dumps({"source": src, "pixels": summary["pixels_sha256"]}) + "\n")
    return summary["pixels_sha256"]


def train_config(profile: Profile, variant: str, seed: int = 0, **overrides):
    """§IV-B's protocol at this profile's size; each set of `overrides` trains in a run folder named after them."""
    name = f"{variant}-seed{seed}" + "".join(f"-{k}={str(v).replace('/', '_')}" for k, v in sorted(overrides.items()))
    return with_flags(profile.train, **{"variant": variant, "data": str(profile.data), "out": str(profile.runs / name),
                                         "seed": seed, **overrides})


def ensure_trained(profile: Profile, variant: str, seed: int = 0, progress: bool = True, **overrides) -> Path:
    """Train (or resume, or skip) one variant; a run made from other data is moved aside and redone."""

    fp = ensure_data(profile, progress=progress)  # one data set per profile; `seed` seeds training only
    cfg = train_config(profile, variant, seed, **overrides)
    out = Path(cfg.out)
    stamp_run(out, fp)
    try:
        _restore_published(profile, cfg, fp)
        train(cfg, resume=True, progress=progress)
    except ConfigMismatch:  # the code's defaults changed since this run: keep it aside, train anew
        _move_aside(out)
        stamp_run(out, fp)
        _restore_published(profile, cfg, fp)
        train(cfg, resume=True, progress=progress)
    return out / "model.pt"


def _restore_published(profile: Profile, cfg, pixels: str) -> bool:
    """Start from the committed fp16 checkpoint when it was trained with exactly `cfg` on these pixels (perhaps on
    another machine): its weights widened to fp32 become the run's model.pt, so a fresh clone evaluates instead of
    retraining for hours. Any difference in settings or data leaves the run to be trained here."""

    out = Path(cfg.out)
    published = profile.results / "checkpoints" / f"{cfg.variant}-seed{cfg.seed}.fp16.pt"
    if (out / "model.pt").exists() or (out / "last.pt").exists() or not published.exists():
        return False
    state = load_checkpoint(published, cfg.variant)
    asked = recorded_config(cfg)
    if (comparable(state.get("config") or {}) != comparable(asked) or state.get("data_pixels_sha256") != pixels
            or "history" not in state):
        return False
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    history = state["history"]
    save_checkpoint(out / "model.pt", {**{k: v for k, v in state.items() if k not in ("dtype", "data_pixels_sha256")},
                                       "model": weights, "restored_from": portable_path(published)})
    (out / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    (out / "config.json").write_text(json.dumps(asked, indent=2) + "\n")
    return True


def stamp_run(out: Path, fp: str) -> None:
    """Make `out` a run folder of the data with pixel hash `fp`: a run made from other data (or unstamped) is moved
    aside to `<out>.stale`, never resumed on data it did not see."""
    stamp = out / "DATA_FINGERPRINT"
    if out.exists() and (not stamp.exists() or stamp.read_text().strip() != fp):
        _move_aside(out)
    out.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp + "\n")


def _move_aside(out: Path) -> None:
    stale = out.with_name(out.name + ".stale")
    shutil.rmtree(stale, ignore_errors=True)
    out.rename(stale)


def ensure_evaluated(profile: Profile, variant: str, seed: int = 0, progress: bool = True) -> dict:
    """Table I/II metrics of one trained variant, recomputed only when the checkpoint changed.

    A run whose folder is gone (a fresh clone, a new working session) keeps its committed metrics when they name the
    same data and the same settings: only seed 0's checkpoints are committed, so the other seeds' results would
    otherwise cost hours of retraining on every new machine.
    """
    out = profile.results_dir("metrics") / f"{variant}-seed{seed}.json"
    run = Path(train_config(profile, variant, seed).out)
    if out.exists() and not (run / "model.pt").exists() and not (run / "last.pt").exists():
        m = json.loads(out.read_text())
        if _finished_before(m, profile, variant, seed, ensure_data(profile, progress=progress)):
            return m
    ckpt = ensure_trained(profile, variant, seed, progress)
    ckpt_fp = file_sha256(ckpt)[:16]
    if out.exists():
        m = json.loads(out.read_text())
        if m.get("checkpoint_sha") == ckpt_fp and _complete(m):
            return m
    cfg = EvalConfig(checkpoint=str(ckpt), data=str(profile.data), out="", precision=profile.train.precision)
    m = evaluate(cfg, progress=progress)
    m["checkpoint_sha"] = ckpt_fp
    m["data_pixels_sha256"] = (ckpt.parent / "DATA_FINGERPRINT").read_text().strip()
    save_json(out, m)
    return json.loads(out.read_text())


def _complete(m: dict) -> bool:
    # metrics from before the diagnosis, its box-NMS columns, or (stride 1) its wide-window decode are redone
    d = m.get("diagnosis", {})
    return ("ap07_box_nms_0.5" in d.get("test", {})
            and (STRIDE.get(m.get("variant"), 1) != 1 or wide_pool_key("test") in d))


def _finished_before(m: dict, profile: Profile, variant: str, seed: int, pixels: str) -> bool:
    """Were these metrics measured on a run of exactly today's settings, trained on exactly these pixels?"""
    asked = recorded_config(train_config(profile, variant, seed))
    return (_complete(m) and m.get("data_pixels_sha256") == pixels
            and comparable(m.get("train_config") or {}) == comparable(asked))


def seed_runs(profile: Profile, seeds, variants=None, progress: bool = False) -> dict[str, dict[int, dict]]:
    """Table I as a distribution: each variant's metrics for each seed, {variant: {seed: metrics}}, training what
    is missing (seed-major, so that an interrupted sweep leaves whole seeds to compare)."""
    # "0 1 2" as make's SEEDS passes it through papermill, a single int, or a list
    seeds = [int(s) for s in (str(seeds).split() if isinstance(seeds, (str, int)) else seeds)]
    variants = list(variants or VARIANTS)
    done = {(v, s): ensure_evaluated(profile, v, s, progress) for s in seeds for v in variants}
    return {v: {s: done[v, s] for s in seeds} for v in variants}


def publish_checkpoint(profile: Profile, variant: str, seed: int = 0) -> Path:
    """A half-precision copy of a trained model under results/checkpoints/ (small enough to commit; loads widened)."""
    ckpt = ensure_trained(profile, variant, seed, progress=False)
    state = load_checkpoint(ckpt, variant)
    state.pop("restored_from", None)
    state["data_pixels_sha256"] = (ckpt.parent / "DATA_FINGERPRINT").read_text().strip()
    half = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    out = profile.results_dir("checkpoints") / f"{variant}-seed{seed}.fp16.pt"
    if out.exists():  # the same weights again: keep the committed file's bytes (its provenance names its commit)
        old = load_checkpoint(out, variant)["model"]
        if old.keys() == half.keys() and all(torch.equal(old[k], v) for k, v in half.items()):
            return out
    save_checkpoint(out, {**state, "model": half, "dtype": str(torch.float16)})
    return out
