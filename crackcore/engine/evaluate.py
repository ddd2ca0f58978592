"""Evaluation (§V-A): VOC2007 AP on the defect test split (Table I) and the background check (Table II)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..data.annotations import load_records
from ..data.dataset import CrackDataset
from ..decode import PAPER, WIDE_POOL, DecodeConfig
from ..device import pick_device, pick_precision
from ..metrics import voc_ap
from ..storage import load_model, portable_path, provenance, save_json
from .diagnose import decompose, decompose_outputs, split_outputs


@dataclass(frozen=True)
class EvalConfig:
    """Every knob of an evaluation; the CLI's `evaluate` flags map onto these fields."""

    checkpoint: str = "runs/modified_aff/model.pt"  # a crackcore model.pt or last.pt
    data: str = "data/synth"  # synthetic root, COCO JSON or VOC folder (as for training)
    split: str = "test"  # split scored with VOC2007 AP (Table I)
    background_split: str = "background"  # "" skips Table II (user data may have no such split)
    train_split: str = "train"  # also diagnosed, for train AP beside test AP; "" skips it
    shift_split: str = "shift"  # domain shift: AP on a surface family held out of training; "" or absent: skipped
    shift_background_split: str = "shift_background"  # Table II on that family; "" or absent: skipped
    out: str = "results/metrics/modified_aff.json"  # metrics JSON; empty = do not write
    batch_size: int = 32  # images per forward pass
    decoding: DecodeConfig = PAPER  # §IV-C's decoder: --k, --threshold, --nms-iou, --pool
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32
    limit: int = 0  # evaluate on the first `limit` images of each split only (quick profile); 0 = all


def fusion_weights(model, records, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Letterboxed inputs (N, 3, S, S) and AFF's per-pixel softmax weights (a, b) of eq. (4), (N, 2, S, S) (§III-C)."""
    if model.variant != "modified_aff":
        raise ValueError(f"{model.variant} has no adaptive feature fusion; use a modified_aff model")
    images = CrackDataset(records, model.input_size, train=False).inputs()
    device = next(model.parameters()).device
    with torch.no_grad():
        ab = torch.cat([model(chunk.to(device))["aff"].float().cpu() for chunk in images.split(batch_size)])
    return images, ab


def run_split(model, records, *, batch_size: int, decoding: DecodeConfig = PAPER, precision: str = "fp32",
              desc: str = ""):
    """Detections, ground truths (input pixels) and per-image heatmap maxima for a list of records (model or route)."""
    (preds,), gts, _, top = split_outputs(model, records, [(decoding, True)], batch_size, precision, desc)
    return preds, [{"boxes": torch.as_tensor(g)} for g in gts], top


def background_table(max_scores: np.ndarray, threshold: float = PAPER.threshold) -> dict:
    """Table II: an image is a true negative ("TP" in the paper) when no box scores ≥ threshold."""
    n = int(len(max_scores))
    clean = int((max_scores < threshold).sum())
    return {"images": n, "no_box": clean, "with_box": n - clean, "accuracy": 100.0 * clean / max(n, 1),
            "threshold": threshold}


def wide_pool_key(split: str) -> str:
    """The diagnosis key of `split` decoded with the WIDE_POOL window (§IV-C's decoder otherwise unchanged)."""
    return f"{split}_pool{WIDE_POOL}"


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    """Table I's AP (VOC2007 11-point and all-point) and Table II on the background split; writes `cfg.out`."""
    device = pick_device(cfg.device)
    precision = pick_precision(device, cfg.precision)
    model, ckpt = load_model(cfg.checkpoint, device=device)
    t0 = time.perf_counter()
    records = load_records(cfg.data, cfg.split)[:cfg.limit or None]
    wide = model.stride == 1 and cfg.decoding.pool != WIDE_POOL  # at stride 4, §IV-C's 3 × 3 already spans 12 pixels
    decodings = [(cfg.decoding, True), (cfg.decoding, False)] + [(replace(cfg.decoding, pool=WIDE_POOL), False)] * wide
    # one forward pass: AP as scored (boxes clipped to the image), the diagnosis (unclipped), the wide window's
    (preds, found, *found_wide), gts, at_centre, _ = split_outputs(
        model, records, decodings, cfg.batch_size, precision, f"AP on {cfg.split}" if progress else "")
    targets = [{"boxes": g} for g in gts]
    ap07 = voc_ap(preds, targets, use_07_metric=True)
    ap_all = voc_ap(preds, targets, use_07_metric=False)
    metrics = {"variant": model.variant, "checkpoint": portable_path(cfg.checkpoint),
               "config": {**asdict(cfg), "checkpoint": portable_path(cfg.checkpoint), "data": portable_path(cfg.data)},
               "train_config": ckpt.get("config"), "restored_from": ckpt.get("restored_from"),  # a published fp16 copy
               "ap07": 100 * ap07.ap, "ap_all": 100 * ap_all.ap,
               "n_images": len(records), "n_gt": ap07.n_gt, "n_det": ap07.n_det,
               "pr_curve": {"precision": ap07.precision, "recall": ap07.recall, "scores": ap07.scores},
               # per-image boxes in the image's own pixels (the letterbox scale undone); AP is scale-invariant
               "per_image": [{"file": portable_path(r.path), "boxes": (p["boxes"].numpy() / sc).round(2),
                              "scores": p["scores"].numpy().round(4), "gt": (t["boxes"] / sc).round(2)}
                             for r, p, t in zip(records, preds, targets)
                             for sc in [model.input_size / max(r.width, r.height)]]}
    metrics["diagnosis"] = {cfg.split: decompose_outputs(found, gts, at_centre, model.input_size)}
    if wide:
        metrics["diagnosis"][wide_pool_key(cfg.split)] = decompose_outputs(found_wide[0], gts, at_centre,
                                                                          model.input_size)
    if cfg.train_split:
        train_records = load_records(cfg.data, cfg.train_split)[:cfg.limit or None]
        metrics["diagnosis"][cfg.train_split] = decompose(model, train_records, cfg.batch_size, cfg.decoding,
                                                          precision)
    if cfg.background_split:
        bg = load_records(cfg.data, cfg.background_split)[:cfg.limit or None]
        _, _, top = run_split(model, bg, batch_size=cfg.batch_size, decoding=cfg.decoding,
                              precision=precision, desc=f"Table II on {cfg.background_split}" if progress else "")
        metrics["background"] = background_table(top, cfg.decoding.threshold)
        metrics["background_max_scores"] = top.round(5)
        metrics["background_files"] = [portable_path(r.path) for r in bg]
    shift = {}
    for name, split in (("ap", cfg.shift_split), ("background", cfg.shift_background_split)):
        if split and not (Path(cfg.data) / f"{split}.json").is_file():
            shift[f"{name}_skipped"] = f"no {split}.json in {portable_path(cfg.data)}"
        elif split:
            recs = load_records(cfg.data, split)[:cfg.limit or None]
            p, t, top = run_split(model, recs, batch_size=cfg.batch_size, decoding=cfg.decoding,
                                  precision=precision, desc=f"domain shift: {split}" if progress else "")
            shift.update({"ap07": 100 * voc_ap(p, t, use_07_metric=True).ap, "n_images": len(recs)} if name == "ap"
                         else {"background": background_table(top, cfg.decoding.threshold)})
    if shift:
        metrics["shift"] = shift
    metrics["seconds"] = time.perf_counter() - t0
    metrics["provenance"] = provenance(device, precision)
    if cfg.out:
        save_json(cfg.out, metrics)
    return metrics
