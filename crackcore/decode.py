"""The decoder of §IV-C: 3×3 max-pool peaks, top-K, score threshold, boxes from the size head."""
from __future__ import annotations

import torch
import torch.nn.functional as F

TOP_K = 20  # §IV-C: "we choose top 20 points"
THRESHOLD = 0.1  # §IV-C: "set a threshold of 0.1"; also Table II's "no box" criterion


def decode(heatmap: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor | None = None, *, stride: int = 1,
           k: int = TOP_K, threshold: float = THRESHOLD, clip: bool = True) -> list[dict[str, torch.Tensor]]:
    """§IV-C, eq. (6): peaks of the (B, 1, H, W) probability map → one {boxes (N, 4), scores (N,)} per image.

    Eq. (6) as printed reads y_min = y_i − y_i/2, x_max = x_i + y_i/2; the intended box is
    (x_i − w_i/2, y_i − h_i/2, x_i + w_i/2, y_i + h_i/2), which is what this computes. A peak at cell (j, i) sits at
    (j + 0.5, i + 0.5) without an offset head, at (j + reg_x, i + reg_y) with one; everything is then scaled by
    `stride` to input pixels and, with `clip`, clipped to the image. Scores below `threshold` are dropped (≥ kept).
    Sizes are clamped at 0: a negative w or h (an untrained or diverged size head) gives a zero-width or zero-height
    box at the peak, never an inverted one with x2 < x1, which AP (§V-A) rejects.
    """
    if heatmap.ndim != 4 or heatmap.shape[1] != 1:
        raise ValueError(f"heatmap must be (B, 1, H, W) probabilities, got {tuple(heatmap.shape)}")
    B, _, H, W = heatmap.shape
    heat = heatmap.float()
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)  # non-maxima suppressed to 0
    scores, ind = peaks.reshape(B, -1).topk(min(k, H * W), dim=1)  # (B, K)
    ys, xs = (ind // W).float(), (ind % W).float()
    if reg is None:
        cx, cy = xs + 0.5, ys + 0.5
    else:
        off = reg.float().reshape(B, 2, -1).gather(2, ind[:, None].expand(B, 2, ind.shape[1]))  # (B, 2, K)
        cx, cy = xs + off[:, 0], ys + off[:, 1]
    size = wh.float().reshape(B, 2, -1).gather(2, ind[:, None].expand(B, 2, ind.shape[1]))  # (B, 2, K)
    w, h = size[:, 0].clamp(min=0), size[:, 1].clamp(min=0)  # (B, K) each
    boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=2) * stride  # (B, K, 4)
    if clip:
        boxes[..., 0::2] = boxes[..., 0::2].clamp(0, W * stride)
        boxes[..., 1::2] = boxes[..., 1::2].clamp(0, H * stride)
    keep = scores >= threshold
    return [{"boxes": boxes[i][keep[i]].cpu(), "scores": scores[i][keep[i]].cpu()} for i in range(B)]
