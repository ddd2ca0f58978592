"""Eq. (1) focal loss, eqs. (2)–(3) smooth-L1 size loss and eq. (5), against hand-computed values."""
import math

import pytest
import torch

from crackcore.losses import LossConfig, centernet_loss, focal_loss, offset_loss, wh_loss


def logit(p):
    return math.log(p / (1 - p))


def test_focal_loss_hand_value():
    # one positive (y=1, p=0.8) and one neighbour (y=0.5, p=0.3), N = 1:
    # pos: (1-0.8)² log 0.8 = 0.04 · (-0.223144) ; neg: (1-0.5)⁴ 0.3² log 0.7 = 0.0625 · 0.09 · (-0.356675)
    logits = torch.tensor([[[[logit(0.8), logit(0.3)]]]])
    target = torch.tensor([[[[1.0, 0.5]]]])
    expected = -(0.04 * math.log(0.8) + 0.0625 * 0.09 * math.log(0.7))
    assert focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_normalises_by_number_of_objects():
    target = torch.tensor([[[[1.0, 0.0, 1.0, 0.0]]]])
    logits = torch.tensor([[[[logit(0.8), logit(0.1), logit(0.8), logit(0.1)]]]])
    # two identical (pos, neg) pairs: the sum doubles and N = 2, so the loss equals one pair's
    one = focal_loss(logits[..., :2], target[..., :2]).item()
    assert focal_loss(logits, target).item() == pytest.approx(one, rel=1e-6)


def test_focal_loss_background_image_is_finite_and_only_negative_term():
    target = torch.zeros(1, 1, 2, 2)
    logits = torch.full((1, 1, 2, 2), logit(0.2))
    expected = -4 * (0.2 ** 2) * math.log(0.8)  # N = 0 → divided by 1
    assert focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_clamps_probabilities():
    target = torch.tensor([[[[1.0, 0.0]]]])
    logits = torch.tensor([[[[-100.0, 100.0]]]])  # confidently wrong: log would be -inf without the clamp
    loss = focal_loss(logits, target)
    # p clamped to 1e-4 (positive) and 1 - 1e-4 (negative)
    expected = -((1 - 1e-4) ** 2 * math.log(1e-4) + (1 - 1e-4) ** 2 * math.log(1e-4))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected, rel=1e-4)


def test_perfect_prediction_gives_near_zero_loss():
    target = torch.tensor([[[[1.0, 0.0, 0.0]]]])
    logits = torch.tensor([[[[30.0, -30.0, -30.0]]]])
    assert focal_loss(logits, target).item() < 1e-7


def test_smooth_l1_hand_value_and_normalisation():
    wh = torch.zeros(1, 2, 2, 2)
    wh[0, :, 1, 0] = torch.tensor([5.0, 2.0])  # prediction at flat index 2
    wh[0, :, 0, 1] = torch.tensor([4.0, 4.5])  # prediction at flat index 1
    target = torch.tensor([[[4.0, 4.0], [4.0, 4.0], [9.0, 9.0]]])
    ind = torch.tensor([[2, 1, 3]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # third slot unused: must not count
    # object 1: |1| → 1 - 0.5 = 0.5, |-2| → 1.5 ; object 2: 0, |0.5| → 0.5·0.25 = 0.125 ; N = 2
    assert wh_loss(wh, target, ind, mask).item() == pytest.approx((0.5 + 1.5 + 0.125) / 2)
    assert offset_loss(wh, target, ind, mask).item() == pytest.approx((1 + 2 + 0.5) / 2)


def test_total_loss_weights_eq5():
    out = {"hm": torch.full((1, 1, 2, 2), -2.0), "wh": torch.ones(1, 2, 2, 2), "reg": torch.zeros(1, 2, 2, 2)}
    tg = {"heatmap": torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]), "wh": torch.tensor([[[3.0, 3.0]]]),
          "reg": torch.tensor([[[0.5, 0.5]]]), "ind": torch.tensor([[0]]), "mask": torch.tensor([[1.0]])}
    t = centernet_loss(out, tg, LossConfig())
    assert t["wh"].item() == pytest.approx(3.0)  # |2| → 1.5, twice
    assert t["off"].item() == pytest.approx(1.0)
    assert t["loss"].item() == pytest.approx(t["cls"].item() + 0.1 * 3.0 + 1.0 * 1.0, rel=1e-6)
    del out["reg"]
    t = centernet_loss(out, tg, LossConfig(cls_weight=2.0, wh_weight=0.5))
    assert "off" not in t and t["loss"].item() == pytest.approx(2 * t["cls"].item() + 0.5 * 3.0, rel=1e-6)
