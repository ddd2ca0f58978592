"""The incremental steps behind the notebooks: data regenerate only when the generator changes; stale runs move aside."""
import dataclasses
import json

import pytest

import crackcore.study.experiment as ex
from crackcore.engine.config import TrainConfig

ONE_EPOCH = TrainConfig(epochs=1, lr_drop_epoch=1, precision="fp32")


@pytest.fixture()
def profile(tmp_path):
    return ex.Profile("t", 4, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)


def test_ensure_data_is_idempotent_and_regenerates_on_change(profile, monkeypatch):
    sha = ex.ensure_data(profile, progress=False)
    png = next((profile.data / "images" / "train").glob("*.png"))
    mtime = png.stat().st_mtime_ns
    assert ex.ensure_data(profile, progress=False) == sha and png.stat().st_mtime_ns == mtime  # nothing redone
    assert len(json.loads((profile.data / "train.json").read_text())["images"]) == 4
    # another generator setting → regenerated, different pixels
    real = ex.synth_config
    monkeypatch.setattr(ex, "synth_config", lambda p, seed=0: dataclasses.replace(real(p, seed), contrast=(0.3, 0.5)))
    assert ex.ensure_data(profile, progress=False) != sha


def test_quick_set_is_a_prefix_of_the_paper_set():
    q, p = ex.synth_config(ex.get_profile("quick")), ex.synth_config(ex.get_profile("paper"))
    assert dataclasses.replace(q, n_train=p.n_train, n_test=p.n_test, n_background=p.n_background, n_shift=p.n_shift,
                               n_shift_background=p.n_shift_background) == p
    assert (p.n_train, p.n_test, p.n_background, p.n_shift, p.n_shift_background) == (726, 181, 1523, 181, 181)


def test_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile"):
        ex.get_profile("huge")


def test_train_config_follows_profile(profile):
    cfg = ex.train_config(profile, "modified", seed=2)
    assert (cfg.epochs, cfg.lr_drop_epoch, cfg.precision, cfg.seed) == (1, 1, "fp32", 2)
    assert cfg.out.endswith("modified-seed2") and cfg.data == str(profile.data)


def test_overridden_settings_train_in_their_own_folder(profile):
    """A run with other settings never lands in (or resumes) the protocol's run folder."""
    plain = ex.train_config(profile, "modified")
    other = ex.train_config(profile, "modified", label_shape="ellipse", epochs=3)
    assert other.out == str(profile.runs / "modified-seed0-epochs=3-label_shape=ellipse")
    assert (other.epochs, other.labels.label_shape) == (3, "ellipse") and plain.out != other.out


def test_publish_checkpoint_is_half_precision_and_rewrites_only_new_weights(profile):
    import torch

    from crackcore.storage import load_checkpoint, load_model

    ckpt = ex.ensure_trained(profile, "modified", progress=False)
    out = ex.publish_checkpoint(profile, "modified")
    data = out.read_bytes()
    state = load_checkpoint(out, "modified")
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    full = load_checkpoint(ckpt, "modified")["model"]
    model, _ = load_model(out)  # widened back to fp32 for use
    w = model.state_dict()["heads.hm.0.weight"]
    assert w.dtype == torch.float32 and torch.equal(w, full["heads.hm.0.weight"].half().float())
    assert ex.publish_checkpoint(profile, "modified").read_bytes() == data  # same weights: file untouched


def test_run_made_with_other_defaults_moves_aside(profile, monkeypatch):
    ckpt = ex.ensure_trained(profile, "modified", progress=False)
    real = ex.train_config
    monkeypatch.setattr(ex, "train_config", lambda *a, **k: dataclasses.replace(real(*a, **k), wh_scale=8.0))
    again = ex.ensure_trained(profile, "modified", progress=False)  # would raise ConfigMismatch if resumed
    assert again == ckpt and (ckpt.parent.with_name(ckpt.parent.name + ".stale") / "model.pt").exists()
    assert json.loads((ckpt.parent / "config.json").read_text())["wh_scale"] == 8.0


def test_a_fresh_clone_restores_the_published_checkpoint_instead_of_training(profile, monkeypatch):
    import torch

    from crackcore.engine import train as train_module
    from crackcore.storage import load_checkpoint

    ckpt = ex.ensure_trained(profile, "modified", progress=False)
    history = (ckpt.parent / "history.jsonl").read_text()
    published = ex.publish_checkpoint(profile, "modified")
    full = load_checkpoint(ckpt, "modified")["model"]
    for f in ckpt.parent.iterdir():  # a fresh clone: the committed checkpoint, no run folder
        f.unlink()
    monkeypatch.setattr(train_module, "_epoch", lambda *a, **k: pytest.fail("retrained a published run"))
    again = ex.ensure_trained(profile, "modified", progress=False)
    state = load_checkpoint(again, "modified")
    assert state["restored_from"].endswith(published.name) and (again.parent / "history.jsonl").read_text() == history
    w = state["model"]["heads.hm.0.weight"]
    assert w.dtype == torch.float32 and torch.equal(w, full["heads.hm.0.weight"].half().float())
    assert ex.publish_checkpoint(profile, "modified") == published  # the same weights publish to the same file


def test_a_published_checkpoint_of_other_settings_is_not_restored(profile, monkeypatch):
    ckpt = ex.ensure_trained(profile, "modified", progress=False)
    ex.publish_checkpoint(profile, "modified")
    for f in ckpt.parent.iterdir():
        f.unlink()
    real = ex.train_config
    monkeypatch.setattr(ex, "train_config", lambda *a, **k: dataclasses.replace(real(*a, **k), wh_scale=8.0))
    again = ex.ensure_trained(profile, "modified", progress=False)  # trained here, with its own settings
    from crackcore.storage import load_checkpoint

    state = load_checkpoint(again, "modified")
    assert "restored_from" not in state and state["config"]["wh_scale"] == 8.0


def test_the_training_seed_does_not_change_the_data(profile):
    sha = ex.ensure_data(profile, progress=False)
    listing = (profile.data / "train.json").read_bytes()
    ex.ensure_trained(profile, "modified", seed=1, progress=False)
    assert ex.ensure_data(profile, progress=False) == sha and (profile.data / "train.json").read_bytes() == listing
    assert (profile.runs / "modified-seed1" / "DATA_FINGERPRINT").read_text().strip() == sha


def test_committed_metrics_of_a_finished_run_survive_a_fresh_clone_but_not_a_change(profile, monkeypatch):
    """Seeds other than 0 commit metrics but no checkpoint: a machine without the run folder keeps those metrics
    when data and settings match, and retrains when either differs."""
    import shutil

    from crackcore.engine import train as train_module

    m = ex.ensure_evaluated(profile, "modified", seed=1, progress=False)
    assert m["data_pixels_sha256"] == ex.ensure_data(profile, progress=False)
    assert "test_pool9" in m["diagnosis"]  # stride 1: also decoded with the wide window
    shutil.rmtree(profile.runs / "modified-seed1")  # a fresh clone: results/ only
    saved = profile.results / "metrics" / "modified-seed1.json"
    mtime = saved.stat().st_mtime_ns
    monkeypatch.setattr(train_module, "_epoch", lambda *a, **k: pytest.fail("retrained a finished run"))
    assert ex.ensure_evaluated(profile, "modified", seed=1, progress=False)["ap07"] == m["ap07"]
    assert saved.stat().st_mtime_ns == mtime and not (profile.runs / "modified-seed1").exists()
    assert ex.seed_runs(profile, "1", ["modified"]) == {"modified": {1: m}}

    other = {**json.loads(saved.read_text()), "data_pixels_sha256": "0" * 64}  # metrics of other pixels
    saved.write_text(json.dumps(other))
    with pytest.raises(pytest.fail.Exception, match="retrained"):
        ex.ensure_evaluated(profile, "modified", seed=1, progress=False)
    real = ex.train_config  # metrics of other settings
    saved.write_text(json.dumps(m))
    monkeypatch.setattr(ex, "train_config", lambda *a, **k: dataclasses.replace(real(*a, **k), wh_scale=8.0))
    with pytest.raises(pytest.fail.Exception, match="retrained"):
        ex.ensure_evaluated(profile, "modified", seed=1, progress=False)


def test_metrics_missing_a_diagnosis_column_are_redone():
    test = {"ap07_box_nms_0.5": 50.0}
    assert not ex._complete({"variant": "modified", "diagnosis": {"test": {"ap07": 50.0}}})  # before box NMS
    assert not ex._complete({"variant": "modified_aff", "diagnosis": {"test": test}})  # stride 1, no wide window
    assert ex._complete({"variant": "modified_aff", "diagnosis": {"test": test, "test_pool9": {"ap07": 60.0}}})
    assert ex._complete({"variant": "centernet_r18", "diagnosis": {"test": test}})  # stride 4: never decoded so


def test_seed_runs_reads_make_seeds_and_goes_seed_major(profile, monkeypatch):
    order = []
    monkeypatch.setattr(ex, "ensure_evaluated", lambda p, v, s, progress=False: order.append((v, s)) or {"v": v, "s": s})
    runs = ex.seed_runs(profile, "0 1", ["a", "b"])
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]  # a whole seed at a time
    assert runs == {"a": {0: {"v": "a", "s": 0}, 1: {"v": "a", "s": 1}}, "b": {0: {"v": "b", "s": 0}, 1: {"v": "b", "s": 1}}}
    assert list(ex.seed_runs(profile, 2, ["a"])["a"]) == [2] and list(ex.seed_runs(profile, [3, 4], ["a"])["a"]) == [3, 4]
