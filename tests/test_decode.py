"""The §IV-C decoder: max-pool peaks, top-K, threshold, eq. (6) boxes."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crackcore.decode import DecodeConfig, decode


def test_decode_hand_example():
    heat = torch.zeros(1, 1, 5, 5)
    heat[0, 0, 1, 2] = 0.9  # peak
    heat[0, 0, 2, 2] = 0.5  # its neighbour: suppressed by the 3×3 max-pool
    heat[0, 0, 4, 0] = 0.05  # isolated but below the 0.1 threshold
    heat[0, 0, 4, 4] = 0.1  # exactly at the threshold: kept
    wh = torch.zeros(1, 2, 5, 5)
    wh[0, :, 1, 2] = torch.tensor([4.0, 2.0])
    out = decode(heat, wh)[0]
    assert out["scores"].tolist() == pytest.approx([0.9, 0.1])
    # centre of cell (x=2, y=1) is (2.5, 1.5): box (2.5 - 2, 1.5 - 1, 2.5 + 2, 1.5 + 1); the second has zero size
    assert out["boxes"][0].tolist() == pytest.approx([0.5, 0.5, 4.5, 2.5])
    assert out["boxes"][1].tolist() == pytest.approx([4.5, 4.5, 4.5, 4.5])


def test_decode_stride_and_offset_and_clipping():
    heat = torch.zeros(1, 1, 4, 4)
    heat[0, 0, 2, 1] = 0.8
    heat[0, 0, 0, 3] = 0.7
    wh = torch.zeros(1, 2, 4, 4)
    wh[0, :, 2, 1] = torch.tensor([2.0, 1.0])
    wh[0, :, 0, 3] = torch.tensor([4.0, 4.0])
    reg = torch.zeros(1, 2, 4, 4)
    reg[0, :, 2, 1] = torch.tensor([0.25, 0.75])
    out = decode(heat, wh, reg, stride=4)[0]
    # centre (1.25, 2.75) → box (0.25, 2.25, 2.25, 3.25) · 4
    assert out["boxes"][0].tolist() == pytest.approx([1.0, 9.0, 9.0, 13.0])
    # centre (3, 0) ± 2 → (1, -2, 5, 2)·4 = (4, -8, 20, 8), clipped to the 16×16 image
    assert out["boxes"][1].tolist() == pytest.approx([4.0, 0.0, 16.0, 8.0])


def test_decode_top_k_and_batch():
    heat = torch.zeros(2, 1, 12, 12)
    for i in range(6):  # six isolated peaks in image 0
        heat[0, 0, 2 * (i // 3) * 2, (i % 3) * 4] = 0.2 + 0.1 * i
    wh = torch.ones(2, 2, 12, 12)
    out = decode(heat, wh, decoding=DecodeConfig(k=4))
    assert out[0]["scores"].tolist() == pytest.approx([0.7, 0.6, 0.5, 0.4])
    assert len(out[1]["boxes"]) == 0 and out[1]["boxes"].shape == (0, 4)


def test_decode_rejects_logit_shaped_misuse():
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        decode(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))


def test_decode_clamps_negative_sizes_at_zero():
    heat = torch.zeros(1, 1, 5, 5)
    heat[0, 0, 2, 3] = 0.9
    heat[0, 0, 4, 0] = 0.8
    wh = torch.zeros(1, 2, 5, 5)
    wh[0, :, 2, 3] = torch.tensor([-3.0, 5.0])  # an untrained size head: negative width
    wh[0, :, 4, 0] = torch.tensor([-1.0, -2.0])  # both negative
    out = decode(heat, wh)[0]
    # centre of cell (x=3, y=2) is (3.5, 2.5): width clamped to 0, height 5 → (3.5, 0, 3.5, 5), not x2 < x1
    assert out["boxes"][0].tolist() == pytest.approx([3.5, 0.0, 3.5, 5.0])
    assert out["boxes"][1].tolist() == pytest.approx([0.5, 4.5, 0.5, 4.5])  # a point at the peak centre
    far = decode(heat, wh, stride=4, clip=False)[0]["boxes"]  # clipping is not what fixes it
    assert far[0].tolist() == pytest.approx([14.0, 0.0, 14.0, 20.0])


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**16), stride=st.sampled_from([1, 4]), clip=st.booleans(), with_reg=st.booleans())
def test_decode_boxes_are_never_inverted(seed, stride, clip, with_reg):
    g = torch.Generator().manual_seed(seed)
    heat = torch.rand(2, 1, 6, 7, generator=g)
    wh = torch.randn(2, 2, 6, 7, generator=g) * 4  # about half the sizes negative
    reg = torch.rand(2, 2, 6, 7, generator=g) if with_reg else None
    for out in decode(heat, wh, reg, stride=stride, decoding=DecodeConfig(k=10, threshold=0.0), clip=clip):
        b = out["boxes"]  # (N, 4)
        assert len(b) and (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()


def test_decode_box_nms_drops_a_ridge_duplicate_above_its_iou():
    # Two peaks 4 cells apart along one vertical crack, both 2 × 20: unclipped boxes (1.5, -7.5, 3.5, 12.5) and
    # (1.5, -3.5, 3.5, 16.5) share 2 × 16 = 32 of 40 + 40 − 32 = 48 px: IoU 2/3.
    heat = torch.zeros(1, 1, 10, 10)
    heat[0, 0, 2, 2], heat[0, 0, 6, 2] = 0.9, 0.8
    wh = torch.zeros(1, 2, 10, 10)
    wh[0, :, 2, 2] = wh[0, :, 6, 2] = torch.tensor([2.0, 20.0])
    both = decode(heat, wh, clip=False)[0]  # the paper's decoder: no NMS
    assert both["scores"].tolist() == pytest.approx([0.9, 0.8])
    kept = decode(heat, wh, decoding=DecodeConfig(nms_iou=0.7), clip=False)[0]  # 2/3 < 0.7: both stay
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.8])
    one = decode(heat, wh, decoding=DecodeConfig(nms_iou=0.5), clip=False)[0]  # 2/3 > 0.5: the weaker goes
    assert one["scores"].tolist() == pytest.approx([0.9]) and one["boxes"][0].tolist() == pytest.approx(
        [1.5, -7.5, 3.5, 12.5])


def test_decode_pool_window_keeps_one_peak_of_a_ridge():
    # A ridge along one crack in column 2: 0.9 at row 2, 0.7 at row 3, 0.8 at row 4; a second crack at row 9.
    heat = torch.zeros(1, 1, 12, 12)
    heat[0, 0, 2:5, 2] = torch.tensor([0.9, 0.7, 0.8])
    heat[0, 0, 9, 9] = 0.6
    wh = torch.ones(1, 2, 12, 12)
    # §IV-C's 3 × 3: row 4's window (rows 3–5) does not reach row 2, so the ridge gives two detections
    assert decode(heat, wh)[0]["scores"].tolist() == pytest.approx([0.9, 0.8, 0.6])
    # 5 × 5: row 4's window (rows 2–6) holds the 0.9, so the ridge gives one; the other crack, 7 cells away, stays
    wide = decode(heat, wh, decoding=DecodeConfig(pool=5))[0]
    assert wide["scores"].tolist() == pytest.approx([0.9, 0.6])
    assert wide["boxes"].flatten().tolist() == pytest.approx([2.0, 2.0, 3.0, 3.0, 9.0, 9.0, 10.0, 10.0])
    # 1 × 1: every positive cell is a peak (no suppression at all), the top 20 of them over the threshold
    assert decode(heat, wh, decoding=DecodeConfig(pool=1))[0]["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])


@pytest.mark.parametrize("bad", [{"k": 0}, {"threshold": 1.5}, {"threshold": -0.1}, {"nms_iou": 1.0},
                                 {"nms_iou": -0.2}, {"pool": 0}, {"pool": 4}, {"pool": 3.0}])
def test_decode_config_rejects_impossible_knobs(bad):
    with pytest.raises(ValueError):
        DecodeConfig(**bad)
