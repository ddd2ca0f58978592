"""An inference route: one way of running the §III model, behind one call, and BatchNorm folding.

A route is built once from an eval-mode `CenterNet` and called like the model: `route(images)` with (B, 3, H, W)
floats in [0, 1] returns the raw output dict (`hm` logits, `wh`, `reg` at stride 4, `aff` where the route keeps it),
always as fp32 tensors, so `routes.detect` decodes every route (eager, int8, ONNX Runtime, ...) with the same code.
BatchNorm folding lives here because the eager, int8 and compiled routes all start from it. The routes themselves
are registered in `routes`; the int8 ones are in `int8`, the ONNX Runtime ones in `onnx_export`, and none of those
imports `routes`, so the three never import each other in a circle.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock


class RouteUnavailable(RuntimeError):
    """A route that cannot run here (missing package, compiler or backend); the message says why."""


@dataclass
class Route:
    """A ready-to-call inference path with what decoding needs (`stride`) and what a report needs (`name`, `note`)."""

    name: str
    fn: Callable[[torch.Tensor], dict]
    stride: int
    input_size: int
    variant: str
    device: torch.device
    precision: str = "fp32"
    note: str = ""

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.inference_mode():
            out = self.fn(images.to(self.device))
        return {k: v.float() for k, v in out.items()}  # bf16/int8 routes hand back fp32, as the eager model does


def as_route(name: str, model, fn, precision: str = "fp32", device=None, note: str = "") -> Route:
    """Wrap `fn` (images → raw outputs) as a Route carrying `model`'s stride, input size and variant."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    return Route(name, fn, model.stride, model.input_size, model.variant, device, precision, note)


# ---- BatchNorm folding -------------------------------------------------------------------------------------------

def _fold_pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """(conv, bn) child names that run back to back in `parent`'s forward: Sequential neighbours, BasicBlock's own."""
    if isinstance(parent, nn.Sequential):
        names = list(parent._modules)
        return [(a, b) for a, b in zip(names, names[1:])
                if isinstance(parent._modules[a], (nn.Conv2d, nn.ConvTranspose2d))
                and isinstance(parent._modules[b], nn.BatchNorm2d)]
    if isinstance(parent, BasicBlock):  # conv1→bn1→relu→conv2→bn2; its downsample Sequential is met on its own
        return [("conv1", "bn1"), ("conv2", "bn2")]
    return []


def fold_bn(model: nn.Module) -> nn.Module:
    """Eval-time Conv→BN and ConvTranspose→BN folding (stem, BasicBlocks, downsample, neck, AFF) on a deep copy."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for c, b in _fold_pairs(parent):
            conv = getattr(parent, c)
            setattr(parent, c, fuse_conv_bn_eval(conv, getattr(parent, b),
                                                 transpose=isinstance(conv, nn.ConvTranspose2d)))
            setattr(parent, b, nn.Identity())
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:  # an unknown block layout: refuse rather than silently run a half-folded model
        raise ValueError(f"BatchNorm layers not preceded by a conv were left unfolded: {', '.join(left)}")
    return model


__all__ = ["Route", "RouteUnavailable", "as_route", "fold_bn"]
