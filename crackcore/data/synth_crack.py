"""Synthetic cracks: the shape of a fissure, how it darkens a surface, and how much of it a person can see.

Shape (data card, sources [8, 13, 14, 17] there): a narrow gap, 0.5–2.5 px wide (rarely up to 4), whose width
changes along it (log-normal, correlated over ~10 px) and whose darkness changes in steps; long stretches are
nearly straight, with a few gentle bends, sub-pixel jag and now and then a kink; most cracks cross the whole patch
and are cut by its border, others end inside it, where they taper; a quarter have faded stretches; few branch.
Profiles are bars with sharp edges: paths are drawn at `supersample`× and area-averaged, so a 0.5-px crack darkens
half a pixel. Some have a soft halo, some a bright flank where the glaze broke.

Labels (`visible_points`): a person boxes what they can see. A point of the crack's path is visible when the
crack's darkening, averaged over `visibility_window` px along it, is at least max(k·s/√window, weber·I), with s the
local noise (camera noise and texture together) and I the local brightness: the Rose criterion (an SNR of about 5
over what the eye integrates; k is a knob, raised to 8 by the calibration) and Weber's 2 % just-noticeable
difference. Runs shorter than `min_visible_run` px do not count.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

ORIENTATIONS = ("vertical", "horizontal", "any")


def uniform(rng, lo_hi) -> float:
    """A draw from the (low, high) range of a knob."""
    return float(rng.uniform(*lo_hi))


def _log_u(rng, lo_hi) -> float:
    return math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1])))


def smooth_noise(rng, n: int, corr: float) -> np.ndarray:
    """(n,) unit-variance noise correlated over about `corr` samples (linear interpolation of knots)."""
    knots = rng.standard_normal(int(n / corr) + 3)
    return np.interp(np.arange(n) / corr, np.arange(len(knots)), knots)


def draw(size: int, k: int, paths) -> np.ndarray:
    """Area coverage in [0, 1] of polylines with per-node widths and values, drawn at k× and averaged: (H, W)."""
    canvas = np.zeros((size * k, size * k), np.uint8)
    for pts, widths, values in paths:
        q = np.rint((pts * k - 0.5) * 8).astype(np.int64)  # continuous px → supersampled centres, 3-bit shift
        for i in range(len(q) - 1):
            if values[i] <= 0:
                continue
            t = max(1, int(round(widths[i] * k)))
            cv2.line(canvas, tuple(map(int, q[i])), tuple(map(int, q[i + 1])), int(values[i]), t, cv2.LINE_AA, 3)
    return canvas.reshape(size, k, size, k).mean((1, 3)) / 255.0


def heading(rng, cfg) -> float:
    """A crack's direction: near-vertical, near-horizontal or any, as `orientation_weights` say (radians)."""
    kind = ORIENTATIONS[int(rng.choice(3, p=np.asarray(cfg.orientation_weights) / sum(cfg.orientation_weights)))]
    spread = math.radians(cfg.axis_spread)
    if kind == "any":
        return float(rng.uniform(0, math.pi))
    return (math.pi / 2 if kind == "vertical" else 0.0) + float(rng.uniform(-spread, spread))


def course(rng, cfg, start: np.ndarray, theta: float, length: float) -> np.ndarray:
    """(K, 2) xy points 1 px apart: a straight line with gentle bends, rare kinks and sub-pixel jag."""
    n = max(2, int(math.ceil(length)) + 1)
    angles = np.full(n - 1, theta)
    for _ in range(int(rng.integers(0, cfg.kinks_max + 1)) if rng.random() < cfg.kink_p else 0):
        angles[int(rng.integers(0, n - 1)):] += rng.choice([-1, 1]) * math.radians(uniform(rng, cfg.kink_angle))
    pts = np.vstack([start, start + np.cumsum(np.stack([np.cos(angles), np.sin(angles)], 1), 0)])  # (n, 2)
    normal = np.stack([-np.sin(angles), np.cos(angles)], 1)
    normal = np.vstack([normal[:1], normal])  # (n, 2): the side each point bends to
    bend = smooth_noise(rng, n, uniform(rng, (15, 40)))
    bend = uniform(rng, cfg.bend) * (bend - bend.mean()) / max(bend.std(), 1e-9)  # lateral RMS in px
    jag = rng.normal(0, uniform(rng, cfg.jag_sigma), n)
    return pts + (bend + jag)[:, None] * normal


def _tip_taper(n: int, inside: tuple[bool, bool], rng) -> np.ndarray:
    """(n,) width factor: 1 along the crack, falling to 0.2 over the last 3–8 px of an end inside the patch."""
    t = np.ones(n)
    idx = np.arange(n, dtype=np.float64)
    for end, is_tip in zip((idx, idx[::-1]), inside):
        if is_tip:
            t = np.minimum(t, 0.2 + 0.8 * np.clip(end / rng.uniform(3, 8), 0, 1) ** 0.7)
    return t


def _profile(rng, cfg, pts: np.ndarray, width: float, tips: tuple[bool, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Per-point width (px) and shade (0–255) of a path: log-normal width wobble, stepped darkness, faded gaps."""
    n = len(pts)
    widths = width * np.exp(uniform(rng, cfg.width_var) * smooth_noise(rng, n, 10.0)) * _tip_taper(n, tips, rng)
    step = int(rng.integers(8, 21))
    levels = 1 + uniform(rng, cfg.shade_var) * rng.uniform(-1, 1, n // step + 2)
    shade = levels[np.arange(n) // step]
    if rng.random() < cfg.gap_p:  # faded stretches: the fissure closes or fills with glaze
        for _ in range(int(rng.integers(1, 4))):
            a = int(rng.integers(0, n))
            shade[a:a + int(rng.integers(cfg.gap_length[0], cfg.gap_length[1] + 1))] *= uniform(rng, cfg.gap_depth)
    return widths, np.clip(255 * shade / max(1.0, shade.max()), 0, 255)


def crack(rng, cfg) -> dict:
    """One crack: its paths (main + branches) and the darkening field it casts on the surface (H, W)."""
    s = cfg.size
    theta = heading(rng, cfg)
    mode = int(rng.choice(3, p=np.asarray(cfg.extent_weights) / sum(cfg.extent_weights)))  # through, tip, short
    d = np.array([math.cos(theta), math.sin(theta)])
    centre = rng.uniform(0.15 * s, 0.85 * s, 2)
    if mode == 0:  # crosses the patch: starts and ends outside it
        length, tips = 2.2 * s, (False, False)
        start = centre - d * 1.1 * s
    elif mode == 1:  # one tip inside the patch, the other end out of it
        length, tips = 1.6 * s, (True, False)
        start = centre
    else:  # a short crack with both tips inside
        length, tips = uniform(rng, cfg.short_length), (True, True)
        start = centre - d * length / 2
    width = _log_u(rng, cfg.width) if rng.random() >= cfg.thick_p else uniform(rng, cfg.thick_width)
    main = course(rng, cfg, start, theta, length)
    widths, shade = _profile(rng, cfg, main, width, tips)
    paths = [(main, widths, shade)]
    n_branches = int(rng.choice(len(cfg.branch_weights), p=np.asarray(cfg.branch_weights) / sum(cfg.branch_weights)))
    inside = np.flatnonzero(((main >= 2) & (main <= s - 2)).all(1))
    for _ in range(n_branches if len(inside) else 0):
        j = int(rng.choice(inside))
        ang = theta + rng.choice([-1, 1]) * math.radians(rng.uniform(20, 50))
        br = course(rng, cfg, main[j], ang, uniform(rng, (5, 25)))
        bw, bs = _profile(rng, cfg, br, widths[j] * rng.uniform(0.5, 0.8), (False, True))
        paths.append((br, bw, bs * shade[j] / 255))
    cover = draw(s, cfg.supersample, paths)  # (H, W) area coverage
    contrast = _log_u(rng, cfg.contrast)
    dark = cover.copy()
    halo = rng.random() < cfg.halo_p
    if halo:
        dark += uniform(rng, cfg.halo) * cv2.GaussianBlur(cover, (0, 0), uniform(rng, cfg.halo_sigma))
    rim = rng.random() < cfg.rim_p
    if rim:  # a bright flank 1 px to one side: glaze broken at the lip, lit obliquely
        side = rng.choice([-1, 1]) * np.array([-math.sin(theta), math.cos(theta)])
        flank = draw(s, cfg.supersample, [(p + side * (w[:, None] / 2 + 1), 0.7 * w, v) for p, w, v in paths])
        dark -= uniform(rng, cfg.rim) * flank
    attrs = {"length": round(float(np.linalg.norm(np.diff(main, axis=0), axis=1).sum()), 2),
             "width": round(width, 3), "contrast": round(contrast, 4), "branches": n_branches,
             "orientation_deg": round(math.degrees(theta) % 180, 1), "extent": ("through", "tip", "short")[mode],
             "halo": bool(halo), "rim": bool(rim)}
    return {"paths": paths, "darkening": np.clip(contrast * dark, -0.5, 0.95), "attrs": attrs}


def visible_points(paths, delta: np.ndarray, noise: np.ndarray, level: np.ndarray, cfg) -> list[np.ndarray]:
    """Per path, a bool per point: the crack is visible there (the module's labelling rule)."""
    s = delta.shape[0]
    pad = np.pad(delta, 1, constant_values=0)
    peak = np.max([pad[dy:dy + s, dx:dx + s] for dy in range(3) for dx in range(3)], axis=0)  # 3×3 max of Δ
    out = []
    win = cfg.visibility_window
    for pts, _, _ in paths:
        ij = np.floor(pts).astype(np.int64)
        inside = ((ij >= 0) & (ij < s)).all(1)
        y, x = np.clip(ij[:, 1], 0, s - 1), np.clip(ij[:, 0], 0, s - 1)
        d = np.where(inside, peak[y, x], 0.0)
        mean = np.convolve(d, np.ones(win) / win)[win // 2:win // 2 + len(d)]  # Δ averaged along the path
        need = np.maximum(cfg.visibility_k * noise[y, x] / math.sqrt(win), cfg.visibility_weber * level[y, x])
        vis = inside & (mean >= need)
        out.append(_drop_short_runs(vis, cfg.min_visible_run))
    return out


def _drop_short_runs(vis: np.ndarray, min_run: int) -> np.ndarray:
    """`vis` without its runs of fewer than `min_run` consecutive True values."""
    out = vis.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], vis.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a < min_run:
            out[a:b] = False
    return out


def visible_mask(paths, visible: list[np.ndarray], size: int, k: int) -> np.ndarray:
    """(H, W) bool: pixels the visible stretches of the paths cover (≥ 10 %) or pass through."""
    parts = []
    mask = np.zeros((size, size), bool)
    for (pts, widths, _), vis in zip(paths, visible):
        seg = vis[:-1] & vis[1:]  # a segment is drawn when both its ends are visible
        parts.append((pts, widths, np.where(np.append(seg, False), 255, 0)))
        ij = np.floor(pts[vis]).astype(np.int64)
        mask[ij[:, 1], ij[:, 0]] = True
    return mask | (draw(size, k, parts) >= 0.1)


def padded_box(mask: np.ndarray, pad: float) -> np.ndarray | None:
    """The tight box x1 y1 x2 y2 of a bool mask (pixel i spans [i, i + 1)), widened by `pad` px and clipped."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    s = mask.shape[0]
    return np.array([max(0.0, xs.min() - pad), max(0.0, ys.min() - pad), min(float(s), xs.max() + 1 + pad),
                     min(float(s), ys.max() + 1 + pad)], np.float32)
