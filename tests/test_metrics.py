"""§V-A (VOC2007 [35]) AP: hand-computed golden values, input validation and a plain-loop reference."""
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crackcore.metrics import APResult, box_iou, voc_ap


def P(boxes, scores):
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4), "scores": np.asarray(scores, float)}


def T(boxes):
    return {"boxes": np.asarray(boxes, float).reshape(-1, 4)}


A = [0, 0, 10, 10]
FAR = [100, 100, 110, 110]


# ---------------------------------------------------------------- box_iou

def test_box_iou_hand_values():
    a = [A, [0, 0, 0, 0]]
    b = [[5, 0, 15, 10],  # overlap 5x10 = 50; union 100 + 100 - 50 = 150 → 1/3
         A,  # identical → 1
         [10, 0, 20, 10],  # touching edge: zero-width overlap → 0 (no +1)
         [2, 2, 4, 4]]  # inside: 4 / 100
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1 / 3, 1.0, 0.0, 0.04], rtol=1e-12)
    np.testing.assert_array_equal(iou[1], [0, 0, 0, 0])  # zero-area box: IoU 0, not NaN


def test_box_iou_continuous_coordinates_no_plus_one():
    # [0,0,1,1] vs [0,0,1,2]: areas 1 and 2 → 1/2 ("+1" convention would give 4/6)
    assert box_iou([[0, 0, 1, 1]], [[0, 0, 1, 2]])[0, 0] == 0.5
    assert box_iou([[0.5, 0.5, 1.5, 1.5]], [[1.0, 0.5, 2.0, 1.5]])[0, 0] == pytest.approx(0.5 / 1.5)


def test_box_iou_empty_and_torch():
    torch = pytest.importorskip("torch")
    assert box_iou(np.zeros((0, 4)), [A]).shape == (0, 1)
    iou = box_iou(torch.tensor([A], dtype=torch.bfloat16), torch.tensor([[5.0, 0, 15, 10]]))
    assert iou[0, 0] == pytest.approx(1 / 3)


# ---------------------------------------------------------------- hand-computed AP

def three_image_case():
    # 3 gts in 3 images; ranked detections: TP (img 0), FP (img 1, far from its gt), TP (img 2)
    preds = [P([A], [0.9]), P([FAR], [0.8]), P([A], [0.7])]
    targets = [T([A]), T([[20, 20, 30, 30]]), T([A])]
    return preds, targets


def test_ap07_tp_fp_tp_is_6_over_11():
    # precisions 1, 1/2, 2/3 at recalls 1/3, 1/3, 2/3.
    # max precision at recall >= r: r in {0, .1, .2, .3} → 1 (4 points); r in {.4, .5, .6} → 2/3 (3 points);
    # r in {.7, .8, .9, 1} → nothing reaches → 0 (4 points).  (4·1 + 3·2/3) / 11 = 6/11
    r = voc_ap(*three_image_case())
    assert isinstance(r, APResult)
    assert r.ap == pytest.approx(6 / 11, abs=1e-12)
    np.testing.assert_allclose(r.precision, [1, 1 / 2, 2 / 3])
    np.testing.assert_allclose(r.recall, [1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_array_equal(r.tp, [True, False, True])
    np.testing.assert_array_equal(r.scores, [0.9, 0.8, 0.7])
    assert (r.n_gt, r.n_det) == (3, 3)


def test_all_point_ap_tp_fp_tp_is_5_over_9():
    # envelope: 1 on recall (0, 1/3], 2/3 on (1/3, 2/3], then 0 → 1/3·1 + 1/3·2/3 = 5/9
    assert voc_ap(*three_image_case(), use_07_metric=False).ap == pytest.approx(5 / 9, abs=1e-12)


def test_images_without_gt_or_predictions_are_neutral():
    preds, targets = three_image_case()
    r = voc_ap(preds + [P([], [])], targets + [T([])])
    assert r.ap == pytest.approx(6 / 11, abs=1e-12)


def test_detection_on_image_without_gt_is_false_positive():
    # TP then FP on an empty image: precisions 1, 1/2 at recall 1 → every recall point has max precision 1
    r = voc_ap([P([A], [0.9]), P([A], [0.5])], [T([A]), T([])])
    np.testing.assert_array_equal(r.tp, [True, False])
    assert r.ap == 1.0


def test_iou_exactly_half_is_not_a_true_positive():
    preds, targets = [P([[0, 0, 5, 10]], [0.9])], [T([A])]  # IoU = 50 / 100 = 0.5 exactly
    assert box_iou(preds[0]["boxes"], targets[0]["boxes"])[0, 0] == 0.5
    assert voc_ap(preds, targets).ap == 0.0  # strictly above 0.5 required
    assert voc_ap(preds, targets, iou_threshold=0.49).ap == 1.0


def test_duplicate_on_matched_box_is_false_positive():
    # same box twice: TP then FP; precisions 1, 1/2 at recall 1 → AP 1 (the FP comes after full recall)
    r = voc_ap([P([A, A], [0.9, 0.8])], [T([A])])
    np.testing.assert_array_equal(r.tp, [True, False])
    np.testing.assert_allclose(r.precision, [1, 0.5])
    assert r.ap == 1.0


def test_voc_max_iou_gt_rule_even_if_another_gt_is_free():
    # gts G0 = [0,0,10,10] and G1 = [0,1,10,10] (area 90). Both detections are [0,0,10,10]:
    # IoU with G0 = 1, with G1 = 90/100 = 0.9. The first takes G0; the second's max-IoU gt is G0 again
    # (already matched) → FP by the VOC rule, although G1 is free at IoU 0.9.
    # precisions 1, 1/2 at recalls 1/2, 1/2 → 11-point: r = 0..0.5 → 1 (6 points), rest 0 → 6/11;
    # all-point: 1/2 · 1 = 1/2
    preds, targets = [P([A, A], [0.9, 0.8])], [T([A, [0, 1, 10, 10]])]
    r = voc_ap(preds, targets)
    np.testing.assert_array_equal(r.tp, [True, False])
    assert r.ap == pytest.approx(6 / 11, abs=1e-12)
    assert voc_ap(preds, targets, use_07_metric=False).ap == pytest.approx(0.5, abs=1e-12)


def test_ties_keep_image_then_within_image_order():
    # equal scores: the FP (image 0) ranks before the TP (image 1): precisions 0, 1/2 at recalls 0, 1
    # → max precision at recall >= r is 1/2 for every r → AP = 1/2 (it would be 1 in the other order)
    r = voc_ap([P([FAR], [0.5]), P([A], [0.5])], [T([]), T([A])])
    np.testing.assert_array_equal(r.tp, [False, True])
    assert r.ap == pytest.approx(0.5, abs=1e-12)
    r = voc_ap([P([FAR, A], [0.5, 0.5])], [T([A])])  # same within one image
    np.testing.assert_array_equal(r.tp, [False, True])
    assert r.ap == pytest.approx(0.5, abs=1e-12)


def test_perfect_detections_give_ap_one():
    gts = [[A, [20, 20, 35, 30]], [[1, 2, 3, 4]], [], [[5, 5, 50, 9]]]
    preds = [P(g, np.linspace(0.9, 0.3, len(g))) for g in gts]
    for metric in (True, False):
        assert voc_ap(preds, [T(g) for g in gts], use_07_metric=metric).ap == 1.0


def test_recall_exactly_three_tenths_reaches_the_0_3_point():
    # 10 disjoint gts, 3 exact hits: precision 1 at recalls 0.1, 0.2, 0.3.
    # Ours (r_k = k/10): points 0, .1, .2, .3 → 1, others 0 → AP = 4/11.
    # np.arange(0, 1.1, 0.1)[3] = 0.30000000000000004 > 3/10, so that convention misses r = 0.3 → 3/11.
    gts = [[10 * k, 0, 10 * k + 5, 5] for k in range(10)]
    r = voc_ap([P(gts[:3], [0.9, 0.8, 0.7])], [T(gts)])
    assert r.recall[-1] == 3 / 10
    assert r.ap == pytest.approx(4 / 11, abs=1e-12)
    arange_ap = sum(r.precision[r.recall >= t].max() if (r.recall >= t).any() else 0.0
                    for t in np.arange(0, 1.1, 0.1)) / 11
    assert arange_ap == pytest.approx(3 / 11, abs=1e-12)  # the conventions really differ here


def test_empty_predictions_give_zero():
    for metric in (True, False):
        r = voc_ap([P([], []), P([], [])], [T([A]), T([])], use_07_metric=metric)
        assert r.ap == 0.0 and r.n_det == 0 and r.n_gt == 1
        assert r.precision.shape == r.recall.shape == r.scores.shape == r.tp.shape == (0,)


def test_no_ground_truth_at_all_is_zero_with_warning():
    with pytest.warns(RuntimeWarning, match="no ground-truth"):
        r = voc_ap([P([A], [0.9])], [T([])])
    assert r.ap == 0.0 and r.n_gt == 0
    np.testing.assert_array_equal(r.tp, [False])


def test_accepts_torch_and_result_is_read_only():
    torch = pytest.importorskip("torch")
    preds = [{"boxes": torch.tensor([A], dtype=torch.float16), "scores": torch.tensor([0.9])}]
    r = voc_ap(preds, [{"boxes": torch.tensor([A])}])
    assert r.ap == 1.0
    with pytest.raises(ValueError):
        r.precision[0] = 0.0


def test_zero_area_prediction_is_a_false_positive_never_nan():
    # a point inside A (the decoder clamps negative sizes to 0) ranked above A itself: FP then TP,
    # precisions 0, 1/2 at recalls 0, 1 → every r_k has max precision 1/2 → AP07 = all-point AP = 1/2
    for zero in ([5, 5, 5, 5], [0, 0, 0, 10]):  # a point, and a zero-width line on A's left edge
        preds, targets = [P([zero, A], [0.9, 0.8])], [T([A])]
        for metric in (True, False):
            r = voc_ap(preds, targets, use_07_metric=metric)
            np.testing.assert_array_equal(r.tp, [False, True])
            np.testing.assert_allclose(r.precision, [0, 0.5])
            assert r.ap == pytest.approx(0.5, abs=1e-12)
    # ranked below A it comes after full recall: AP 1
    assert voc_ap([P([A, [5, 5, 5, 5]], [0.9, 0.8])], [T([A])]).ap == 1.0
    # on a zero-area gt at the same spot: union 0 → IoU 0, not NaN → FP, AP 0
    r = voc_ap([P([[5, 5, 5, 5]], [0.9])], [T([[5, 5, 5, 5]])])
    assert r.ap == 0.0 and not r.tp[0] and np.isfinite(r.precision).all() and np.isfinite(r.recall).all()


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("preds, targets, match", [
    ([P([A], [0.9])], [T([A]), T([A])], "one entry per image"),
    ([{"boxes": np.array([0, 0, 10]), "scores": np.array([0.9])}], [T([A])], r"shape \(N, 4\)"),
    ([{"boxes": np.zeros((1, 5)), "scores": np.array([0.9])}], [T([A])], r"shape \(N, 4\)"),
    ([P([[0, 0, np.nan, 10]], [0.9])], [T([A])], "NaN"),
    ([P([A], [0.9])], [T([[10, 0, 0, 10]])], "x2 >= x1"),
    ([P([[0, 10, 10, 0]], [0.9])], [T([A])], "y2 >= y1"),
    ([P([A], [0.9, 0.8])], [T([A])], "1 boxes but 2 scores"),
    ([P([A], [np.nan])], [T([A])], "scores"),
    ([{"boxes": np.array([A])}], [T([A])], "lacks key"),
])
def test_invalid_inputs_raise(preds, targets, match):
    with pytest.raises(ValueError, match=match):
        voc_ap(preds, targets)


@pytest.mark.parametrize("bad, match", [
    ([10, 0, 0, 10], r"box 1 \[10\.0, 0\.0, 0\.0, 10\.0\] is inverted; boxes need x2 >= x1"),
    ([0, 5, 10, 4.5], r"box 1 \[0\.0, 5\.0, 10\.0, 4\.5\] is inverted; .*y2 >= y1"),
    ([0, 0, np.nan, 10], r"box 1 \[0\.0, 0\.0, nan, 10\.0\] contains NaN or inf"),
    ([0, -np.inf, 10, 10], r"box 1 .* contains NaN or inf"),
])
def test_malformed_ground_truth_names_the_image_and_box(bad, match):
    preds, targets = [P([A], [0.9]), P([A], [0.9])], [T([A]), T([A, bad])]
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\] \(image 1\): " + match):
        voc_ap(preds, targets)


def test_invalid_threshold_raises():
    with pytest.raises(ValueError, match="iou_threshold"):
        voc_ap([P([A], [0.9])], [T([A])], iou_threshold=1.5)


# ---------------------------------------------------------------- independent plain-loop reference

def reference_ap(preds, targets, thr=0.5, use_07=True):
    """Deliberately naive: Python lists and floats only, written without looking at the module."""
    dets = []
    for img in range(len(preds)):
        for k in range(len(preds[img]["scores"])):
            dets.append((float(preds[img]["scores"][k]), img, [float(v) for v in preds[img]["boxes"][k]]))
    dets = sorted(dets, key=lambda d: -d[0])  # Python's sort is stable
    n_gt = 0
    used = []
    for img in range(len(targets)):
        n_gt += len(targets[img]["boxes"])
        used.append([False] * len(targets[img]["boxes"]))
    tps = []
    for score, img, b in dets:
        best, best_j = -1.0, -1
        for j, g in enumerate(targets[img]["boxes"]):
            iw = min(b[2], g[2]) - max(b[0], g[0])
            ih = min(b[3], g[3]) - max(b[1], g[1])
            inter = max(iw, 0.0) * max(ih, 0.0)
            union = (b[2] - b[0]) * (b[3] - b[1]) + (g[2] - g[0]) * (g[3] - g[1]) - inter
            iou = inter / union if union > 0 else 0.0
            if iou > best:
                best, best_j = iou, j
        if best_j >= 0 and best > thr and not used[img][best_j]:
            used[img][best_j] = True
            tps.append(True)
        else:
            tps.append(False)
    prec, rec = [], []
    hit = 0
    for i, t in enumerate(tps):
        hit += t
        prec.append(hit / (i + 1))
        rec.append(hit / n_gt)
    if use_07:
        total = 0.0
        for k in range(11):
            best = 0.0
            for p, r in zip(prec, rec):
                if r >= k / 10 - 1e-9 and p > best:
                    best = p
            total += best
        return total / 11
    area, last_rec = 0.0, 0.0
    for i in range(len(prec)):
        if rec[i] > last_rec:  # each recall step is weighted by the best precision at or beyond it
            area += (rec[i] - last_rec) * max(prec[i:])
            last_rec = rec[i]
    return area


def random_case(rng, n_img):
    # small integer grid and few score levels → IoU ties, exact 0.5 overlaps and score ties do occur
    def boxes(n):
        xy = rng.integers(0, 12, (n, 2))
        wh = rng.integers(0, 8, (n, 2))
        return np.concatenate([xy, xy + wh], 1).astype(float)
    targets = [{"boxes": boxes(rng.integers(0, 4))} for _ in range(n_img)]
    preds = []
    for t in targets:
        n = rng.integers(0, 5)
        b = boxes(n)
        copy = rng.random(n) < 0.4  # some detections are (jittered) copies of gts so TPs happen
        if len(t["boxes"]):
            b[copy] = t["boxes"][rng.integers(0, len(t["boxes"]), copy.sum())] + rng.integers(0, 2, (copy.sum(), 4))
            b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
        preds.append({"boxes": b, "scores": rng.integers(0, 6, n) / 5})
    return preds, targets


def test_matches_plain_reference_on_random_cases():
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        preds, targets = random_case(rng, int(rng.integers(1, 5)))
        if sum(len(t["boxes"]) for t in targets) == 0:
            continue
        for thr in (0.5, 0.3):
            for use_07 in (True, False):
                got = voc_ap(preds, targets, iou_threshold=thr, use_07_metric=use_07).ap
                assert got == pytest.approx(reference_ap(preds, targets, thr, use_07), abs=1e-12)
        checked += 1
    assert checked > 200


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_img=st.integers(1, 5), data=st.data())
def test_properties_permutation_bounds_and_duplicate_fp(seed, n_img, data):
    preds, targets = random_case(np.random.default_rng(seed), n_img)
    n_det = sum(len(p["scores"]) for p in preds)
    # distinct scores so the ranking (and AP) cannot depend on image order through tie-breaking
    ranks = iter(data.draw(st.permutations(range(n_det))))
    for p in preds:
        p["scores"] = np.array([next(ranks) + 1.0 for _ in p["scores"]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cases without any gt
        for use_07 in (True, False):
            base = voc_ap(preds, targets, use_07_metric=use_07)
            assert 0.0 <= base.ap <= 1.0
            assert np.all(np.diff(base.scores) <= 0)
            perm = data.draw(st.permutations(range(n_img)))
            shuffled = voc_ap([preds[i] for i in perm], [targets[i] for i in perm], use_07_metric=use_07)
            assert shuffled.ap == pytest.approx(base.ap, abs=1e-12)
            if n_det:
                # a lowest-scoring exact copy of the top detection is always an FP (same max-IoU gt) → AP unchanged
                img = max(range(n_img), key=lambda i: p_max(preds[i]))
                top = int(np.argmax(preds[img]["scores"]))
                dup = [dict(p) for p in preds]
                dup[img] = {"boxes": np.vstack([preds[img]["boxes"], preds[img]["boxes"][top]]),
                            "scores": np.append(preds[img]["scores"], 0.0)}
                more = voc_ap(dup, targets, use_07_metric=use_07)
                assert not more.tp[-1]
                assert more.ap <= base.ap + 1e-12
                assert more.ap == pytest.approx(base.ap, abs=1e-12)


def p_max(p):
    return p["scores"].max() if len(p["scores"]) else -np.inf


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_img=st.integers(1, 4), data=st.data())
def test_zero_area_predictions_only_add_false_positives(seed, n_img, data):
    preds, targets = random_case(np.random.default_rng(seed), n_img)
    collapsed = []
    for p in preds:  # each detection possibly collapsed to a zero-width, zero-height or point box at its centre
        b = p["boxes"].copy()
        for k in range(len(b)):
            axes = data.draw(st.sampled_from([(), (0,), (1,), (0, 1)]))
            for ax in axes:
                b[k, [ax, ax + 2]] = (b[k, ax] + b[k, ax + 2]) / 2
        collapsed.append({"boxes": b, "scores": p["scores"]})
    zero = [((b[:, 2] == b[:, 0]) | (b[:, 3] == b[:, 1])) for b in (c["boxes"] for c in collapsed)]
    kept = [{"boxes": c["boxes"][~z], "scores": c["scores"][~z]} for c, z in zip(collapsed, zero)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # cases without any gt
        for use_07 in (True, False):
            r = voc_ap(collapsed, targets, use_07_metric=use_07)
            assert np.isfinite(r.ap) and np.isfinite(r.precision).all() and np.isfinite(r.recall).all()
            flat = np.concatenate(zero)[np.argsort(-np.concatenate([c["scores"] for c in collapsed]), kind="stable")]
            assert not r.tp[flat].any()  # a zero-area box never matches
            # false positives lower precision and never raise recall: AP is at most that without them
            assert r.ap <= voc_ap(kept, targets, use_07_metric=use_07).ap + 1e-12


def test_match_by_hand_is_vocs_rule():
    from crackcore.metrics import match

    gts = np.array([[0, 0, 10, 10], [0, 0, 10, 9]], float)  # two overlapping cracks' boxes
    # det 0 takes gt 0 (IoU 1). det 1 overlaps gt 0 best (IoU 1, against 0.9 with gt 1): gt 0 is taken, and VOC looks
    # at the best-overlap ground truth only, so det 1 is a false positive although gt 1 is free. det 2 overlaps gt 1
    # best (90 / 92 = 0.978 against 92 / 100 with gt 0) and takes it. det 3 overlaps nothing.
    dets = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 9.2], [50, 50, 60, 60]], float)
    assert match(dets, gts).tolist() == [True, False, True, False]
    assert match(np.zeros((0, 4)), gts).tolist() == [] and match(dets, np.zeros((0, 4))).tolist() == [False] * 4
    assert match(dets[:1], gts[:1], iou_threshold=1.0).tolist() == [False]  # strictly above the threshold
