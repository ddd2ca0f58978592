"""The paper's printed numbers: its data set's split sizes (§V-A) and Tables I and II, which ours are set beside."""

# §V-A: 907 images with cracks (726 train, 181 test) and 1523 background-only images.
PAPER_SPLITS = {"train": 726, "test": 181, "background": 1523}

# Table I and Table II of the paper, as printed (volume in "Mb", FPS on a GTX 1060).
PAPER_TABLE1 = {
    "centernet_r18": {"method": "CenterNet [8]", "backbone": "ResNet-18", "resolution": 384, "downsampling": 4,
                      "volume_mb": 75.7, "ap": 94.20, "fps": 20},
    "modified": {"method": "CenterNet", "backbone": "Modified ResNet-18", "resolution": 80, "downsampling": 1,
                 "volume_mb": 34.0, "ap": 95.48, "fps": 33},
    "modified_aff": {"method": "CenterNet + Adaptive Feature Fusion", "backbone": "Modified ResNet-18",
                     "resolution": 80, "downsampling": 1, "volume_mb": 34.3, "ap": 96.16, "fps": 30},
}
PAPER_TABLE2 = {"images": 1523, "no_box": 1492, "with_box": 31, "accuracy": 97.96}
