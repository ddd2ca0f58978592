"""Your own photographs (crackcore.study.finetune): the stand-in photo set and the label-curve table."""
import json

import pytest

from crackcore.data.annotations import load_records
from crackcore.engine.config import TrainConfig
from crackcore.study.experiment import Profile
from crackcore.study.finetune import PHOTO_SEED, SIZES, TEST_SIZE, curve_table, photo_set

ONE_EPOCH = TrainConfig(epochs=1, lr_drop_epoch=1, precision="fp32")


@pytest.fixture()
def quick_profile(tmp_path):
    return Profile("quick", 4, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)


def test_photo_set_is_the_held_out_family_with_another_seed(quick_profile):
    root = photo_set(quick_profile)
    n_train, n_test = max(SIZES["quick"]), TEST_SIZE["quick"]
    assert [len(load_records(root, s)) for s in ("train", "test", "background")] == [n_train, n_test, n_test]
    assert all(len(r.boxes) for r in load_records(root, "train")) and not any(
        len(r.boxes) for r in load_records(root, "background"))
    # drawn as the `shift` split (the held-out family alone, tested in test_synth) with the photo seed, not the data's 0
    rendered = json.loads((root / "rendered" / "shift.json").read_text())
    assert rendered["info"]["seed"] == PHOTO_SEED != 0
    stamp = (root / "FINGERPRINT.json").read_text()
    assert photo_set(quick_profile) == root and (root / "FINGERPRINT.json").read_text() == stamp  # kept, not redone


def test_curve_table_by_hand():
    result = {"points": {"0": {"synthetic model": {"ap07": 10.0, "background": 50.0}},
                         "4": {"scratch": {"ap07": 1.0, "background": 20.0},
                               "fine-tuned": {"ap07": 30.0, "background": 90.0}},
                         "8": {"scratch": {"ap07": 5.0, "background": 40.0},
                               "fine-tuned": {"ap07": 45.0, "background": 95.0}}}}
    t = curve_table(result)
    assert t.index.tolist() == [4, 8]
    assert t.loc[8, "fine-tuned AP07"] == 45.0 and t.loc[4, "scratch clean %"] == 20.0
