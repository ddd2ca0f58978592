"""The int8 inference routes of `routes`: torch.ao post-training static quantisation behind the same `Route` call as
the eager routes. Built lazily by `routes.build_route`, so torch.ao's FX machinery is imported only when an int8
route is asked for. (ONNX Runtime's int8 lives with the ONNX export, in `onnx_export`.)
"""
from __future__ import annotations

import copy
import warnings

import torch

from .route import Route, RouteUnavailable, as_route, fold_bn


def quantize_int8(model, calib_images: torch.Tensor, *, engine: str = "x86", fp32_outputs: bool = True,
                  batch: int = 8):
    """Post-training static int8 (torch.ao FX) of the folded model, calibrated on `calib_images`.

    `CenterNet.forward` checks shapes in Python, so it is not FX-traceable as a whole: the backbone, the neck and
    each head are quantised as separate graphs and the model's own forward (normalisation, padding, cropping) runs
    between them in fp32. What stays fp32, and why:
    - the neck under the x86 engine: its quantized ConvTranspose2d returns wrong numbers in this torch (a lone
      4×4/2 deconv: relative error ~1.4 under x86, ~0.03 under fbgemm), so the 3.4 of 20 GFLOPs (80 px) stay fp32;
    - the AFF block (0.05 GFLOPs): int8 would step its softmax weights by 1/256 and concatenate unequal scales;
    - with `fp32_outputs`, each head's 1×1 output conv (≈0 FLOPs): 8-bit logits would step every score.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if engine not in torch.backends.quantized.supported_engines:
        raise RouteUnavailable(f"this torch build has no {engine!r} quantized engine")
    torch.backends.quantized.engine = engine  # process-wide: the kernels convert_fx picks follow it
    q = fold_bn(model.cpu()).eval()
    calib_images = calib_images.cpu()
    parts = {"backbone": q.backbone, **({"neck": q.neck} if engine != "x86" else {}),
             **{f"heads.{k}": h for k, h in q.heads.items()}}
    example: dict[str, tuple] = {}  # each part's inputs on one image, which prepare_fx wants
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: example.setdefault(n, args)) for n, m in parts.items()]
    with torch.no_grad():
        q(calib_images[:1])
    for h in hooks:
        h.remove()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's FX API warns of its own deprecation (torchao pt2e replaces it)
        for name, part in parts.items():
            mapping = get_default_qconfig_mapping(engine)
            if fp32_outputs and name.startswith("heads."):
                mapping.set_module_name(str(len(part) - 1), None)  # the head's last layer: the 1×1 output conv
            q.set_submodule(name, prepare_fx(part, mapping, example[name]))
        with torch.no_grad():  # calibration: observers record activation ranges on the given images
            for chunk in calib_images.split(batch):
                q(chunk)
        for name in parts:
            q.set_submodule(name, convert_fx(q.get_submodule(name)))
    return q


def int8_route(model, calib_images, engine: str) -> Route:
    """The `int8` / `int8_fbgemm` routes: `quantize_int8` behind the common route call."""
    if calib_images is None:
        raise ValueError("the int8 routes need calib_images: a (N, 3, H, W) batch of representative images")
    q = quantize_int8(copy.deepcopy(model), calib_images, engine=engine)
    kept = "AFF, heads' output convs" + (" and the neck" if engine == "x86" else "")
    name = "int8" if engine == "x86" else f"int8_{engine}"

    def fn(x):  # the engine is process-wide: another int8 route built since may have switched it
        torch.backends.quantized.engine = engine
        return q(x)
    return as_route(name, q, fn, "int8", device="cpu",
                  note=f"torch.ao FX PTQ ({engine}), {len(calib_images)} calibration images; {kept} fp32")
