"""Photographs larger than a tile: how `predict` puts a long crack's pieces back together, decided on synthetic
photographs drawn for this reading alone (another generator seed than the data set's, so never its test split).

The model learned 80 × 80 patches; `predict` runs it on overlapping tiles of a photograph, and a crack longer than
a tile comes back as one box per tile it crosses (`inference.tiling.join_fragments` explains the remedy).
`join_reading` scores VOC2007 AP07 of `predict` on `n` photographs of `PHOTO_SIZE` px, one box per crack over its
visible extent as the generator labels it, with each joining distance of `JOIN_EDGES` (0 = the pieces as they come),
on two sets (`PHOTO_SETS`): the generator's usual count of cracks, where joining can only help, and `DENSE_CRACKS`
cracks on every photograph, where a wide joining distance unites pieces of different cracks into one wrong box.
"""
from __future__ import annotations

import dataclasses
import numbers
import time

import numpy as np
import torch
from tqdm import tqdm

from ..data.synth import SynthConfig, render
from ..decode import WIDE_POOL, DecodeConfig
from ..inference.predict import PredictConfig, checkpoint_scale, image_boxes, tile_detections
from ..inference.routes import build_route
from ..metrics import voc_ap
from ..storage import load_model, portable_path, provenance, save_json
from .experiment import Profile, get_profile

JOIN_EDGES = (0.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0)  # px: how near its tile's side a piece must reach
PHOTO_SIZE = 320  # a 5 × 5 grid of 80-px tiles at predict's default overlap of 16 px
PHOTO_SEED = 11  # the data set is drawn with seed 0; this seed draws other photographs
DENSE_CRACKS = 6  # cracks on each photograph of the dense set
PHOTO_SETS = {"usual": None, "dense": DENSE_CRACKS}  # cracks per photograph (None: the generator's 1–3)


def photos(n: int, seed: int = PHOTO_SEED, size: int = PHOTO_SIZE, cracks: int | None = None) -> list:
    """`n` synthetic crack photographs of `size` px (the generator's test-split recipe, its own seed; `cracks` on
    each when given): samples with .image (H, W, 3) uint8 and .boxes (M, 4) in pixels."""
    whole = isinstance(cracks, numbers.Integral) and not isinstance(cracks, bool)  # numpy integers too
    if cracks is not None and not (whole and cracks >= 1):
        raise ValueError(f"cracks per photograph must be a whole number ≥ 1 (or None), got {cracks!r}")
    cracks = None if cracks is None else int(cracks)
    counts = SynthConfig().crack_count_weights if cracks is None else (0.0,) * (cracks - 1) + (1.0,)
    cfg = dataclasses.replace(SynthConfig(), seed=seed, size=size, n_train=0, n_test=n, n_background=0, n_shift=0,
                              n_shift_background=0, crack_count_weights=counts)
    return [render(cfg, "test", i) for i in range(n)]


def join_reading(profile: Profile | str = "paper", variant: str = "modified_aff", n: int = 40,
                 edges: tuple[float, ...] = JOIN_EDGES, pools: tuple[int, ...] = (3, WIDE_POOL),
                 sets: dict[str, int | None] = PHOTO_SETS, route: str = "fp32", progress: bool = True) -> dict:
    """AP07 of `predict` on `n` large photographs of each set for each joining distance and peak window, from the
    committed seed-0 checkpoint of `variant`; the rule of `choose_join`, fixed before the run, picks
    `PredictConfig.join_edge`. Written to results/metrics/reading-join.json."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    checkpoint = profile.results / "checkpoints" / f"{variant}-seed0.fp16.pt"
    model, ckpt = load_model(checkpoint)
    runner, scale = build_route(route, model), checkpoint_scale(ckpt, variant)
    t0, by_set, cracks = time.perf_counter(), {}, {}
    for name, count in sets.items():
        samples = photos(n, cracks=count)
        cracks[name] = float(np.mean([len(s.boxes) for s in samples]))
        targets = [{"boxes": torch.as_tensor(s.boxes, dtype=torch.float32)} for s in samples]
        by_set[name] = {}
        for pool in tqdm(pools, desc=f"join reading ({name})", disable=not progress):
            cfg = PredictConfig(decoding=DecodeConfig(pool=pool))
            tiled = list(tile_detections(runner, [s.image for s in samples], cfg, scale))  # one forward per window
            by_set[name][str(pool)] = {}
            for edge in edges:
                joined = dataclasses.replace(cfg, join_edge=edge)
                preds = [image_boxes(image, dets, origins, shape, runner.input_size, joined)
                         for _, image, dets, origins, shape in tiled]
                by_set[name][str(pool)][f"{edge:g}"] = {
                    "ap07": 100 * voc_ap(preds, targets).ap,
                    "ap_all": 100 * voc_ap(preds, targets, use_07_metric=False).ap,
                    "boxes_per_photo": float(np.mean([len(p["boxes"]) for p in preds]))}
    result = {"name": "join", "variant": variant, "checkpoint": portable_path(checkpoint), "route": route,
              "photos": n, "photo_size": PHOTO_SIZE, "photo_seed": PHOTO_SEED, "cracks_per_photo": cracks,
              "by_set": by_set, "choice": choose_join({k: v["3"] for k, v in by_set.items()}),
              "seconds": time.perf_counter() - t0,
              "provenance": provenance(next(model.parameters()).device, "fp32" if route == "fp32" else "bf16")}
    save_json(profile.results_dir("metrics") / "reading-join.json", result)
    return result


def choose_join(by_set: dict[str, dict[str, dict]], margin: float = 1.0) -> float:
    """Rule fixed before the run: with §IV-C's 3 × 3 window (predict's default decoder), each joining distance scores
    the mean of its AP07 over the photograph sets (joining helps the usual set and, by uniting different cracks,
    can hurt the dense one); the smallest distance within `margin` of the best score is taken, since a shorter reach
    joins fewer pieces of different cracks on photographs unlike ours. Joining never adds or removes a box's
    presence on a photograph, so Table II-like clean shares cannot move and are not read."""
    edges = sorted(next(iter(by_set.values())), key=float)
    score = {e: float(np.mean([by_edge[e]["ap07"] for by_edge in by_set.values()])) for e in edges}
    best = max(score.values())
    return float(next(e for e in edges if score[e] >= best - margin))
