"""§IV-B augmentation: flips are exact, the crop also crops backgrounds, boxes stay valid through everything."""
import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from crackcore.data.images import letterbox
from crackcore.data.transforms import AugmentConfig, RandomWindowCrop, build_eval_transform, build_train_transform


def _pair(boxes, size=80, seed=0):
    img = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    bb = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return tv_tensors.Image(img), tv_tensors.BoundingBoxes(bb, format="XYXY", canvas_size=(size, size))


def test_flips_move_boxes_and_double_flip_is_identity():
    img, bb = _pair([[10, 20, 30, 40]])
    assert F.horizontal_flip(bb).tolist() == [[50, 20, 70, 40]]
    assert F.vertical_flip(bb).tolist() == [[10, 40, 30, 60]]
    for t in (v2.RandomHorizontalFlip(1.0), v2.RandomVerticalFlip(1.0)):
        i2, b2 = t(*t(img, bb))
        assert torch.equal(i2, img) and torch.equal(b2, bb)


def test_crop_also_crops_backgrounds():
    x = torch.arange(80, dtype=torch.uint8).repeat(3, 80, 1)  # a horizontal ramp: any crop changes it
    img, bb = tv_tensors.Image(x), tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(80, 80))
    torch.manual_seed(0)
    out, boxes = RandomWindowCrop(80, scale=(0.6, 0.7), p=1.0)(img, bb)
    assert out.shape == (3, 80, 80) and boxes.shape == (0, 4) and not torch.equal(out, img)


def test_crop_drops_boxes_that_lose_most_of_their_area():
    img, bb = _pair([[0, 0, 60, 60], [45, 45, 80, 80]])
    crop = RandomWindowCrop(80, p=1.0, min_visibility=0.3)
    window = {"window": dict(top=0, left=0, height=50, width=50)}
    out = crop.transform(bb, window)
    assert out.canvas_size == (80, 80)
    assert out.tolist() == [[0, 0, 80, 80], [0, 0, 0, 0]]  # 69% kept → resized; 2% kept → collapsed
    _, kept = v2.SanitizeBoundingBoxes(labels_getter=None)(img, out)
    assert kept.tolist() == [[0, 0, 80, 80]]


def test_eval_transform_only_converts():
    img, bb = _pair([[1, 2, 3, 4]])
    out, boxes = build_eval_transform(80)(img, bb)
    assert out.dtype == torch.float32 and torch.allclose(out, img / 255.0) and torch.equal(boxes, bb)


def test_train_transform_is_reproducible_under_a_seed():
    img, bb = _pair([[5, 5, 40, 30]])
    t = build_train_transform(80)
    torch.manual_seed(3)
    a = t(img, bb)
    torch.manual_seed(3)
    b = t(img, bb)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


box = st.tuples(st.floats(0, 0.95), st.floats(0, 0.95), st.floats(0.02, 1), st.floats(0.02, 1))


@settings(max_examples=40, deadline=None)
@given(h=st.integers(8, 120), w=st.integers(8, 120), size=st.sampled_from([80, 96]), rel=st.lists(box, max_size=4),
       seed=st.integers(0, 2 ** 31 - 1), crop_p=st.sampled_from([0.0, 0.5, 1.0]))
def test_random_boxes_stay_valid_through_the_train_pipeline(h, w, size, rel, seed, crop_p):
    # at least 2 px a side, so even the 120 → 80 letterbox leaves every box ≥ min_size
    boxes = [[x * (w - 2), y * (h - 2), min(w, x * (w - 2) + 2 + bw * w), min(h, y * (h - 2) + 2 + bh * h)]
             for x, y, bw, bh in rel]
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    img, boxes, _ = letterbox(img, boxes, size)
    assert ((boxes >= 0) & (boxes <= size)).all()
    image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1))
    bb = tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(size, size))
    torch.manual_seed(seed)
    out, ob = build_train_transform(size, AugmentConfig(crop_p=crop_p))(image, bb)
    assert out.shape == (3, size, size) and out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    assert ob.shape[1] == 4 and len(ob) <= len(boxes) and ob.dtype == torch.float32
    assert ((ob >= 0) & (ob <= size)).all()
    assert (ob[:, 2] > ob[:, 0]).all() and (ob[:, 3] > ob[:, 1]).all()
    if crop_p == 0.0:
        assert len(ob) == len(boxes)  # flips and jitter never drop a box
