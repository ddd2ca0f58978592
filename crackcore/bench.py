"""`make bench`: Table I's volume and FPS, the inference-route table, training against the convolution
limit, and `crackcore predict` on a folder of images, each written to `results/bench/` with its provenance."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .data import load_records, read_image, to_input
from .evaluate import detect, run_split
from .export import calibration_images
from .fast import CALIBRATED, ROUTES, RouteUnavailable, auto_route, build_route, detect_with
from .metrics import voc_ap
from .models import VARIANTS, build_model, model_stats
from .runtime import ROOT, load_model, pick_device, pick_precision, provenance, save_json

PARTS = ("table1", "routes", "training", "predict")


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of `crackcore bench`; the CLI's flags map onto these fields."""

    parts: str = ",".join(PARTS)  # comma-separated: table1, routes, training, predict
    variants: str = ",".join(VARIANTS)  # comma-separated (table1 and training)
    out: str = "results/bench"  # folder for <part>.json and summary.md; empty = write nothing
    readme: bool = False  # also write summary.md into README.md between its bench markers
    runs: int = 50  # timed repetitions; the median is reported
    warmup: int = 10
    batch_size: int = 32  # for batched throughput
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default (all cores)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32 (table1, training; routes carry their own)
    seed: int = 0  # seeds the random weights and inputs (speed does not depend on them)
    checkpoint: str = "results/checkpoints/modified_aff-seed0.fp16.pt"  # trained model for routes and predict
    data: str = "data/synth"  # test split scored per route; train images calibrate int8 and feed training
    routes: str = "all"  # comma-separated crackcore.fast routes; all = every registered one
    calib: int = 64  # training images that calibrate the int8 routes
    ap_tolerance: float = 0.5  # a route keeps the AP when its AP07 is within this many points of fp32's
    train_steps: int = 5  # timed training steps per variant (after two untimed ones)
    predict_images: int = 1000  # images in the `crackcore predict` throughput run


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


def bench_variant(variant: str, cfg: BenchConfig, device: torch.device, precision: str, model=None) -> dict:
    """Table I for one variant: volume, parameters, GFLOPs, end-to-end batch-1 latency and batched throughput."""
    torch.manual_seed(cfg.seed)
    model = (model or build_model(variant)).to(device).eval()
    size = model.input_size
    image = np.random.default_rng(cfg.seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    batch = torch.rand(cfg.batch_size, 3, size, size, device=device)
    sync = device_sync(device)
    one = time_call(lambda: detect(model, to_input(image), precision=precision), cfg.runs, cfg.warmup, sync)
    many = time_call(lambda: detect(model, batch, precision=precision), max(3, cfg.runs // 10), 2, sync)
    route = build_route(auto_route(device, precision), model)  # what `crackcore predict` runs by default
    fast = time_call(lambda: detect_with(route, to_input(image)), cfg.runs, cfg.warmup, sync)
    lat = statistics.median(one)
    return {"variant": variant, "resolution": size, "downsampling": model.stride, **model_stats(model),
            "precision": precision, "latency_ms_median": 1e3 * lat,
            "latency_ms_p90": 1e3 * float(np.percentile(one, 90)),
            "fps_batch1": 1 / lat, "throughput_img_s": cfg.batch_size / statistics.median(many),
            "route": route.name, "fps_batch1_route": 1 / statistics.median(fast)}


def bench_routes(cfg: BenchConfig, device: torch.device) -> dict:
    """Batch-1 end-to-end speed and test AP07 of every inference route of one trained model."""
    model, _ = load_model(cfg.checkpoint, device=device)
    test = load_records(cfg.data, "test")
    calib = calibration_images(cfg.data, "train", cfg.calib, model.input_size)
    image = read_image(test[0].path)  # (S, S, 3) uint8: the synthetic patches are already the input size
    names = list(ROUTES) if cfg.routes == "all" else [n.strip() for n in cfg.routes.split(",") if n.strip()]
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            route = build_route(name, model, calib if name in CALIBRATED else calib[:1])
        except RouteUnavailable as e:
            rows.append({"route": name, "available": False, "reason": str(e)})
            continue
        build_s = time.perf_counter() - t0
        times = time_call(lambda: detect_with(route, to_input(image)), cfg.runs, cfg.warmup, device_sync(device))
        # batch 1, as timed: shape-specialised routes (trace, compile) would otherwise recompile for every batch size
        preds, targets, _ = run_split(route, test, batch_size=1, k=20, threshold=0.1)
        lat = statistics.median(times)
        rows.append({"route": name, "available": True, "precision": route.precision, "note": route.note,
                     "build_s": build_s, "latency_ms_median": 1e3 * lat, "fps_batch1": 1 / lat,
                     "ap07": 100 * voc_ap(preds, targets, use_07_metric=True).ap})
    ref = next((r["ap07"] for r in rows if r["route"] == "fp32" and r["available"]), None)
    for r in rows:
        if r["available"]:
            r["keeps_ap"] = ref is not None and r["ap07"] >= ref - cfg.ap_tolerance
    ok = [r for r in rows if r.get("keeps_ap")]
    best = max(ok, key=lambda r: r["fps_batch1"])["route"] if ok else None
    best_plain = max((r for r in ok if r["route"] not in CALIBRATED), key=lambda r: r["fps_batch1"], default=None)
    return {"checkpoint": cfg.checkpoint, "variant": model.variant, "fp32_ap07": ref, "rows": rows, "best": best,
            "best_without_calibration": best_plain and best_plain["route"],
            "auto": auto_route(device, pick_precision(device, cfg.precision))}


def bench_predict(cfg: BenchConfig, route: str = "auto") -> dict:
    """`crackcore predict` (a fresh process, annotation on) over a folder of N images: wall time and
    peak resident memory of that process."""
    files = sorted((Path(cfg.data) / "images").rglob("*.png"))[:cfg.predict_images]
    if len(files) < cfg.predict_images:
        raise ValueError(f"{cfg.data} holds {len(files)} images; the predict benchmark wants {cfg.predict_images}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i, f in enumerate(files):
            (folder / f"{i:05d}.png").symlink_to(f.resolve())
        # The child reports its own peak: VmHWM belongs to the process image started by exec, whereas its
        # ru_maxrss would inherit the forking parent's (this benchmark's) high-water mark.
        probe = ("import re, sys; from pathlib import Path; from crackcore.cli import main; "
                 "rc = main(sys.argv[1:]); print('PEAK_RSS_KIB', re.search(r'VmHWM:\\s+(\\d+)', Path('/proc/self/status').read_text())[1], "
                 "file=sys.stderr); sys.exit(rc)")
        cmd = [sys.executable, "-c", probe, "predict", str(folder), "--checkpoint", cfg.checkpoint,
               "--out", str(Path(tmp) / "out"), "--route", route, "--device", cfg.device, "--precision", cfg.precision]
        env = {**os.environ, **({"OMP_NUM_THREADS": str(cfg.threads)} if cfg.threads else {})}
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        wall = time.perf_counter() - t0
        if r.returncode:
            raise RuntimeError(f"crackcore predict failed: {r.stderr[-2000:]}")
        ran = json.loads((Path(tmp) / "out" / "predictions.json").read_text())
    peak_mb = int(r.stderr.rsplit("PEAK_RSS_KIB", 1)[1].split()[0]) / 1024  # /proc reports KiB
    return {"images": len(files), "route": ran["route"], "wall_s": wall, "images_per_s": len(files) / wall,
            "images_per_hour": 3600 * len(files) / wall, "peak_rss_mb": peak_mb, "annotated": True,
            "detections": sum(map(len, ran["images"].values()))}


def summary(folder) -> str:
    """Markdown tables of every <part>.json in `folder` (this run's and earlier ones'): summary.md, the README."""
    from .report import bench_tables

    return bench_tables({p: json.loads((Path(folder) / f"{p}.json").read_text()) for p in PARTS
                         if (Path(folder) / f"{p}.json").is_file()})


def write_readme(text: str, readme: Path = ROOT / "README.md") -> None:
    """Replace the README's text between `<!-- bench:start -->` and `<!-- bench:end -->`."""
    s = readme.read_text()
    a, b = "<!-- bench:start -->", "<!-- bench:end -->"
    if a not in s or b not in s:
        raise ValueError(f"{readme} has no {a} … {b} markers")
    readme.write_text(s[:s.index(a) + len(a)] + "\n" + text.strip() + "\n" + s[s.index(b):])


def bench(cfg: BenchConfig) -> dict:
    """Run the requested parts in one process, so ratios compare like with like; returns {part: result}."""
    from .limits import bench_training

    parts = [p.strip() for p in cfg.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown bench part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    precision = pick_precision(device, cfg.precision)
    variants = [v.strip() for v in cfg.variants.split(",") if v.strip()]
    results = {}
    for part in parts:
        if part == "table1":
            rows = [bench_variant(v, cfg, device, precision) for v in variants]
        elif part == "routes":
            rows = bench_routes(cfg, device)
        elif part == "training":
            rows = [bench_training(v, cfg, device, precision) for v in variants]
        else:
            rows = [bench_predict(cfg, "auto"), bench_predict(cfg, "int8")]
        results[part] = {"config": asdict(cfg), "result": rows, "provenance": provenance(device, precision)}
        if cfg.out:
            save_json(Path(cfg.out) / f"{part}.json", results[part])
    if cfg.out:
        text = summary(cfg.out)
        (Path(cfg.out) / "summary.md").write_text(text)
        if cfg.readme:
            write_readme(text)
    return results
