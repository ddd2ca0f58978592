"""The letterboxed, augmented (§IV-B) training and evaluation samples of annotated records."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .images import letterbox, read_image
from .transforms import build_eval_transform, build_train_transform


class CrackDataset(Dataset):
    """(image (3, S, S) float32 in [0, 1], boxes (N, 4) float32 xyxy in input pixels) per record.

    Images are letterboxed to `input_size`, then augmented (§IV-B) when `train`. N varies per image, so the
    default collate cannot stack a batch: pass a collate_fn that keeps the boxes as a list.
    """

    def __init__(self, records, input_size: int, train: bool, transform=None):
        self.records, self.size = list(records), input_size
        self.transform = transform or (build_train_transform(input_size) if train else build_eval_transform(input_size))

    def __len__(self) -> int:
        return len(self.records)

    def inputs(self) -> torch.Tensor:
        """Every image as the model sees it, stacked: (N, 3, S, S) in [0, 1] (boxes dropped)."""
        return torch.stack([self[i][0] for i in range(len(self))])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.records[i]
        img, boxes, _ = letterbox(read_image(r.path), r.boxes, self.size)
        image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1))  # (3, S, S) uint8
        bb = tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(self.size, self.size))
        image, bb = self.transform(image, bb)
        return image.as_subclass(torch.Tensor), bb.as_subclass(torch.Tensor)
