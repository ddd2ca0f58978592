"""The machine's dense-convolution limit: the yardstick every speed figure of `make bench` is stated against.

Absolute FPS depend on the host: the same commit measured 36 FPS on one 2-core machine of this kind and 18 on
another. What carries across machines is a ratio measured in one run: a route against fp32 eager, and a measured
speed against the limit, i.e. the time the model's convolutions and transposed convolutions (≈ all of its FLOPs)
take as bare layers of the same shapes, precision and memory layout, one after another. `efficiency` =
limit / measured (1.0 = at the limit). Training uses the forward and backward passes at the paper's batch 16,
inference the forward pass at batch 1.
"""
from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from ..device import autocast


def time_call(fn, runs: int, warmup: int, sync=lambda: None) -> list[float]:
    """Seconds of `runs` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times


def device_sync(device: torch.device):
    """What to call before reading a clock: CUDA runs asynchronously, the CPU does not."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def conv_inputs(model: nn.Module, images: torch.Tensor) -> list[tuple[nn.Module, torch.Size]]:
    """Every Conv2d / ConvTranspose2d of `model` with the input shape it sees on `images`, in call order."""
    seen: list[tuple[nn.Module, torch.Size]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append((mod, args[0].shape)))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    return seen


def conv_gflops(mod: nn.Module, shape: torch.Size) -> float:
    """Forward multiply-accumulates ×2 of one conv layer on an input of `shape`, in GFLOP."""
    b, c, h, w = shape
    kh, kw = mod.kernel_size
    if isinstance(mod, nn.ConvTranspose2d):  # every input pixel scatters a full kernel
        return 2 * b * h * w * c * mod.out_channels * kh * kw / mod.groups / 1e9
    oh = (h + 2 * mod.padding[0] - mod.dilation[0] * (kh - 1) - 1) // mod.stride[0] + 1
    ow = (w + 2 * mod.padding[1] - mod.dilation[1] * (kw - 1) - 1) // mod.stride[1] + 1
    return 2 * b * oh * ow * mod.out_channels * c * kh * kw / mod.groups / 1e9


def conv_limit_s(model: nn.Module, images: torch.Tensor, precision: str, channels_last: bool, runs: int,
                 backward: bool = True) -> float:
    """Seconds per batch of `model`'s convolutions alone (same shapes): forward and backward, or forward only."""
    device = images.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    total = 0.0
    for i, (mod, shape) in enumerate(conv_inputs(model, images)):
        layer = copy.deepcopy(mod).train(backward).to(memory_format=fmt)
        x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
        x.requires_grad_(backward and i > 0)  # the stem's input (the image) needs no gradient in training either

        def step():
            if backward:
                with autocast(device, precision):
                    y = layer(x)
                y.backward(torch.ones_like(y))
            else:
                with torch.inference_mode(), autocast(device, precision):
                    layer(x)
        total += statistics.median(time_call(step, runs, 1, device_sync(device)))
    return total


def inference_limit_fps(model: nn.Module, precision: str, runs: int = 20) -> float:
    """Batch-1 images/s if nothing but the model's convolutions ran, forward, channels-last, in `precision`."""
    p = next(model.parameters())
    x = torch.rand(1, 3, model.input_size, model.input_size, device=p.device)
    was_training = model.training
    model.eval()
    seconds = conv_limit_s(model, x, precision, channels_last=True, runs=runs, backward=False)
    model.train(was_training)
    return 1 / seconds
