"""`make bench`: Table I's volume and FPS, the inference-route table, training against the convolution
limit, and `crackcore predict` on a folder of images, each written to `results/bench/` with its provenance.

Every speed is measured beside what it depends on, in the same process: fp32 eager FPS and the machine's dense-
convolution limit for the route's precision (`conv_limit`), so the figures read as ratios that carry to
other hosts. Each run also adds this host's default-route FPS to `hosts.json`, the record behind the real-time claim.
"""
from __future__ import annotations

import itertools
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

from ..data.annotations import load_records
from ..data.images import read_image, to_input
from ..device import cpu_has_bf16, machine, pick_device, pick_precision, seed_everything
from ..engine.evaluate import run_split
from ..engine.config import TrainConfig
from ..engine.train import make_loader, step
from ..inference.onnx_export import calibration_images
from ..inference.route import RouteUnavailable
from ..inference.routes import CALIBRATED, ROUTES, auto_route, build_route, detect
from ..metrics import voc_ap
from ..models import VARIANTS, build_model, model_stats
from ..storage import ROOT, load_model, provenance, save_json
from .conv_limit import conv_gflops, conv_inputs, conv_limit_s, device_sync, inference_limit_fps, time_call

PARTS = ("table1", "routes", "training", "predict")


PARTS = ("table1", "routes", "training", "predict")
REAL_TIME_FPS = 30.0  # the paper's bar for real-time inspection (§V: 30 FPS with AFF)


@dataclass(frozen=True)
class BenchConfig:
    """Every knob of `crackcore bench`; the CLI's flags map onto these fields."""

    parts: str = ",".join(PARTS)  # comma-separated: table1, routes, training, predict
    variants: str = ",".join(VARIANTS)  # comma-separated (table1 and training)
    out: str = "results/bench"  # folder for <part>.json, hosts.json and summary.md; empty = write nothing
    readme: bool = False  # also write summary.md into README.md between its bench markers (the CLI does it)
    runs: int = 50  # timed repetitions; the median is reported
    warmup: int = 10
    batch_size: int = 32  # for batched throughput
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default (all cores)
    device: str = "auto"  # auto | cpu | cuda
    precision: str = "auto"  # auto | bf16 | fp32 (table1, training; routes carry their own)
    seed: int = 0  # seeds the random weights and inputs (speed does not depend on them)
    checkpoint: str = "results/checkpoints/modified_aff-seed0.fp16.pt"  # trained model for routes and predict
    data: str = "data/synth"  # test split scored per route; train images calibrate int8 and feed training
    routes: str = "all"  # comma-separated crackcore.inference.routes routes; all = every registered one
    calib: int = 64  # training images that calibrate the int8 routes
    ap_tolerance: float = 0.5  # a route keeps the AP when its AP07 is within this many points of fp32's
    train_steps: int = 5  # timed training steps per variant (after two untimed ones)
    predict_images: int = 1000  # images in the `crackcore predict` throughput run
    paper_runs: str = "runs/paper"  # paper-protocol run folders whose logged data wait the training part reports
    limit_runs: int = 20  # timed repetitions per convolution when measuring the dense-convolution limit


def limit_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions whose convolution limit this machine has: fp32 everywhere, bf16 where autocast pays off."""
    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    return ("fp32", "bf16") if bf16 else ("fp32",)


def bench_variant(variant: str, cfg: BenchConfig, device: torch.device, precision: str, model=None) -> dict:
    """Table I for one variant: volume, GFLOPs, batch-1 FPS eager (and fp32), on the default route, and the limit."""
    torch.manual_seed(cfg.seed)
    model = (model or build_model(variant)).to(device).eval()
    size = model.input_size
    image = np.random.default_rng(cfg.seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    batch = torch.rand(cfg.batch_size, 3, size, size, device=device)
    sync = device_sync(device)
    one = time_call(lambda: detect(model, to_input(image), precision=precision), cfg.runs, cfg.warmup, sync)
    many = time_call(lambda: detect(model, batch, precision=precision), max(3, cfg.runs // 10), 2, sync)
    fp32 = one if precision == "fp32" else time_call(lambda: detect(model, to_input(image)), cfg.runs, cfg.warmup,
                                                     sync)
    route = build_route(auto_route(device, precision), model)  # what `crackcore predict` runs by default
    fast = time_call(lambda: detect(route, to_input(image)), cfg.runs, cfg.warmup, sync)
    limit = inference_limit_fps(model, route.precision, cfg.limit_runs)
    lat = statistics.median(one)
    fps_route = 1 / statistics.median(fast)
    return {"variant": variant, "resolution": size, "downsampling": model.stride, **model_stats(model),
            "precision": precision, "latency_ms_median": 1e3 * lat,
            "latency_ms_p90": 1e3 * float(np.percentile(one, 90)),
            "fps_batch1": 1 / lat, "fps_batch1_fp32": 1 / statistics.median(fp32),
            "throughput_img_s": cfg.batch_size / statistics.median(many),
            "route": route.name, "route_precision": route.precision, "fps_batch1_route": fps_route,
            "limit_fps": limit, "route_of_limit": fps_route / limit}


def bench_routes(cfg: BenchConfig, device: torch.device) -> dict:
    """Batch-1 end-to-end speed and test AP07 of every inference route of one trained model, as ratios to fp32
    eager and to the convolution limit of the route's precision measured in the same call."""
    model, _ = load_model(cfg.checkpoint, device=device)
    test = load_records(cfg.data, "test")
    calib = calibration_images(cfg.data, "train", cfg.calib, model.input_size)
    image = read_image(test[0].path)  # (S, S, 3) uint8: the synthetic patches are already the input size
    names = list(ROUTES) if cfg.routes == "all" else [n.strip() for n in cfg.routes.split(",") if n.strip()]
    limits = {p: inference_limit_fps(model, p, cfg.limit_runs) for p in limit_precisions(device)}
    rows = []
    for name in names:
        t0 = time.perf_counter()
        try:
            route = build_route(name, model, calib if name in CALIBRATED else calib[:1])
        except RouteUnavailable as e:
            rows.append({"route": name, "available": False, "reason": str(e)})
            continue
        build_s = time.perf_counter() - t0
        times = time_call(lambda: detect(route, to_input(image)), cfg.runs, cfg.warmup, device_sync(device))
        # batch 1, as timed: shape-specialised routes (trace, compile) would otherwise recompile for every batch size
        preds, targets, _ = run_split(route, test, batch_size=1)
        fps = 1 / statistics.median(times)
        rows.append({"route": name, "available": True, "precision": route.precision, "note": route.note,
                     "build_s": build_s, "latency_ms_median": 1e3 / fps, "fps_batch1": fps,
                     "of_limit": fps / limits[route.precision] if route.precision in limits else None,
                     "ap07": 100 * voc_ap(preds, targets, use_07_metric=True).ap})
    ref = next((r for r in rows if r["route"] == "fp32" and r["available"]), None)
    for r in rows:
        if r["available"]:
            r["keeps_ap"] = ref is not None and r["ap07"] >= ref["ap07"] - cfg.ap_tolerance
            r["x_fp32"] = r["fps_batch1"] / ref["fps_batch1"] if ref else None
    ok = [r for r in rows if r.get("keeps_ap")]
    best = max(ok, key=lambda r: r["fps_batch1"])["route"] if ok else None
    best_plain = max((r for r in ok if r["route"] not in CALIBRATED), key=lambda r: r["fps_batch1"], default=None)
    return {"checkpoint": cfg.checkpoint, "variant": model.variant, "fp32_ap07": ref and ref["ap07"],
            "test_images": len(test), "limits_fps": limits, "rows": rows, "best": best,
            "best_without_calibration": best_plain and best_plain["route"],
            "auto": auto_route(device, pick_precision(device, cfg.precision))}


def bench_training(variant: str, cfg: BenchConfig, device: torch.device, precision: str) -> dict:
    """Training images/s of one variant at the paper's batch 16 (§IV-B: real data, loss, Adam) beside the
    convolution limit measured in the same call, and the data pipeline's images/s and its share of a serial step."""
    tc = TrainConfig(variant=variant, data=cfg.data, precision=precision, seed=cfg.seed)
    seed_everything(cfg.seed)
    model = build_model(variant).to(device)
    if tc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr)
    records = load_records(cfg.data, "train")[:tc.batch_size * (cfg.train_steps + 2)]
    t0 = time.perf_counter()
    batches = list(make_loader(tc, records, train=True))  # augmentation + target encoding, in this process
    load_s = (time.perf_counter() - t0) / len(batches)
    fmt = torch.channels_last if tc.channels_last else torch.contiguous_format
    batches = [(x.to(device).contiguous(memory_format=fmt), {k: v.to(device) for k, v in t.items()
                                                             if isinstance(v, torch.Tensor)}) for x, t in batches]
    cycle = itertools.cycle(batches)

    model.train()
    step_s = statistics.median(time_call(lambda: step(model, opt, *next(cycle), tc.loss, device, precision),
                                         cfg.train_steps, 2, device_sync(device)))
    limit_s = conv_limit_s(model, batches[0][0], precision, tc.channels_last, max(3, cfg.train_steps))
    gflops = 3 * sum(conv_gflops(m, s) for m, s in conv_inputs(model, batches[0][0]))  # forward + 2× backward
    n = batches[0][0].shape[0]  # the paper's 16, unless the data hold fewer images
    row = {"variant": variant, "batch_size": n, "precision": precision, "channels_last": tc.channels_last,
           "step_s": step_s, "train_img_s": n / step_s, "conv_limit_s": limit_s,
           "limit_img_s": n / limit_s, "efficiency": limit_s / step_s,
           "conv_gflop_per_step": gflops, "achieved_gflop_s": gflops / step_s,
           "loader_img_s": n / load_s, "data_wait_share_serial": load_s / (load_s + step_s)}
    history = Path(cfg.paper_runs) / f"{variant}-seed{cfg.seed}" / "history.jsonl"
    if history.is_file():  # what a paper-protocol run actually spent waiting for data
        epochs = [json.loads(line) for line in history.read_text().splitlines()]
        row["paper_run_data_wait_share"] = statistics.mean(h["data_wait_share"] for h in epochs)
        row["paper_run_img_s"] = statistics.mean(h["images_per_s"] for h in epochs)
    return row


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


def host_row(results: dict, device: torch.device) -> dict | None:
    """This run's line of `hosts.json`: the machine, and `modified_aff`'s batch-1 FPS on the default route beside
    fp32 eager and the limit; None when the run measured neither Table I's nor the routes' part."""
    t1 = {r["variant"]: r for r in results.get("table1", {}).get("result", [])}.get("modified_aff")
    routes = results.get("routes", {}).get("result")
    if t1 is None and routes is None:
        return None
    row = {**machine(device), "source": "make bench", "commit": (provenance()["git_commit"] or "")[:10]}
    if t1 is not None:
        row.update(route=t1["route"], fps_route=t1["fps_batch1_route"], fps_fp32=t1["fps_batch1_fp32"],
                   route_of_limit=t1["route_of_limit"])
    if routes is not None:
        by = {r["route"]: r for r in routes["rows"] if r["available"]}
        if routes["auto"] in by and "fp32" in by:
            row.update(route=routes["auto"], fps_route=by[routes["auto"]]["fps_batch1"],
                       fps_fp32=by["fp32"]["fps_batch1"], route_of_limit=by[routes["auto"]]["of_limit"])
    row["meets_real_time"] = row.get("fps_route", 0) >= REAL_TIME_FPS
    return row


def record_host(path: Path, row: dict) -> list[dict]:
    """Add `row` to the hosts file (replacing this host's earlier line from the same commit); returns all lines."""
    hosts = json.loads(path.read_text()) if path.is_file() else []
    key = ("cpu", "isa", "threads", "device", "commit", "source")
    hosts = [h for h in hosts if tuple(h.get(k) for k in key) != tuple(row.get(k) for k in key)] + [row]
    save_json(path, hosts)
    return hosts


def summary(folder) -> str:
    """Markdown tables of every <part>.json in `folder` (this run's and earlier ones') and the hosts seen."""
    from .bench_tables import bench_tables

    folder = Path(folder)
    parts = {p: json.loads((folder / f"{p}.json").read_text()) for p in PARTS if (folder / f"{p}.json").is_file()}
    hosts = json.loads((folder / "hosts.json").read_text()) if (folder / "hosts.json").is_file() else []
    return bench_tables(parts, hosts)


def bench(cfg: BenchConfig) -> dict:
    """Run the requested parts in one process, so ratios compare like with like; returns {part: result}."""
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
        results[part] = {"config": asdict(cfg), "result": rows, "provenance": provenance(device, precision),
                         "machine": machine(device)}
        if cfg.out:
            save_json(Path(cfg.out) / f"{part}.json", results[part])
    row = host_row(results, device)
    if cfg.out:
        if row is not None:
            record_host(Path(cfg.out) / "hosts.json", row)
        (Path(cfg.out) / "summary.md").write_text(summary(cfg.out))
    return results
