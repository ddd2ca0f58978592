"""The incremental steps behind the notebooks: data regenerate only when the generator changes; stale runs move aside."""
import dataclasses
import json

import pytest

import crackcore.experiment as ex


@pytest.fixture()
def profile(tmp_path):
    return ex.Profile("t", 4, 2, 2, 1, 1, "fp32", tmp_path / "data", tmp_path / "runs", tmp_path / "results")


def test_ensure_data_is_idempotent_and_regenerates_on_change(profile, monkeypatch):
    sha = ex.ensure_data(profile, progress=False)
    png = next((profile.data / "images" / "train").glob("*.png"))
    mtime = png.stat().st_mtime_ns
    assert ex.ensure_data(profile, progress=False) == sha and png.stat().st_mtime_ns == mtime  # nothing redone
    assert len(json.loads((profile.data / "train.json").read_text())["images"]) == 4
    # another generator setting → regenerated, different pixels
    real = ex.synth_config
    monkeypatch.setattr(ex, "synth_config", lambda p, seed=0: dataclasses.replace(real(p, seed), contrast_min=0.3))
    assert ex.ensure_data(profile, progress=False) != sha


def test_quick_set_is_a_prefix_of_the_paper_set():
    q, p = ex.synth_config(ex.get_profile("quick")), ex.synth_config(ex.get_profile("paper"))
    assert dataclasses.replace(q, n_train=p.n_train, n_test=p.n_test, n_background=p.n_background) == p
    assert (p.n_train, p.n_test, p.n_background) == (726, 181, 1523)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile"):
        ex.get_profile("huge")


def test_train_config_follows_profile(profile):
    cfg = ex.train_config(profile, "modified", seed=2)
    assert (cfg.epochs, cfg.lr_drop_epoch, cfg.precision, cfg.seed) == (1, 1, "fp32", 2)
    assert cfg.out.endswith("modified-seed2") and cfg.data == str(profile.data)
