"""Table I's "Volume" and "FPS": model size, parameters, GFLOPs, batch-1 latency and batched throughput."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .data import to_input
from .evaluate import detect
from .models import VARIANTS, build_model, model_stats
from .runtime import pick_device, pick_precision, provenance, save_json


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of `crackcore bench`; the CLI's flags map onto these fields."""

    variants: str = ",".join(VARIANTS)  # comma-separated
    out: str = "results/bench/table1.json"  # JSON written here; empty = do not write
    runs: int = 50  # timed repetitions; the median is reported
    warmup: int = 10
    batch_size: int = 32  # for throughput
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default (all cores)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32
    seed: int = 0  # seeds the random weights and inputs (speed does not depend on them)


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


def bench_variant(variant: str, cfg: BenchConfig, device: torch.device, precision: str, model=None) -> dict:
    """Volume, parameters, GFLOPs, end-to-end batch-1 latency (median) and batched throughput for one variant."""
    torch.manual_seed(cfg.seed)
    model = (model or build_model(variant)).to(device).eval()
    size = model.input_size
    rng = np.random.default_rng(cfg.seed)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    batch = torch.rand(cfg.batch_size, 3, size, size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    one = time_call(lambda: detect(model, to_input(image), precision=precision), cfg.runs, cfg.warmup, sync)
    many = time_call(lambda: detect(model, batch, precision=precision), max(3, cfg.runs // 10), 2, sync)
    lat = statistics.median(one)
    return {"variant": variant, "resolution": size, "downsampling": model.stride, **model_stats(model),
            "latency_ms_median": 1e3 * lat, "latency_ms_p90": 1e3 * float(np.percentile(one, 90)),
            "fps_batch1": 1 / lat, "throughput_img_s": cfg.batch_size / statistics.median(many)}


def bench(cfg: BenchConfig) -> dict:
    """Benchmark every requested variant in one process, so their ratios compare like with like."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    precision = pick_precision(device, cfg.precision)
    rows = [bench_variant(v.strip(), cfg, device, precision) for v in cfg.variants.split(",") if v.strip()]
    result = {"config": asdict(cfg), "rows": rows, "provenance": provenance(device, precision)}
    if cfg.out:
        save_json(cfg.out, result)
    return result
