"""One image geometry for train, evaluate and predict: an image meets the model at the scale it was trained at."""
import dataclasses
import warnings
from pathlib import Path

import numpy as np
from torchvision.ops import nms
import pytest
import torch
from PIL import Image

from crackcore.data.annotations import load_records, write_coco
from crackcore.data.images import letterbox, read_image, training_scale
from crackcore.decode import DecodeConfig
from crackcore.engine.evaluate import run_split
from crackcore.engine.config import TrainConfig
from crackcore.engine.train import train
from crackcore.inference.predict import PredictConfig, checkpoint_scale, predict_image
from crackcore.inference.routes import build_route
from crackcore.metrics import box_iou
from crackcore.models import INPUT_SIZE, VARIANTS, build_model
from crackcore.storage import load_model

ROOT = Path(__file__).resolve().parent.parent


def test_training_scale_is_the_letterbox_scale():
    records = [dataclasses.make_dataclass("R", ["width", "height"])(w, h) for w, h in ((80, 80), (80, 60), (160, 90))]
    assert training_scale(records, 80) == pytest.approx(1.0)  # median of 1, 1, 0.5
    assert training_scale(records[:1], 384) == pytest.approx(4.8)
    assert letterbox(np.zeros((80, 80, 3), np.uint8), [], 384)[2] == pytest.approx(4.8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_predict_and_evaluate_return_identical_boxes_on_an_80px_patch(variant, tiny_data):
    torch.manual_seed(0)
    # PyTorch's neck init and re-drawn head convs: distinct scores (a fresh bilinear neck and head are flat, so the
    # top-K of an untrained model would be a choice among ties, not a question of geometry)
    model = build_model(variant, neck_init="default").eval()
    for conv in (c for h in model.heads.values() for c in h if isinstance(c, torch.nn.Conv2d)):
        torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    records = load_records(tiny_data, "test")[:2]
    scale = INPUT_SIZE[variant] / 80  # what training on 80 px patches records
    preds, _, _ = run_split(model, records, batch_size=2, decoding=DecodeConfig(threshold=0.0))
    cfg = PredictConfig(decoding=DecodeConfig(threshold=0.0), route="fp32")
    route = build_route("fp32", model)
    for r, p in zip(records, preds):
        det = predict_image(route, read_image(r.path), cfg, scale)
        assert_same_detections(det, p["boxes"] / scale, p["scores"], atol=1e-4)


def test_predict_on_a_mosaic_finds_the_cracks_of_its_patches(tiny_data):
    """A 240 × 240 mosaic of nine test-like patches, cut into tiles that line up with the patches (overlap 0): the
    committed trained model's detections on the mosaic are those of the patches one by one, moved by each patch's
    offset, and so are the cracks found (a detection with IoU > 0.5).

    With predict's default overlap the tiles do not line up, and the comparison stops being one of geometry: a crack
    that runs to its patch's edge continues, in the mosaic, into whatever the neighbouring patch shows there (on
    these patches one crack joins the crack below it into one 100 px crack and is boxed as such), and scores near
    the 0.1 threshold move with the context a tile adds. That difference is the model's, not the geometry's.
    """
    ckpt = ROOT / "results" / "checkpoints" / "modified_aff-seed0.fp16.pt"
    model, state = load_model(ckpt)
    records = (load_records(tiny_data, "train") + load_records(tiny_data, "test"))[:9]
    # k=200: top-K must not bind, so that the peaks of each tile are all kept, as they are for each lone patch;
    # join_edge=0: pieces are compared as each patch gives them (joining them across patches is tests/test_tiling.py's)
    route = build_route("fp32", model)
    cfg = PredictConfig(decoding=DecodeConfig(k=200), overlap=0, join_edge=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # older checkpoints record no scale; trained on 80 px patches it is 1
        scale = checkpoint_scale(state, model.variant)
    mosaic = np.zeros((240, 240, 3), np.uint8)
    gts, boxes, scores = [], [], []
    for k, r in enumerate(records):
        y, x = divmod(k, 3)
        image = read_image(r.path)
        mosaic[80 * y:80 * y + 80, 80 * x:80 * x + 80] = image
        det = predict_image(route, image, cfg, scale)
        offset = np.array([80 * x, 80 * y] * 2, np.float32)
        boxes.append(np.asarray(det["boxes"]) + offset)
        scores.append(np.asarray(det["scores"]))
        gts.append(r.boxes + offset)
    boxes, scores = np.concatenate(boxes), np.concatenate(scores)
    keep = nms(torch.as_tensor(boxes), torch.as_tensor(scores), cfg.merge_iou).numpy()  # the mosaic's tile merge
    det = predict_image(route, mosaic, cfg, scale)
    # A lone patch's boxes stop at its image border; a mosaic tile's may reach into the neighbouring patch (that is
    # part of the photograph). Clipped to the patch that holds its centre, each is the lone patch's box.
    b = np.asarray(det["boxes"]).copy()
    lo = np.floor((b[:, :2] + b[:, 2:]) / 2 / 80) * 80  # (N, 2) the owning patch's top-left corner
    b = np.clip(b, np.tile(lo, 2), np.tile(lo + 80, 2))
    assert_same_detections({"boxes": b, "scores": det["scores"]}, boxes[keep], scores[keep], atol=1e-3)
    found_alone = [(k, j) for k, g in enumerate(gts) for j in found(boxes[keep], g)]
    found_mosaic = [(k, j) for k, g in enumerate(gts) for j in found(b, g)]
    assert len(found_alone) >= 3, "the trained model should find some cracks of these patches"
    assert found_mosaic == found_alone


def assert_same_detections(det, boxes, scores, atol: float) -> None:
    """The same (box, score) pairs in any order: an untrained model's equal scores leave top-K's order open."""
    def rows(b, s):
        r = np.concatenate([np.asarray(s, np.float64)[:, None], np.asarray(b, np.float64)], 1)  # (N, 5)
        return r[np.lexsort(np.round(r, 2).T[::-1])]
    np.testing.assert_allclose(rows(det["boxes"], det["scores"]), rows(boxes, scores), atol=atol, rtol=0)


def found(boxes, gt) -> list[int]:
    """Indices of the ground-truth boxes that some detection overlaps with IoU > 0.5."""
    if len(gt) == 0 or len(boxes) == 0:
        return []
    return [int(j) for j in np.flatnonzero((box_iou(boxes, gt) > 0.5).any(0))]


def test_model_trained_on_large_photographs_is_evaluated_and_predicted_at_one_geometry(tiny_data, tmp_path):
    """Photographs twice the input size: training letterboxes them to 80 px (scale 0.5), the checkpoint records it,
    and predict resizes by it, so predict's boxes are evaluate's, in the photograph's own pixels."""
    big = []
    for r in load_records(tiny_data, "train")[:4]:
        path = tmp_path / f"big_{r.path.name}"
        Image.fromarray(read_image(r.path)).resize((160, 160), Image.BILINEAR).save(path)
        big.append(dataclasses.replace(r, path=path, boxes=r.boxes * 2, width=160, height=160))
    data = write_coco(big, tmp_path / "train.json")
    cfg = TrainConfig(variant="modified", data=str(data), out=str(tmp_path / "run"), epochs=1, batch_size=4,
                      precision="fp32")
    model, state = load_model(train(cfg, progress=False) / "model.pt")
    assert state["geometry"] == {"input_size": 80, "scale": 0.5}
    scale = checkpoint_scale(state, model.variant)
    preds, _, _ = run_split(model, big[:2], batch_size=2, decoding=DecodeConfig(threshold=0.0))
    route = build_route("fp32", model)
    for r, p in zip(big[:2], preds):
        det = predict_image(route, read_image(r.path), PredictConfig(decoding=DecodeConfig(threshold=0.0), route="fp32"), scale)
        assert_same_detections(det, p["boxes"] / 0.5, p["scores"], atol=1e-3)
