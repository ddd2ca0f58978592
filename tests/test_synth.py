"""The synthetic generator: determinism, the §V-A splits, the held-out family, the visibility rule and its boxes,
COCO output."""
import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from crackcore.data.annotations import load_coco, synth_records
from crackcore.data.synth import SPLITS, SynthConfig, generate, render, split_size
from crackcore.data.synth_crack import _drop_short_runs, padded_box, visible_points
from crackcore.data.synth_files import image_index, write_dataset
from crackcore.data.synth_surface import FAMILIES

TINY = SynthConfig(n_train=5, n_test=3, n_background=4, n_shift=2, n_shift_background=2)


def test_same_seed_same_bytes_other_seed_other_bytes():
    a, b = render(TINY, "train", 2), render(TINY, "train", 2)
    assert a.image.tobytes() == b.image.tobytes()
    assert np.array_equal(a.boxes, b.boxes)
    c = render(SynthConfig(seed=1, n_train=5), "train", 2)
    assert a.image.tobytes() != c.image.tobytes()


def test_each_image_is_independent_of_the_others_and_of_order():
    forward = [s.image.tobytes() for s in generate(TINY, "test")]
    backward = [render(TINY, "test", i).image.tobytes() for i in reversed(range(TINY.n_test))][::-1]
    assert forward == backward
    assert render(TINY, "train", 0).image.tobytes() != render(TINY, "test", 0).image.tobytes()  # own stream


def test_paper_split_sizes():
    cfg = SynthConfig()
    assert [split_size(cfg, s) for s in SPLITS] == [726, 181, 1523, 181, 181]
    assert sum(split_size(cfg, s) for s in SPLITS[:3]) == 2430  # the paper's 907 + 1523
    assert split_size(replace(cfg, holdout_family=""), "shift") == 0  # nothing held out: no shift test
    with pytest.raises(ValueError, match="unknown split"):
        split_size(cfg, "val")
    with pytest.raises(IndexError):
        render(TINY, "train", TINY.n_train)


def test_image_format():
    s = render(TINY, "train", 0)
    assert s.image.shape == (80, 80, 3) and s.image.dtype == np.uint8
    assert s.boxes.dtype == np.float32 and s.boxes.shape[1] == 4


@pytest.mark.parametrize("split", ["train", "test", "shift"])
def test_every_box_is_the_padded_tight_box_of_visible_crack_pixels(split):
    cfg = SynthConfig(n_train=40, n_test=40, n_shift=40)
    for i in range(40):
        s = render(cfg, split, i)
        masks = s.meta["masks"]  # (N, H, W)
        assert 1 <= len(s.boxes) <= 3 and len(masks) == len(s.boxes) == len(s.meta["cracks"])
        for box, mask in zip(s.boxes, masks):
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= 80 and 0 <= y1 < y2 <= 80
            ys, xs = np.nonzero(mask)
            assert max(np.ptp(xs), np.ptp(ys)) + 1 >= cfg.min_box_side
            p = cfg.box_pad
            assert (x1, y1, x2, y2) == (max(0, xs.min() - p), max(0, ys.min() - p), min(80, xs.max() + 1 + p),
                                        min(80, ys.max() + 1 + p))


def test_padded_box_by_hand():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 7] = True  # column 7, rows 2..4 → x 7..8, y 2..5
    assert padded_box(mask, 0.0).tolist() == [7, 2, 8, 5]
    assert padded_box(mask, 1.0).tolist() == [6, 1, 9, 6]
    assert padded_box(mask, 3.0).tolist() == [4, 0, 10, 8]  # clipped to the image
    assert padded_box(np.zeros((4, 4), bool), 1.0) is None


def test_short_runs_are_dropped():
    vis = np.array([1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1], bool)
    assert _drop_short_runs(vis, 3).astype(int).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 1, 1]
    assert _drop_short_runs(vis, 4).astype(int).tolist() == [0] * 8 + [1] * 4


def test_visibility_rule_by_hand():
    """A horizontal path along row 10: visible where the darkening averaged over the window reaches
    max(k·s/√window, weber·I). With k = 5, window = 16 (√ = 4), s = 2: 2.5 grey levels; weber 0.02 of I = 100:
    2."""
    cfg = SynthConfig(visibility_k=5.0, visibility_window=16, visibility_weber=0.02, min_visible_run=1)
    pts = np.stack([np.arange(20, 60) + 0.5, np.full(40, 10.5)], 1)  # x 20..59, one point per pixel
    noise, level = np.full((80, 80), 2.0), np.full((80, 80), 100.0)
    for d, expect in ((2.6, True), (2.4, False)):
        delta = np.zeros((80, 80))
        delta[10, :] = d  # the crack darkens its row by d everywhere
        vis = visible_points([(pts, None, None)], delta, noise, level, cfg)[0]
        assert vis[12:-12].all() == expect  # the full window lies on the crack there
    bright = np.full((80, 80), 200.0)  # on glaze at 200 the Weber term (4.0) rules
    delta = np.zeros((80, 80))
    delta[10, :] = 3.0
    assert not visible_points([(pts, None, None)], delta, noise, bright, cfg)[0].any()
    # the eye averages along the crack: a half-faded stretch (3.0, 2.0 alternating = 2.5 mean) just passes
    delta[10, :] = np.where(np.arange(80) % 2, 3.0, 2.0) + 1e-9
    assert visible_points([(pts, None, None)], delta, noise, level, cfg)[0][12:-12].all()
    outside = np.stack([np.arange(-10, 10) + 0.5, np.full(20, 10.5)], 1)  # half of it outside the patch
    delta[10, :] = 10.0
    vis = visible_points([(outside, None, None)], delta, noise, level, cfg)[0]
    assert not vis[:10].any()


def test_held_out_family_only_in_the_shift_splits():
    cfg = SynthConfig(n_train=60, n_background=60, n_shift=15, n_shift_background=15)
    seen = Counter(render(cfg, split, i).meta["family"] for split in ("train", "background") for i in range(60))
    assert cfg.holdout_family not in seen and set(seen) == set(FAMILIES) - {cfg.holdout_family}
    for split in ("shift", "shift_background"):
        assert {render(cfg, split, i).meta["family"] for i in range(15)} == {cfg.holdout_family}
        assert all(render(cfg, split, i).meta["second_family"] in (None,) for i in range(15))
    assert all(len(render(cfg, "shift_background", i).boxes) == 0 for i in range(15))
    with pytest.raises(ValueError, match="holdout_family"):
        SynthConfig(holdout_family="marble")


def test_cracks_follow_the_orientation_and_extent_weights():
    cfg = SynthConfig(n_train=150)
    cracks = [c for i in range(150) for c in render(cfg, "train", i).meta["cracks"]]
    near_vertical = np.mean([abs(c["orientation_deg"] - 90) <= cfg.axis_spread for c in cracks])
    expected = cfg.orientation_weights[0] + cfg.orientation_weights[2] * 2 * cfg.axis_spread / 180
    assert abs(near_vertical - expected) < 0.12  # 150+ cracks; a redraw may favour some orientations a little
    extents = Counter(c["extent"] for c in cracks)
    assert extents["through"] > extents["tip"] > extents["short"] > 0
    assert all(0.4 <= c["width"] <= 4.0 for c in cracks)


def test_strong_cracks_are_darker_than_their_surroundings():
    cfg = SynthConfig(n_train=60)
    luma = np.array([0.299, 0.587, 0.114])
    checked = 0
    for i in range(60):
        s = render(cfg, "train", i)
        lum = s.image @ luma  # (H, W)
        for mask, crack in zip(s.meta["masks"], s.meta["cracks"]):
            if crack["contrast"] < 0.3 or s.meta["level"] < 120 or crack["rim"] or mask.sum() < 10:
                continue
            x1, y1, x2, y2 = map(int, crack["box"])
            ring = np.zeros_like(mask)
            ring[max(0, y1 - 3):y2 + 3, max(0, x1 - 3):x2 + 3] = True
            assert lum[mask].mean() < np.median(lum[ring & ~mask]) - 5
            checked += 1
    assert checked >= 5


def test_background_images_have_no_box():
    for s in generate(SynthConfig(n_background=30), "background"):
        assert s.boxes.shape == (0, 4) and s.meta["masks"].shape == (0, 80, 80) and s.meta["cracks"] == []


def test_write_dataset_counts_round_trip_and_card(tmp_path):
    summary = write_dataset(tmp_path, TINY, progress=False)
    assert summary["images"] == {"train": 5, "test": 3, "background": 4, "shift": 2, "shift_background": 2}
    for split in SPLITS:
        assert len(list((tmp_path / "images" / split).glob("*.png"))) == split_size(TINY, split)
        doc = json.loads((tmp_path / f"{split}.json").read_text())
        assert doc["categories"] == [{"id": 1, "name": "crack", "supercategory": "defect"}]
        records = synth_records(tmp_path, split)
        assert len(records) == split_size(TINY, split)
        for i, r in enumerate(records):
            assert np.array_equal(r.boxes, render(TINY, split, i).boxes)  # exact: integer pixel edges
            assert (r.width, r.height) == (80, 80)
    assert all(len(r.boxes) == 0 for r in load_coco(tmp_path / "background.json"))
    assert len(json.loads((tmp_path / "background.json").read_text())["annotations"]) == 0
    card = (tmp_path / "DATACARD.md").read_text()
    assert "visibility_k" in card and summary["pixels_sha256"] in card and "real photographs" in card
    assert "Rose criterion" in card and "## Sources" in card and "`granular`" in card


def test_image_index_reads_back_every_written_name(tmp_path):
    write_dataset(tmp_path, TINY, progress=False)
    for split in SPLITS:
        names = sorted((tmp_path / "images" / split).glob("*.png"))
        assert [image_index(n) for n in names] == list(range(split_size(TINY, split)))  # round trip
    assert image_index("images/shift_background/shift_background_00012.png") == 12  # by hand
    for bad in ("photo.jpg", "IMG_0001.PNG", "train_12.png.bak", "/data/0001.png"):
        with pytest.raises(ValueError, match="<split>_<index>"):
            image_index(bad)


def test_written_pixels_equal_rendered_pixels(tmp_path):
    import cv2
    write_dataset(tmp_path, SynthConfig(n_train=2, n_test=1, n_background=1), progress=False)
    png = cv2.imread(str(tmp_path / "images" / "train" / "train_00001.png"))[..., ::-1]
    assert np.array_equal(png, render(TINY, "train", 1).image)


def test_config_rejects_inverted_ranges():
    with pytest.raises(ValueError, match="contrast"):
        SynthConfig(contrast=(0.7, 0.5))
    with pytest.raises(ValueError, match="contrast below 1"):
        SynthConfig(contrast=(0.5, 1.2))
    with pytest.raises(ValueError, match="split sizes"):
        SynthConfig(n_test=-1)
