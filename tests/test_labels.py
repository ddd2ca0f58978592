"""Gaussian radius, Gaussian splats and target encoding (§III-A, §III-B), against hand-computed values."""
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

from crackcore.decode import DecodeConfig, decode
from crackcore.labels import draw_gaussian, encode, gaussian_radius, gaussian_radius_official, gaussian_sigma


def iou(a, b):
    """Plain IoU of two (x1, y1, x2, y2) boxes, written here independently of crackcore.metrics."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_radius_10x10_hand_value():
    # Case 2 (both corners inside): 4r² - 40r + 70 = 0 → r = (40 - sqrt(1600 - 1120)) / 8 = (40 - sqrt(480)) / 8
    assert gaussian_radius(10, 10, 0.3) == pytest.approx((40 - math.sqrt(480)) / 8, abs=1e-12)
    assert gaussian_radius(10, 10, 0.3) == pytest.approx(2.2614, abs=1e-4)


def test_official_radius_keeps_the_known_error():
    # Released code: r1 = (20 + sqrt(400 - 4·53.846))/2 = 16.79, r2 = (40 + sqrt(480))/2 = 30.95,
    # r3 = (-12 + sqrt(144 + 336))/2 = (-12 + sqrt(480))/2 = 4.9545 → min = 4.9545, more than twice the true radius.
    assert gaussian_radius_official(10, 10, 0.3) == pytest.approx((-12 + math.sqrt(480)) / 2, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(h=st.floats(2, 200), w=st.floats(2, 200), m=st.floats(0.1, 0.9))
def test_radius_is_the_largest_shift_keeping_min_overlap(h, w, m):
    """Moving corners by r in each of CornerNet's three ways keeps IoU ≥ m, and the tightest one is exactly m."""
    r = gaussian_radius(h, w, m)
    box = (0.0, 0.0, w, h)
    shifted = (r, r, w + r, h + r)  # case 1: one corner in, one out (translation)
    shrunk = (r, r, w - r, h - r)  # case 2: both inside
    grown = (-r, -r, w + r, h + r)  # case 3: both outside
    ious = [iou(box, shifted), iou(box, shrunk) if r < min(h, w) / 2 else 0.0, iou(box, grown)]
    assert min(ious) == pytest.approx(m, abs=1e-6)
    assert all(v >= m - 1e-6 for v in ious)


def test_sigma_rules():
    assert gaussian_sigma(3) == 1.0  # the paper: σ = r/3
    assert gaussian_sigma(3, "centernet") == pytest.approx(7 / 6)  # CenterNet: (2r+1)/6
    with pytest.raises(ValueError, match="sigma rule"):
        gaussian_sigma(3, "other")


def test_gaussian_peak_is_exactly_one_and_values_match_formula():
    hm = np.zeros((9, 9), np.float32)
    draw_gaussian(hm, 4, 4, 3, 1.0)
    assert hm[4, 4] == 1.0 and hm.max() == 1.0
    assert hm[4, 5] == pytest.approx(math.exp(-1 / 2))  # e^{-(x²+y²)/2σ²} at (1, 0), σ = 1
    assert hm[6, 6] == pytest.approx(math.exp(-8 / 2))
    assert hm[0, 4] == 0.0  # outside the (2r+1)² window


def test_overlapping_gaussians_merge_by_maximum_and_clip_at_border():
    hm = np.zeros((6, 6), np.float32)
    draw_gaussian(hm, 0, 0, 2, 2 / 3)  # touches the corner: clipped, no wrap-around
    a = hm.copy()
    draw_gaussian(hm, 1, 0, 2, 2 / 3)
    b = np.zeros((6, 6), np.float32)
    draw_gaussian(b, 1, 0, 2, 2 / 3)
    np.testing.assert_array_equal(hm, np.maximum(a, b))
    assert hm[0, 0] == 1.0 and hm[0, 1] == 1.0 and hm[5, 5] == 0.0


def test_zero_radius_marks_only_the_centre():
    hm = np.zeros((5, 5), np.float32)
    draw_gaussian(hm, 2, 3, 0, 0.0)
    assert hm.sum() == 1.0 and hm[3, 2] == 1.0


def test_encode_hand_example_stride1():
    t = encode([[10, 20, 30, 40]], (80, 80), stride=1)
    # centre (20, 30) → cell (20, 30); radius of a 20×20 box at 0.3: (80 - sqrt(1920))/8 = 4.52 → 4, σ = 4/3
    assert t["heatmap"].shape == (1, 80, 80)
    assert t["heatmap"][0, 30, 20] == 1.0
    assert t["heatmap"][0, 30, 21].item() == pytest.approx(math.exp(-1 / (2 * (4 / 3) ** 2)), rel=1e-6)
    assert t["heatmap"][0, 30, 25] == 0.0  # radius 4: column 25 is outside the window
    assert t["ind"][0] == 30 * 80 + 20 and t["mask"].tolist()[:2] == [1.0, 0.0]
    assert t["wh"][0].tolist() == [20.0, 20.0] and t["reg"][0].tolist() == [0.0, 0.0]


def test_encode_stride4_offset_and_size_in_output_units():
    t = encode([[10, 6, 31, 23]], (24, 24), stride=4)
    # output coords: x 2.5..7.75 → centre 5.125, y 1.5..5.75 → 3.625; cell (5, 3)
    assert t["ind"][0] == 3 * 24 + 5
    assert t["reg"][0].tolist() == pytest.approx([0.125, 0.625])
    assert t["wh"][0].tolist() == pytest.approx([5.25, 4.25])


def test_encode_background_degenerate_and_max_objs():
    empty = encode(np.zeros((0, 4)), (8, 8))
    assert empty["heatmap"].sum() == 0 and empty["mask"].sum() == 0
    t = encode([[1, 1, 1, 5], [90, 90, 95, 95], [0, 0, 4, 4], [2, 2, 6, 6], [3, 3, 7, 7]], (8, 8), max_objs=2)
    assert t["n_skipped"] == 2  # zero width; wholly outside the 8×8 image
    assert t["n_dropped"] == 1 and t["mask"].sum() == 2


@pytest.mark.parametrize("bad, msg", [([[0, 0, float("nan"), 4]], "NaN"), ([[5, 0, 1, 4]], "inverted")])
def test_encode_rejects_bad_boxes(bad, msg):
    with pytest.raises(ValueError, match=msg):
        encode(bad, (8, 8))


def targets_to_maps(t, H, W):
    """Scatter encoded per-object wh/reg back into dense maps, as a perfect network would predict them."""
    wh = torch.zeros(1, 2, H * W)
    reg = torch.zeros(1, 2, H * W)
    n = int(t["mask"].sum())
    wh[0, :, t["ind"][:n]] = t["wh"][:n].T
    reg[0, :, t["ind"][:n]] = t["reg"][:n].T
    return wh.view(1, 2, H, W), reg.view(1, 2, H, W)


def random_boxes(draw_floats, n, size):
    boxes = []
    for _ in range(n):
        w, h, x, y = (draw_floats(6, size / 2), draw_floats(6, size / 2), draw_floats(0, size / 2),
                      draw_floats(0, size / 2))
        boxes.append([x, y, x + w, y + h])
    return boxes


def far_apart(boxes, min_dist):
    c = np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] for b in boxes])
    d = np.abs(c[:, None] - c[None]).max(-1) + np.eye(len(c)) * 1e9
    return d.min() >= min_dist


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_round_trip_stride4_with_offsets_is_exact(data):
    fl = lambda lo, hi: data.draw(st.floats(lo, hi))
    boxes = random_boxes(fl, data.draw(st.integers(1, 3)), 96)
    assume(far_apart(boxes, 12))  # peaks closer than the 3×3 max-pool window cannot both survive
    t = encode(boxes, (24, 24), stride=4)
    wh, reg = targets_to_maps(t, 24, 24)
    out = decode(t["heatmap"][None], wh, reg, stride=4, decoding=DecodeConfig(threshold=0.99))[0]
    assert len(out["boxes"]) == len(boxes)
    for b in boxes:
        assert max(iou(b, o.tolist()) for o in out["boxes"]) > 0.999


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_round_trip_stride1(data):
    """Without an offset head the centre is known to within half a pixel; boxes centred on pixel centres (as a
    box of whole pixels with odd width and height is) come back with IoU > 0.99."""
    n = data.draw(st.integers(1, 3))
    boxes = []
    for _ in range(n):
        x, y = data.draw(st.integers(0, 50)), data.draw(st.integers(0, 50))
        w, h = 2 * data.draw(st.integers(2, 14)) + 1, 2 * data.draw(st.integers(2, 14)) + 1
        boxes.append([x, y, x + w, y + h])
    assume(far_apart(boxes, 3))
    t = encode(boxes, (80, 80), stride=1)
    wh, _ = targets_to_maps(t, 80, 80)
    out = decode(t["heatmap"][None], wh, None, stride=1, decoding=DecodeConfig(threshold=0.99))[0]
    assert len(out["boxes"]) == n
    for b in boxes:
        assert max(iou(b, o.tolist()) for o in out["boxes"]) > 0.99
    # any real-valued box: centre error at most half a pixel, size exact
    fb = [data.draw(st.floats(0, 40)), data.draw(st.floats(0, 40))]
    fb += [fb[0] + data.draw(st.floats(3, 30)), fb[1] + data.draw(st.floats(3, 30))]
    t = encode([fb], (80, 80))
    wh, _ = targets_to_maps(t, 80, 80)
    o = decode(t["heatmap"][None], wh, None, decoding=DecodeConfig(threshold=0.99))[0]["boxes"][0].tolist()
    if fb[2] < 80 and fb[3] < 80:
        assert abs((o[0] + o[2]) - (fb[0] + fb[2])) / 2 <= 0.5 + 1e-5
        assert abs((o[2] - o[0]) - (fb[2] - fb[0])) < 1e-4 or o[0] == 0


def test_ellipse_label_stretches_along_a_long_crack_by_hand():
    """A 3×80 crack: round radius 1 (case 2: (166 − √24868)/8 = 1.04); the ellipse's r_y = ⌊0.54·80/2⌋ = 21, σ_y = 7."""
    assert gaussian_radius(80, 3, 0.3) == pytest.approx(1.038, abs=1e-3)
    box = [[10.0, 0.0, 13.0, 80.0]]  # centre (11.5, 40) → cell (11, 40)
    round_ = encode(box, (80, 80), 1)["heatmap"][0].numpy()
    ellipse = encode(box, (80, 80), 1, label_shape="ellipse")["heatmap"][0].numpy()
    assert round_[40, 11] == ellipse[40, 11] == 1.0
    assert round_[41, 11] == pytest.approx(math.exp(-4.5), rel=1e-5)  # σ = 1/3: one pixel off is 0.011
    assert round_[42, 11] == 0.0  # outside the round window
    assert ellipse[47, 11] == pytest.approx(math.exp(-0.5), rel=1e-5)  # 7 px along the crack: one σ_y
    assert ellipse[61, 11] == pytest.approx(math.exp(-441 / 98), rel=1e-5)  # the window's last row, 21 px
    assert ellipse[62, 11] == 0.0
    assert ellipse[40, 12] == pytest.approx(math.exp(-4.5), rel=1e-5)  # across the crack: as thin as the round one
    assert ellipse[40, 13] == 0.0


def test_ellipse_label_equals_the_round_one_on_a_square_box():
    """10×10: round r = ⌊2.26⌋ = 2 and ⌊0.54·10/2⌋ = 2, so the two shapes draw the same label."""
    box = [[20.0, 30.0, 30.0, 40.0]]
    a = encode(box, (80, 80), 1)["heatmap"]
    b = encode(box, (80, 80), 1, label_shape="ellipse")["heatmap"]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="label shape"):
        encode(box, (80, 80), 1, label_shape="square")


def test_label_config_refuses_unknown_rules_and_impossible_values():
    from crackcore.labels import LabelConfig
    with pytest.raises(ValueError, match="radius_rule 'bigger'"):
        LabelConfig(radius_rule="bigger")
    with pytest.raises(ValueError, match="min_overlap"):
        LabelConfig(min_overlap=1.0)
    with pytest.raises(ValueError, match="max_objs"):
        LabelConfig(max_objs=0)
