"""Synthetic surfaces: five families of ceramic texture and lighting, the hard negatives, and the camera.

Families (data card, sources [2–4, 15, 16, 18, 24–26] there), so that a detector cannot lean on one surface:
- `glaze`: bright glossy glaze, smooth shading of curved ware, orange peel, specular glare;
- `striation`: directional texture (grinding, brushing, flow marks) at any angle, often along the cracks' axis;
- `granular`: blotchy multi-scale speckle and grains of a matte body (held out of training by default: the
  domain-shift test);
- `edges`: product borders, joint-like dark bands, stains and seams across the patch;
- `camera`: dim exposure, strong gradients and vignetting, column pattern noise, motion blur.
Every image draws one family and sometimes a second one's texture at half strength. Hard negatives (pinholes,
dust, lint, seams, scratches, edges, joints) are drawn the same way in images with and without cracks, with the
cracks' orientation bias, so neither a line's direction nor its length gives the label away.
All arithmetic is float64 elementwise or OpenCV, on one luminance channel in [0, 1]; colour comes last.
"""
from __future__ import annotations

import functools
import math

import cv2
import numpy as np

from .synth_crack import course, draw, heading, uniform

FAMILIES = ("glaze", "striation", "granular", "edges", "camera")
PALETTE = (("white", (246, 245, 241)), ("ivory", (241, 235, 216)), ("bone", (228, 219, 200)),
           ("light grey", (212, 213, 214)), ("pale blue", (208, 222, 233)), ("pale green", (212, 229, 215)))


@functools.lru_cache(maxsize=4)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    return np.meshgrid(c, c)  # X, Y: (H, W)


def gauss(size, cx, cy, sx, sy, angle=0.0) -> np.ndarray:
    """An oriented Gaussian bump of peak 1 (pinholes, dust, drops, highlights, stains)."""
    X, Y = grid(size)
    c, s = math.cos(angle), math.sin(angle)
    u, v = (X - cx) * c + (Y - cy) * s, -(X - cx) * s + (Y - cy) * c
    return np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))  # (H, W)


def line_distance(size: int, theta: float, offset: float, bend: float = 0.0) -> np.ndarray:
    """Signed distance in px to a gently bent line of direction `theta` passing `offset` px from the centre."""
    X, Y = grid(size)
    u = (X - size / 2) * math.cos(theta) + (Y - size / 2) * math.sin(theta)  # along the line
    v = -(X - size / 2) * math.sin(theta) + (Y - size / 2) * math.cos(theta)  # across it
    return v - offset - bend * u ** 2


def value_noise(rng, size: int, cell: float) -> np.ndarray:
    """Smooth, roughly unit-variance noise with features about `cell` px across (H, W)."""
    n = int(size / cell) + 3
    big = cv2.resize(rng.standard_normal((n, n)), (int(n * cell), int(n * cell)), interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, max(1, int(cell)), 2)
    return big[oy:oy + size, ox:ox + size]


def _lines(rng, cfg) -> tuple[float, float]:
    """Direction and offset of a long straight negative, with the cracks' orientation bias."""
    return heading(rng, cfg), rng.uniform(-0.4, 0.4) * cfg.size


# ---- textures: relative relief around 1 (H, W) -------------------------------------------------------------------

def texture(rng, cfg, family: str, amp: float) -> np.ndarray:
    """The relief of one family's material at `amp` × its strength (H, W), around 0."""
    s = cfg.size
    if family in ("glaze", "edges", "camera"):  # glaze waviness down to orange peel
        octaves = ((1.0, 24), (0.7, 9), (0.5, 4), (0.35, 2))
        return amp * uniform(rng, cfg.peel) / 1.4 * sum(w * value_noise(rng, s, c) for w, c in octaves)
    if family == "striation":  # 1-D noise across a direction, plus a fine grain
        theta = heading(rng, cfg)
        d = line_distance(s, theta, 0.0)
        knots = rng.standard_normal(2 * s + 8)
        scale = rng.uniform(0.7, 3.0)
        streaks = np.interp(d / scale + s + 4, np.arange(len(knots)), knots)
        streaks *= 1 + 0.5 * value_noise(rng, s, 20)  # striations fade in and out along their length
        return amp * (uniform(rng, cfg.striation) * streaks + 0.3 * uniform(rng, cfg.peel) * value_noise(rng, s, 2))
    if family == "granular":  # blotches of a matte body at several scales, and grains
        octaves = ((1.0, 12), (0.8, 6), (0.6, 3), (0.5, 1.5))
        relief = uniform(rng, cfg.granular) / 1.6 * sum(w * value_noise(rng, s, c) for w, c in octaves)
        grains = rng.random((s, s)) < rng.uniform(0.005, 0.03)
        relief = relief + grains * rng.normal(0, 2 * uniform(rng, cfg.granular), (s, s))
        return amp * relief
    raise ValueError(f"unknown surface family {family!r}; choose one of {', '.join(FAMILIES)}")


def illumination(rng, cfg, family: str) -> np.ndarray:
    """Light across the patch (H, W), around 1: a gradient, sometimes curvature, vignetting in `camera`."""
    s = cfg.size
    X, Y = grid(s)
    a = rng.uniform(0, 2 * math.pi)
    strength = uniform(rng, cfg.gradient) * (2.0 if family == "camera" else 1.0)
    light = 1 + strength * ((X - s / 2) * math.cos(a) + (Y - s / 2) * math.sin(a)) / s
    if family == "glaze" and rng.random() < cfg.curvature_p:  # curved ware: a parabolic fall-off
        light = light * (1 - uniform(rng, cfg.curvature) * 4 * (line_distance(s, rng.uniform(0, math.pi),
                                                                          rng.uniform(-0.6, 0.6) * s) / s) ** 2)
    if family == "camera" or rng.random() < 0.2:  # lens fall-off, its centre often outside this patch
        cx, cy = rng.uniform(-s, 2 * s, 2)
        r2 = ((X - cx) ** 2 + (Y - cy) ** 2) / (1.5 * s) ** 2
        light = light * (1 - uniform(rng, cfg.vignetting) * np.clip(r2, 0, 1))
    return light


# ---- hard negatives ------------------------------------------------------------------------------------------

def negatives(rng, cfg, family: str, meta: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hard negatives of an image: relief (H, W), absorbed light (H, W) and a shading factor (H, W)."""
    s = cfg.size
    X, Y = grid(s)
    relief, dark, shade = np.zeros((s, s)), np.zeros((s, s)), np.ones((s, s))
    edges = family == "edges"
    neg = {"pinholes": int(rng.poisson(cfg.pinholes_mean)), "blobs": int(rng.poisson(cfg.blobs_mean)),
           "dust": int(rng.poisson(cfg.dust_mean)), "fibre": bool(rng.random() < cfg.fibre_p),
           "seam": bool(rng.random() < cfg.seam_p * (2 if edges else 1)),
           "scratch": bool(rng.random() < cfg.scratch_p), "edge": bool(rng.random() < (0.6 if edges else cfg.edge_p)),
           "joint": bool(rng.random() < (0.5 if edges else cfg.joint_p)),
           "stain": bool(rng.random() < (0.5 if edges else cfg.stain_p))}
    for _ in range(neg["pinholes"]):
        cx, cy = rng.uniform(0, s, 2)
        sg, depth = rng.uniform(0.4, 1.0), rng.uniform(0.12, 0.45)
        g = gauss(s, cx, cy, sg, sg)
        dark += depth * g
        if rng.random() < 0.5:  # the lighter lip of an open pinhole
            relief += 0.3 * depth * (gauss(s, cx, cy, 2.2 * sg, 2.2 * sg) - g)
    for _ in range(neg["blobs"]):  # glaze drops: embossed bumps lit from one side
        cx, cy = rng.uniform(0, s, 2)
        sx, sy = rng.uniform(1.5, 5, 2)
        a = rng.uniform(0, 2 * math.pi)
        g = gauss(s, cx, cy, sx, sy, rng.uniform(0, math.pi))
        u = ((X - cx) * math.cos(a) + (Y - cy) * math.sin(a)) / ((sx + sy) / 2)
        relief += rng.uniform(-0.05, 0.05) * g - rng.uniform(0.02, 0.07) * u * g
    for _ in range(neg["dust"]):
        cx, cy = rng.uniform(0, s, 2)
        dark += rng.uniform(0.04, 0.2) * gauss(s, cx, cy, *rng.uniform(0.3, 0.8, 2), rng.uniform(0, math.pi))
    if neg["fibre"]:  # a lint fibre: thin, short, smooth, curved
        pts = course(rng, cfg, rng.uniform(0, s, 2), rng.uniform(0, 2 * math.pi), rng.uniform(6, 20))
        dark += rng.uniform(0.05, 0.25) * draw(s, cfg.supersample, [(pts, np.full(len(pts), rng.uniform(0.3, 0.9)),
                                                                     np.full(len(pts), 255))])
    if neg["scratch"]:  # long, straight, constant width and contrast, faint, mostly bright (the glaze is scored)
        theta, off = _lines(rng, cfg)
        d = line_distance(s, theta, off, rng.normal(0, 0.002))
        w = rng.uniform(0.4, 1.0)
        line = np.clip(w / 2 + 0.5 - np.abs(d), 0, 1)  # an anti-aliased bar of width w
        relief += (rng.uniform(0.03, 0.12) if rng.random() < 0.7 else -rng.uniform(0.02, 0.06)) * line
    if neg["seam"]:  # a mould seam: a ridge lit from one side, a long smooth dark-bright pair
        theta, off = _lines(rng, cfg)
        d, sg = line_distance(s, theta, off, rng.normal(0, 0.005)), rng.uniform(0.6, 1.5)
        g = np.exp(-0.5 * (d / sg) ** 2)
        relief += rng.choice([-1, 1]) * rng.uniform(0.015, 0.05) * (d / sg) * g + rng.uniform(-0.03, 0.015) * g
    if neg["joint"]:  # a joint, groove or grout line: a straight dark band 5–10 px wide across the patch
        theta, off = _lines(rng, cfg)
        d, half = line_distance(s, theta, off), rng.uniform(2.5, 5)
        shade = shade * (1 - rng.uniform(0.1, 0.45) * 0.5 * (1 - np.tanh((np.abs(d) - half) / rng.uniform(0.4, 1.2))))
    if neg["edge"]:  # the product's border: a soft step into shadow with a bright rim before it
        theta, off = _lines(rng, cfg)
        d, soft = line_distance(s, theta, off, rng.normal(0, 0.004)), rng.uniform(0.7, 4)
        shade = shade * (1 - uniform(rng, cfg.edge_depth) * 0.5 * (1 + np.tanh(d / (2 * soft))))
        relief += rng.uniform(0.02, 0.08) * np.exp(-0.5 * ((d + 1.5 * soft) / 0.8) ** 2)
    if neg["stain"]:  # a grey stroke or stain: soft, elongated, low contrast
        dark += rng.uniform(0.03, 0.12) * gauss(s, *rng.uniform(0, s, 2), rng.uniform(4, 20), rng.uniform(1.5, 6),
                                                rng.uniform(0, math.pi))
    meta["negatives"] = neg
    return relief, dark, shade


# ---- the camera ----------------------------------------------------------------------------------------------

def camera(rng, cfg, family: str) -> dict:
    """The imaging settings of one patch: exposure, noise model, blur, tone, colour and compression."""
    dim = family == "camera"
    sigma_r = uniform(rng, cfg.read_noise)
    sigma_200 = max(sigma_r, uniform(rng, cfg.noise_at_200) * (1.3 if dim else 1.0))
    gray = bool(rng.random() < cfg.gray_p)
    name, rgb = PALETTE[int(rng.integers(len(PALETTE)))]
    tint = np.ones(3) if gray else np.asarray(rgb, np.float64) / max(rgb)
    return {"level": uniform(rng, cfg.dim_level if dim else (cfg.glaze_level if family == "glaze" else cfg.level)) / 255,
            "read_noise": sigma_r, "gain": (sigma_200 ** 2 - sigma_r ** 2) / 200, "prnu": uniform(rng, cfg.prnu),
            "fpn": uniform(rng, cfg.column_noise) if dim or rng.random() < 0.2 else 0.0,
            "blur": uniform(rng, cfg.blur_sigma),
            "motion": int(rng.integers(2, 5)) if rng.random() < (0.5 if dim else cfg.motion_p) else 0,
            "motion_axis": int(rng.integers(2)), "gamma": uniform(rng, cfg.gamma), "gray": gray,
            "colour": "grey" if gray else name, "tint": tint,
            "jpeg": int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)) if rng.random() < cfg.jpeg_p
            else None}


def optics(lum: np.ndarray, cam: dict) -> np.ndarray:
    """Blur (and motion blur) then the tone curve: the noise-free luminance the sensor records (H, W) in [0, 1]."""
    out = cv2.GaussianBlur(lum, (0, 0), cam["blur"])
    if cam["motion"]:
        k = np.zeros((cam["motion"], cam["motion"]))
        k[cam["motion"] // 2, :] = 1 / cam["motion"]
        out = cv2.filter2D(out, -1, k if cam["motion_axis"] == 0 else k.T, borderType=cv2.BORDER_REFLECT)
    return np.clip(out, 0, 1) ** cam["gamma"]


def noise_sigma(lum: np.ndarray, cam: dict) -> np.ndarray:
    """(H, W) sensor noise std in grey levels at noise-free luminance `lum` (EMVA 1288: read + shot noise)."""
    return np.sqrt(cam["read_noise"] ** 2 + cam["gain"] * 255 * lum)


def texture_sigma(lum: np.ndarray) -> np.ndarray:
    """(H, W) local std in grey levels of the surface's texture: what clutter adds to the noise a crack must beat."""
    hi = 255 * (lum - cv2.GaussianBlur(lum, (0, 0), 5.0))  # the texture left after a ~15 px low-pass
    m = cv2.blur(hi, (9, 9))
    return np.sqrt(np.clip(cv2.blur(hi * hi, (9, 9)) - m * m, 0, None))


def sensor(rng, lum: np.ndarray, cam: dict) -> np.ndarray:
    """Noise, colour, quantisation and compression: (H, W) luminance → (H, W, 3) uint8 RGB."""
    s = lum.shape[0]
    sigma = noise_sigma(lum, cam) / 255  # (H, W)
    gain = 1 + cam["prnu"] * rng.standard_normal((s, s)) + cam["fpn"] * rng.standard_normal((1, s))
    base = lum * gain
    if cam["gray"]:
        img = np.repeat((base + sigma * rng.standard_normal((s, s)))[..., None], 3, axis=2)
    else:
        img = base[..., None] * cam["tint"] + sigma[..., None] * (0.6 * rng.standard_normal((s, s, 3))
                                                                  + 0.8 * rng.standard_normal((s, s, 1)))
    img = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    if cam["jpeg"] is not None:
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, cam["jpeg"]])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        if cam["gray"]:  # a grey camera's JPEG stays grey
            img = np.repeat(img[..., 1:2], 3, axis=2)
    return np.ascontiguousarray(img)
