"""`crackcore export` and the ONNX Runtime routes: a checkpoint's raw outputs as ONNX (optionally int8), and an
ONNX Runtime session behind the common `Route` call.

The graph takes (B, 3, S, S) floats in [0, 1] (normalisation is inside the model, §models) and returns `hm` logits,
`wh`, `reg` (stride-4 model only) and, if asked, the AFF weights `aff`, so any runtime decodes it as §IV-C does.
Stride, input size and variant travel in the ONNX metadata, which `OnnxRoute` reads.
"""
from __future__ import annotations

import copy
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..models import sigmoid_heatmap
from ..storage import load_model
from .route import Route, RouteUnavailable


@dataclass(frozen=True)
class ExportConfig:
    """Every knob of `crackcore export`; the CLI's flags map onto these fields."""

    checkpoint: str = "runs/modified_aff/model.pt"  # a crackcore model.pt
    out: str = ""  # file to write; empty = <checkpoint folder>/<variant>.onnx (<variant>.int8.onnx with --int8)
    format: str = "onnx"  # onnx (the only format so far)
    opset: int = 18  # ONNX opset version
    size: int = 0  # input height = width baked into the graph; 0 = the variant's input size (80 or 384 px)
    dynamic_batch: bool = True  # symbolic batch dimension, so one file serves batch 1 and batched inference
    aff: bool = False  # also output the AFF fusion weights (modified_aff only)
    int8: bool = False  # write an ONNX Runtime static int8 model (QDQ) instead, calibrated on --data
    data: str = "data/synth"  # calibration images for --int8 (synthetic root, COCO JSON or VOC folder)
    calib_split: str = "train"  # split the calibration images come from
    calib_images: int = 32  # how many calibration images (the first ones of the split)
    check: bool = True  # run the file in ONNX Runtime and compare with PyTorch (needs onnxruntime)


class RawOutputs(nn.Module):
    """The model with its output dict flattened to a fixed tuple, so ONNX outputs have stable names and order."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(x)
        return tuple(out[n] for n in self.names)


def output_names(model, aff: bool = False) -> list[str]:
    names = ["hm", "wh"] + (["reg"] if "reg" in model.heads else [])
    return names + (["aff"] if aff and model.aff is not None else [])


def export_onnx(model, path: str | Path, *, size: int | None = None, opset: int = 18, dynamic_batch: bool = True,
                aff: bool = False, meta: dict | None = None) -> Path:
    """Write an eval-mode CenterNet to ONNX (torch's default dynamo exporter), metadata included; returns the path."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    size = size or model.input_size
    names = output_names(model, aff)
    x = torch.rand(2 if dynamic_batch else 1, 3, size, size)  # batch 2: a size-1 example would be specialised
    dyn = ({0: torch.export.Dim.DYNAMIC},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter is chatty about its own internals
        prog = torch.onnx.export(RawOutputs(model, names), (x,), input_names=["images"], output_names=names,
                                 opset_version=opset, dynamic_shapes=dyn, external_data=False, dynamo=True,
                                 verbose=False)
    proto = prog.model_proto
    info = {"variant": model.variant, "stride": model.stride, "input_size": size, "outputs": ",".join(names),
            "input": "images: (B, 3, H, W) float RGB in [0, 1]", **(meta or {})}
    for k, v in info.items():
        proto.metadata_props.add(key=str(k), value=str(v))
    onnx.save(proto, path)
    return path


def quantize_onnx(src: str | Path, dst: str | Path, calib_images: torch.Tensor) -> Path:
    """ONNX Runtime static int8 (QDQ, per-channel weights, u8 activations); the heads' output convs stay fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = Path(dst).with_name(Path(dst).stem + ".pre.onnx")
    try:  # shape inference + graph optimisation first, as ONNX Runtime recommends before static quantisation
        quant_pre_process(str(src), str(pre))
    except Exception as e:  # an optimisation, not a requirement: quantise the plain export instead
        warnings.warn(f"ONNX Runtime quantisation pre-processing failed ({type(e).__name__}: {e}); skipped")
        pre = Path(src)
    graph = onnx.load(str(pre)).graph
    outputs = {o.name for o in graph.output}
    keep = [n.name for n in graph.node if n.op_type == "Conv" and set(n.output) & outputs]  # as int8.quantize_int8
    name = graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib_images.cpu().split(1))

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x.float().numpy()}

    # reduce_range (7-bit weights): u8×s8 products saturate on x86 CPUs without VNNI (AVX2, plain AVX-512) and the
    # heatmap falls apart there; 7 bits hold on every CPU, so one quantised file runs anywhere.
    quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=keep)
    proto = onnx.load(str(dst))  # quantize_static drops custom metadata: copy it back for OnnxRoute
    del proto.metadata_props[:]
    proto.metadata_props.extend(onnx.load(str(src)).metadata_props)
    proto.metadata_props.add(key="quantization", value=f"onnxruntime static int8 QDQ, {len(calib_images)} images")
    onnx.save(proto, str(dst))
    if pre != Path(src):
        pre.unlink()
    return Path(dst)


def calibration_images(data: str, split: str, n: int, size: int) -> torch.Tensor:
    """The first `n` images of a split, letterboxed as for evaluation: (n, 3, size, size) in [0, 1]."""
    from ..data.annotations import load_records
    from ..data.dataset import CrackDataset

    records = load_records(data, split)[:n]
    if not records:
        raise ValueError(f"no calibration images in split {split!r} of {data}")
    return CrackDataset(records, size, train=False).inputs()


def parity(model, path: str | Path, size: int, seed: int = 0) -> float:
    """Max |sigmoid(hm)| difference between PyTorch fp32 and ONNX Runtime on one random image."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = sigmoid_heatmap(model(x)["hm"])
    got = sigmoid_heatmap(OnnxRoute(str(path), threads=1)(x)["hm"])
    return float((ref - got).abs().max())


def export(cfg: ExportConfig) -> Path:
    """Export `cfg.checkpoint` as ONNX (fp32, or int8 with `cfg.int8`); returns the file written."""
    if cfg.format != "onnx":
        raise ValueError(f"unsupported export format {cfg.format!r}; only 'onnx' is implemented")
    needed = ["onnx", "onnxscript"] + (["onnxruntime"] if cfg.check or cfg.int8 else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:  # a ValueError, so the CLI prints one line instead of a traceback
        hint = " (or pass --no-check)" if missing == ["onnxruntime"] else ""
        raise ValueError(f"ONNX export needs {', '.join(missing)}: pip install 'crackcore[onnx]'{hint}")
    model, ckpt = load_model(cfg.checkpoint)
    size = cfg.size or model.input_size
    out = Path(cfg.out or Path(cfg.checkpoint).with_name(f"{model.variant}{'.int8' if cfg.int8 else ''}.onnx"))
    meta = {"checkpoint_epoch": ckpt.get("epoch"), "crackcore": __version__, "torch": torch.__version__}
    fp32 = out.with_name(out.stem + ".fp32.onnx") if cfg.int8 else out
    export_onnx(model, fp32, size=size, opset=cfg.opset, dynamic_batch=cfg.dynamic_batch, aff=cfg.aff, meta=meta)
    if cfg.check:
        err = parity(model, fp32, size)
        if err > 1e-4:  # fp32 graph: anything beyond float rounding is an export bug, not a precision trade-off
            raise ValueError(f"exported heatmap differs from PyTorch by {err:.2e} (> 1e-4): {fp32}")
    if not cfg.int8:
        return out
    quantize_onnx(fp32, out, calibration_images(cfg.data, cfg.calib_split, cfg.calib_images, size))
    fp32.unlink()  # the int8 file is what was asked for; the fp32 one was its input
    return out


class OnnxRoute(Route):
    """An ONNX Runtime CPU session (file path or serialized bytes) behind the same call as every other route."""

    def __init__(self, onnx_model, *, threads: int = 0, name: str = "onnx", precision: str = "fp32"):
        try:
            import onnxruntime as ort
        except ImportError:
            raise RouteUnavailable("onnxruntime is not installed (pip install 'crackcore[onnx]')") from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # 0 = ONNX Runtime's default (one per physical core)
        opts.inter_op_num_threads = 1  # one branchless graph: inter-op parallelism only adds thread hand-offs
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(onnx_model, opts, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map  # written by crackcore.inference.onnx_export
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        super().__init__(name, self._run, int(meta.get("stride", 1)), int(meta.get("input_size", 0)),
                         meta.get("variant", "?"), torch.device("cpu"), precision,
                         note=f"onnxruntime {ort.__version__} {precision}, {threads or 'default'} intra-op threads")

    def _run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = self.session.run(None, {self.input_name: x.detach().float().contiguous().numpy()})
        return {n: torch.from_numpy(o) for n, o in zip(self.output_names, outs)}


def onnx_route(model, calib_images, size, threads: int, int8: bool) -> Route:
    """The `onnx` / `onnx_int8` routes: export in memory (and quantise), then an ONNX Runtime session."""
    import tempfile
    from pathlib import Path

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise RouteUnavailable("onnxruntime is not installed (pip install 'crackcore[onnx]')") from None
    if int8 and calib_images is None:
        raise ValueError("the onnx_int8 route needs calib_images")
    m = copy.deepcopy(model).cpu().eval()
    with tempfile.TemporaryDirectory() as tmp:  # the session keeps the bytes; no file outlives the build
        side = size or (calib_images.shape[-1] if calib_images is not None else m.input_size)
        path = export_onnx(m, Path(tmp) / "model.onnx", size=side)
        if int8:
            path = quantize_onnx(path, Path(tmp) / "model.int8.onnx", calib_images)
        data = path.read_bytes()
    return OnnxRoute(data, threads=threads, name="onnx_int8" if int8 else "onnx", precision="int8" if int8 else "fp32")


__all__ = ["ExportConfig", "export", "export_onnx", "quantize_onnx", "output_names", "parity", "calibration_images",
           "OnnxRoute", "onnx_route"]
