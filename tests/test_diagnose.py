"""Where AP goes (engine.diagnose): the one-peak-per-crack substitution and the split of false positives, by hand."""
import numpy as np
import pytest

from crackcore.decode import DecodeConfig
from crackcore.engine import diagnose


def test_owner_is_the_box_holding_the_centre():
    gt = np.array([[0, 0, 10, 80], [20, 20, 30, 30]], float)  # a crack across the patch, a small one
    centres = np.array([[5, 40], [5, 70], [25, 25], [50, 50], [10, 80]], float)
    assert diagnose._owner(centres, gt).tolist() == [0, 0, 1, -1, 0]  # the box edge counts as inside
    assert diagnose._owner(centres, np.zeros((0, 4))).tolist() == [-1] * 5


class _Heads:
    """Stands in for `outputs`: fixed detections and ground truths for one 80 px image."""

    def __init__(self, boxes, scores, gt):
        import torch

        self.dets = [{"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores)}]
        self.gts = [np.asarray(gt, np.float32)]


def test_one_peak_per_crack_and_false_positive_split(monkeypatch):
    # A vertical crack (box 2 × 80) found three times along its length — a ridge of peaks — and one false alarm.
    gt = [[39, 0, 41, 80]]
    boxes = [[39, 10, 41, 70], [39, 0, 41, 80], [39, 30, 41, 50], [5, 5, 9, 9]]  # scores in decode's order
    scores = [0.30, 0.25, 0.20, 0.15]
    fake = _Heads(boxes, scores, gt)
    monkeypatch.setattr(diagnose, "outputs", lambda *a, **k: (fake.dets, fake.gts, [np.array([[2.0, 80.0]])]))

    class Model:
        input_size = 80
    d = diagnose.decompose(Model(), records=None)
    # measured: the best peak (IoU 60/80 = 0.75) is the TP; two duplicates on the crack and the alarm are FPs
    assert (d["fp_on_crack"], d["fp_off_crack"]) == (2, 1)
    # AP07: precision 1 at recall 1 reached by the first detection → 100 either way; duplicates come after it
    assert d["ap07"] == pytest.approx(100.0) and d["ap07_one_per_crack"] == pytest.approx(100.0)
    # now the fragment (IoU 20/80 = 0.25, a miss) scores highest: measured, the full box still matches second, so
    # precision is 1/2 at recall 1 and AP07 = 50; kept alone as the crack's one peak, the fragment gives AP07 = 0
    fake.dets[0]["boxes"] = fake.dets[0]["boxes"][[2, 1, 0, 3]]  # decode's order: by score
    d = diagnose.decompose(Model(), records=None)
    assert d["ap07"] == pytest.approx(50.0) and d["ap07_one_per_crack"] == pytest.approx(0.0)
    assert (d["fp_on_crack"], d["fp_off_crack"]) == (2, 1)
    # the fragment is centred on the crack (40, 40) but 20 px long: the true size makes it the whole crack (AP 100);
    # moved to the true centre it stays a 2 × 20 fragment (AP 0); both together give the true box
    assert d["ap07_one_per_crack_true_wh"] == pytest.approx(100.0)
    assert d["ap07_one_per_crack_true_centre"] == pytest.approx(0.0)
    assert d["ap07_one_per_crack_true_box"] == pytest.approx(100.0)


def test_box_nms_removes_a_duplicate_that_outscores_another_crack(monkeypatch):
    # Two cracks; the first is found twice (the duplicate overlaps the hit by 70/80 = 0.875) and the duplicate
    # scores above the second crack's hit. Measured: TP, FP, TP → 11-point AP07 = (6 · 1 + 5 · 2/3) / 11 = 84.85.
    # Box NMS at any of 0.3, 0.5, 0.7 drops the duplicate: TP, TP → 100.
    gt = [[39, 0, 41, 80], [10, 30, 30, 34]]
    boxes = [[39, 0, 41, 80], [39, 5, 41, 75], [10, 30, 30, 34]]
    fake = _Heads(boxes, [0.9, 0.8, 0.7], gt)
    monkeypatch.setattr(diagnose, "outputs",
                        lambda *a, **k: (fake.dets, fake.gts, [np.array([[2.0, 80.0], [20.0, 4.0]])]))

    class Model:
        input_size = 80
    d = diagnose.decompose(Model(), records=None)
    assert d["ap07"] == pytest.approx(100 * (6 + 5 * 2 / 3) / 11)
    assert [d[f"ap07_box_nms_{iou:g}"] for iou in diagnose.NMS_IOUS] == pytest.approx([100.0] * 3)


def test_one_peak_per_crack_substitutions_move_the_kept_peak_only(monkeypatch):
    # The best peak sits 3 px beside the middle of an 8 × 40 crack with the right size: IoU 200/440 = 0.45 (a miss)
    # until it is moved to the crack's centre; its duplicate further along (centre on the crack too) is dropped
    # before any substitution, so it cannot be moved onto the crack and counted as a second hit.
    gt = [[36, 20, 44, 60]]
    boxes = [[39, 20, 47, 60], [39, 40, 47, 80]]
    fake = _Heads(boxes, [0.9, 0.8], gt)
    monkeypatch.setattr(diagnose, "outputs", lambda *a, **k: (fake.dets, fake.gts, [np.array([[8.0, 40.0]])]))

    class Model:
        input_size = 80
    d = diagnose.decompose(Model(), records=None)
    assert (d["fp_on_crack"], d["fp_off_crack"]) == (2, 0)
    assert d["ap07_one_per_crack"] == pytest.approx(0.0) and d["ap07_one_per_crack_true_wh"] == pytest.approx(0.0)
    assert d["ap07_one_per_crack_true_centre"] == pytest.approx(100.0)
    assert d["ap07_one_per_crack_true_box"] == pytest.approx(100.0)


@pytest.mark.parametrize("variant", ["modified", "centernet_r18"])
def test_peak_maps_put_image_heatmap_peaks_and_truth_in_one_frame(variant, tiny_data):
    import matplotlib
    matplotlib.use("Agg")
    import torch

    from crackcore.study import plots
    from crackcore.data.annotations import load_records
    from crackcore.models import build_model

    torch.manual_seed(0)
    model = build_model(variant).eval()
    records = [r for r in load_records(tiny_data, "test") if len(r.boxes)][:2]
    maps = diagnose.peak_maps(model, records, DecodeConfig(threshold=0.0))  # an untrained model's peaks all pass a zero threshold
    S, s = model.input_size, model.stride
    for m, r in zip(maps, records):
        assert m["image"].shape == (S, S) and 0 <= m["image"].min() and m["image"].max() <= 1
        assert m["heat"].shape == (S // s, S // s) and m["stride"] == s
        assert m["peaks"].shape == (20, 2) and len(m["scores"]) == 20  # top-K with nothing cut by the threshold
        assert ((m["peaks"] >= 0) & (m["peaks"] <= S)).all()  # input pixels, not cells
        assert np.allclose(m["gt"], r.boxes * S / 80)  # the tiny data are 80 px patches, letterboxed to S
    assert len(plots.peaks(maps).axes) == 4


def test_peak_phase_counts_peaks_and_centres_by_cell_modulo_four(monkeypatch):
    import torch

    # one image, stride 1: three peaks at cells (x, y) = (8, 4), (12, 0), (1, 2); one crack centred in cell (4, 4)
    boxes = torch.tensor([[7.0, 3.0, 10.0, 6.0], [11.0, -1.0, 14.0, 2.0], [0.0, 1.0, 3.0, 4.0]])
    gt = torch.tensor([[2.0, 2.0, 7.0, 7.0]])  # centre (4.5, 4.5)
    dets = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.5, 0.2])}]
    monkeypatch.setattr(diagnose, "_decoded", lambda *a, **k: iter([([(None, gt)], None, dets)]))

    class Model:
        stride = 1
    p = diagnose.peak_phase(Model(), records=None)
    peaks, centres = np.array(p["peaks"]), np.array(p["centres"])
    assert (p["n_peaks"], p["n_centres"]) == (3, 1)
    expected = np.zeros((4, 4))
    expected[0, 0] = 2 / 3 * 16  # (8, 4) and (12, 0) are both phase (0, 0); (1, 2) is [y=2, x=1]
    expected[2, 1] = 1 / 3 * 16
    assert np.allclose(peaks, expected) and p["peak_max"] == pytest.approx(32 / 3)
    assert centres[0, 0] == pytest.approx(16.0) and centres.sum() == pytest.approx(16.0)
