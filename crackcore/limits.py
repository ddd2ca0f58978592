"""Training at the hardware's limit: one §IV-B training step against the same step's convolutions
run alone, and the data pipeline against both.

The "limit" is the time the step's convolutions and transposed convolutions (≈ all of its FLOPs) take forward and
backward as bare layers of the same shapes, precision and memory layout, one after another: what a training step
would cost if nothing but its dense convolutions ran. `efficiency` = limit / measured step (1.0 = at the limit).
"""
from __future__ import annotations

import copy
import itertools
import json
import statistics
import time
from dataclasses import replace

import torch
from torch import nn

from .bench import device_sync, time_call
from .data import load_records
from .losses import centernet_loss
from .models import build_model
from .runtime import autocast, seed_everything
from .train import TrainConfig, make_loader


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


def conv_limit_s(model: nn.Module, images: torch.Tensor, precision: str, channels_last: bool, runs: int) -> float:
    """Seconds per batch for the forward and backward passes of `model`'s convolutions alone (same shapes)."""
    device = images.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    total = 0.0
    for i, (mod, shape) in enumerate(conv_inputs(model, images)):
        layer = copy.deepcopy(mod).train().to(memory_format=fmt)
        x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
        x.requires_grad_(i > 0)  # the stem's input (the image) needs no gradient in training either

        def step():
            with autocast(device, precision):
                y = layer(x)
            y.backward(torch.ones_like(y))
        total += statistics.median(time_call(step, runs, 1, device_sync(device)))
    return total


def bench_training(variant: str, cfg, device: torch.device, precision: str) -> dict:
    """Training images/s of one variant at the paper's batch 16 (real data, real loss, Adam) beside the convolution
    limit measured in the same call, and the data pipeline's images/s and its share of a serial training step."""
    tc = TrainConfig(variant=variant, data=cfg.data, precision=precision, seed=cfg.seed)
    seed_everything(cfg.seed)
    model = build_model(variant).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    records = load_records(cfg.data, "train")[:tc.batch_size * (cfg.train_steps + 2)]
    t0 = time.perf_counter()
    batches = list(make_loader(replace(tc, workers=0), records, train=True))  # augmentation + target encoding
    load_s = (time.perf_counter() - t0) / len(batches)
    fmt = torch.channels_last if tc.channels_last else torch.contiguous_format
    batches = [(x.to(device).contiguous(memory_format=fmt), {k: v.to(device) for k, v in t.items()
                                                             if isinstance(v, torch.Tensor)}) for x, t in batches]
    cycle = itertools.cycle(batches)

    def step():
        images, targets = next(cycle)
        with autocast(device, precision):
            out = model(images)
        loss = centernet_loss(out, targets, tc.loss())["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.train()
    step_s = statistics.median(time_call(step, cfg.train_steps, 2, device_sync(device)))
    limit_s = conv_limit_s(model, batches[0][0], precision, tc.channels_last, max(3, cfg.train_steps))
    gflops = 3 * sum(_conv_gflops(m, s) for m, s in conv_inputs(model, batches[0][0]))  # forward + 2× backward
    n = batches[0][0].shape[0]  # the paper's 16, unless the data hold fewer images
    row = {"variant": variant, "batch_size": n, "precision": precision, "channels_last": tc.channels_last,
           "step_s": step_s, "train_img_s": n / step_s, "conv_limit_s": limit_s,
           "limit_img_s": n / limit_s, "efficiency": limit_s / step_s,
           "conv_gflop_per_step": gflops, "achieved_gflop_s": gflops / step_s,
           "loader_img_s": n / load_s, "data_wait_share_serial": load_s / (load_s + step_s)}
    history = _paper_history(variant, cfg.seed)
    if history:  # what the committed paper-protocol run actually spent waiting for data
        row["paper_run_data_wait_share"] = statistics.mean(h["data_wait_share"] for h in history)
        row["paper_run_img_s"] = statistics.mean(h["images_per_s"] for h in history)
    return row


def _conv_gflops(mod: nn.Module, shape: torch.Size) -> float:
    """Forward multiply-accumulates ×2 of one conv layer on an input of `shape`, in GFLOP."""
    b, c, h, w = shape
    kh, kw = mod.kernel_size
    if isinstance(mod, nn.ConvTranspose2d):  # every input pixel scatters a full kernel
        return 2 * b * h * w * c * mod.out_channels * kh * kw / mod.groups / 1e9
    oh = (h + 2 * mod.padding[0] - mod.dilation[0] * (kh - 1) - 1) // mod.stride[0] + 1
    ow = (w + 2 * mod.padding[1] - mod.dilation[1] * (kw - 1) - 1) // mod.stride[1] + 1
    return 2 * b * oh * ow * mod.out_channels * c * kh * kw / mod.groups / 1e9


def _paper_history(variant: str, seed: int) -> list[dict]:
    from .experiment import get_profile

    path = get_profile("paper").runs / f"{variant}-seed{seed}" / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
