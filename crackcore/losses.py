"""Training losses: eq. (1) penalty-reduced focal loss, eq. (2)–(3) smooth-L1 size loss, eq. (5) their sum."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models import sigmoid_heatmap


@dataclass(frozen=True)
class LossConfig:
    """Weights of eq. (5) and the exponents of eq. (1); defaults are the paper's (§III-A, §IV-B)."""

    alpha: float = 2.0  # focal exponent α of eq. (1)
    beta: float = 4.0  # penalty-reduction exponent β of eq. (1)
    cls_weight: float = 1.0  # α of eq. (5)
    wh_weight: float = 0.1  # β of eq. (5)
    off_weight: float = 1.0  # CenterNet's offset weight; only the stride-4 model has an offset head


def focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0) -> torch.Tensor:
    """Eq. (1): -1/N Σ (1-p)^α log p at centres, (1-y)^β p^α log(1-p) elsewhere; N = objects in the batch.

    Images without objects contribute only the negative term; a batch with none divides by 1 instead of 0.
    """
    p = sigmoid_heatmap(logits)  # (B, 1, H, W), clamped to [1e-4, 1 - 1e-4]
    t = target.float()
    pos = t.eq(1).float()
    pos_loss = (1 - p).pow(alpha) * p.log() * pos
    neg_loss = (1 - t).pow(beta) * p.pow(alpha) * (1 - p).log() * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def gather(feature: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """Values of a (B, C, H, W) map at flat indices (B, K) → (B, K, C)."""
    B, C = feature.shape[:2]
    flat = feature.reshape(B, C, -1).float()  # (B, C, H*W)
    return flat.gather(2, ind[:, None, :].expand(B, C, ind.shape[1])).transpose(1, 2)


def wh_loss(wh: torch.Tensor, target: torch.Tensor, ind: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eqs. (2)–(3): 1/N Σ_i smoothL1(box*_i − box_i), summed over width and height, at the N centres."""
    pred = gather(wh, ind)  # (B, K, 2)
    m = mask[..., None]  # (B, K, 1)
    loss = F.smooth_l1_loss(pred * m, target.float() * m, reduction="sum", beta=1.0)
    return loss / mask.sum().clamp(min=1)


def offset_loss(reg: torch.Tensor, target: torch.Tensor, ind: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """CenterNet's L1 loss on the sub-pixel centre offset (stride-4 model only), normalised by N."""
    pred = gather(reg, ind)
    m = mask[..., None]
    return F.l1_loss(pred * m, target.float() * m, reduction="sum") / mask.sum().clamp(min=1)


def centernet_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                   cfg: LossConfig = LossConfig()) -> dict[str, torch.Tensor]:
    """Eq. (5): Loss = α·L_cls + β·L_reg (+ the offset loss where there is a `reg` head); returns every term."""
    terms = {"cls": focal_loss(out["hm"], targets["heatmap"], cfg.alpha, cfg.beta),
             "wh": wh_loss(out["wh"], targets["wh"], targets["ind"], targets["mask"])}
    total = cfg.cls_weight * terms["cls"] + cfg.wh_weight * terms["wh"]
    if "reg" in out:
        terms["off"] = offset_loss(out["reg"], targets["reg"], targets["ind"], targets["mask"])
        total = total + cfg.off_weight * terms["off"]
    terms["loss"] = total
    return terms
