"""Single-class VOC average precision at IoU 0.5 (§V-A, VOC2007 [35]): the AP reported in Table I.

Conventions, chosen once for the whole project:

* Boxes are (x1, y1, x2, y2) in continuous pixel coordinates: width = x2 - x1, with NO "+1".
  The "+1" of the original VOC devkit belongs to inclusive integer pixel indices; the decoder
  (§IV-C) emits sub-pixel float boxes, for which it would inflate small boxes (thin cracks).
* A detection is a true positive when its IoU with the ground truth is STRICTLY above the threshold
  (VOC: ``ovmax > ovthresh``; the paper: "higher than 0.5"), so an IoU of exactly 0.5 is a miss.
* Detections are ranked by descending score across all images with a stable sort: ties keep image
  order, then the order within the image.
* Each detection is compared only with the ground truth of maximum IoU in its image (the first one
  on ties). As in the VOC devkit, when that box is already matched the detection is a false positive
  even if another, unmatched ground truth also overlaps it above the threshold.
* VOC2007 11-point AP averages, over r_k = k/10 for k = 0..10, the maximum precision at recall
  >= r_k (0 when no such detection). r_k means k/10 exactly and a recall equal to k/10 reaches it:
  we compare ``recall >= k/10 - 1e-9``, so 3/10 computed as 0.3 or 0.30000000000000004 both count.
  The common ``rec >= t for t in np.arange(0, 1.1, 0.1)`` (no tolerance) has t = 0.30000000000000004
  for r_3, so e.g. 3 hits out of 10 ground truths miss r_3 there: AP 3/11 instead of our 4/11.
* ``use_07_metric=False`` gives the VOC2010+ all-point AP: the area under the monotone (right-to-left
  running maximum) precision envelope, summed over the recall steps.
* Zero-area boxes (x1 == x2 or y1 == y2: the decoder clamps a negative predicted size to 0) are valid. Their
  IoU with any box is 0, never NaN, so such a detection is always a false positive. Inverted (x2 < x1) or
  non-finite boxes are malformed, in predictions and ground truth alike: a ValueError names the image and box.
* No ground truth at all: recall is undefined; AP is defined as 0.0 (with a RuntimeWarning) rather
  than NaN so that JSON outputs and "AP x 100" stay plain numbers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

# Absorbs how r_k is rounded (k/10 = 0.3 vs arange/linspace 0.30000000000000004) while being far below any
# real gap: two distinct recalls tp/n_gt and k/10 differ by at least 1/(10 n_gt).
_RECALL_TOL = 1e-9


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on arrays is ambiguous
class APResult:
    """AP and the ranked PR curve behind it (§V-A, VOC2007 [35]); arrays are read-only."""

    ap: float  # in [0, 1]; Table I reports 100 x ap
    precision: np.ndarray  # (D,) precision after each ranked detection
    recall: np.ndarray  # (D,) recall after each ranked detection
    scores: np.ndarray  # (D,) scores, descending
    tp: np.ndarray  # (D,) bool, True where the ranked detection is a true positive
    n_gt: int
    n_det: int


def _array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor (any device, any float dtype incl. bf16) without importing torch
        x = x.detach().cpu().double().numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot convert to a float array ({e})") from None


def _boxes(x, name: str) -> np.ndarray:
    a = _array(x, name)
    if a.size == 0:
        return a.reshape(0, 4)  # [], (0,) or (0, 4): no boxes in this image
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"{name}: expected shape (N, 4) as x1 y1 x2 y2, got {a.shape}")
    bad = ~np.isfinite(a).all(1)  # (N,)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"{name}: box {k} {a[k].tolist()} contains NaN or inf")
    bad = (a[:, 2] < a[:, 0]) | (a[:, 3] < a[:, 1])  # (N,) inverted; zero width or height is allowed
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"{name}: box {k} {a[k].tolist()} is inverted; boxes need x2 >= x1 and y2 >= y1 "
                         f"(x1 y1 x2 y2 order)")
    return a


def box_iou(a, b) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) x1 y1 x2 y2 boxes, continuous coordinates, no +1 (§V-A, VOC2007 [35])."""
    a, b = _boxes(a, "box_iou a"), _boxes(b, "box_iou b")
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])  # (N,)
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # (M,)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])  # (N, M)
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])  # (N, M)
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)  # (N, M)
    union = area_a[:, None] + area_b[None, :] - inter  # (N, M)
    # two zero-area boxes have union 0: define their IoU as 0 rather than NaN
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _ap_11_point(precision: np.ndarray, recall: np.ndarray) -> float:
    points = np.arange(11) / 10  # k/10 by division: the double nearest to each r_k
    total = 0.0
    for r in points:
        reached = recall >= r - _RECALL_TOL
        total += precision[reached].max() if reached.any() else 0.0
    return total / 11


def _ap_all_point(precision: np.ndarray, recall: np.ndarray) -> float:
    # VOC2010+: area under the monotone (right-to-left running max) precision envelope
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    step = np.flatnonzero(mrec[1:] != mrec[:-1])  # where recall grows
    return float(np.sum((mrec[step + 1] - mrec[step]) * mpre[step + 1]))


def match(boxes, gts, iou_threshold: float = 0.5) -> np.ndarray:
    """§V-A / VOC2007's rule for one image: detections in score order take the ground truth they overlap most, a
    true positive when IoU > `iou_threshold` and that ground truth is still free; (N,) bool."""
    tp = np.zeros(len(boxes), bool)
    if len(boxes) == 0 or len(gts) == 0:
        return tp
    iou = box_iou(boxes, gts)  # (N, M)
    taken = np.zeros(len(gts), bool)
    for d in range(len(boxes)):
        j = int(np.argmax(iou[d]))  # VOC: only the best-overlap gt is considered, even if already taken
        if iou[d, j] > iou_threshold and not taken[j]:
            tp[d] = taken[j] = True
    return tp


def voc_ap(predictions, targets, iou_threshold: float = 0.5, use_07_metric: bool = True) -> APResult:
    """Single-class AP over images, 11-point VOC2007 by default, all-point otherwise (§V-A, VOC2007 [35])."""
    if len(predictions) != len(targets):
        raise ValueError(f"predictions and targets must have one entry per image: "
                         f"{len(predictions)} != {len(targets)}")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    gts, det_boxes, det_scores, det_image, det_tp = [], [], [], [], []
    for i, (p, t) in enumerate(zip(predictions, targets)):
        for d, keys, what in ((p, ("boxes", "scores"), "predictions"), (t, ("boxes",), "targets")):
            missing = [k for k in keys if k not in d]
            if missing:
                raise ValueError(f"{what}[{i}] lacks key(s) {missing}")
        boxes = _boxes(p["boxes"], f"predictions[{i}]['boxes'] (image {i})")  # (N, 4)
        scores = _array(p["scores"], f"predictions[{i}]['scores']").reshape(-1)  # (N,)
        if scores.shape[0] != boxes.shape[0]:
            raise ValueError(f"predictions[{i}]: {boxes.shape[0]} boxes but {scores.shape[0]} scores")
        if not np.isfinite(scores).all():
            raise ValueError(f"predictions[{i}]['scores'] contain NaN or inf")
        gts.append(_boxes(t["boxes"], f"targets[{i}]['boxes'] (image {i})"))  # (M, 4)
        det_boxes.append(boxes)
        det_scores.append(scores)
        det_image.append(np.full(len(scores), i))
        within = np.argsort(-scores, kind="stable")  # the image's own score order, as the global order visits it
        hit = np.zeros(len(scores), bool)
        hit[within] = match(boxes[within], gts[-1], iou_threshold)
        det_tp.append(hit)

    n_gt = sum(len(g) for g in gts)
    scores = np.concatenate(det_scores) if det_scores else np.zeros(0)  # (D,)
    tp = np.concatenate(det_tp) if det_tp else np.zeros(0, bool)  # (D,)
    # Matching is per image, so matching each image in its own score order equals VOC's one global pass.
    order = np.argsort(-scores, kind="stable")  # stable: ties keep image order, then within-image order
    scores, tp = scores[order], tp[order]

    hits = np.cumsum(tp)  # (D,)
    precision = hits / np.arange(1, len(tp) + 1)  # (D,)
    if n_gt == 0:
        warnings.warn("voc_ap: no ground-truth boxes in any image; AP is defined as 0.0", RuntimeWarning,
                      stacklevel=2)
        recall, ap = np.zeros(len(tp)), 0.0
    else:
        recall = hits / n_gt  # (D,)
        ap = _ap_11_point(precision, recall) if use_07_metric else _ap_all_point(precision, recall)
    for a in (precision, recall, scores, tp):
        a.setflags(write=False)
    return APResult(ap=float(ap), precision=precision, recall=recall, scores=scores, tp=tp, n_gt=int(n_gt),
                    n_det=int(len(tp)))
