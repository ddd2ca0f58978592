"""Data statistics and label analysis behind notebooks 01 and 02 (study.data_stats), on hand-checkable inputs."""
import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from crackcore.data.synth import Sample, SynthConfig
from crackcore.labels import gaussian_radius
from crackcore.study import data_stats

NEG = {"scratch": False, "seam": True, "edge": False, "joint": False, "stain": False, "fibre": False, "pinholes": 2,
       "blobs": 0, "dust": 1}


def fake(boxes, split="train", index=0, negatives=NEG, size=80, visible=5):
    """A Sample with the given boxes, one crack record and a mask of `visible` pixels per box."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    masks = np.zeros((len(boxes), size, size), bool)
    masks[:, 0, :visible] = True
    cracks = [{"length": 12.5, "width": 1.5, "contrast": 0.2, "branches": 1, "orientation_deg": 90.0,
               "extent": "through", "box": b.tolist()} for b in boxes]
    meta = {"split": split, "index": index, "family": "glaze", "second_family": None, "colour": "white", "level": 200.0,
            "negatives": dict(negatives), "cracks": cracks, "specular": False, "blur_sigma": 0.5, "noise_sigma": 2.0,
            "jpeg_quality": None, "masks": masks}
    return Sample(np.zeros((size, size, 3), np.uint8), boxes, meta)


def test_crack_frame_rows_and_box_sizes():
    df = data_stats.crack_frame([fake([[2, 3, 6, 11], [0, 0, 80, 40]], index=4), fake([], split="background")])
    assert len(df) == 2 and df["index"].tolist() == [4, 4] and df["n_cracks"].tolist() == [2, 2]
    first = df.iloc[0]
    assert (first.box_w, first.box_h, first.box_area, first.box_min_side) == (4, 8, 32, 4)
    assert first.visible_px == 5 and first.length == 12.5
    assert df.iloc[1].box_area == 3200
    assert data_stats.crack_frame([]).columns.tolist()[:4] == ["split", "index", "crack", "n_cracks"]


def test_negative_table_is_percent_of_images_per_split():
    plain = dict(NEG, seam=False, pinholes=0, dust=0)
    imgs = data_stats.image_frame([fake([[0, 0, 4, 4]], index=0), fake([[0, 0, 4, 4]], index=1, negatives=plain),
                                fake([], split="background", index=0)])
    assert imgs["n_cracks"].tolist() == [1, 1, 0]
    t = data_stats.negative_table(imgs)
    assert t.loc["seam", "train"] == 50.0 and t.loc["pinholes", "train"] == 50.0 and t.loc["edge", "train"] == 0.0
    assert t.loc["dust", "background"] == 100.0 and t.columns.tolist() == ["train", "background"]


def test_negative_titles():
    imgs = data_stats.image_frame([fake([], negatives=NEG), fake([], negatives={k: 0 for k in NEG})])
    assert data_stats.negative_titles(imgs) == ["seam, pinhole×2, dust", "plain glaze"]


def test_split_table_and_disk_check_on_tiny_data(tiny_data):
    t = data_stats.split_table(tiny_data)
    assert t["images"].tolist() == [8, 4, 4, 4, 4] and t["paper images"].tolist() == [726, 181, 1523, "–", "–"]
    assert t.loc["shift", "% of paper"] == "–"  # the paper has no domain-shift split
    assert t.loc["train", "% of paper"] == round(100 * 8 / 726, 1) == 1.1
    assert t.loc["background", "boxes"] == 0
    cfg = dataclasses.replace(SynthConfig(), n_train=8, n_test=4, n_background=4, n_shift=4, n_shift_background=4)
    samples = data_stats.render_splits(cfg, ("test",))["test"]
    assert data_stats.disk_mismatches(tiny_data, samples) == []
    changed = samples[2]._replace(image=samples[2].image ^ 1)
    assert data_stats.disk_mismatches(tiny_data, [samples[0], changed]) == ["test/test_00002.png"]


def test_datacard_sections():
    text = "# Title\nintro\n\n## Splits (§V-A)\ntrain: 8\n\n## Boxes\nrule\nmore\n"
    assert data_stats.datacard_sections(text) == {"": "# Title\nintro", "Splits (§V-A)": "train: 8",
                                               "Boxes": "rule\nmore"}


def test_corner_shift_ious_hand_values():
    # 10×10 box, r = 1: translated 81 / (200 - 81); shrunk 8² / 10²; grown 10² / 12²
    got = data_stats.corner_shift_ious(10, 10, 1)
    assert list(got.values()) == pytest.approx([81 / 119, 0.64, 100 / 144])
    assert min(data_stats.corner_shift_ious(10, 10, gaussian_radius(10, 10, 0.3)).values()) == pytest.approx(0.3)
    assert data_stats.corner_shift_ious(10, 10, 5)["both inside"] == 0.0  # shrunk to nothing


def test_radius_table_hand_values():
    t = data_stats.radius_table([(10, 10)], overlaps=(0.3,))
    assert t.loc[0, "corrected@0.3"] == pytest.approx((40 - math.sqrt(480)) / 8)  # case 2 binds: 2.2614
    assert t.loc[0, "official@0.3"] == pytest.approx((-12 + math.sqrt(480)) / 2)  # 4.9545
    assert t.loc[0, "IoU at official r @0.3"] < 0.01  # shrinking a 10-px box by 2 × 4.95 px leaves almost nothing


def test_sigma_table_hand_values():
    t = data_stats.sigma_table([0, 3]).set_index("r")
    assert t.loc[3, "sigma paper"] == 1.0 and t.loc[3, "y(r) paper"] == pytest.approx(math.exp(-4.5))
    assert t.loc[3, "sigma centernet"] == pytest.approx(7 / 6)
    assert t.loc[3, "y(r) centernet"] == pytest.approx(math.exp(-9 / (2 * (7 / 6) ** 2)))
    assert t.loc[0, "y(r) paper"] == 1.0 and t.loc[0, "sigma paper"] == 0.0


def test_label_window():
    w = data_stats.label_window(1)  # σ = 1/3
    assert w.shape == (3, 3) and w[1, 1] == 1.0
    assert w[1, 0] == pytest.approx(math.exp(-4.5)) and w[0, 0] == pytest.approx(math.exp(-9))
    assert data_stats.label_window(0).tolist() == [[1.0]]


def test_heatmap_for_scales_boxes_to_the_output_grid():
    hm4 = data_stats.heatmap_for([[8, 8, 16, 16]], 80, 80, 4)  # centre (12, 12) px → cell 3 of a 20×20 map
    assert hm4.shape == (20, 20) and hm4[3, 3] == 1.0 and hm4.sum() == 1.0  # 2×2 cells: radius 0
    hm1 = data_stats.heatmap_for([[8, 8, 16, 16]], 80, 80, 1)
    assert hm1.shape == (80, 80) and hm1[12, 12] == 1.0 and (hm1 > 0).sum() == 9  # radius int(1.81) = 1
    big = data_stats.heatmap_for([[8, 8, 16, 16]], 80, 384, 4)  # ×4.8 then /4: 9.6-cell box centred at 14.4
    assert big.shape == (96, 96) and big[14, 14] == 1.0


def test_label_frame_half_pixel_error_and_shared_cells():
    # A 2×2 box centred on a pixel corner (11, 11): stride 1 has no offset head, so the decoded centre is the pixel
    # centre (11.5, 11.5) → IoU = 1.5² / (8 - 1.5²) = 0.3913. Stride 4 regresses the offset and is exact.
    smp = fake([[10, 10, 12, 12], [10.5, 10.5, 11.5, 11.5]])  # the second centre falls in the same cell
    lf = data_stats.label_frame([smp], [("s1", 80, 1), ("s4", 80, 4)])
    s1 = lf[lf.setting == "s1"].reset_index(drop=True)
    assert s1.radius.tolist() == [0, 0] and s1.support_cells.tolist() == [1, 1]
    assert s1.shares_cell.tolist() == [False, True]
    assert s1.round_trip_iou[0] == pytest.approx(0.25)  # its cell now carries the second box (1×1 at 11..12)
    alone = data_stats.label_frame([fake([[10, 10, 12, 12]])], [("s1", 80, 1), ("s4", 80, 4)])
    assert alone.round_trip_iou.tolist() == pytest.approx([2.25 / 5.75, 1.0])
    summary = data_stats.label_summary(lf)
    assert summary.loc["s1", "boxes"] == 2 and summary.loc["s1", "% centre in a taken cell"] == 50.0
    assert summary.loc["s1", "% one-cell labels"] == 100.0
    assert isinstance(summary, pd.DataFrame)
