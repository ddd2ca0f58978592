"""Inspecting users' photographs: any size (tiled by `tiling`), JSON/CSV/PNG outputs.

A bad input never costs a good result: an unreadable file is listed under `errors` in predictions.json and
every readable one is still predicted and written.
"""
from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..data.images import IMAGE_SUFFIXES, DataError, read_image, rescale
from ..decode import PAPER, DecodeConfig
from ..device import pick_device, pick_precision
from ..storage import load_model, save_json
from .route import Route
from .routes import CALIBRATED, auto_route, build_route, detect
from .tiling import merge_tiles, tiles


@dataclass(frozen=True)
class PredictConfig:
    """Every knob of `crackcore predict`; the CLI's flags map onto these fields."""

    checkpoint: str = "runs/modified_aff/model.pt"  # a crackcore model.pt
    out: str = "predictions"  # folder for predictions.json, predictions.csv and annotated/
    decoding: DecodeConfig = PAPER  # §IV-C's decoder, per tile: --k, --threshold, --nms-iou, --pool
    overlap: int = 16  # pixels shared by neighbouring tiles, so a crack cut by one tile is whole in the next
    merge_iou: float = 0.5  # duplicates of one crack from overlapping tiles are merged above this IoU
    join_edge: float = 16.0  # pieces of a crack cut by neighbouring tiles' borders (within this many px) join; 0: no
    batch_size: int = 64  # tiles per forward pass, gathered across images
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32 (the precision of the auto route)
    route: str = "auto"  # an inference.routes route: auto = the fastest needing no calibration; or fp32, int8, ...
    calib: int = 64  # tiles from the first images that calibrate the int8 routes
    annotate: bool = True  # also write annotated PNGs

    def __post_init__(self):
        if self.overlap < 0 or not 0.0 < self.merge_iou <= 1.0 or self.join_edge < 0:
            raise ValueError(f"need overlap >= 0, 0 < merge_iou <= 1 and join_edge >= 0; got overlap={self.overlap}, "
                             f"merge_iou={self.merge_iou}, join_edge={self.join_edge}")


def list_images(inputs) -> list[Path]:
    """Expand files and folders into a sorted list of image files; a missing path is an error.

    Only names are checked here; whether a file decodes is found out, file by file, when it is read.
    """
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    if not files:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, inputs))}")
    return files


def tile_detections(route, images, cfg: PredictConfig, scale: float = 1.0):
    """Yield (index, image, tiles' detections, tile origins, scaled shape) for an iterable of (H, W, 3) uint8
    images: each image resized by `scale`, cut into tiles (batched across images) and decoded tile by tile (§IV-C),
    boxes in tile pixels. `predict_images` merges them into one image's boxes."""
    tile = route.input_size

    def run(pending):
        batch = torch.cat([t for _, _, t, _, _ in pending])  # (T, 3, tile, tile)
        dets = []
        for chunk in batch.split(cfg.batch_size):
            # clip=False: a crack reaching past its tile keeps its full box
            dets += detect(route, chunk, decoding=cfg.decoding, clip=False)[0]
        for i, image, t, origins, shape in pending:
            mine, dets = dets[:len(t)], dets[len(t):]
            yield i, image, mine, origins, shape

    pending, n = [], 0
    for i, image in enumerate(images):
        scaled = rescale(image, scale)
        t, origins = tiles(scaled, tile, cfg.overlap)
        pending.append((i, image, t, origins, scaled.shape[:2]))
        n += len(t)
        if n >= cfg.batch_size:
            yield from run(pending)
            pending, n = [], 0
    if pending:
        yield from run(pending)


def image_boxes(image: np.ndarray, dets, origins, shape, tile: int, cfg: PredictConfig) -> dict[str, torch.Tensor]:
    """One image's detections in its own pixels from its tiles' detections (`tile_detections`)."""
    det = merge_tiles(dets, origins, *shape, tile, cfg.overlap, cfg.merge_iou, cfg.join_edge)
    sx, sy = shape[1] / image.shape[1], shape[0] / image.shape[0]  # the rounded resize, per axis
    det["boxes"] = det["boxes"] / torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
    return det


def predict_images(route, images, cfg: PredictConfig, scale: float = 1.0):
    """Yield (index, image, detections) for an iterable of (H, W, 3) uint8 images, tiles batched across images.

    Each image is first resized by `scale`, the model's training scale (`data.training_scale`), so that cracks meet
    the model at the size it learned; boxes come back in the image's own pixels.
    """
    for i, image, dets, origins, shape in tile_detections(route, images, cfg, scale):
        yield i, image, image_boxes(image, dets, origins, shape, route.input_size, cfg)


def predict_image(route, image: np.ndarray, cfg: PredictConfig, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Detections of one image of any size in its own pixel coordinates."""
    return next(predict_images(route, [image], cfg, scale))[2]


def checkpoint_scale(ckpt: dict, variant: str) -> float:
    """The training scale a checkpoint records; older checkpoints record none and are run at native resolution."""
    geometry = ckpt.get("geometry")
    if geometry is None:
        warnings.warn(f"the {variant} checkpoint records no training scale (made before crackcore recorded it); "
                      "images are tiled at their native resolution, which may not be the scale it was trained at")
        return 1.0
    return float(geometry["scale"])


def route_name(cfg: PredictConfig, device) -> str:
    """The route `cfg.route` names; `auto` is `routes.auto_route` for the device and precision."""
    return auto_route(device, pick_precision(device, cfg.precision)) if cfg.route == "auto" else cfg.route


def calibration_tiles(files, size: int, cfg: PredictConfig, scale: float = 1.0) -> torch.Tensor | None:
    """Up to `cfg.calib` (N, 3, size, size) tiles of the first readable images; None if none is readable."""
    parts, n = [], 0
    for f in files:
        try:
            image = read_image(f, exif=True)
        except DataError:  # reported by the prediction pass, which reads every file
            continue
        parts.append(tiles(rescale(image, scale), size, cfg.overlap)[0])
        n += len(parts[-1])
        if n >= cfg.calib:
            break
    return torch.cat(parts)[:cfg.calib] if parts else None


def inference_route(model, cfg: PredictConfig, files, device, scale: float = 1.0) -> Route | None:
    """The route `cfg.route` names, int8 ones calibrated on the first readable images' tiles.

    None when the route needs calibration but no input is readable: there is then nothing to run it on either.
    """
    name = route_name(cfg, device)
    calib = None
    if name in CALIBRATED:
        calib = calibration_tiles(files, model.input_size, cfg, scale)
        if calib is None:
            return None
    return build_route(name, model, calib)


def read_each(files, good: list, errors: list, progress: bool = True, desc: str = "predict"):
    """Yield the (H, W, 3) image of each readable file, appending it to `good`; each unreadable one goes to `errors`.

    EXIF orientation is applied: users' photographs are predicted upright, as a viewer shows them.
    """
    for f in tqdm(files, desc=desc, disable=not progress):
        try:
            image = read_image(f, exif=True)
        except DataError as e:
            errors.append({"file": str(f), "error": str(e)})
            continue
        good.append(f)
        yield image


def draw(image: np.ndarray, boxes, scores) -> np.ndarray:
    """The image with its detections drawn in red, scores above each box."""
    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if max(image.shape[:2]) < 200:  # tiny patches are unreadable at native size
        f = 200 // max(image.shape[:2]) + 1
        out = cv2.resize(out, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    else:
        f = 1
    for b, s in zip(np.asarray(boxes) * f, np.asarray(scores)):
        x1, y1, x2, y2 = map(int, np.round(b))
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 255), 1)
        cv2.putText(out, f"{s:.2f}", (x1, max(10, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 255), 1)
    return out


def predict(cfg: PredictConfig, inputs, progress: bool = True) -> dict:
    """Run a checkpoint on image files or folders; writes predictions.json, predictions.csv and annotated PNGs.

    Unreadable files do not stop the run: each is listed as {"file", "error"} under `errors` in predictions.json
    and in the returned dict, and every readable file is still predicted and written.
    """
    files = list_images(inputs)
    device = pick_device(cfg.device)
    model, ckpt = load_model(cfg.checkpoint, device=device)
    scale = checkpoint_scale(ckpt, model.variant)
    route = inference_route(model, cfg, files, device, scale)
    out = Path(cfg.out)
    (out / "annotated").mkdir(parents=True, exist_ok=True)
    results, good, errors = {}, [], []
    name = route.name if route else route_name(cfg, device)
    images = read_each(files, good, errors, progress, desc=f"predict ({name})")
    if route is None:  # a calibrated route found no readable input: reading each one still says why
        list(images)
    else:
        for i, image, det in predict_images(route, images, cfg, scale):
            f = good[i]  # read_each appended it before yielding its image
            results[str(f)] = [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4)}
                               for b, s in zip(det["boxes"], det["scores"])]
            if cfg.annotate:
                cv2.imwrite(str(out / "annotated" / f"{f.stem}.png"), draw(image, det["boxes"], det["scores"]))
    save_json(out / "predictions.json", {"checkpoint": str(cfg.checkpoint), "variant": model.variant,
                                         "route": name, "precision": route.precision if route else None,
                                         "device": str(device), "scale": scale, "images": results,
                                         "errors": errors})
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "x1", "y1", "x2", "y2", "score"])
        for f, dets in results.items():
            for d in dets:
                w.writerow([f, *d["box"], d["score"]])
    return {"route": name, "images": results, "errors": errors}
