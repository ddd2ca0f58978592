"""The synthetic generator: determinism, the §V-A splits, boxes that cover visible crack pixels, COCO output."""
import json

import numpy as np
import pytest

from crackcore.data import load_coco, synth_records
from crackcore.synth import SPLITS, SynthConfig, generate, render, split_size
from crackcore.synth_files import write_dataset

TINY = SynthConfig(n_train=5, n_test=3, n_background=4)


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
    assert [split_size(cfg, s) for s in SPLITS] == [726, 181, 1523]
    assert sum(split_size(cfg, s) for s in SPLITS) == 2430
    with pytest.raises(ValueError, match="unknown split"):
        split_size(cfg, "val")
    with pytest.raises(IndexError):
        render(TINY, "train", TINY.n_train)


def test_image_format():
    s = render(TINY, "train", 0)
    assert s.image.shape == (80, 80, 3) and s.image.dtype == np.uint8
    assert s.boxes.dtype == np.float32 and s.boxes.shape[1] == 4


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_box_is_the_tight_box_of_visible_crack_pixels(split):
    cfg = SynthConfig(n_train=40, n_test=40)
    for i in range(40):
        s = render(cfg, split, i)
        masks = s.meta["masks"]  # (N, H, W)
        assert 1 <= len(s.boxes) <= 3 and len(masks) == len(s.boxes) == len(s.meta["cracks"])
        for box, mask in zip(s.boxes, masks):
            x1, y1, x2, y2 = box
            assert 0 <= x1 < x2 <= 80 and 0 <= y1 < y2 <= 80
            assert max(x2 - x1, y2 - y1) >= cfg.min_box_side
            ys, xs = np.nonzero(mask)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x1, y1, x2, y2)


def test_strong_cracks_are_darker_than_their_surroundings():
    cfg = SynthConfig(n_train=60)
    luma = np.array([0.299, 0.587, 0.114])
    checked = 0
    for i in range(60):
        s = render(cfg, "train", i)
        lum = s.image @ luma  # (H, W)
        for mask, crack in zip(s.meta["masks"], s.meta["cracks"]):
            if crack["contrast"] < 0.35 or mask.sum() < 10:
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
    assert summary["images"] == {"train": 5, "test": 3, "background": 4}
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
    assert "visibility_threshold" in card and summary["pixels_sha256"] in card and "real photographs" in card


def test_written_pixels_equal_rendered_pixels(tmp_path):
    import cv2
    write_dataset(tmp_path, SynthConfig(n_train=2, n_test=1, n_background=1), progress=False)
    png = cv2.imread(str(tmp_path / "images" / "train" / "train_00001.png"))[..., ::-1]
    assert np.array_equal(png, render(TINY, "train", 1).image)


def test_config_rejects_inverted_ranges():
    with pytest.raises(ValueError, match="contrast_min"):
        SynthConfig(contrast_min=0.7, contrast_max=0.5)
    with pytest.raises(ValueError, match="split sizes"):
        SynthConfig(n_test=-1)
