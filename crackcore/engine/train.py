"""Training (§IV-B): Adam, batch 16, 25 epochs, lr 2.5e-4 dropped ×0.1 after epoch 20, loss eq. (5).

A run lives in one folder: `last.pt` (written atomically after every epoch), `history.jsonl` (one line per epoch),
`model.pt` (the final fp32 weights) and `config.json`. Every epoch seeds its own shuffling and augmentation from
(seed, epoch), so a run resumed from any epoch's checkpoint ends with the same weights as one never stopped.
A run started with `init` fine-tunes another crackcore checkpoint of the same variant; its checkpoints and
`parent.json` record that parent (path, SHA-256, variant, epoch, config). For the same reason two runs that differ
only in length and lr drop are one run until the earlier drop: a longer run may start from the shorter one's
checkpoint kept at that epoch (`branch_from`, `keep`), and records it as `branched_from`.
"""
from __future__ import annotations

import json
import shutil
import signal
import time
import warnings
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.annotations import load_records
from ..data.dataset import CrackDataset
from ..data.images import training_scale
from ..data.transforms import build_train_transform
from ..device import autocast, pick_device, pick_precision, seed_everything
from ..labels import LabelConfig, encode
from ..losses import LossConfig, centernet_loss
from ..models import INPUT_SIZE, STRIDE, build_model
from ..storage import (CheckpointError, atomic_write, file_sha256, load_checkpoint, portable_path, provenance,
                       save_checkpoint)
from .config import PATH_FIELDS, TrainConfig, check_branch, check_same, recorded_config


def collate(batch, *, output_size: tuple[int, int], stride: int, labels: LabelConfig
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stack images and encode each image's boxes into CenterNet targets (runs inside DataLoader workers)."""
    images = torch.stack([img for img, _ in batch])  # (B, 3, S, S)
    enc = [encode(b, output_size, stride, **asdict(labels)) for _, b in batch]
    targets = {k: torch.stack([e[k] for e in enc]) for k in enc[0]}
    targets["boxes"] = [b for _, b in batch]
    return images, targets


def make_loader(cfg: TrainConfig, records, train: bool, epoch: int = 0, distributed: tuple[int, int] | None = None):
    """A DataLoader whose order and augmentation depend only on (seed, epoch), never on earlier epochs."""
    size, stride = INPUT_SIZE[cfg.variant], STRIDE[cfg.variant]
    augment = train and cfg.augmentation.augment
    ds = CrackDataset(records, size, train=augment,
                      transform=build_train_transform(size, cfg.augmentation) if augment else None)
    col = partial(collate, output_size=(size // stride, size // stride), stride=stride, labels=cfg.labels)
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    sampler = None
    if distributed is not None:
        from torch.utils.data.distributed import DistributedSampler
        sampler = DistributedSampler(ds, num_replicas=distributed[1], rank=distributed[0], shuffle=train,
                                     seed=cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
    n = len(ds) if sampler is None else len(sampler)
    # BatchNorm cannot train on a last batch of one image; dropping it loses one image per epoch at most.
    drop_last = train and n % cfg.batch_size == 1
    return DataLoader(ds, cfg.batch_size, shuffle=train and sampler is None, sampler=sampler, generator=g,
                      num_workers=cfg.workers, collate_fn=col, drop_last=drop_last,
                      worker_init_fn=partial(_seed_worker, base=cfg.seed * 1_000 + epoch),
                      persistent_workers=False)


def _seed_worker(worker_id: int, base: int) -> None:
    seed_everything(base * 64 + worker_id)


def mean_box_size(records, variant: str) -> tuple[float, float]:
    """Mean (w, h) of the training boxes in output pixels, after the letterbox to the variant's input (eq. 2's units)."""
    sizes = [(r.boxes[:, 2:] - r.boxes[:, :2]) * (INPUT_SIZE[variant] / max(r.width, r.height) / STRIDE[variant])
             for r in records if len(r.boxes)]  # (N_i, 2) each
    if not sizes:
        raise ValueError("no boxes in the training records: the size head has nothing to learn from")
    m = np.concatenate(sizes).mean(0)
    return float(m[0]), float(m[1])


def load_parent(cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """The fp32 weights of the checkpoint `cfg.init` that a fine-tuning run starts from (§IV-B), and its record.

    Reads the checkpoint only, never the data: a wrong variant or size scale fails before any image is loaded.
    """
    path = Path(cfg.init)
    if not path.is_file():
        raise FileNotFoundError(f"--init checkpoint not found: {path}")
    state = load_checkpoint(path)  # its variant checked below, with a message that names the flag to change
    if state["variant"] != cfg.variant:
        raise CheckpointError(f"--init {path} holds a '{state['variant']}' model, not a '{cfg.variant}' one "
                              f"(--variant); fine-tuning starts from a checkpoint of the same variant")
    stored = state["model"].get("wh_scale", torch.tensor(1.0))  # older checkpoints' heads regressed pixels unscaled
    # Refused rather than adopted: the size head's weights are in units of its scale, and the run's recorded config
    # (compared on resume, shown in config.json) must name the scale the model really has. An fp16 checkpoint holds
    # the scale rounded to fp16, so it is compared with `--wh-scale` rounded the same way.
    if stored.item() != torch.tensor(cfg.wh_scale, dtype=stored.dtype).item():
        raise ValueError(f"--init {path} has a size head of scale {stored.item():g}, not {cfg.wh_scale:g}; "
                         f"pass --wh-scale {stored.item():g}")
    # published checkpoints are fp16: widened, as storage.load_model does, so training runs in fp32 as ever
    weights = {k: v.float() if v.is_floating_point() else v for k, v in state["model"].items()}
    weights["wh_scale"] = torch.tensor(float(cfg.wh_scale))  # the parent's own scale, unrounded
    record = {"path": portable_path(path), "sha256": file_sha256(path), "variant": state["variant"],
              "epoch": state.get("epoch"), "config": state.get("config")}
    if state.get("parent") is not None:  # a fine-tuned parent: the whole lineage travels along
        record["parent"] = state["parent"]
    return weights, record


def new_model(cfg: TrainConfig, records, weights: dict[str, torch.Tensor] | None = None):
    """The detector a run starts from (§IV-B): untrained, size bias at the training mean size, or a parent's weights."""
    model = build_model(cfg.variant, cfg.imagenet or None, "centernet" if cfg.wh_init == "centernet" else "default",
                        cfg.wh_scale, cfg.neck_init, cfg.hm_init)
    if weights is not None:
        model.load_state_dict(weights)  # strict; no mean-size bias after it: the parent has learned its sizes
    elif cfg.wh_init == "mean":
        model.init_wh_bias(mean_box_size(records, cfg.variant))
    return model


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """§IV-B: 2.5e-4, then 2.5e-5 from the 21st epoch."""
    return cfg.lr * (cfg.lr_drop_factor if epoch >= cfg.lr_drop_epoch else 1.0)


class _Interrupt:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so the last written checkpoint stays the truth."""

    def __init__(self):
        self.hit = False

    def __enter__(self):
        self.old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        self.hit = True

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, rank: int = 0, world: int = 1,
          record_config: TrainConfig | None = None, branch_from: Path | None = None,
          keep: tuple[int, ...] = ()) -> Path:
    """Train one Table I variant per `cfg`; returns the run folder. `resume` continues (or skips) a matching run.

    Under torchrun each process gets `cfg` with its share of the batch, and `record_config` is what the user asked
    for: that is what checkpoints record and resumption compares against. A run with no checkpoint of its own starts
    from `branch_from`, a checkpoint of the same run up to its epoch (`check_branch`); the checkpoints of the epochs
    in `keep` stay beside `last.pt` as `epoch<N>.pt`.
    """
    out = Path(cfg.out)
    asked = recorded_config(record_config or cfg)
    asked.update({k: portable_path(getattr(cfg, k)) for k in PATH_FIELDS if k in asked})
    ckpt_path = out / "last.pt"
    done = out / "model.pt"
    if resume and done.exists() and not ckpt_path.exists():  # a finished run kept without its optimizer state
        state = load_checkpoint(done, cfg.variant)
        check_same(state, asked, done)
        if state.get("epoch") == cfg.epochs:
            return out
    device = pick_device(cfg.device) if world == 1 else _ddp_device(rank)
    precision = pick_precision(device, cfg.precision)
    start, history = 0, []
    # The parent is read only when the run starts fresh: a resumed run continues its own weights, its parent's
    # record comes from its checkpoint, and the parent file need not exist any more.
    weights = parent = branched = None
    if cfg.init and not ckpt_path.exists() and branch_from is None:
        weights, parent = load_parent(cfg)
    seed_everything(cfg.seed)
    records = load_records(cfg.data, "train")
    if cfg.limit:
        records = records[:cfg.limit]
    model = new_model(cfg, records, weights).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if ckpt_path.exists():
        if not resume:
            raise FileExistsError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        state = load_checkpoint(ckpt_path, cfg.variant)
        check_same(state, asked, ckpt_path)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history, parent = state["epoch"], list(state.get("history", [])), state.get("parent")
        branched = state.get("branched_from")
        if start >= cfg.epochs:
            return out
    elif branch_from is not None:
        state = load_checkpoint(branch_from, cfg.variant)
        check_branch(state, asked, Path(branch_from))
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, history, parent = state["epoch"], list(state.get("history", [])), state.get("parent")
        branched = {"path": portable_path(branch_from), "sha256": file_sha256(branch_from), "epoch": start}
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asked, indent=2) + "\n")
        if parent is not None:
            (out / "parent.json").write_text(json.dumps(parent, indent=2) + "\n")
    lineage = {} if parent is None else {"parent": parent}  # runs from scratch keep their checkpoints' keys
    if branched is not None:
        lineage["branched_from"] = branched
    info = provenance(device, precision)
    geometry = {"input_size": INPUT_SIZE[cfg.variant], "scale": training_scale(records, INPUT_SIZE[cfg.variant])}
    with _Interrupt() as stop:
        for epoch in range(start, cfg.epochs):
            stats = _epoch(model, opt, cfg, records, epoch, device, precision, stop, progress and rank == 0,
                           (rank, world) if world > 1 else None)
            if stop.hit:
                warnings.warn(f"interrupted in epoch {epoch + 1}; {ckpt_path} holds epoch {epoch}; resume with --resume")
                break
            if rank == 0:
                raw = model.module if world > 1 else model
                save_checkpoint(ckpt_path, {"model": raw.state_dict(), "optimizer": opt.state_dict(),
                                            "scheduler": {"epoch": epoch + 1, "lr": lr_at(cfg, epoch + 1)},
                                            "epoch": epoch + 1, "variant": cfg.variant, "config": asked, "geometry": geometry,
                                            "provenance": info, "history": history + [stats], **lineage})
                history.append(stats)
                if epoch + 1 in keep:
                    atomic_write(out / f"epoch{epoch + 1}.pt", lambda tmp: shutil.copyfile(ckpt_path, tmp))
                # rewritten whole from the checkpoint's copy: a kill between the two writes loses or repeats nothing
                atomic_write(out / "history.jsonl", lambda tmp: Path(tmp).write_text(
                    "".join(json.dumps(h) + "\n" for h in history)))
        else:
            if rank == 0:
                raw = model.module if world > 1 else model
                save_checkpoint(out / "model.pt", {"model": raw.state_dict(), "variant": cfg.variant,
                                                   "config": asked, "geometry": geometry, "epoch": cfg.epochs, "provenance": info,
                                                   "history": history, **lineage})
    if stop.hit:
        raise KeyboardInterrupt
    return out


def step(model, opt, images: torch.Tensor, targets: dict, loss_cfg: LossConfig, device, precision: str) -> dict:
    """One §IV-B optimisation step on a batch: forward (autocast), eq. (5), backward, Adam; returns the loss terms."""
    with autocast(device, precision):
        out = model(images)
    terms = centernet_loss(out, targets, loss_cfg)  # in fp32: the focal loss's logs need it
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()
    return terms


def _epoch(model, opt, cfg, records, epoch, device, precision, stop, progress, distributed) -> dict:
    seed_everything(cfg.seed * 1_000 + epoch)
    loader = make_loader(cfg, records, train=True, epoch=epoch, distributed=distributed)
    for group in opt.param_groups:
        group["lr"] = lr_at(cfg, epoch)
    model.train()
    sums: dict[str, float] = {}
    n_batches = n_images = 0
    wait = 0.0
    t0 = tick = time.perf_counter()
    bar = tqdm(loader, desc=f"{cfg.variant} epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
    for images, targets in bar:
        wait += time.perf_counter() - tick
        images = images.to(device, non_blocking=True)
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = {k: v.to(device, non_blocking=True) for k, v in targets.items() if isinstance(v, torch.Tensor)}
        terms = step(model, opt, images, targets, cfg.loss, device, precision)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + v.item()
        n_batches += 1
        n_images += images.shape[0]
        bar.set_postfix(loss=f"{terms['loss'].item():.3f}")
        tick = time.perf_counter()
        if stop.hit:
            break
    seconds = time.perf_counter() - t0
    return {"epoch": epoch + 1, "lr": lr_at(cfg, epoch), **{k: v / max(n_batches, 1) for k, v in sums.items()},
            "seconds": seconds, "images_per_s": n_images / seconds, "data_wait_share": wait / seconds}


def _ddp_device(rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(rank % torch.cuda.device_count())
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")
