"""Deterministic synthetic ceramic patches with thin dark cracks, in the paper's splits (§V-A).

What a patch shows is drawn in two modules: `synth_surface` (five surface families, the hard negatives, the camera)
and `synth_crack` (the cracks and the rule for which of a crack a person can see, hence its box). This module
holds the knobs, the splits and the order of drawing. The family named `holdout_family` never appears in the
train, test or background splits; the `shift` and `shift_background` splits are drawn from it alone, so a model's
AP there says how much it relies on the surfaces it was trained on.

Every image depends only on (cfg.seed, split, index): its generator is seeded by a SeedSequence whose spawn key
is (split number, index), so any image regenerates alone, in any order or process.
All arithmetic is float64 and elementwise or OpenCV: a last-bit difference between CPUs almost never moves a
value across a rounding boundary of the uint8 output, so the bytes match across machines with the same numpy and
OpenCV (the data card records a SHA-256 of all pixels to check).
Coordinates are continuous pixels: pixel column i spans [i, i + 1), so a box over columns a..b is x1=a, x2=b+1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..paper import PAPER_SPLITS
from .synth_crack import crack, padded_box, visible_mask, visible_points
from .synth_surface import (FAMILIES, camera, gauss, illumination, negatives, noise_sigma, optics, sensor, texture,
                            texture_sigma)

SPLITS = ("train", "test", "background", "shift", "shift_background")
SHIFT_SPLITS = ("shift", "shift_background")  # drawn from the held-out family only
CRACK_SPLITS = ("train", "test", "shift")


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the generator; scalar fields are `crackcore synth` flags, tuples (low, high) ranges too."""
    seed: int = 0
    size: int = 80  # §IV-B: all images are 80×80
    n_train: int = PAPER_SPLITS["train"]  # §V-A: 726 training and 181 test images with cracks, 1523 backgrounds
    n_test: int = PAPER_SPLITS["test"]
    n_background: int = PAPER_SPLITS["background"]
    n_shift: int = PAPER_SPLITS["test"]  # crack images of the held-out family (domain-shift test)
    n_shift_background: int = PAPER_SPLITS["test"]  # background images of the held-out family
    holdout_family: str = "granular"  # never in train/test/background; "" = no held-out family (shift splits empty)
    second_family_p: float = 0.3  # a second family's texture at half strength
    gray_p: float = 0.5  # grey-level camera (the three channels equal) rather than colour
    # exposure and light (grey levels of the surface before shading)
    level: tuple = (90.0, 230.0)
    glaze_level: tuple = (170.0, 240.0)
    dim_level: tuple = (60.0, 120.0)
    gradient: tuple = (0.0, 0.2)  # peak-to-peak illumination change across the patch
    curvature_p: float = 0.5  # glaze: curved ware's parabolic fall-off
    curvature: tuple = (0.02, 0.15)
    vignetting: tuple = (0.05, 0.15)  # radial fall-off (camera family; 20 % of the others)
    specular_p: float = 0.3  # glaze family only; elsewhere a tenth of it
    specular: tuple = (0.15, 0.6)  # screen-blend strength of a glare
    # textures (relative relief)
    peel: tuple = (0.003, 0.012)  # glaze waviness and orange peel
    striation: tuple = (0.005, 0.04)  # directional streaks
    granular: tuple = (0.02, 0.06)  # matte blotches and grains
    # hard negatives (Poisson means or probabilities), identical in images with and without cracks
    pinholes_mean: float = 0.6
    blobs_mean: float = 0.3
    dust_mean: float = 1.2
    fibre_p: float = 0.12
    seam_p: float = 0.15
    scratch_p: float = 0.25  # long straight scratches, bright or dark
    edge_p: float = 0.1  # a product border (0.6 in the edges family)
    joint_p: float = 0.05  # a joint-like dark band across the patch (0.5 in the edges family)
    stain_p: float = 0.1  # a soft grey stroke (0.5 in the edges family)
    edge_depth: tuple = (0.15, 0.45)
    # cracks
    crack_count_weights: tuple = (0.85, 0.13, 0.02)  # one, two or three cracks per defect image
    extent_weights: tuple = (0.6, 0.3, 0.1)  # crossing the patch, one tip inside, both tips inside
    short_length: tuple = (10.0, 40.0)  # px, cracks with both tips inside
    orientation_weights: tuple = (0.45, 0.15, 0.4)  # near-vertical, near-horizontal, any (also for line negatives)
    axis_spread: float = 20.0  # degrees around the axis for near-vertical and near-horizontal
    bend: tuple = (0.3, 2.0)  # px RMS of the course's gentle lateral bends
    jag_sigma: tuple = (0.1, 0.3)  # px of sub-pixel roughness per point
    kink_p: float = 0.3  # chance of 1..kinks_max kinks
    kinks_max: int = 2
    kink_angle: tuple = (10.0, 40.0)  # degrees
    width: tuple = (0.5, 2.5)  # px, log-uniform core width
    thick_p: float = 0.05
    thick_width: tuple = (2.5, 4.0)
    width_var: tuple = (0.2, 0.5)  # σ of log width along the crack (correlated over ~10 px)
    shade_var: tuple = (0.1, 0.25)  # ± steps of darkness every 8–20 px
    gap_p: float = 0.25  # cracks with 1–3 faded stretches
    gap_length: tuple = (2, 8)
    gap_depth: tuple = (0.0, 0.3)  # darkness kept in a faded stretch
    contrast: tuple = (0.08, 0.5)  # log-uniform fraction of light a fully covered crack pixel absorbs (calibrated)
    halo_p: float = 0.3
    halo: tuple = (0.05, 0.2)
    halo_sigma: tuple = (0.8, 2.0)
    rim_p: float = 0.15  # a bright flank where the glaze broke
    rim: tuple = (0.2, 0.5)  # its brightening relative to the core's darkening
    branch_weights: tuple = (0.85, 0.12, 0.03)  # zero, one or two branches
    supersample: int = 4  # cracks, fibres and flanks are drawn at 4× and area-averaged
    # labels: which part of a crack a person sees (synth_crack.visible_points)
    visibility_k: float = 8.0  # Rose's SNR of 5 over the integration window, raised to 8 by the calibration
    visibility_weber: float = 0.02  # Weber fraction: the least darkening seen on clean bright glaze
    visibility_window: int = 15  # px along the crack over which the eye integrates its darkening
    min_visible_run: int = 6  # px: shorter visible stretches are not seen as crack
    min_box_side: float = 6.0  # a crack whose visible part is shorter in both dims is redrawn
    box_pad: float = 1.0  # px around the visible pixels: annotators draw around a crack, not on it
    max_redraws: int = 40
    # camera
    read_noise: tuple = (0.7, 2.0)  # grey levels, dark noise
    noise_at_200: tuple = (1.5, 5.0)  # grey levels of total noise at 200 (read + shot noise)
    prnu: tuple = (0.003, 0.01)  # pixel gain non-uniformity
    column_noise: tuple = (0.0, 0.01)  # line-scan-like column gain pattern (camera family; 20 % of the others)
    blur_sigma: tuple = (0.3, 1.2)
    motion_p: float = 0.15  # motion blur of 2–4 px along one axis (0.5 in the camera family)
    gamma: tuple = (0.8, 1.25)
    jpeg_p: float = 0.4
    jpeg_quality: tuple = (75, 95)
    calibration_note: str = ""  # how the defaults were calibrated; printed in the data card

    def __post_init__(self):
        for name in ("level", "contrast", "width", "short_length", "blur_sigma", "noise_at_200"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"need 0 < low <= high for {name}, got {getattr(self, name)}")
        if self.contrast[1] >= 1 or min(self.n_train, self.n_test, self.n_background, self.n_shift,
                                        self.n_shift_background) < 0 or self.size < 8:
            raise ValueError("need contrast below 1, split sizes >= 0 and size >= 8")
        if self.holdout_family and self.holdout_family not in FAMILIES:
            raise ValueError(f"unknown holdout_family {self.holdout_family!r}; choose one of {', '.join(FAMILIES)}")

    def families(self, split: str) -> tuple[str, ...]:
        """The surface families a split draws from: the held-out one alone for the shift splits."""
        if split in SHIFT_SPLITS:
            return (self.holdout_family,) if self.holdout_family else ()
        return tuple(f for f in FAMILIES if f != self.holdout_family)


class Sample(NamedTuple):
    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2, continuous pixel coordinates
    meta: dict  # family, crack attributes, hard negatives, camera, "masks": (N, H, W) bool visible crack pixels


def split_size(cfg: SynthConfig, split: str) -> int:
    """Number of images in a split (§V-A: 726 / 181 / 1523 by default, and the held-out family's two)."""
    n = {"train": cfg.n_train, "test": cfg.n_test, "background": cfg.n_background, "shift": cfg.n_shift,
         "shift_background": cfg.n_shift_background}[_check_split(split)]
    return n if cfg.families(split) else 0


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def rng_for(cfg: SynthConfig, split: str, index: int) -> np.random.Generator:
    """The generator of one image: its own SeedSequence stream, independent of every other image."""
    return np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(SPLITS.index(split), index)))


def _screen(lum: np.ndarray, spec: np.ndarray) -> np.ndarray:
    return 1 - (1 - lum) * (1 - spec)


def render(cfg: SynthConfig, split: str, index: int) -> Sample:
    """One image of a split (§V-A), regenerable alone from (cfg.seed, split, index)."""
    if not 0 <= index < split_size(cfg, split):
        raise IndexError(f"index {index} outside split {split!r} of {split_size(cfg, split)} images")
    rng, s = rng_for(cfg, split, index), cfg.size
    allowed = cfg.families(split)
    family = allowed[int(rng.integers(len(allowed)))]
    meta: dict = {"split": split, "index": index, "family": family}
    cam = camera(rng, cfg, family)
    relief = texture(rng, cfg, family, 1.0)
    others = [f for f in allowed if f != family]
    second = others[int(rng.integers(len(others)))] if others and rng.random() < cfg.second_family_p else None
    if second:
        relief = relief + texture(rng, cfg, second, 0.5)
    light = illumination(rng, cfg, family)
    n_relief, dark, shade = negatives(rng, cfg, family, meta)
    lum = np.clip(cam["level"] * light * (1 + relief + n_relief) * (1 - np.clip(dark, 0, 0.9)) * shade, 0, 1)
    spec = np.zeros((s, s))
    if rng.random() < cfg.specular_p * (1 if family == "glaze" else 0.1):  # curved glossy ware's glare
        spec = float(rng.uniform(*cfg.specular)) * gauss(s, *rng.uniform(-0.2 * s, 1.2 * s, 2), rng.uniform(8, 30),
                                                          rng.uniform(2, 10), rng.uniform(0, np.pi))
    boxes, masks, cracks = [], [], []
    if split in CRACK_SPLITS:
        n_cracks = 1 + int(rng.choice(len(cfg.crack_count_weights), p=np.asarray(cfg.crack_count_weights)
                                      / sum(cfg.crack_count_weights)))
        for _ in range(n_cracks):
            seen = optics(_screen(lum, spec), cam)  # (H, W) what the sensor records without this crack
            clutter = np.sqrt(noise_sigma(seen, cam) ** 2 + texture_sigma(seen) ** 2)  # (H, W) grey levels
            for _ in range(cfg.max_redraws):
                c = crack(rng, cfg)
                cracked = lum * (1 - c["darkening"])
                delta = 255 * (seen - optics(_screen(cracked, spec), cam))  # (H, W) darkening as recorded
                vis = visible_points(c["paths"], delta, clutter, 255 * seen, cfg)
                mask = visible_mask(c["paths"], vis, s, cfg.supersample)
                ys, xs = np.nonzero(mask)
                if len(xs) and max(np.ptp(xs), np.ptp(ys)) + 1 >= cfg.min_box_side:
                    lum = np.clip(cracked, 0, 1)
                    box = padded_box(mask, cfg.box_pad)
                    boxes.append(box), masks.append(mask)
                    cracks.append({**c["attrs"], "visible_px": int(sum(v.sum() for v in vis)), "box": box.tolist()})
                    break
        if not boxes:
            raise RuntimeError(f"no visible crack after {cfg.max_redraws} draws ({split} {index}); check the knobs")
    final = optics(_screen(lum, spec), cam)
    img = sensor(rng, final, cam)
    meta.update(second_family=second, colour=cam["colour"], gray=cam["gray"], level=round(255 * cam["level"], 1),
                cracks=cracks, blur_sigma=round(cam["blur"], 3), motion_blur=cam["motion"],
                noise_sigma=round(float(noise_sigma(final, cam).mean()), 3), jpeg_quality=cam["jpeg"],
                specular=bool(spec.any()), masks=np.stack(masks) if masks else np.zeros((0, s, s), bool))
    return Sample(img, np.array(boxes, np.float32).reshape(-1, 4), meta)


def generate(cfg: SynthConfig, split: str, progress: bool = False):
    """Yield every Sample of a split in index order."""
    for i in tqdm(range(split_size(cfg, split)), desc=split, disable=not progress, leave=False):
        yield render(cfg, split, i)
