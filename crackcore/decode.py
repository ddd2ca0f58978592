"""The decoder of §IV-C: 3×3 max-pool peaks, top-K, score threshold, boxes from the size head."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import nms


@dataclass(frozen=True)
class DecodeConfig:
    """Every knob of the decoder (§IV-C); `evaluate`'s and `predict`'s flags map onto these fields."""

    k: int = 20  # top-K peaks kept per image (§IV-C: "we choose top 20 points")
    threshold: float = 0.1  # score threshold (§IV-C: "a threshold of 0.1"); also Table II's "no box" criterion
    nms_iou: float = 0.0  # box NMS after the decoder at this IoU; 0 = none, as the paper (not the paper's when > 0)
    pool: int = 3  # side of the max-pool window that finds peaks, in output cells (§IV-C: 3; odd)

    def __post_init__(self):
        if not (isinstance(self.k, int) and self.k >= 1):
            raise ValueError(f"k must be a whole number ≥ 1, got {self.k!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a probability in [0, 1], got {self.threshold!r}")
        if not 0.0 <= self.nms_iou < 1.0:
            raise ValueError(f"nms_iou must be in [0, 1) (0 = no NMS), got {self.nms_iou!r}")
        if not (isinstance(self.pool, int) and self.pool >= 1 and self.pool % 2 == 1):
            raise ValueError(f"pool must be an odd whole number ≥ 1 (a window centred on its cell), got {self.pool!r}")


PAPER = DecodeConfig()  # §IV-C as printed: no NMS
# The stride-1 peak window chosen on the validation split (README, "§IV-C's peak window at stride 1"): `evaluate`
# reports AP with it beside §IV-C's 3 × 3 for the stride-1 variants; Table I keeps the paper's window.
WIDE_POOL = 9


def decode(heatmap: torch.Tensor, wh: torch.Tensor, reg: torch.Tensor | None = None, *, stride: int = 1,
           decoding: DecodeConfig = PAPER, clip: bool = True) -> list[dict[str, torch.Tensor]]:
    """§IV-C, eq. (6): peaks of the (B, 1, H, W) probability map → one {boxes (N, 4), scores (N,)} per image.

    Eq. (6) as printed reads y_min = y_i − y_i/2, x_max = x_i + y_i/2; the intended box is
    (x_i − w_i/2, y_i − h_i/2, x_i + w_i/2, y_i + h_i/2), which is what this computes. A peak at cell (j, i) sits at
    (j + 0.5, i + 0.5) without an offset head, at (j + reg_x, i + reg_y) with one; everything is then scaled by
    `stride` to input pixels and, with `clip`, clipped to the image. Scores below the threshold are dropped (≥ kept).
    Sizes are clamped at 0: a negative w or h (an untrained or diverged size head) gives a zero-width or zero-height
    box at the peak, never an inverted one with x2 < x1, which AP (§V-A) rejects. With `nms_iou` > 0, a box
    overlapping a higher-scoring one by more than that IoU is dropped: the best peak of a ridge along a crack stays.
    A peak is a cell equal to the maximum of the `pool` × `pool` window around it. §IV-C's 3 × 3 spans 12 input
    pixels at CenterNet's stride 4 and 3 at stride 1, so a wider window is the same rule at a stride-1 model's scale.
    """
    if heatmap.ndim != 4 or heatmap.shape[1] != 1:
        raise ValueError(f"heatmap must be (B, 1, H, W) probabilities, got {tuple(heatmap.shape)}")
    B, _, H, W = heatmap.shape
    heat = heatmap.float()
    pooled = F.max_pool2d(heat, decoding.pool, stride=1, padding=decoding.pool // 2)  # (B, 1, H, W)
    peaks = heat * (pooled == heat)  # non-maxima suppressed to 0
    scores, ind = peaks.reshape(B, -1).topk(min(decoding.k, H * W), dim=1)  # (B, K), best first
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
    keep = scores >= decoding.threshold
    out = [{"boxes": boxes[i][keep[i]].cpu(), "scores": scores[i][keep[i]].cpu()} for i in range(B)]
    if decoding.nms_iou > 0:
        for d in out:
            kept = nms(d["boxes"], d["scores"], decoding.nms_iou)  # indices, best first
            d["boxes"], d["scores"] = d["boxes"][kept], d["scores"][kept]
    return out
