"""`crackcore export` (issue 6, item 4): ONNX heatmaps within 1e-4 of PyTorch fp32, boxes identical after decoding."""

import pytest
import torch
from torch import nn

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from crackcore.decode import decode
from crackcore.inference.onnx_export import ExportConfig, calibration_images, export
from crackcore.inference.onnx_export import OnnxRoute
from crackcore.inference.routes import detect
from crackcore.models import build_model, sigmoid_heatmap
from crackcore.storage import CheckpointError, provenance, save_checkpoint

SIZE = {"modified_aff": 80, "centernet_r18": 128}


def checkpoint(tmp_path, variant: str):
    """A random-weight model saved as `crackcore.engine.train` saves model.pt; its heads re-initialised so outputs vary.

    The heads' std-0.001 init would make the heatmap flat (every score within ~1e-5 of the others: decoding order
    would hinge on rounding), and the hm bias of +1 puts many peaks above the 0.1 threshold, so boxes get compared.
    """
    torch.manual_seed(0)
    m = build_model(variant).eval()
    for conv in (c for h in m.heads.values() for c in h if isinstance(c, nn.Conv2d)):
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu"), nn.init.zeros_(conv.bias)
    with torch.no_grad():
        m.heads["hm"][-1].bias.fill_(1.0)
        m.heads["wh"][-1].bias.fill_(6.0)  # boxes of a few pixels rather than of ±1 px
    path = tmp_path / variant / "model.pt"
    save_checkpoint(path, {"model": m.state_dict(), "variant": variant, "config": {"variant": variant},
                           "epoch": 0, "provenance": provenance()})
    return m, path


@pytest.mark.parametrize("variant", list(SIZE))
def test_onnx_matches_pytorch_heatmap_and_boxes(tmp_path, variant):
    m, ckpt = checkpoint(tmp_path, variant)
    s = SIZE[variant]
    path = export(ExportConfig(checkpoint=str(ckpt), size=s))
    assert path == ckpt.with_name(f"{variant}.onnx") and path.is_file()
    route = OnnxRoute(str(path), threads=1)
    assert (route.stride, route.variant, route.input_size) == (m.stride, variant, s)
    x = torch.rand(3, 3, s, s, generator=torch.Generator().manual_seed(1))  # batch 3: the batch axis is symbolic
    with torch.no_grad():
        ref = m(x)
    got = route(x)
    assert set(got) == {"hm", "wh"} | ({"reg"} if variant == "centernet_r18" else set())
    heat_ref, heat_got = sigmoid_heatmap(ref["hm"]), sigmoid_heatmap(got["hm"])
    assert float((heat_got - heat_ref).abs().max()) <= 1e-4
    want = decode(heat_ref, ref["wh"], ref.get("reg"), stride=m.stride)
    have, _ = detect(route, x)
    for a, b in zip(have, want):
        assert len(b["boxes"]) > 0  # the +1 bias makes detections: the comparison is not of two empty lists
        # identical up to float rounding of wh/reg (ONNX Runtime's conv kernels sum in another order)
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(a["scores"], b["scores"], atol=1e-5, rtol=0)


def test_aff_output_and_static_batch(tmp_path):
    m, ckpt = checkpoint(tmp_path, "modified_aff")
    out = tmp_path / "static.onnx"
    export(ExportConfig(checkpoint=str(ckpt), out=str(out), aff=True, dynamic_batch=False))
    route = OnnxRoute(str(out), threads=1)
    x = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = m(x)
    got = route(x)
    assert set(got) == {"hm", "wh", "aff"}
    torch.testing.assert_close(got["aff"], ref["aff"], atol=1e-4, rtol=0)
    with pytest.raises(Exception):  # the batch axis is fixed to 1 in this file
        route(torch.cat([x, x]))


def test_int8_export(tmp_path, tiny_data):
    m, ckpt = checkpoint(tmp_path, "modified_aff")
    path = export(ExportConfig(checkpoint=str(ckpt), int8=True, data=str(tiny_data), calib_images=4))
    assert path.name == "modified_aff.int8.onnx" and not path.with_name("modified_aff.int8.fp32.onnx").exists()
    route = OnnxRoute(str(path), threads=1)
    assert route.stride == 1 and route.input_size == 80
    x = calibration_images(str(tiny_data), "test", 2, 80)  # unseen images of the kind it was calibrated on
    with torch.no_grad():
        ref = m(x)
    got = route(x)
    # int8 is an approximation: only a loose bound (see tests/test_fast.py for the reasoning behind it). Random
    # noise would be the wrong probe here: its activations overflow ranges calibrated on synthetic ceramics.
    rel = float((got["hm"] - ref["hm"]).pow(2).mean().sqrt() / ref["hm"].std())
    assert rel < 0.3


def test_export_errors(tmp_path):
    with pytest.raises(ValueError, match="format"):
        export(ExportConfig(checkpoint=str(tmp_path / "none.pt"), format="tflite"))
    with pytest.raises(CheckpointError):
        export(ExportConfig(checkpoint=str(tmp_path / "none.pt")))
