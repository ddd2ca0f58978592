"""Deterministic synthetic glazed-ceramic patches with thin dark cracks, in the paper's splits (§V-A).

Every image depends only on (cfg.seed, split, index): its generator is seeded by a SeedSequence whose spawn key
is (split number, index), so any image regenerates alone, in any order or process.
All arithmetic is float64 and elementwise or OpenCV: a last-bit difference between CPUs almost never moves a
value across a rounding boundary of the uint8 output, so the bytes match across machines with the same numpy and
OpenCV (the data card records a SHA-256 of all pixels to check).
Coordinates are continuous pixels: pixel column i spans [i, i + 1), so a box over columns a..b is x1=a, x2=b+1.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
from tqdm import tqdm

SPLITS = ("train", "test", "background")
PALETTE = (("white", (246, 245, 241)), ("ivory", (241, 235, 216)), ("bone", (228, 219, 200)),
           ("light grey", (212, 213, 214)), ("pale blue", (208, 222, 233)), ("pale green", (212, 229, 215)))
LUMA = (0.299, 0.587, 0.114)  # Rec. 601 luma weights


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the generator; scalar fields are also `crackcore synth` flags, tuples are (low, high) ranges."""
    seed: int = 0
    size: int = 80  # §IV-B: all images are 80×80
    n_train: int = 726  # §V-A: 726 training and 181 test images with cracks, 1523 background-only images
    n_test: int = 181
    n_background: int = 1523
    # glaze surface
    palette: tuple = PALETTE
    colour_jitter: float = 7.0  # ± grey levels per channel around the palette colour
    gradient: tuple = (0.02, 0.14)  # peak-to-peak illumination change across the patch
    curvature_p: float = 0.5  # curved ware: a parabolic fall-off of light across the patch
    curvature: tuple = (0.02, 0.15)
    specular_p: float = 0.4
    specular: tuple = (0.15, 0.6)  # screen-blend strength of the highlight; < 1 so no crack is ever erased
    texture: tuple = (0.004, 0.016)  # multi-scale glaze texture (orange peel, grain) amplitude
    streak_p: float = 0.35
    streak: tuple = (0.004, 0.014)
    edge_p: float = 0.12  # a product edge / shadowed border cutting through the patch
    edge_depth: tuple = (0.15, 0.45)
    # hard negatives (Poisson means or probabilities), identical in defect and background images
    pinholes_mean: float = 0.8
    blobs_mean: float = 0.35
    dust_mean: float = 1.5
    fibre_p: float = 0.12
    seam_p: float = 0.25
    # cracks: the difficulty knobs
    crack_count_weights: tuple = (0.75, 0.2, 0.05)  # one, two or three cracks per defect image
    length_min: float = 6.0  # log-uniform length of the main path in px; beyond `size` it is cut by the border
    length_max: float = 160.0
    width_min: float = 1.0  # peak width in px, tapering towards the tips
    width_max: float = 4.0
    width_skew: float = 3.0  # > 1 favours thin cracks: w = min + (max - min) * u ** skew
    width_per_length: float = 0.08  # cap on peak width relative to length, so short cracks are no blobs
    contrast_min: float = 0.10  # fraction of the glaze's light a fully covered crack pixel absorbs
    contrast_max: float = 0.65
    contrast_skew: float = 1.6  # > 1 favours faint cracks
    branch_weights: tuple = (0.6, 0.3, 0.1)  # zero, one or two branches
    turn_sigma: float = 0.30  # rad: jaggedness, the per-step shock to the direction
    momentum: float = 0.6  # persistence of a deviation: zigs and zags a few steps long, not white noise
    drift: float = 0.04  # rad per step: slow bending of the overall course
    jag_sigma: float = 0.15  # px of node jitter: roughness below the step length
    kink_p: float = 0.02  # per-step chance of a sharp change of course
    halo: tuple = (0.1, 0.4)  # strength of the soft darkening around the crack, relative to its core
    halo_sigma: tuple = (0.8, 2.0)
    visibility_threshold: float = 6.0  # grey levels: a pixel is crack if the crack alone darkens it this much
    min_box_side: float = 2.0  # a crack whose visible part is below this in both dims is redrawn
    max_redraws: int = 30
    supersample: int = 4  # cracks and fibres are drawn at 4× and area-averaged, hence sub-pixel widths
    # camera
    blur_sigma: tuple = (0.3, 0.8)
    noise_sigma: tuple = (1.0, 4.5)  # grey levels
    jpeg_p: float = 0.6
    jpeg_quality: tuple = (70, 95)
    calibration_note: str = ""  # how the defaults were calibrated; printed in the data card

    def __post_init__(self):
        for lo, hi in (("length_min", "length_max"), ("width_min", "width_max"), ("contrast_min", "contrast_max")):
            if not 0 < getattr(self, lo) <= getattr(self, hi):
                raise ValueError(f"need 0 < {lo} <= {hi}, got {getattr(self, lo)} and {getattr(self, hi)}")
        if self.contrast_max >= 1 or min(self.n_train, self.n_test, self.n_background) < 0 or self.size < 8:
            raise ValueError("need contrast_max < 1, split sizes >= 0 and size >= 8")


class Sample(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2, continuous pixel coordinates
    meta: dict  # crack attributes, hard negatives drawn, "masks": (N, H, W) bool visible crack pixels


def split_size(cfg: SynthConfig, split: str) -> int:
    """Number of images in a split (§V-A: 726 / 181 / 1523 by default)."""
    return {"train": cfg.n_train, "test": cfg.n_test, "background": cfg.n_background}[_check_split(split)]


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def rng_for(cfg: SynthConfig, split: str, index: int) -> np.random.Generator:
    """The generator of one image: its own SeedSequence stream, independent of every other image."""
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(SPLITS.index(split), index)))


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    return np.meshgrid(c, c)  # X, Y: (H, W)


def _u(rng, lo_hi) -> float:
    return float(rng.uniform(*lo_hi))


def _gauss(size, cx, cy, sx, sy, angle=0.0) -> np.ndarray:
    """An oriented Gaussian bump of peak 1 (pinholes, dust, drops, highlights)."""
    X, Y = _grid(size)
    c, s = math.cos(angle), math.sin(angle)
    u, v = (X - cx) * c + (Y - cy) * s, -(X - cx) * s + (Y - cy) * c
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))  # (H, W)


def _line_distance(rng, size, spread=0.35) -> np.ndarray:
    """Signed distance in px to a gently bent line through the patch (seams, edges, streaks)."""
    X, Y = _grid(size)
    a, off, bend = rng.uniform(0, math.pi), rng.uniform(-spread, spread) * size, rng.normal(0, 0.4) / size
    u = (X - size / 2) * math.cos(a) + (Y - size / 2) * math.sin(a)
    v = -(X - size / 2) * math.sin(a) + (Y - size / 2) * math.cos(a)
    return u - off - bend * v ** 2


def _value_noise(rng, size: int, cell: int) -> np.ndarray:
    """Smooth unit-variance-ish noise with features about `cell` px across."""
    n = size // cell + 3
    big = cv2.resize(rng.standard_normal((n, n)), (n * cell, n * cell),
                     interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, cell, 2)
    return big[oy:oy + size, ox:ox + size]


def _walk(rng, start, heading, length, *, turn, momentum, drift, jag, kink_p, step=1.5) -> np.ndarray:
    """The skeleton of a crack or fibre, (K, 2) xy: a wandering course plus a jagged, persistent deviation."""
    n = max(2, int(math.ceil(length / step)))
    course = heading + np.cumsum(rng.normal(0, drift, n) + np.where(rng.random(n) < kink_p, rng.normal(0, 0.7, n), 0))
    shocks, dev, angles = rng.normal(0, turn, n), 0.0, np.empty(n)
    for k in range(n):  # AR(1): momentum keeps a zig or a zag going for a few steps
        dev = momentum * dev + shocks[k]
        angles[k] = course[k] + dev
    steps = (length / n) * np.stack([np.cos(angles), np.sin(angles)], 1)  # (n, 2)
    pts = np.vstack([start, start + np.cumsum(steps, 0)])  # (n + 1, 2)
    if jag > 0:  # sub-step roughness of the fracture edge
        pts[1:] += rng.normal(0, jag, (n, 2))
    return pts


def _draw(size: int, k: int, paths) -> np.ndarray:
    """Area coverage in [0, 1] of polylines with per-node widths, drawn at k× and averaged: (H, W)."""
    canvas = np.zeros((size * k, size * k), np.uint8)
    for pts, widths, values in paths:
        q = np.rint((pts * k - 0.5) * 8).astype(np.int64)  # continuous px → supersampled centres, 3-bit shift
        for i in range(len(q) - 1):
            t = max(1, int(round(widths[i] * k)))
            cv2.line(canvas, tuple(map(int, q[i])), tuple(map(int, q[i + 1])), int(values[i]), t, cv2.LINE_AA, 3)
    return canvas.reshape(size, k, size, k).mean((1, 3)) / 255.0


def _crack(rng, cfg: SynthConfig):
    """One crack (main path and 0–2 branches): its core darkening (H, W), with halo (H, W), and its attributes."""
    s = cfg.size
    length = math.exp(rng.uniform(math.log(cfg.length_min), math.log(cfg.length_max)))
    width = cfg.width_min + (cfg.width_max - cfg.width_min) * rng.random() ** cfg.width_skew
    width = min(width, max(cfg.width_min, cfg.width_per_length * length))  # short cracks are hairlines
    walk = dict(turn=cfg.turn_sigma, momentum=cfg.momentum, drift=cfg.drift, jag=cfg.jag_sigma, kink_p=cfg.kink_p)
    centre, heading, f = rng.uniform(1, s - 1, 2), rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.8)
    fwd = _walk(rng, centre, heading, length * f, **walk)
    back = _walk(rng, centre, heading + math.pi, length * (1 - f), **walk)
    main = np.vstack([back[::-1], fwd[1:]])  # grown both ways from a point inside the patch
    t = np.linspace(0, 1, len(main))
    wobble = 1 + 0.2 * np.interp(t * 6, np.arange(8), rng.normal(0, 1, 8))
    widths = width * (0.25 + 0.75 * np.sin(np.pi * t) ** 0.6) * wobble  # tapering to both tips
    shade = np.clip(255 * (0.85 + 0.15 * np.interp(t * 5, np.arange(7), rng.uniform(-1, 1, 7))), 0, 255)
    paths = [(main, widths, shade)]
    n_branches = int(rng.choice(len(cfg.branch_weights), p=_norm(cfg.branch_weights)))
    for _ in range(n_branches):
        j = int(rng.integers(len(main) // 5, max(len(main) * 4 // 5, len(main) // 5 + 1)))
        d = main[min(j + 1, len(main) - 1)] - main[max(j - 1, 0)]
        ang = math.atan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.35, 1.1)
        br = _walk(rng, main[j], ang, length * rng.uniform(0.15, 0.5), **walk)
        tb = np.linspace(0, 1, len(br))
        paths.append((br, widths[j] * rng.uniform(0.5, 0.8) * (1 - 0.75 * tb), shade[j] * (1 - 0.2 * tb)))
    cover = _draw(s, cfg.supersample, paths)  # (H, W)
    contrast = cfg.contrast_min + (cfg.contrast_max - cfg.contrast_min) * rng.random() ** cfg.contrast_skew
    halo = _u(rng, cfg.halo) * cv2.GaussianBlur(cover, (0, 0), _u(rng, cfg.halo_sigma))
    attrs = {"length": round(length, 2), "width": round(width, 3), "contrast": round(contrast, 4),
             "branches": n_branches}
    return contrast * cover, np.clip(contrast * (cover + halo), 0, 0.95), attrs


def _norm(w) -> np.ndarray:
    w = np.asarray(w, float)
    return w / w.sum()



def _surface(rng, cfg: SynthConfig, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """Glazed ceramic with its hard negatives, before cracks: (H, W, 3) in [0, 1], and the highlight (H, W)."""
    s = cfg.size
    X, Y = _grid(s)
    name, rgb = cfg.palette[int(rng.integers(len(cfg.palette)))]
    base = (np.asarray(rgb, np.float64) + rng.uniform(-cfg.colour_jitter, cfg.colour_jitter, 3)) / 255
    a = rng.uniform(0, 2 * math.pi)  # also the light direction for embossed drops
    light = 1 + _u(rng, cfg.gradient) * ((X - s / 2) * math.cos(a) + (Y - s / 2) * math.sin(a)) / s
    if rng.random() < cfg.curvature_p:
        light = light * (1 - _u(rng, cfg.curvature) * 4 * (_line_distance(rng, s, 0.6) / s) ** 2)
    octaves = ((1.0, 24), (0.7, 9), (0.5, 4), (0.35, 2))  # glaze waviness down to grain
    relief = _u(rng, cfg.texture) / 1.4 * sum(w * _value_noise(rng, s, c) for w, c in octaves)
    dark = np.zeros((s, s))  # fraction of light absorbed by specks, pinholes, fibres
    neg = {"streaks": bool(rng.random() < cfg.streak_p), "seam": bool(rng.random() < cfg.seam_p),
           "edge": bool(rng.random() < cfg.edge_p), "fibre": bool(rng.random() < cfg.fibre_p),
           "pinholes": int(rng.poisson(cfg.pinholes_mean)), "blobs": int(rng.poisson(cfg.blobs_mean)),
           "dust": int(rng.poisson(cfg.dust_mean))}
    if neg["streaks"]:  # brush or flow streaks: 1-D noise across a direction
        d, knots = _line_distance(rng, s, 0.5), rng.standard_normal(2 * s + 8)
        relief = relief + _u(rng, cfg.streak) * np.interp(d / 1.5 + s + 4, np.arange(len(knots)), knots)
    if neg["seam"]:  # a faint mould seam: a ridge lit from one side, a long smooth dark-bright pair
        d, sg = _line_distance(rng, s), rng.uniform(0.6, 1.5)
        g = np.exp(-0.5 * (d / sg) ** 2)
        relief = relief + rng.choice([-1, 1]) * rng.uniform(0.015, 0.05) * (d / sg) * g + rng.uniform(-0.03, 0.015) * g
    for _ in range(neg["blobs"]):  # glaze drops: embossed bumps
        cx, cy = rng.uniform(0, s, 2)
        sx, sy = rng.uniform(1.5, 5, 2)
        g = _gauss(s, cx, cy, sx, sy, rng.uniform(0, math.pi))
        u = ((X - cx) * math.cos(a) + (Y - cy) * math.sin(a)) / ((sx + sy) / 2)
        relief = relief + rng.uniform(-0.05, 0.05) * g - rng.uniform(0.02, 0.07) * u * g
    for _ in range(neg["pinholes"]):
        cx, cy = rng.uniform(0, s, 2)
        sg, depth = rng.uniform(0.4, 1.0), rng.uniform(0.12, 0.45)
        g = _gauss(s, cx, cy, sg, sg)
        dark += depth * g
        if rng.random() < 0.5:  # the lighter lip of an open pinhole
            relief = relief + 0.3 * depth * (_gauss(s, cx, cy, 2.2 * sg, 2.2 * sg) - g)
    for _ in range(neg["dust"]):
        cx, cy = rng.uniform(0, s, 2)
        dark += rng.uniform(0.04, 0.2) * _gauss(s, cx, cy, *rng.uniform(0.3, 0.8, 2), rng.uniform(0, math.pi))
    if neg["fibre"]:  # a lint fibre: thin, short, smooth, faint — the most crack-like negative
        pts = _walk(rng, rng.uniform(0, s, 2), rng.uniform(0, 2 * math.pi), rng.uniform(4, 14), turn=0.05,
                    momentum=0.9, drift=0.08, jag=0.0, kink_p=0.0, step=1.0)
        w = np.full(len(pts), rng.uniform(0.3, 0.8))
        dark += rng.uniform(0.05, 0.2) * _draw(s, cfg.supersample, [(pts, w, np.full(len(pts), 255))])
    shade = 1.0
    if neg["edge"]:  # the product's edge or a shadowed border: a soft step with a bright rim before it
        d, soft = _line_distance(rng, s), rng.uniform(0.7, 4)
        shade = 1 - _u(rng, cfg.edge_depth) * 0.5 * (1 + np.tanh(d / (2 * soft)))  # a logistic step
        relief = relief + rng.uniform(0.02, 0.08) * np.exp(-0.5 * ((d + 1.5 * soft) / 0.8) ** 2)
    spec = np.zeros((s, s))
    neg["specular"] = bool(rng.random() < cfg.specular_p)
    if neg["specular"]:  # highlight of curved ware: an elongated glare, screen-blended after the cracks
        spec = _u(rng, cfg.specular) * _gauss(s, *rng.uniform(-0.2 * s, 1.2 * s, 2), rng.uniform(8, 30),
                                              rng.uniform(2, 10), rng.uniform(0, math.pi))
    meta.update(palette=name, negatives=neg)
    surf = base * (light * (1 + relief) * (1 - np.clip(dark, 0, 0.9)) * shade)[..., None]
    return np.clip(surf, 0, 1), spec


def _luma(img: np.ndarray) -> np.ndarray:
    """(H, W) luma of (H, W, 3), written out elementwise: BLAS would make it depend on the CPU."""
    return LUMA[0] * img[..., 0] + LUMA[1] * img[..., 1] + LUMA[2] * img[..., 2]


def _visible_box(mask: np.ndarray) -> np.ndarray | None:
    """Tight box x1 y1 x2 y2 of a (H, W) bool mask, pixel i spanning [i, i + 1); None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def render(cfg: SynthConfig, split: str, index: int) -> Sample:
    """One image of a split (§V-A), regenerable alone from (cfg.seed, split, index)."""
    if not 0 <= index < split_size(cfg, split):
        raise IndexError(f"index {index} outside split {split!r} of {split_size(cfg, split)} images")
    rng, s = rng_for(cfg, split, index), cfg.size
    meta: dict = {"split": split, "index": index}
    surf, spec = _surface(rng, cfg, meta)  # (H, W, 3), (H, W)
    tint = 1 + rng.uniform(0, 1) * np.array([-0.05, 0.0, 0.1])  # dirt-filled cracks are a little warm
    # A crack pixel is visible if the crack alone lowers the noise-free luminance by ≥ threshold grey levels.
    sensitivity = 255 * _luma(surf * tint) * (1 - spec)  # (H, W)
    keep = np.ones_like(surf)
    boxes, masks, cracks = [], [], []
    if split != "background":
        n_cracks = 1 + int(rng.choice(len(cfg.crack_count_weights), p=_norm(cfg.crack_count_weights)))
        for _ in range(n_cracks):
            for _ in range(cfg.max_redraws):
                core, darkening, attrs = _crack(rng, cfg)
                vis = core * sensitivity >= cfg.visibility_threshold
                box = _visible_box(vis)
                if box is not None and max(box[2] - box[0], box[3] - box[1]) >= cfg.min_box_side:
                    keep *= 1 - darkening[..., None] * tint
                    boxes.append(box), masks.append(vis), cracks.append({**attrs, "box": box.tolist()})
                    break
        if not boxes:
            raise RuntimeError(f"no visible crack after {cfg.max_redraws} draws ({split} {index}); check the knobs")
    img = 1 - (1 - surf * keep) * (1 - spec[..., None])
    blur = _u(rng, cfg.blur_sigma)
    img = cv2.GaussianBlur(img, (0, 0), blur)
    sigma = _u(rng, cfg.noise_sigma) / 255
    img = img + sigma * (0.6 * rng.standard_normal((s, s, 3)) + 0.8 * rng.standard_normal((s, s, 1)))
    img = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.random() < cfg.jpeg_p else None
    if quality is not None:
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    meta.update(cracks=cracks, blur_sigma=round(blur, 3), noise_sigma=round(sigma * 255, 3), jpeg_quality=quality,
                masks=np.stack(masks) if masks else np.zeros((0, s, s), bool))  # masks: (N, H, W)
    return Sample(np.ascontiguousarray(img), np.array(boxes, np.float32).reshape(-1, 4), meta)


def generate(cfg: SynthConfig, split: str, progress: bool = False):
    """Yield every Sample of a split in index order."""
    for i in tqdm(range(split_size(cfg, split)), desc=split, disable=not progress, leave=False):
        yield render(cfg, split, i)
