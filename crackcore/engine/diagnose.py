"""Where AP goes: which part of the detector (heatmap peaks or size head, §III-A vs §III-B) limits Table I's AP.

Three substitutions separate the two heads. Each keeps everything of the model's output but one thing:
- `ap07_true_wh`: every detection keeps its centre and score but takes the true (w, h) of the nearest crack
  (by centre distance, same image): what AP would be with a perfect size head.
- `ap07_true_centre`: every detection keeps its size and score but moves to the nearest crack's centre: what AP
  would be with perfectly placed peaks (scores, and so false alarms and misses, unchanged).
- `ap07_one_per_crack`: of the detections whose centre lies inside a crack's box, only the best-scoring one per
  crack is kept: what AP would be if the heatmap had one peak per crack instead of a ridge of peaks along it (a
  long, uniform crack has no visible centre, and §IV-C's 3×3 max-pool keeps every bump of a ridge).
  `ap07_one_per_crack_true_wh`, `_true_centre` and `_true_box` apply the first two substitutions (and both) to
  those best peaks only: with the ridge gone, what the size head and the peak positions still cost.
  `fp_on_crack` and `fp_off_crack` count the false positives of the measured AP whose centre lies on a crack's box
  (duplicates and fragments) and elsewhere (false alarms on the surface).
- `ap07_box_nms_{iou}`: the measured detections after box NMS at each IoU of `NMS_IOUS`, a remedy for the ridge that
  needs no knowledge of the truth (the paper decodes without NMS; `DecodeConfig.nms_iou` turns it on).
- The size head alone at the true centres: predicted (w, h) read at each crack's label cell, against the truth.
  `wh_corr_pred` is corr(w, h) over the predicted sizes, `wh_corr_true` the same over the true ones: a head that
  collapsed to one aspect ratio has `wh_corr_pred` ≈ 1 whatever the truth says. `size_iou` is the IoU of the two
  sizes centred on one point.
Run on the training split as well as the test split, the numbers also tell under- from over-fitting.

`peak_phase` asks where the ridge's bumps come from: the share of decoded peaks at each output cell position modulo
PHASE_PERIOD, the period at stride 1 of the backbone's stride-4 sampling grid and of the neck's two ×2 transposed
convolutions.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import nms
from tqdm import tqdm

from ..data.dataset import CrackDataset
from ..decode import PAPER, DecodeConfig, decode
from ..inference.routes import forward, to_route
from ..metrics import match, voc_ap

NMS_IOUS = (0.3, 0.5, 0.7)  # box-NMS IoUs whose AP `decompose` reports beside the paper's decoder
PHASE_PERIOD = 4  # the stride-4 backbone samples every 4th cell; two ×2 transposed convolutions repeat their taps so


def _nearest(centres: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Index of the ground-truth box (M, 4) whose centre is nearest to each of (N, 2) points."""
    g = (gt[:, :2] + gt[:, 2:]) / 2  # (M, 2)
    return np.argmin(((centres[:, None, :] - g[None]) ** 2).sum(-1), axis=1)  # (N,)


def _owner(centres: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(N,) index of the ground-truth box (M, 4) holding each centre (the nearest-centred one if several), or -1."""
    if len(gt) == 0 or len(centres) == 0:
        return np.full(len(centres), -1)
    x, y = centres[:, None, 0], centres[:, None, 1]  # (N, 1) each
    inside = (x >= gt[None, :, 0]) & (x <= gt[None, :, 2]) & (y >= gt[None, :, 1]) & (y <= gt[None, :, 3])  # (N, M)
    g = (gt[:, :2] + gt[:, 2:]) / 2
    dist = np.where(inside, ((centres[:, None, :] - g[None]) ** 2).sum(-1), np.inf)  # (N, M)
    return np.where(inside.any(1), dist.argmin(1), -1)


def _boxes(centres: np.ndarray, sizes: np.ndarray, size: int) -> np.ndarray:
    """(N, 4) boxes of centres ± sizes/2, sizes at least 0, clipped to the size × size input (as decode clips)."""
    half = np.clip(sizes, 0, None) / 2
    return np.clip(np.concatenate([centres - half, centres + half], 1), 0, size)


def size_iou(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """IoU of two (N, 2) sizes (w, h) centred on the same point."""
    p, t = np.clip(pred, 0, None), true
    inter = np.minimum(p[:, 0], t[:, 0]) * np.minimum(p[:, 1], t[:, 1])
    union = p.prod(1) + t.prod(1) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _forward(model, records, batch_size: int, precision: str, desc: str = ""):
    """Yield (items, raw outputs, (B, 1, H/s, W/s) heatmap) batch by batch, letterboxed as in evaluation, through the
    route `detect` runs (`model` is an eager model or a `Route`)."""
    ds = CrackDataset(records, model.input_size, train=False)
    route = to_route(model, precision)
    for start in tqdm(range(0, len(ds), batch_size), desc=desc, leave=False, disable=not desc):
        items = [ds[i] for i in range(start, min(start + batch_size, len(ds)))]
        yield (items, *forward(route, torch.stack([im for im, _ in items])))


def _decoded(model, records, decoding: DecodeConfig, precision: str):
    """Yield (items, (B, 1, H/s, W/s) heatmap, unclipped detections) batch by batch."""
    for items, out, heat in _forward(model, records, 32, precision):
        yield items, heat, decode(heat, out["wh"], out.get("reg"), stride=model.stride, decoding=decoding, clip=False)


@torch.no_grad()
def split_outputs(model, records, decodings, batch_size: int = 32, precision: str = "fp32", desc: str = ""):
    """One forward pass (§III) over `records`, decoded (§IV-C) once per (DecodeConfig, clip) of `decodings`.

    Returns the detections of each decoding, the ground truths (M, 4), the predicted size at each crack's label cell
    (M, 2), all in input pixels, and each image's heatmap maximum (Table II).
    """
    dets, gts, at_centre, top = [[] for _ in decodings], [], [], []
    for items, out, heat in _forward(model, records, batch_size, precision, desc):
        for found, (decoding, clip) in zip(dets, decodings):
            found += decode(heat, out["wh"], out.get("reg"), stride=model.stride, decoding=decoding, clip=clip)
        top += heat.amax(dim=(1, 2, 3)).cpu().tolist()
        wh = out["wh"].float().cpu() * model.stride  # (B, 2, H/s, W/s) in input pixels
        H, W = wh.shape[2:]
        for b, (_, boxes) in enumerate(items):
            gt = boxes.numpy().reshape(-1, 4)
            gts.append(gt)
            cells = np.minimum(np.floor((gt[:, :2] + gt[:, 2:]) / 2 / model.stride).astype(int), [W - 1, H - 1])
            at_centre.append(wh[b, :, cells[:, 1], cells[:, 0]].T.numpy().reshape(-1, 2))  # (M, 2)
    return dets, gts, at_centre, np.array(top)


def outputs(model, records, batch_size: int = 32, decoding: DecodeConfig = PAPER, precision: str = "fp32"):
    """Unclipped detections, ground truths (input pixels) and the predicted size at each crack's label cell."""
    (dets,), gts, at_centre, _ = split_outputs(model, records, [(decoding, False)], batch_size, precision)
    return dets, gts, at_centre


def _box_nms(dets: list[dict], iou: float) -> list[dict]:
    """Box NMS at `iou` on each image's {boxes (N, 4), scores (N,)} numpy detections, best first."""
    out = []
    for d in dets:
        keep = nms(torch.as_tensor(d["boxes"], dtype=torch.float32), torch.as_tensor(d["scores"], dtype=torch.float32),
                   iou).numpy()
        out.append({"boxes": d["boxes"][keep], "scores": d["scores"][keep]})
    return out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1]) if len(a) > 2 and a.std() > 0 and b.std() > 0 else float("nan")


def decompose(model, records, batch_size: int = 32, decoding: DecodeConfig = PAPER, precision: str = "fp32") -> dict:
    """AP07 as measured, with the true sizes at the predicted centres, with the predicted sizes at the true centres,
    and the size head against the truth at the true centres (see the module docstring)."""
    return decompose_outputs(*outputs(model, records, batch_size, decoding, precision), model.input_size)


def decompose_outputs(dets: list[dict], gts: list[np.ndarray], at_centre: list[np.ndarray], size: int) -> dict:
    """`decompose` on one split's unclipped detections, ground truths and sizes at the label cells (`outputs`)."""
    measured, true_wh, true_c, one = [], [], [], []
    one_wh, one_c, one_box = [], [], []  # the best peak per crack, with true sizes, true centres, both
    fp_on = fp_off = 0
    for d, gt in zip(dets, gts):
        b, s = d["boxes"].numpy().reshape(-1, 4), d["scores"].numpy()  # in score order (decode's top-K)
        c, wh = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]  # (N, 2) each
        measured.append({"boxes": _boxes(c, wh, size), "scores": s})
        on = _owner(c, gt)  # (N,) the crack whose box holds each centre, -1 for none
        tp = match(measured[-1]["boxes"], gt)
        fp_on += int((~tp & (on >= 0)).sum())
        fp_off += int((~tp & (on < 0)).sum())
        first = np.array([o < 0 or o not in on[:i] for i, o in enumerate(on)], bool)  # the best peak per crack
        one.append({"boxes": measured[-1]["boxes"][first], "scores": s[first]})
        if len(gt) and len(b):
            j = _nearest(c, gt)
            gt_c, gt_wh = (gt[j, :2] + gt[j, 2:]) / 2, gt[j, 2:] - gt[j, :2]  # (N, 2) each, the nearest crack's
            true_wh.append({"boxes": _boxes(c, gt_wh, size), "scores": s})
            true_c.append({"boxes": _boxes(gt_c, wh, size), "scores": s})
            one_wh.append({"boxes": _boxes(c[first], gt_wh[first], size), "scores": s[first]})
            one_c.append({"boxes": _boxes(gt_c[first], wh[first], size), "scores": s[first]})
            one_box.append({"boxes": _boxes(gt_c[first], gt_wh[first], size), "scores": s[first]})
        else:
            true_wh.append(measured[-1])
            true_c.append(measured[-1])
            for subs in (one_wh, one_c, one_box):
                subs.append(one[-1])
    targets = [{"boxes": g} for g in gts]
    pred = np.concatenate(at_centre) if at_centre else np.zeros((0, 2))  # (M, 2)
    true = np.concatenate([g[:, 2:] - g[:, :2] for g in gts]) if gts else np.zeros((0, 2))  # (M, 2)
    iou = size_iou(pred, true)
    return {"ap07": 100 * voc_ap(measured, targets).ap, "ap07_true_wh": 100 * voc_ap(true_wh, targets).ap,
            "ap07_true_centre": 100 * voc_ap(true_c, targets).ap, "ap07_one_per_crack": 100 * voc_ap(one, targets).ap,
            "ap07_one_per_crack_true_wh": 100 * voc_ap(one_wh, targets).ap,
            "ap07_one_per_crack_true_centre": 100 * voc_ap(one_c, targets).ap,
            "ap07_one_per_crack_true_box": 100 * voc_ap(one_box, targets).ap,
            **{f"ap07_box_nms_{iou:g}": 100 * voc_ap(_box_nms(measured, iou), targets).ap for iou in NMS_IOUS},
            "fp_on_crack": fp_on, "fp_off_crack": fp_off, "n_gt": int(len(true)),
            "wh_corr_pred": _corr(pred[:, 0], pred[:, 1]), "wh_corr_true": _corr(true[:, 0], true[:, 1]),
            "w_corr": _corr(pred[:, 0], true[:, 0]), "h_corr": _corr(pred[:, 1], true[:, 1]),
            "size_iou_median": float(np.median(iou)) if len(iou) else float("nan"),
            "size_iou_above_0.5": float((iou > 0.5).mean()) if len(iou) else float("nan")}


@torch.no_grad()
def peak_maps(model, records, decoding: DecodeConfig = PAPER, precision: str = "fp32") -> list[dict]:
    """§III-A, §IV-C for a few images: the input, the predicted heatmap, the decoded peaks and the truth, to look at.

    Per image: `image` (S, S) the letterboxed input (grey, scaled to [0, 1] for display), `heat` (S/s, S/s), `peaks`
    (N, 2) decoded centres and `scores` (N,), `gt` (M, 4) boxes, all in input pixels; `stride` maps them to cells.
    """
    maps = []
    for items, heat, dets in _decoded(model, records, decoding, precision):
        for (x, boxes), h, det in zip(items, heat.float(), dets):
            b = det["boxes"].float().numpy().reshape(-1, 4)
            grey = x.float().mean(0).numpy()  # (S, S)
            maps.append({"image": (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6), "heat": h[0].cpu().numpy(),
                         "peaks": (b[:, :2] + b[:, 2:]) / 2, "scores": det["scores"].float().numpy(),
                         "gt": boxes.numpy().reshape(-1, 4), "stride": model.stride})
    return maps


@torch.no_grad()
def peak_phase(model, records, decoding: DecodeConfig = PAPER, precision: str = "fp32") -> dict:
    """Decoded peaks (§IV-C) by output cell position modulo PHASE_PERIOD, against the true centres' cells.

    `peaks` and `centres` are (4, 4) shares indexed [y mod 4, x mod 4], scaled so that 1 is uniform; `peak_max` is
    the largest peak share (16 would put every peak on one phase). The true centres set the baseline: cracks that
    span the patch put their centres on one cell, so `centre_max` is above 1 too. Peaks that sit on the coarse
    grid rather than on the cracks' centres put `peak_max` well above `centre_max`.
    """
    n = PHASE_PERIOD
    peaks, centres = np.zeros((n, n)), np.zeros((n, n))
    for items, _, dets in _decoded(model, records, decoding, precision):
        for (_, boxes), det in zip(items, dets):
            b = det["boxes"].float().numpy().reshape(-1, 4)
            gt = boxes.numpy().reshape(-1, 4)
            for grid, xyxy in ((peaks, b), (centres, gt)):
                cells = np.floor((xyxy[:, :2] + xyxy[:, 2:]) / 2 / model.stride).astype(int) % n  # (N, 2) x, y
                np.add.at(grid, (cells[:, 1], cells[:, 0]), 1)
    share = lambda g: g / max(g.sum(), 1) * n * n  # noqa: E731
    return {"peaks": share(peaks).tolist(), "centres": share(centres).tolist(), "n_peaks": int(peaks.sum()),
            "n_centres": int(centres.sum()), "peak_max": float(share(peaks).max()),
            "centre_max": float(share(centres).max())}
