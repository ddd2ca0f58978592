"""Tables I and II beside the paper, the threshold sweep and per-image error counts, on hand-made inputs."""
import pytest

from crackcore.paper import PAPER_TABLE2
from crackcore.study.tables import image_errors, table1, table2, threshold_sweep


def test_image_errors_hand_cases():
    gt = [[0, 0, 10, 10], [20, 20, 30, 30]]
    assert image_errors([[0, 0, 10, 10]], gt) == (0, 1)  # one found, one missed
    assert image_errors([[0, 0, 10, 10], [1, 0, 11, 10]], gt) == (1, 1)  # a duplicate is a false positive
    assert image_errors([[5, 0, 15, 10]], gt) == (1, 2)  # IoU 1/3: not a hit
    assert image_errors([], gt) == (0, 2) and image_errors([[0, 0, 1, 1]], []) == (1, 0)


def test_threshold_sweep_counts_images_below_threshold():
    sw = threshold_sweep([0.05, 0.2, 0.5, 0.9], thresholds=[0.1, 0.5, 0.95])
    # an image is clean when its highest score is below the threshold: 1/4, 2/4 (0.5 is not below 0.5), 4/4
    assert sw["accuracy"].tolist() == pytest.approx([25.0, 50.0, 100.0])


def test_table2_beside_paper():
    t = table2({"images": 10, "no_box": 9, "with_box": 1, "accuracy": 90.0, "threshold": 0.1})
    assert t.loc["paper"].tolist() == [PAPER_TABLE2[k] for k in ("images", "no_box", "with_box", "accuracy")]
    assert t.loc["ours", "accuracy"] == 90.0


def test_table1_rows_only_for_measured_variants():
    m = {"modified": {"ap07": 50.123, "ap_all": 48.0}}
    s = {"modified": {"volume_mb": 56.73, "params": 14_160_515, "gflops": 20.05}}
    t = table1(m, s, {"modified": {"fps_batch1": 12.34, "fps_batch1_route": 15.66}})
    assert list(t.index) == ["modified"]
    row = t.loc["modified"]
    assert (row["paper_ap"], row["ap07"], row["paper_volume_mb"], row["volume_mb"]) == (95.48, 50.12, 34.0, 56.7)
    assert (row["fps"], row["fps_eager"]) == (15.7, 12.3)


def test_threshold_sweep_test_recall_from_pr_curve():
    # three detections at scores 0.9, 0.6, 0.3 of which the first and third are hits among 4 cracks
    pr = {"scores": [0.9, 0.6, 0.3], "recall": [0.25, 0.25, 0.5], "precision": [1.0, 0.5, 2 / 3]}
    sw = threshold_sweep([0.0], thresholds=[0.2, 0.5, 0.7, 0.95], pr_curve=pr)
    assert sw["test_recall"].tolist() == [0.5, 0.25, 0.25, 0.0]
