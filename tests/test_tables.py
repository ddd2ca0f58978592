"""Tables I and II beside the paper, the threshold sweep and per-image error counts, on hand-made inputs."""
import numpy as np
import pandas as pd
import pytest

from crackcore.paper import PAPER_TABLE2
from crackcore.study.tables import (background_causes, budget_table, image_errors, paired_differences, seed_table, table1,
                                    table2, threshold_sweep)


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


def _run(ap, clean, nms=0.0, wide=None):
    return {"ap07": ap, "background": {"accuracy": clean},
            "diagnosis": {"test": {"ap07_box_nms_0.5": nms}, **({"test_pool9": {"ap07": wide}} if wide else {})}}


def test_seed_table_mean_and_sample_sd_by_hand():
    runs = {"modified": {0: _run(40.0, 50.0), 1: _run(44.0, 60.0), 2: _run(48.0, 70.0)},
            "modified_aff": {0: _run(50.0, 80.0)}}
    t = seed_table(runs)
    row = t.loc["modified"]
    # mean 44, sample sd sqrt(((−4)² + 0 + 4²) / 2) = 4; clean: mean 60, sd 10
    assert (row["AP07 mean"], row["AP07 sd"], row["clean % mean"], row["clean % sd"]) == (44.0, 4.0, 60.0, 10.0)
    assert row["AP07 per seed"] == "40.0 / 44.0 / 48.0" and row["seeds"] == "0 1 2" and row["paper AP"] == 95.48
    assert np.isnan(t.loc["modified_aff", "AP07 sd"])  # one seed: no spread
    assert t.loc["modified_aff", "paper clean %"] == PAPER_TABLE2["accuracy"] and np.isnan(row["paper clean %"])
    assert np.isnan(row["9 × 9 window AP07 mean"])  # not measured: NaN, not 0


def test_seed_table_wide_window_column_by_hand():
    t = seed_table({"modified": {0: _run(40.0, 50.0, wide=60.0), 1: _run(44.0, 60.0, wide=66.0)},
                    "centernet_r18": {0: _run(40.0, 50.0)}})  # stride 4: never decoded with the wide window
    # mean 63, sample sd sqrt((9 + 9) / 1) = sqrt(18)
    assert t.loc["modified", "9 × 9 window AP07 mean"] == 63.0
    assert t.loc["modified", "9 × 9 window AP07 sd"] == pytest.approx(18 ** 0.5)
    assert np.isnan(t.loc["centernet_r18", "9 × 9 window AP07 mean"])


def test_paired_differences_t_interval_by_hand():
    runs = {"centernet_r18": {0: _run(40.0, 40.0), 1: _run(42.0, 50.0), 2: _run(41.0, 45.0)},
            "modified": {0: _run(44.0, 50.0), 1: _run(47.0, 50.0), 2: _run(46.0, 40.0)},
            "modified_aff": {0: _run(45.0, 0.0), 1: _run(46.0, 0.0)}}
    g = paired_differences(runs)
    row = g.loc["modified − centernet_r18"]
    # differences 4, 5, 5: mean 14/3, sd sqrt((4/9 + 1/9 + 1/9) / 2) = sqrt(1/3); half-width 4.303 · sd / sqrt(3)
    half = 4.303 / 3
    assert row["mean"] == pytest.approx(14 / 3) and row["sd"] == pytest.approx(np.sqrt(1 / 3))
    assert (row["95% low"], row["95% high"]) == pytest.approx((14 / 3 - half, 14 / 3 + half))
    assert row["beyond seed noise"] is True and row["paper"] == pytest.approx(95.48 - 94.20)
    assert row["per seed"] == "+4.0 / +5.0 / +5.0"
    aff = g.loc["modified_aff − modified"]  # seeds 0 and 1 only: +1, −1, mean 0, interval 12.706 · sqrt(2) / sqrt(2)
    assert aff["seeds"] == "0 1" and aff["mean"] == 0.0 and aff["95% high"] == pytest.approx(12.706)
    assert aff["beyond seed noise"] is False
    clean = paired_differences(runs, "clean").loc["modified − centernet_r18"]  # +10, 0, −5
    assert clean["mean"] == pytest.approx(5 / 3) and np.isnan(clean["paper"]) and clean["beyond seed noise"] is False
    one = paired_differences({v: {0: r[0]} for v, r in runs.items()})  # one seed: no interval, no verdict
    assert one.loc["modified − centernet_r18", "beyond seed noise"] is None


def test_seed_points_draws_every_seed_and_the_paper():
    from crackcore.study import plots

    runs = {"modified": {0: _run(40.0, 50.0), 1: _run(44.0, 60.0)}, "modified_aff": {0: _run(50.0, 80.0)}}
    fig = plots.seed_points(runs, {"modified": 95.48, "modified_aff": 96.16}, {"modified_aff": 97.96})
    ap = fig.axes[0]
    dots = [line for line in ap.lines if line.get_marker() == "o"]
    assert sorted(y for line in dots for y in line.get_ydata()) == [40.0, 44.0, 50.0]
    stars = [line.get_ydata()[0] for ax in fig.axes for line in ax.lines if line.get_marker() == "*"]
    assert stars == [95.48, 96.16, 97.96]


def _diagnosed(ap, one_peak, train):
    test = {"ap07": ap, "ap07_true_wh": ap + 5, "ap07_true_centre": ap + 2, "ap07_one_per_crack": one_peak,
            "wh_corr_pred": -0.2, "wh_corr_true": -0.24, "size_iou_median": 0.8}
    return {"diagnosis": {"test": test, "train": {"ap07": train}}}


def test_seed_diagnosis_mean_and_sd_by_hand_and_drawn_with_error_bars():
    from crackcore.study import plots
    from crackcore.study.tables import seed_diagnosis

    runs = {"modified": {0: _diagnosed(40.0, 60.0, 41.0), 1: _diagnosed(44.0, 62.0, 45.0), 2: _diagnosed(48.0, 61.0, 49.0)},
            "modified_aff": {1: _diagnosed(50.0, 60.0, 52.0)}}
    mean, sd = seed_diagnosis(runs)
    assert (mean.loc["modified", "ap07"], sd.loc["modified", "ap07"]) == (44.0, 4.0)  # as in the seed table's test
    assert (mean.loc["modified", "ap07_one_per_crack"], sd.loc["modified", "ap07_one_per_crack"]) == (61.0, 1.0)
    assert (mean.loc["modified", "ap07_true_wh"], mean.loc["modified", "ap07_train"]) == (49.0, 45.0)
    assert mean.loc["modified_aff", "ap07"] == 50.0 and np.isnan(sd.loc["modified_aff", "ap07"])  # one seed
    fig = plots.ap_decomposition(mean, paper=96.16, sd=sd)
    assert "over seeds" in fig.axes[0].get_title()
    caps = [c for c in fig.axes[0].containers if getattr(c, "errorbar", None) is not None]
    # the figure's columns these runs have: measured, one peak per crack, train (no NMS or one-peak + truth columns)
    assert len(caps) == 3 and [c.get_label() for c in caps] == ["measured (test)", "one peak per crack", "train split"]
    assert caps[0].errorbar.lines[2][0].get_segments()[0][:, 1].tolist() == [40.0, 48.0]  # modified: 44 ± 4


def test_background_causes_by_family_and_negative_by_hand():
    import pandas as pd

    images = pd.DataFrame({"index": [0, 1, 2, 3], "family": ["glaze", "glaze", "edges", "edges"],
                           "joint": [False, True, True, False], "dust": [0, 3, 0, 0]})
    files = ["images/background/background_00003.png", "images/background/background_00000.png",
             "images/background/background_00001.png", "images/background/background_00002.png"]
    scores = [0.05, 0.2, 0.09, 0.5]  # images 3 (clean), 0 (alarm), 1 (clean), 2 (alarm)
    family, neg = background_causes(scores, files, images, negatives=("joint", "dust"))
    assert family.loc["glaze"].tolist() == [2, 50.0] and family.loc["edges"].tolist() == [2, 50.0]
    # joint on images 1 (clean) and 2 (alarm): 50 % with; without: 0 (alarm) and 3 (clean): 50 %
    assert neg.loc["joint"].tolist() == [2, 50.0, 50.0]
    assert neg.loc["dust"].tolist() == [1, 100.0, pytest.approx(100 / 3)]  # dust on image 1 (clean) only
    with pytest.raises(ValueError, match="photo.jpg"):  # a file not named by the generator is refused, not guessed
        background_causes([0.0], ["photo.jpg"], images)


def test_budget_table_says_which_budgets_were_measured_on_these_data():
    where = {"device": "cpu", "precision": "bf16"}
    budget = {"budgets": {e: {"lr_drop_epoch": round(0.8 * int(e)), "ap07_test": t, "ap07_train": r, "background": c,
                              "trained": where, "evaluated": where, "key": {"data": data}}
                          for e, t, r, c, data in (("50", 60.0, 62.5, 70.0, "old"), ("25", 50.0, 51.0, 60.0, "new"))}}
    table = budget_table(budget, "new")
    assert list(table.index) == [25, 50]  # sorted by epochs, not by the file's order
    assert table.loc[25, "on these data"] is True and table.loc[50, "on these data"] is False
    assert table.loc[50, "lr drop after epoch"] == 40 and table.loc[25, "train AP07"] == 51.0
    assert "on these data" not in budget_table(budget).columns  # no hash given: nothing claimed either way
    assert np.isnan(table.loc[25, "one peak per crack"])  # a budget measured before the diagnosis: unknown, not 0


def test_budget_table_carries_each_budgets_waterfall():
    where = {"device": "cpu", "precision": "bf16"}
    test = {"ap07_box_nms_0.5": 74.1, "ap07_one_per_crack": 74.4, "ap07_one_per_crack_true_wh": 84.5,
            "ap07_one_per_crack_true_box": 88.5, "fp_on_crack": 361, "fp_off_crack": 137, "size_iou_median": 0.86,
            "ap07": 72.4, "ap07_true_wh": 81.2, "ap07_true_centre": 79.4, "wh_corr_pred": -0.23, "wh_corr_true": -0.24}
    b = {"lr_drop_epoch": 40, "ap07_test": 72.4, "ap07_train": 84.7, "background": 59.1, "trained": where,
         "evaluated": where, "key": {}, "diagnosis": {"test": test, "test_pool9": {"ap07": 73.8}}}
    row = budget_table({"budgets": {"50": b}}).loc[50]
    assert row["after box NMS 0.5"] == 74.1 and row["9 × 9 window"] == 73.8
    assert (row["one peak per crack"], row["+ true sizes"], row["+ true boxes"]) == (74.4, 84.5, 88.5)
    assert (row["FPs on cracks"], row["FPs off cracks"], row["size IoU"]) == (361, 137, 0.86)
    # the stride-4 model has no wide-window decode: that column is unknown, the rest is there
    row4 = budget_table({"budgets": {"50": {**b, "diagnosis": {"test": test}}}}).loc[50]
    assert np.isnan(row4["9 × 9 window"]) and row4["+ true boxes"] == 88.5
    from crackcore.study import plots
    fig = plots.budget_curve(budget_table({"budgets": {"50": b, "25": {**b, "ap07_test": 56.9}}}))
    assert [line.get_label() for line in fig.axes[0].lines] == ["test AP07", "after box NMS 0.5", "train AP07",
                                                               "backgrounds clean %"]


def test_crack_recall_finds_cracks_covered_above_the_threshold_and_groups_them():
    from crackcore.study.tables import crack_recall, recall_table
    cracks = pd.DataFrame([  # two images: one with two cracks, one with one; a column name with a space
        {"index": 3, "crack": 0, "x1": 10.0, "y1": 0.0, "x2": 14.0, "y2": 80.0, "box_w": 4.0, "contrast": 0.1},
        {"index": 3, "crack": 1, "x1": 50.0, "y1": 50.0, "x2": 60.0, "y2": 60.0, "box_w": 10.0, "contrast": 0.4},
        {"index": 7, "crack": 0, "x1": 0.0, "y1": 40.0, "x2": 80.0, "y2": 44.0, "box_w": 80.0, "contrast": 0.3}])
    per_image = [
        {"file": "data/synth/images/test/test_00007.png", "gt": [[0, 40, 80, 44]],
         "boxes": [[0, 40, 80, 44]], "scores": [0.05]},  # the exact box, but below the 0.1 threshold: not found
        {"file": "data/synth/images/test/test_00003.png", "gt": [[10, 0, 14, 80], [50, 50, 60, 60]],
         # IoU with crack 0: 4·60 / (4·80) = 0.75, found; with crack 1: 5·10 / 100 = 0.5, not strictly above
         "boxes": [[10, 10, 14, 70], [50, 50, 55, 60]], "scores": [0.3, 0.9]}]
    found = crack_recall(per_image, cracks.assign(**{"longer side": [80.0, 10.0, 80.0]}))
    assert found["found"].tolist() == [True, False, False] and found["longer side"].tolist() == [80.0, 10.0, 80.0]
    assert found["best_iou"].tolist() == pytest.approx([0.75, 0.5, 0.0])
    assert found["score"].tolist() == pytest.approx([0.3, 0.0, 0.0])
    table = recall_table(found.rename(columns={"contrast": "crack contrast"}), "crack contrast", bins=[0, 0.2, 0.5])
    assert table["cracks"].tolist() == [1, 2] and table["found %"].tolist() == pytest.approx([100.0, 0.0])
    assert table["median score when found"].iloc[0] == pytest.approx(0.3)
    per_image[1]["gt"] = [[11, 0, 14, 80], [50, 50, 60, 60]]  # the metrics hold other data than the table
    with pytest.raises(ValueError, match="other data"):
        crack_recall(per_image, cracks)


def test_found_over_seeds_averages_each_variants_runs_per_bin():
    from crackcore.study.tables import found_over_seeds
    f = lambda found: pd.DataFrame({"longer": [10.0, 50.0, 70.0], "found": found, "score": [0.3] * 3})  # noqa: E731
    runs = {("a", 0): f([True, True, False]), ("a", 1): f([False, True, True]), ("b", 0): f([True, False, False])}
    t = found_over_seeds(runs, "longer", bins=[0, 20, 80])
    assert t["cracks"].tolist() == [1, 2]
    assert t["a found %"].tolist() == pytest.approx([50.0, 75.0])  # (100 + 0) / 2 and (50 + 100) / 2
    assert t["a sd"].tolist() == pytest.approx([np.sqrt(5000), np.sqrt(1250)])  # sample sd of two runs: (100, 0), (50, 100)
    assert t["b found %"].tolist() == pytest.approx([100.0, 0.0]) and t["b sd"].isna().all()  # one seed: no sd


def test_ceiling_table_sets_the_easiest_run_beside_the_default_one():
    from crackcore.study import plots
    from crackcore.study.tables import ceiling_table, diagnosis_table
    val = {"ap07": 58.5, "ap07_true_wh": 60.0, "ap07_true_centre": 61.0, "ap07_box_nms_0.5": 70.6,
           "ap07_one_per_crack": 69.7, "ap07_one_per_crack_true_wh": 73.6, "ap07_one_per_crack_true_box": 85.4,
           "fp_on_crack": 698, "fp_off_crack": 225, "size_iou_median": 0.81, "wh_corr_pred": 0.5, "wh_corr_true": 0.5}
    default = {"key": {"data": "today"}, "val": val, "val_pool": {"9": {"ap07": 68.6}}, "fit": {"ap07": 55.2},
               "provenance": {"device": "cpu", "precision": "bf16"}}  # a reading: no Table II
    easiest = {**default, "key": {"data": "easy"}, "val": {**val, "ap07": 78.7, "fp_off_crack": 8},
               "val_pool": {"9": {"ap07": 88.8}}, "fit": {"ap07": 79.1},
               "provenance": {"device": "cpu", "precision": "fp32"},
               "background": {"images": 500, "no_box": 412, "with_box": 88, "accuracy": 82.4, "threshold": 0.1}}
    t = ceiling_table(easiest, default, "today")
    assert list(t.index) == ["default data", "easiest data"]
    assert t.loc["default data", "data"] == "default (today's)" and t.loc["easiest data", "data"] == "easiest"
    assert ceiling_table(easiest, {**default, "key": {"data": "old"}}, "today").loc["default data", "data"] == \
        "default (an earlier generator)"
    assert (t.loc["easiest data", "val AP07"], t.loc["easiest data", "9 × 9 window"]) == (78.7, 88.8)
    assert (t.loc["default data", "FPs off cracks"], t.loc["easiest data", "FPs off cracks"]) == (225, 8)
    assert t.loc["easiest data", "fit AP07"] == 79.1 and t.loc["easiest data", "backgrounds clean %"] == 82.4
    assert np.isnan(t.loc["default data", "backgrounds clean %"])  # not measured, not 0
    assert t.loc["easiest data", "trained on"] == "cpu (fp32)"
    diag = diagnosis_table({n: {"diagnosis": {"val": r["val"], "fit": r["fit"]}} for n, r in
                            (("default data", default), ("easiest data", easiest))}, test="val", train="fit")
    labels = plots.ap_decomposition(diag, split="validation", train="fit").axes[0].get_legend_handles_labels()[1]
    assert labels[0] == "measured (validation)" and labels[-1] == "fit split"


def test_start_table_names_each_run_by_its_start_and_budget():
    from crackcore.study.tables import start_table
    val = {"ap07": 58.5, "ap07_box_nms_0.5": 70.6, "ap07_one_per_crack": 69.7, "fp_on_crack": 698, "fp_off_crack": 225}
    scratch = {"key": {"epochs": 25, "imagenet": ""}, "val": val, "fit": {"ap07": 55.2},
               "provenance": {"device": "cpu", "precision": "bf16"}}  # a reading: no wide window, no Table II
    started = {"key": {"epochs": 10, "imagenet": "runs/paper/ceiling/x/backbone-y.pt"},
               "val": {**val, "ap07": 61.4}, "val_pool": {"9": {"ap07": 72.9}}, "fit": {"ap07": 59.9},
               "provenance": {"device": "cpu", "precision": "fp32"}}
    t = start_table({"from scratch": scratch, "pretrained": started})
    assert t.loc["from scratch", "start"] == "from scratch" and t.loc["pretrained", "start"] == "pretrained stages"
    assert (t.loc["from scratch", "epochs"], t.loc["pretrained", "epochs"]) == (25, 10)
    assert (t.loc["pretrained", "val AP07"], t.loc["pretrained", "9 × 9 window"]) == (61.4, 72.9)
    assert np.isnan(t.loc["from scratch", "9 × 9 window"]) and np.isnan(t.loc["pretrained", "backgrounds clean %"])
    assert t.loc["from scratch", "FPs on cracks"] == 698 and t.loc["pretrained", "trained on"] == "cpu (fp32)"
