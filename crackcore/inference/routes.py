"""Inference routes for real-time detection: the registry of every way of running the §III model.

Each route builder takes an eval-mode `CenterNet` and returns a `route.Route`, which `detect` decodes with the
same §IV-C code whatever ran underneath. The eager, TorchScript and torch.compile routes are built here; the int8
ones in `int8` and the ONNX Runtime ones in `onnx_export`, imported only when asked for.
Routes that need something this machine lacks raise `RouteUnavailable` with the reason, so a bench can list it.
"""
from __future__ import annotations

import copy
import shutil
import warnings
from typing import Callable

import torch

from ..decode import PAPER, DecodeConfig, decode
from ..device import autocast
from ..models import sigmoid_heatmap
from .route import Route, RouteUnavailable, as_route, fold_bn


def _example(model, calib_images, size):
    """One input of the shape a shape-specialising route (trace, compile) will be called with."""
    if calib_images is not None:
        return calib_images[:1].to(next(model.parameters()).device)
    s = size or model.input_size
    return torch.rand(1, 3, s, s, device=next(model.parameters()).device)


# ---- the routes ----------------------------------------------------------------------------------------------------

def route_fp32(model, calib_images=None, **_):
    """The eager fp32 model: the reference every other route is compared with."""
    return as_route("fp32", model, model)


def route_bf16(model, calib_images=None, **_):
    """Eager model under bf16 autocast (native on CPUs with AVX-512 BF16/AMX, and on Ampere+ GPUs)."""
    dev = next(model.parameters()).device

    def fn(x):
        with autocast(dev, "bf16"):
            return model(x)
    return as_route("bf16", model, fn, "bf16")


def _channels_last(model, name: str, precision: str):
    m = copy.deepcopy(model).to(memory_format=torch.channels_last)
    dev = next(m.parameters()).device

    def fn(x):  # NHWC input: oneDNN/cuDNN convolutions then skip their own layout reorders
        with autocast(dev, precision):
            return m(x.contiguous(memory_format=torch.channels_last))
    return as_route(name, m, fn, precision)


def route_channels_last(model, calib_images=None, **_):
    """Eager fp32 in NHWC memory layout."""
    return _channels_last(model, "channels_last", "fp32")


def route_channels_last_bf16(model, calib_images=None, **_):
    """NHWC layout and bf16 autocast together (bf16 kernels are NHWC-native in oneDNN)."""
    return _channels_last(model, "channels_last_bf16", "bf16")


def route_fold_bn(model, calib_images=None, **_):
    """Eager fp32 with every BatchNorm folded into its conv: same numbers (≤1e-4), fewer passes over memory."""
    return as_route("fold_bn", model, fold_bn(model))


def route_fold_bn_cl_bf16(model, calib_images=None, **_):
    """All the eager tricks at once: folded BN, NHWC layout, bf16 autocast."""
    return _channels_last(fold_bn(model), "fold_bn_cl_bf16", "bf16")


def route_torchscript(model, calib_images=None, size=None, **_):
    """torch.jit.trace + freeze of the folded fp32 model, specialised to the example's shape."""
    m = fold_bn(model)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # trace's shape-check TracerWarnings are expected: one shape per trace
            traced = torch.jit.trace(m, _example(m, calib_images, size), strict=False, check_trace=False)
            frozen = torch.jit.freeze(traced)
    except Exception as e:  # TorchScript is deprecated upstream; a torch that drops it must not break the bench
        raise RouteUnavailable(f"torch.jit.trace/freeze failed: {type(e).__name__}: {e}") from None
    return as_route("torchscript", m, frozen, note="traced at one input shape; other shapes need a new trace")


def _compile(model, name, precision, calib_images, size):
    if next(model.parameters()).device.type == "cpu" and not (shutil.which("g++") or shutil.which("clang++")):
        raise RouteUnavailable("torch.compile on CPU needs a C++ compiler (g++ or clang++) on PATH")
    m = fold_bn(model)
    compiled = torch.compile(m, dynamic=False)
    dev = next(m.parameters()).device

    def fn(x):
        with autocast(dev, precision):
            return compiled(x)
    try:  # compile now, so failures surface at build time and the first timed call is not a compilation
        with torch.inference_mode():
            fn(_example(m, calib_images, size))
    except Exception as e:
        raise RouteUnavailable(f"torch.compile failed: {type(e).__name__}: {str(e)[:300]}") from None
    return as_route(name, m, fn, precision, note="compiled at build for one input shape (15–30 s on 1 CPU thread)")


def route_compile(model, calib_images=None, size=None, **_):
    """torch.compile (Inductor) of the folded fp32 model."""
    return _compile(model, "compile", "fp32", calib_images, size)


def route_compile_bf16(model, calib_images=None, size=None, **_):
    """torch.compile of the folded model under bf16 autocast."""
    return _compile(model, "compile_bf16", "bf16", calib_images, size)


def route_int8(model, calib_images=None, **_):
    """int8 post-training static quantisation (torch.ao FX, x86 backend); CPU only."""
    from .int8 import int8_route
    return int8_route(model, calib_images, "x86")


def route_int8_fbgemm(model, calib_images=None, **_):
    """int8 PTQ under the fbgemm engine, whose quantized deconvs are right, so the neck is int8 too; CPU only."""
    from .int8 import int8_route
    return int8_route(model, calib_images, "fbgemm")


def route_onnx(model, calib_images=None, size=None, threads: int = 0, **_):
    """The fp32 model exported to ONNX and run by ONNX Runtime's CPU provider (optional `onnx` extra)."""
    from .onnx_export import onnx_route
    return onnx_route(model, calib_images, size, threads, int8=False)


def route_onnx_int8(model, calib_images=None, size=None, threads: int = 0, **_):
    """ONNX Runtime static int8 (QDQ, per-channel weights) of the exported model, calibrated on `calib_images`."""
    from .onnx_export import onnx_route
    return onnx_route(model, calib_images, size, threads, int8=True)


# name → (builder, opt_in): opt-in routes take seconds to build (compile, export) or need the onnx extra
ROUTES: dict[str, tuple[Callable, bool]] = {
    "fp32": (route_fp32, False), "bf16": (route_bf16, False), "channels_last": (route_channels_last, False),
    "channels_last_bf16": (route_channels_last_bf16, False), "fold_bn": (route_fold_bn, False),
    "fold_bn_cl_bf16": (route_fold_bn_cl_bf16, False), "torchscript": (route_torchscript, False),
    "int8": (route_int8, False), "int8_fbgemm": (route_int8_fbgemm, False),
    "onnx": (route_onnx, True), "onnx_int8": (route_onnx_int8, True),
    "compile": (route_compile, True), "compile_bf16": (route_compile_bf16, True),
}
FP32_EXACT = ("fp32", "channels_last", "fold_bn", "torchscript", "compile", "onnx")  # same numbers to ≤1e-4
CALIBRATED = ("int8", "int8_fbgemm", "onnx_int8")  # need representative images at build time
# Options a caller may pass to any route; a route uses those it needs (size: traced/compiled/exported input side,
# threads: ONNX Runtime's intra-op threads) and ignores the others, so one call can build every route.
ROUTE_OPTIONS = ("size", "threads")


def auto_route(device: torch.device, precision: str) -> str:
    """The default route: the fastest eager one in `make bench`'s table that needs no calibration images.

    int8 is faster still on this CPU, but its AP depends on calibration images a user may not have at hand,
    so it stays opt-in (`--route int8`).
    """
    return "fold_bn_cl_bf16" if precision == "bf16" else "fold_bn"


def route_names(opt_in: bool = False) -> list[str]:
    """Registered routes, without the opt-in ones unless asked."""
    return [n for n, (_, o) in ROUTES.items() if opt_in or not o]


def build_route(name: str, model, calib_images: torch.Tensor | None = None, **options) -> Route:
    """Build route `name` for an eval-mode model; `options`: `size` (traced input side), `threads` (ONNX Runtime)."""
    if name not in ROUTES:
        raise ValueError(f"unknown route {name!r}; choose one of {', '.join(ROUTES)}")
    unknown = sorted(set(options) - set(ROUTE_OPTIONS))  # a mistyped option must not be dropped without a word
    if unknown:
        raise ValueError(f"unknown route option(s) {', '.join(unknown)}; routes take {', '.join(ROUTE_OPTIONS)}")
    return ROUTES[name][0](model.eval(), calib_images, **options)


def to_route(model, precision: str = "fp32") -> Route:
    """`model` itself when it is a `Route` (which brings its own precision), else the eager route of `precision`."""
    return model if isinstance(model, Route) else build_route("bf16" if precision == "bf16" else "fp32", model)


def forward(route: Route, images: torch.Tensor):
    """§III on a (B, 3, S, S) batch in [0, 1]: the route's raw outputs and the (B, 1, H/s, W/s) sigmoid heatmap."""
    out = route(images)
    return out, sigmoid_heatmap(out["hm"])


def detect(model, images: torch.Tensor, *, decoding: DecodeConfig = PAPER, precision: str = "fp32",
           clip: bool = True):
    """§IV-C on a (B, 3, S, S) batch in [0, 1]: forward, sigmoid, decode; returns (detections, heatmap max per image).

    `model` is any `Route` or an eager model (see `to_route`). `predict` and the bench's timings detect through here;
    evaluation and the bench's AP of each route decode the same `forward` in `engine.diagnose.split_outputs`, which
    also keeps the raw size map for the diagnosis.
    """
    route = to_route(model, precision)
    out, heat = forward(route, images)  # heat: (B, 1, H/s, W/s)
    dets = decode(heat, out["wh"], out.get("reg"), stride=route.stride, decoding=decoding, clip=clip)
    return dets, heat.amax(dim=(1, 2, 3)).cpu()


__all__ = ["ROUTES", "ROUTE_OPTIONS", "FP32_EXACT", "CALIBRATED", "auto_route", "build_route", "detect", "forward",
           "route_names", "to_route"]
