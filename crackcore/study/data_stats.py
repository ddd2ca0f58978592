"""Statistics behind notebooks 01 and 02: what the synthetic data hold (§V-A) and what the labels make of it (§III-A).

Every function returns plain numbers or a pandas DataFrame, so a notebook only prints, tabulates and plots.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch

from ..data.annotations import load_records
from ..data.images import read_image
from ..data.synth import SPLITS, generate
from ..decode import DecodeConfig, decode
from ..labels import draw_gaussian, encode, gaussian_radius, gaussian_radius_official, gaussian_sigma
from ..metrics import box_iou
from ..paper import PAPER_SPLITS

NEGATIVE_FLAGS = ("scratch", "seam", "edge", "joint", "stain", "fibre", "specular")  # drawn or not, per image
NEGATIVE_COUNTS = ("pinholes", "blobs", "dust")  # Poisson counts per image
SHORT_NAMES = {"scratch": "scratch", "seam": "seam", "edge": "edge", "joint": "joint", "stain": "stain",
               "fibre": "fibre", "specular": "glare", "pinholes": "pinhole", "blobs": "drop", "dust": "dust"}


def render_splits(cfg, splits=SPLITS) -> dict[str, list]:
    """Every Sample of each split, regenerated from (seed, split, index) alone (§V-A)."""
    return {s: list(generate(cfg, s)) for s in splits}


def crack_frame(samples) -> pd.DataFrame:
    """One row per crack (§V-A): the generator's attributes, its box (w, h, area) and its visible pixels."""
    rows = []
    for smp in samples:
        m = smp.meta
        for k, (attrs, box) in enumerate(zip(m["cracks"], smp.boxes.tolist())):
            x1, y1, x2, y2 = box
            rows.append({"split": m["split"], "index": m["index"], "crack": k, "n_cracks": len(m["cracks"]),
                         "length": attrs["length"], "width": attrs["width"], "contrast": attrs["contrast"],
                         "branches": attrs["branches"], "orientation_deg": attrs["orientation_deg"],
                         "extent": attrs["extent"], "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                         "box_w": x2 - x1, "box_h": y2 - y1, "box_area": (x2 - x1) * (y2 - y1),
                         "box_min_side": min(x2 - x1, y2 - y1), "visible_px": int(m["masks"][k].sum())})
    cols = ["split", "index", "crack", "n_cracks", "length", "width", "contrast", "branches", "orientation_deg",
            "extent", "x1", "y1", "x2", "y2",
            "box_w", "box_h", "box_area", "box_min_side", "visible_px"]
    return pd.DataFrame(rows, columns=cols)


def image_frame(samples) -> pd.DataFrame:
    """One row per image (§V-A): crack count, surface family and colour, the hard negatives and the camera."""
    rows = []
    for smp in samples:
        m = smp.meta
        rows.append({"split": m["split"], "index": m["index"], "n_cracks": len(m["cracks"]), "family": m["family"],
                     "second_family": m["second_family"], "colour": m["colour"], "level": m["level"],
                     **{k: m["negatives"][k] for k in NEGATIVE_FLAGS[:-1] + NEGATIVE_COUNTS},
                     "specular": m["specular"],
                     "blur_sigma": m["blur_sigma"], "noise_sigma": m["noise_sigma"],
                     "jpeg_quality": m["jpeg_quality"]})
    return pd.DataFrame(rows)


def negative_table(images: pd.DataFrame) -> pd.DataFrame:
    """Per hard negative, the % of each split's images showing at least one of it (§V-A, Table II's difficulty)."""
    kinds = list(NEGATIVE_FLAGS) + list(NEGATIVE_COUNTS)
    out = {split: [100 * float((g[k].astype(int) > 0).mean()) for k in kinds]
           for split, g in images.groupby("split", sort=False)}
    return pd.DataFrame(out, index=pd.Index(kinds, name="% of images with"))


def negative_titles(images: pd.DataFrame, width: int = 22) -> list[str]:
    """Short two-line captions naming the hard negatives drawn in each image row, e.g. 'seam, dust×2' (§V-A)."""
    import textwrap

    out = []
    for _, row in images.iterrows():
        parts = [SHORT_NAMES[k] for k in NEGATIVE_FLAGS if row[k]]
        parts += [SHORT_NAMES[k] + (f"×{int(row[k])}" if row[k] > 1 else "") for k in NEGATIVE_COUNTS if row[k]]
        out.append("\n".join(textwrap.wrap(", ".join(parts) or "plain glaze", width)[:2]))
    return out


def split_table(data_root) -> pd.DataFrame:
    """Images and boxes per split as the loader reads them from disk, beside the paper's 726/181/1523 (§V-A)."""
    rows = []
    for split in SPLITS:
        recs = load_records(data_root, split)
        n_boxes = sum(len(r.boxes) for r in recs)
        rows.append({"split": split, "images": len(recs), "boxes": n_boxes,
                     "boxes per image": round(n_boxes / len(recs), 3) if recs else 0.0,
                     "paper images": PAPER_SPLITS.get(split, "–"),
                     "% of paper": round(100 * len(recs) / PAPER_SPLITS[split], 1) if split in PAPER_SPLITS else "–"})
    return pd.DataFrame(rows).set_index("split")


def disk_mismatches(data_root, samples) -> list[str]:
    """Files whose pixels or boxes differ from a fresh `render` of the same (split, index) (§V-A); [] if none."""
    bad = []
    by_split: dict[str, list] = {}
    for smp in samples:
        by_split.setdefault(smp.meta["split"], []).append(smp)
    for split, smps in by_split.items():
        recs = load_records(data_root, split)
        for smp in smps:
            rec = recs[smp.meta["index"]]
            if not (np.array_equal(read_image(rec.path), smp.image) and np.array_equal(rec.boxes, smp.boxes)):
                bad.append(f"{split}/{rec.path.name}")
    return bad


def datacard_sections(text: str) -> dict[str, str]:
    """The data card's sections by heading ('' for the text before the first '## '), for quoting in a notebook."""
    parts = re.split(r"^## +(.+)$", text, flags=re.M)
    out = {"": parts[0].strip()}
    for head, body in zip(parts[1::2], parts[2::2]):
        out[head.strip()] = body.strip()
    return out


def corner_shift_ious(height: float, width: float, r: float) -> dict[str, float]:
    """IoU with an h×w box after CornerNet's three corner moves by r (§III-A, [21]): translate, shrink, grow."""
    box = np.array([[0.0, 0.0, width, height]])
    moved = {"one in, one out": [r, r, width + r, height + r], "both inside": [r, r, width - r, height - r],
             "both outside": [-r, -r, width + r, height + r]}
    out = {}
    for name, b in moved.items():
        b = np.array([b])
        out[name] = 0.0 if (b[0, 2] <= b[0, 0] or b[0, 3] <= b[0, 1]) else float(box_iou(box, b)[0, 0])
    return out


def radius_table(sizes, overlaps=(0.3, 0.7)) -> pd.DataFrame:
    """Radius of (h, w) boxes (§III-A): corrected formula against the released code's, at each min_overlap."""
    rows = []
    for h, w in sizes:
        row = {"h": h, "w": w}
        for m in overlaps:
            rc, ro = gaussian_radius(h, w, m), gaussian_radius_official(h, w, m)
            row[f"corrected@{m}"], row[f"official@{m}"] = rc, ro
            row[f"IoU at official r @{m}"] = min(corner_shift_ious(h, w, ro).values())
        rows.append(row)
    return pd.DataFrame(rows)


def sigma_table(radii) -> pd.DataFrame:
    """σ of integer radii by the paper's r/3 and CenterNet's (2r+1)/6 (§III-A), and the label at the window's edge."""
    rows = []
    for r in radii:
        row = {"r": r}
        for rule in ("paper", "centernet"):
            s = gaussian_sigma(r, rule)
            row[f"sigma {rule}"] = s
            row[f"y(r) {rule}"] = float(np.exp(-r ** 2 / (2 * s ** 2))) if r > 0 else 1.0  # r = 0: the centre
        rows.append(row)
    return pd.DataFrame(rows)


def label_window(radius: int, rule: str = "paper") -> np.ndarray:
    """The (2r+1, 2r+1) Gaussian label `encode` splats around one centre with σ by `rule` (§III-A, Fig. 2b)."""
    win = np.zeros((2 * radius + 1, 2 * radius + 1), np.float64)
    draw_gaussian(win, radius, radius, radius, gaussian_sigma(radius, rule))
    return win


def _targets(boxes, image_size: int, input_size: int, stride: int, min_overlap: float, sigma_rule: str) -> dict:
    """encode() of one image's boxes after resizing the image to `input_size` (square images, as letterbox does)."""
    scaled = np.asarray(boxes, np.float64).reshape(-1, 4) * (input_size / image_size)
    n = input_size // stride
    return encode(scaled, (n, n), stride, max_objs=max(1, len(scaled)), min_overlap=min_overlap, sigma_rule=sigma_rule)


def heatmap_for(boxes, image_size: int, input_size: int, stride: int, min_overlap: float = 0.3,
                sigma_rule: str = "paper") -> np.ndarray:
    """The (input_size/stride)² centre heatmap a training step would target for these boxes (§III-A, Table I)."""
    return _targets(boxes, image_size, input_size, stride, min_overlap, sigma_rule)["heatmap"][0].numpy()


def _key(item) -> tuple[str, int, int]:
    """(split, index, image side) of a synth Sample or a data Record."""
    if hasattr(item, "meta"):
        return item.meta["split"], item.meta["index"], item.image.shape[0]
    return item.path.parent.name, item.image_id, item.width


def label_frame(samples, settings, min_overlap: float = 0.3, sigma_rule: str = "paper") -> pd.DataFrame:
    """Per box and (name, input_size, stride): size in cells, radius, label support, round-trip IoU (§III-A, §IV-C).

    The round-trip IoU is what a perfect network recovers: the encoded targets (heatmap, `wh`, and `reg` at stride 4)
    decoded as at test time and matched to the box. `samples` are synth Samples or square data Records (then
    `index` is the record's image_id); boxes are in image pixels and scaled to each input size.
    """
    rows = []
    for smp in samples:
        split, index, size = _key(smp)
        if len(smp.boxes) == 0:
            continue
        for name, input_size, stride in settings:
            t = _targets(smp.boxes, size, input_size, stride, min_overlap, sigma_rule)
            n, hm = input_size // stride, t["heatmap"][None]  # (1, 1, n, n)
            k = int(t["mask"].sum())
            wh, reg = torch.zeros(1, 2, n * n), torch.zeros(1, 2, n * n)
            for i in range(k):  # one by one: where two centres share a cell, the later box wins, as in a batch
                wh[0, :, t["ind"][i]], reg[0, :, t["ind"][i]] = t["wh"][i], t["reg"][i]
            dets = decode(hm, wh.view(1, 2, n, n), reg.view(1, 2, n, n) if stride > 1 else None, stride=stride,
                          decoding=DecodeConfig(k=max(k, 1), threshold=0.999))[0]["boxes"].numpy() * (size / input_size)
            best = box_iou(smp.boxes, dets).max(1) if len(dets) else np.zeros(len(smp.boxes))
            cells = set()
            for j, (x1, y1, x2, y2) in enumerate(np.asarray(smp.boxes, np.float64) * (input_size / size) / stride):
                single = encode([[x1, y1, x2, y2]], (n, n), 1, max_objs=1, min_overlap=min_overlap,
                                sigma_rule=sigma_rule)  # this box alone, already in output cells
                cell = int(single["ind"][0])
                rows.append({"setting": name, "split": split, "index": index, "box": j,
                             "w_cells": x2 - x1, "h_cells": y2 - y1,
                             "radius": max(0, int(gaussian_radius(y2 - y1, x2 - x1, min_overlap))),
                             "support_cells": int((single["heatmap"] > 0).sum()),
                             "shares_cell": cell in cells, "round_trip_iou": float(best[j])})
                cells.add(cell)
    return pd.DataFrame(rows)


def label_summary(labels: pd.DataFrame) -> pd.DataFrame:
    """Per setting of `label_frame`: sizes, radii, one-cell labels, shared centres, perfect-network misses (§III-A).

    "% round-trip IoU < 0.5" is the share of boxes a perfect network would still miss under §V-A's IoU rule.
    """
    d = labels.assign(min_side=np.minimum(labels.w_cells, labels.h_cells), one_cell=labels.support_cells == 1,
                      missed=labels.round_trip_iou < 0.5)
    g = d.groupby("setting", sort=False)
    return pd.DataFrame({
        "boxes": g.size(),
        "median short side (cells)": g["min_side"].median(),
        "median radius": g["radius"].median(),
        "% one-cell labels": 100 * g["one_cell"].mean(),
        "% centre in a taken cell": 100 * g["shares_cell"].mean(),
        "% round-trip IoU < 0.5": 100 * g["missed"].mean(),
        "min round-trip IoU": g["round_trip_iou"].min(),
    })
