"""Gaussian centre labels and per-image training targets (§III-A, §III-B, Fig. 2).

Coordinates are continuous: pixel column j spans [j, j + 1) and its centre is j + 0.5. A box's centre in output
coordinates c = centre / stride is assigned to the cell floor(c); at stride 4 the offset c - floor(c) is a target
of the `reg` head; at stride 1 there is no offset head and the decoder places the centre at the cell's middle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


def gaussian_radius(height: float, width: float, min_overlap: float = 0.3) -> float:
    """§III-A: largest corner shift r keeping IoU ≥ min_overlap with the box (CornerNet [21], roots fixed)."""
    h, w, m = float(height), float(width), float(min_overlap)
    # Case 1: one corner inside, one outside: r² - (h+w) r + hw(1-m)/(1+m) = 0.
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 - math.sqrt(b1 ** 2 - 4 * c1)) / 2
    # Case 2: both corners inside: 4r² - 2(h+w) r + (1-m) hw = 0.
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 - math.sqrt(b2 ** 2 - 16 * c2)) / 8
    # Case 3: both corners outside: 4m r² + 2m(h+w) r + (m-1) hw = 0.
    b3, c3 = 2 * m * (h + w), (m - 1) * w * h
    r3 = (-b3 + math.sqrt(b3 ** 2 - 16 * m * c3)) / (8 * m)
    return min(r1, r2, r3)


def gaussian_radius_official(height: float, width: float, min_overlap: float = 0.7) -> float:
    """The radius as CornerNet/CenterNet's released code computes it: '+' roots in cases 1–2, /2 instead of /2a.

    A known bug (the roots are not those of the quadratics), but very likely what the paper trained with, since it
    adopts [21]'s code; selectable for training as radius_rule="released".
    """
    h, w, m = float(height), float(width), float(min_overlap)
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    b3, c3 = -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + math.sqrt(b3 ** 2 - 16 * m * c3)) / 2
    return min(r1, r2, r3)


SIGMA_RULES = ("paper", "centernet")


def gaussian_sigma(radius: int, rule: str = "paper") -> float:
    """σ of the label Gaussian: r/3 as §III-A states, or CenterNet's (2r+1)/6 with rule="centernet"."""
    if rule == "paper":
        return radius / 3
    if rule == "centernet":
        return (2 * radius + 1) / 6
    raise ValueError(f"unknown sigma rule {rule!r}; use 'paper' or 'centernet'")


def _axis(d: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-d²/2σ²) along one axis; σ = 0 keeps the centre only."""
    return np.exp(-d ** 2 / (2 * sigma ** 2)) if sigma > 0 else (d == 0).astype(np.float64)


def draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int | tuple[int, int],
                  sigma: float | tuple[float, float]) -> None:
    """Fig. 2: splat exp(-(x²/2σx² + y²/2σy²)) of half-size `radius` at (cx, cy) into `heatmap`, merging by maximum.

    `radius` and `sigma` are one number (§III-A's round Gaussian) or an (x, y) pair (the elliptical reading).
    """
    rx, ry = (radius, radius) if np.ndim(radius) == 0 else radius
    sx, sy = (sigma, sigma) if np.ndim(sigma) == 0 else sigma
    dx = np.arange(-rx, rx + 1, dtype=np.float64)
    dy = np.arange(-ry, ry + 1, dtype=np.float64)
    g = _axis(dy, sy)[:, None] * _axis(dx, sx)[None, :]  # (2ry+1, 2rx+1), g[ry, rx] == 1 exactly
    H, W = heatmap.shape
    x0, x1 = max(0, cx - rx), min(W, cx + rx + 1)  # clipped where the box touches the border
    y0, y1 = max(0, cy - ry), min(H, cy + ry + 1)
    patch = g[y0 - cy + ry:y1 - cy + ry, x0 - cx + rx:x1 - cx + rx]
    np.maximum(heatmap[y0:y1, x0:x1], patch.astype(heatmap.dtype), out=heatmap[y0:y1, x0:x1])


RADIUS_RULES = ("corrected", "released")


def label_radius(height: float, width: float, min_overlap: float = 0.3, rule: str = "corrected") -> int:
    """§III-A's integer radius: the corrected CornerNet bound, or the released code's larger one (rule="released")."""
    if rule == "corrected":
        return max(0, int(gaussian_radius(height, width, min_overlap)))
    if rule == "released":
        return max(0, int(gaussian_radius_official(height, width, min_overlap)))
    raise ValueError(f"unknown radius rule {rule!r}; choose one of {', '.join(RADIUS_RULES)}")


LABEL_SHAPES = ("round", "ellipse")
ELLIPSE_ALPHA = 0.54  # TTFNet's share of each side that its elliptical Gaussian spans (Liu et al., AAAI 2020)


def label_radii(height: float, width: float, min_overlap: float = 0.3, rule: str = "corrected",
                shape: str = "round") -> tuple[int, int]:
    """(r_x, r_y) of a box's label: §III-A's round radius, or per axis the larger of it and α·side/2 ("ellipse").

    The ellipse is not the paper's label. It stretches the Gaussian along a long crack, so that points on the crack
    near its centre are not punished as hard as far background: a crack's centre along its length is the one thing
    a round label of radius 1–2 px asks the network to pin to a pixel.
    """
    r = label_radius(height, width, min_overlap, rule)
    if shape == "round":
        return r, r
    if shape == "ellipse":
        return max(r, int(ELLIPSE_ALPHA * width / 2)), max(r, int(ELLIPSE_ALPHA * height / 2))
    raise ValueError(f"unknown label shape {shape!r}; choose one of {', '.join(LABEL_SHAPES)}")


@dataclass(frozen=True)
class LabelConfig:
    """How boxes become §III-A's training targets; the fields are `encode`'s keyword arguments (the `train` flags)."""

    min_overlap: float = 0.3  # IoU the Gaussian radius guarantees (§III-A)
    sigma_rule: str = "paper"  # paper (σ = r/3) | centernet (σ = (2r+1)/6)
    radius_rule: str = "corrected"  # corrected CornerNet radius | released (the larger one of [21]'s code)
    label_shape: str = "round"  # round (§III-A) | ellipse (stretched along the box, TTFNet; not the paper's)
    max_objs: int = 32  # most boxes per image; further ones are dropped and counted

    def __post_init__(self):
        for name, allowed in (("radius_rule", RADIUS_RULES), ("sigma_rule", SIGMA_RULES), ("label_shape", LABEL_SHAPES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        if not 0 < self.min_overlap < 1 or self.max_objs < 1:
            raise ValueError(f"min_overlap must lie in (0, 1) and max_objs be ≥ 1, got {self.min_overlap}, "
                             f"{self.max_objs}")


def encode(boxes, output_size: tuple[int, int], stride: int = 1, *, max_objs: int = 32, min_overlap: float = 0.3,
           sigma_rule: str = "paper", radius_rule: str = "corrected", label_shape: str = "round"
           ) -> dict[str, torch.Tensor]:
    """One image's targets (§III-A, §III-B): heatmap, and at each centre `wh`, `reg` offset, flat `ind`, `mask`.

    `boxes` are (N, 4) x1 y1 x2 y2 in input pixels. NaN or inverted boxes are errors in the data and raise.
    Boxes are clipped to the image; those left with zero width or height (degenerate, or wholly outside) are
    skipped and counted in `n_skipped`; boxes beyond `max_objs` are dropped and counted in `n_dropped`.
    """
    H, W = output_size
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    heatmap = np.zeros((H, W), dtype=np.float32)
    wh = np.zeros((max_objs, 2), dtype=np.float32)
    reg = np.zeros((max_objs, 2), dtype=np.float32)
    ind = np.zeros(max_objs, dtype=np.int64)
    mask = np.zeros(max_objs, dtype=np.float32)
    if not np.isfinite(b).all():
        raise ValueError(f"boxes contain NaN or infinite coordinates: {b[~np.isfinite(b).all(1)].tolist()}")
    if (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f"inverted boxes (x2 < x1 or y2 < y1): {b[(b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])].tolist()}")
    skipped = dropped = k = 0
    for x1, y1, x2, y2 in b / stride:
        x1, x2 = np.clip([x1, x2], 0, W)
        y1, y2 = np.clip([y1, y2], 0, H)
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            skipped += 1
            continue
        if k == max_objs:
            dropped += 1
            continue
        c = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        ci = np.minimum(np.floor(c).astype(np.int64), [W - 1, H - 1])  # a centre on the far edge stays inside
        rx, ry = label_radii(h, w, min_overlap, radius_rule, label_shape)
        draw_gaussian(heatmap, int(ci[0]), int(ci[1]), (rx, ry),
                      (gaussian_sigma(rx, sigma_rule), gaussian_sigma(ry, sigma_rule)))
        wh[k], reg[k], ind[k], mask[k] = (w, h), c - ci, ci[1] * W + ci[0], 1.0
        k += 1
    return {"heatmap": torch.from_numpy(heatmap)[None], "wh": torch.from_numpy(wh), "reg": torch.from_numpy(reg),
            "ind": torch.from_numpy(ind), "mask": torch.from_numpy(mask),
            "n_skipped": torch.tensor(skipped), "n_dropped": torch.tensor(dropped)}
