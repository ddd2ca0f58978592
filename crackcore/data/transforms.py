"""Box-aware training augmentation of §IV-B on torchvision.transforms.v2: random crop, flips, colour jitter.

Inputs are a `tv_tensors.Image` (3, S, S) uint8 and `tv_tensors.BoundingBoxes` (N, 4) XYXY on an S×S canvas;
outputs are a float32 image in [0, 1] and the surviving boxes. Box rule after a crop: a box is clipped to the
window, and dropped when it keeps less than `min_visibility` of its area or, after resizing back to S, is thinner
than `min_size` px (SanitizeBoundingBoxes removes both kinds).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the §IV-B augmentations (the paper names them, not their strengths)."""
    augment: bool = True  # §IV-B's random crop, flips and colour jitter; off: training sees the images as they are
    crop_p: float = 0.5  # half the time the model sees crack widths at the native scale of the test images
    crop_scale: tuple = (0.6, 1.0)  # side of the window relative to the image side
    min_visibility: float = 0.3  # fraction of a box's area that must survive the crop
    min_size: float = 1.0  # px at the input size
    hflip_p: float = 0.5
    vflip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0  # as CenterNet's color_aug (no hue); hue costs ~100x the rest at 384 px


def _no_labels(inputs) -> None:
    """Boxes come without labels (one class); a named function, unlike labels_getter=None's lambda, pickles
    into spawn-started DataLoader workers."""
    return None


def _areas(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)  # (N,)


class RandomWindowCrop(v2.Transform):
    """Crop a random window of the same aspect and resize it back to size × size (§IV-B random cropping).

    Unlike RandomIoUCrop it also crops images without boxes, so backgrounds are augmented like defects.
    Boxes that keep less than `min_visibility` of their area are collapsed to zero size for
    SanitizeBoundingBoxes to remove: what is left of them is too little to be called that crack.
    """

    def __init__(self, size: int, scale=(0.6, 1.0), p: float = 0.5, min_visibility: float = 0.3):
        super().__init__()
        self.size, self.scale, self.p, self.min_visibility = size, tuple(scale), p, min_visibility

    def make_params(self, flat_inputs) -> dict:
        h, w = v2.query_size(flat_inputs)
        if torch.rand(()) >= self.p:
            return {"window": None}
        f = float(torch.empty(()).uniform_(*self.scale))
        ch, cw = max(1, round(h * f)), max(1, round(w * f))
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        return {"window": dict(top=top, left=left, height=ch, width=cw)}

    def transform(self, inpt, params: dict):
        if params["window"] is None:
            return inpt
        out = F.crop(inpt, **params["window"])
        if isinstance(inpt, tv_tensors.BoundingBoxes):  # crop clips the boxes to the window
            lost = _areas(out) < self.min_visibility * _areas(inpt)  # (N,)
            out = tv_tensors.wrap(out.masked_fill(lost[:, None], 0.0), like=out)
        return F.resize(out, [self.size, self.size], antialias=True)


def build_train_transform(size: int, cfg: AugmentConfig = AugmentConfig()) -> v2.Compose:
    """§IV-B: random cropping, random horizontal and vertical flips, random colour jittering."""
    return v2.Compose([
        RandomWindowCrop(size, cfg.crop_scale, cfg.crop_p, cfg.min_visibility),
        v2.RandomHorizontalFlip(cfg.hflip_p),
        v2.RandomVerticalFlip(cfg.vflip_p),
        v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue),
        v2.ToDtype(torch.float32, scale=True),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=cfg.min_size, min_area=cfg.min_size ** 2, labels_getter=_no_labels),
    ])


def build_eval_transform(size: int) -> v2.Compose:
    """No augmentation: a size × size image (a no-op after letterboxing) as float32 in [0, 1]."""
    return v2.Compose([v2.Resize((size, size), antialias=True), v2.ToDtype(torch.float32, scale=True)])
