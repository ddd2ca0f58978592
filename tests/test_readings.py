"""The decisions made on a validation split: calibration and readings never read the test split; rules fixed beforehand."""
import json

import pytest

import crackcore.study.experiment as ex
import crackcore.study.readings as rd
from crackcore.engine.config import TrainConfig

ONE_EPOCH = TrainConfig(epochs=1, lr_drop_epoch=1, precision="fp32")


@pytest.fixture()
def profile(tmp_path):
    return ex.Profile("t", 4, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)


def test_calibration_holds_out_part_of_train_and_applies_its_rule(tmp_path, monkeypatch):
    from crackcore.data import annotations
    from crackcore.engine import evaluate, train

    profile = ex.Profile("t", 10, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    read = []
    real_load = annotations.load_records
    for module in (annotations, evaluate, train, rd):  # every reader of annotation files on the calibration's path
        monkeypatch.setattr(module, "load_records", lambda src, split, **kw: read.append((str(src), split)) or
                            real_load(src, split, **kw))
    r = rd.calibrate(profile, "modified", seed=0, progress=False)
    assert (r["n_fit"], r["n_val"]) == (8, 2)
    folder = profile.runs / "validation-seed0"
    fit = {im["file_name"] for im in json.loads((folder / "fit.json").read_text())["images"]}
    val = {im["file_name"] for im in json.loads((folder / "val.json").read_text())["images"]}
    assert len(fit) == 8 and len(val) == 2 and not fit & val  # disjoint parts of the training split
    assert all("/train/" in f for f in fit | val)
    assert {src.rsplit("/", 1)[-1] for src, _ in read} == {"data", "fit.json", "val.json"}
    assert all(split == "train" for src, split in read if src.endswith("data"))  # test split never looked at
    expected = "harder" if r["ap07_val"] > 97 else "easier" if r["ap07_val"] < 90 else "keep the defaults"
    assert r["verdict"] == expected and rd.CALIBRATION_BAND == (90.0, 97.0)  # the paper's regime, fixed beforehand
    assert not any(split.startswith("shift") for _, split in read)  # the held-out family is never looked at either
    assert r["diagnosis_val"]["ap07"] == pytest.approx(r["ap07_val"], abs=0.01) and r["trained"]["precision"] == "fp32"
    saved = json.loads((profile.results / "metrics" / "calibration-modified-seed0.json").read_text())
    assert saved["ap07_val"] == r["ap07_val"] and saved["data_pixels_sha256"] == ex.ensure_data(profile, progress=False)
    # the readings' run of the default settings is this model: one training serves both
    default = rd.reading("wh-mean-x16", profile, variant="modified", progress=False)
    assert default["key"] == r["key"] and len(list((profile.runs / "readings").iterdir())) == 1
    assert default["val"]["ap07"] == pytest.approx(r["ap07_val"], abs=0.01)


def _results(**aps):
    return {n: {"val": {"ap07": ap, "size_iou_median": iou}} for n, (ap, iou) in aps.items()}


def test_wh_rule_prefers_size_iou_among_close_aps():
    assert rd.choose_wh(_results(a=(50.0, 0.6), b=(50.8, 0.5), c=(40.0, 0.9))) == "a"  # b within 1.0 of a
    assert rd.choose_wh(_results(a=(50.0, 0.6), b=(51.5, 0.5))) == "b"  # a is more than 1.0 behind


def test_radius_rule_keeps_the_literal_reading_unless_beaten_by_more_than_one_point():
    lit = "radius-corrected-sigma-paper"
    assert rd.choose_radius(_results(**{lit: (50.0, 0), "other": (50.9, 0)})) == lit
    assert rd.choose_radius(_results(**{lit: (50.0, 0), "other": (51.1, 0)})) == "other"


def test_reading_trains_on_fit_and_diagnoses_fit_and_val(tmp_path):
    profile = ex.Profile("t", 10, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    r = rd.reading("wh-mean-x16", profile, variant="modified", epochs=1, lr_drop_epoch=1, progress=False)
    assert r["key"]["wh_init"] == "mean" and r["key"]["epochs"] == 1
    assert {"ap07", "ap07_true_wh", "ap07_true_centre", "wh_corr_pred", "size_iou_median"} <= set(r["val"])
    assert r["val"]["n_gt"] > 0 and r["fit"]["n_gt"] > r["val"]["n_gt"]  # 8 fit images, 2 validation ones
    saved = profile.results / "metrics" / "reading-wh-mean-x16.json"
    mtime = saved.stat().st_mtime_ns
    same = rd.reading("wh-mean-x16", profile, variant="modified", epochs=1, lr_drop_epoch=1, progress=False)
    assert same["key"] == r["key"] and saved.stat().st_mtime_ns == mtime  # the same settings are not redone


def test_pool_rule_keeps_the_papers_window_unless_beaten_by_more_than_one_point():
    by_pool = {"3": {"ap07": 50.0}, "5": {"ap07": 50.9}, "7": {"ap07": 49.0}}
    assert rd.choose_pool(by_pool) == "3"
    assert rd.choose_pool({**by_pool, "9": {"ap07": 51.2}}) == "9"


def test_pool_reading_decodes_the_fit_split_model_of_the_same_settings_with_each_window(tmp_path):
    profile = ex.Profile("t", 10, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    lit = rd.reading("wh-mean-x16", profile, variant="modified", progress=False)  # today's defaults, one epoch
    r = rd.pool_reading(profile, "modified", pools=(1, 3, 5), progress=False)
    assert len(list((profile.runs / "readings").iterdir())) == 1  # the same settings: one run, trained once
    same = json.dumps(r["val"]["3"], sort_keys=True) == json.dumps(lit["val"], sort_keys=True)  # NaN as NaN
    assert same  # §IV-C's window reproduces the reading's own validation diagnosis, digit for digit
    assert set(r["val"]) == {"1", "3", "5"} and r["choice"] == rd.choose_pool(r["val"])
    assert r["key"]["pools"] == [1, 3, 5] and r["key"]["data"] == lit["key"]["data"]
    saved = profile.results / "metrics" / "reading-pool.json"
    mtime = saved.stat().st_mtime_ns
    again = rd.pool_reading(profile, "modified", pools=(1, 3, 5), progress=False)
    assert json.dumps(again, sort_keys=True) == json.dumps(r, sort_keys=True)
    assert saved.stat().st_mtime_ns == mtime  # the same settings and windows are not redone


@pytest.mark.slow
def test_budget_curve_reuses_the_table_i_run_and_keeps_finished_budgets(profile):
    from crackcore.storage import load_checkpoint
    from crackcore.study import plots
    from crackcore.study.tables import budget_table

    r = rd.budget_curve(profile, "modified", budgets=(1, 2), progress=False)
    assert set(r["budgets"]) == {"1", "2"}
    assert r["budgets"]["1"]["lr_drop_epoch"] == 1 and r["budgets"]["2"]["lr_drop_epoch"] == 2  # round(0.8 · epochs)
    assert (profile.runs / "modified-seed0" / "model.pt").exists()  # 1 epoch is this profile's protocol
    assert (profile.runs / "budget" / "modified-seed0-e2" / "model.pt").exists()
    saved = profile.results / "metrics" / "budget-modified-seed0.json"
    mtime = saved.stat().st_mtime_ns
    assert rd.budget_curve(profile, "modified", budgets=(1, 2), progress=False) == r and saved.stat().st_mtime_ns == mtime
    table = budget_table(r)
    assert list(table.index) == [1, 2] and table.loc[2, "test AP07"] == r["budgets"]["2"]["ap07_test"]
    assert plots.budget_curve(table, 96.16, 97.96).axes[0].get_xlabel().startswith("epochs")

    # a longer budget starts from the shorter one's checkpoint at its lr drop (epoch 2 ≤ its own drop at 3)
    e2 = profile.runs / "budget" / "modified-seed0-e2"
    assert (e2 / "DATA_FINGERPRINT").read_text().strip() == ex.ensure_data(profile, progress=False)
    r = rd.budget_curve(profile, "modified", budgets=(4,), progress=False)
    assert r["budgets"]["4"]["lr_drop_epoch"] == 3 and set(r["budgets"]) == {"1", "2", "4"}
    e4 = load_checkpoint(profile.runs / "budget" / "modified-seed0-e4" / "model.pt")
    assert e4["branched_from"]["epoch"] == 2 and e4["branched_from"]["path"].endswith("modified-seed0-e2/epoch2.pt")
    assert len(e4["history"]) == 4 and r["budgets"]["4"]["branched_from"] == e4["branched_from"]
    assert r["budgets"]["2"]["branched_from"] is None  # the 1-epoch point is the Table I run, which keeps no epoch


def test_branch_point_takes_the_latest_kept_epoch_of_the_same_run_on_the_same_data(tmp_path):
    """Siblings on other data, with other settings, or kept past an lr drop are never where a run starts."""
    from crackcore.engine.config import recorded_config

    def sibling(name, fp="px", kept=(), **kw):
        run = tmp_path / name
        run.mkdir()
        (run / "DATA_FINGERPRINT").write_text(fp + "\n")
        (run / "config.json").write_text(json.dumps(recorded_config(TrainConfig(out=str(run), **kw))))
        for e in kept:
            (run / f"epoch{e}.pt").write_bytes(b"")  # only the names are read
        return run

    target = TrainConfig(out=str(tmp_path / "aff-seed0-e100"), epochs=100, lr_drop_epoch=80)
    assert rd.branch_point(target, "px") is None
    sibling("aff-seed0-e50", kept=(40,), epochs=50, lr_drop_epoch=40)
    sibling("aff-seed0-e60", fp="other", kept=(48,), epochs=60, lr_drop_epoch=48)  # other data
    sibling("aff-seed0-e70", kept=(56,), epochs=70, lr_drop_epoch=56, seed=1)  # other settings
    sibling("aff-seed0-e200", kept=(160,), epochs=200, lr_drop_epoch=160)  # past the target's drop at 80
    assert rd.branch_point(target, "px") == tmp_path / "aff-seed0-e50" / "epoch40.pt"
    sibling("aff-seed0-e75", kept=(60,), epochs=75, lr_drop_epoch=60)
    assert rd.branch_point(target, "px") == tmp_path / "aff-seed0-e75" / "epoch60.pt"
    assert rd.branch_point(TrainConfig(out=str(tmp_path / "aff-seed0-e60"), epochs=60, lr_drop_epoch=48), "px") == \
        tmp_path / "aff-seed0-e50" / "epoch40.pt"


def test_neck_rule_needs_more_than_one_point_over_the_best_default_run():
    assert rd.choose_neck({"val": {"ap07": 38.1}}, [34.1, 37.2]) == "default"  # +0.9 over the best: noise
    assert rd.choose_neck({"val": {"ap07": 38.3}}, [34.1, 37.2]) == "bilinear"
    assert rd.choose_neck({"val": {"ap07": 36.0}}, [34.1]) == "bilinear"  # over the only run on record


def test_a_record_without_the_neck_knob_is_a_run_of_pytorchs_init_and_stale_today():
    from crackcore.engine.config import TrainConfig, comparable, recorded_config
    old = recorded_config(TrainConfig(neck_init="default"))
    before = {k: v for k, v in old.items() if k != "neck_init"}  # a run published before the knob existed
    assert comparable(before) == comparable(old)
    assert TrainConfig().neck_init == "bilinear"  # the validated start: runs of the old one are retrained
    assert comparable(recorded_config(TrainConfig())) != comparable(before)


def test_neck_reading_compares_only_with_runs_of_pytorchs_init_on_the_same_data(tmp_path, monkeypatch):
    profile = ex.Profile("t", 10, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    metrics = profile.results_dir("metrics")
    monkeypatch.setattr(rd, "reading", lambda *a, **k: {"key": {"data": "px"}, "val": {"ap07": 40.0}})
    with pytest.raises(FileNotFoundError, match="neck"):
        rd.neck_reading(profile, progress=False)  # nothing on record to compare with
    (metrics / "calibration-modified_aff-seed0.json").write_text(json.dumps({"data_pixels_sha256": "px", "ap07_val": 38.5}))
    (metrics / "reading-pool.json").write_text(json.dumps(  # a bilinear run, and one on other data: both ignored
        {"key": {"data": "px", "neck_init": "bilinear"}, "val": {"3": {"ap07": 10.0}}}))
    r = rd.neck_reading(profile, progress=False)
    assert r["default_runs_val_ap07"] == {"calibration-modified_aff-seed0.json": 38.5} and r["choice"] == "bilinear"
    (metrics / "reading-pool.json").write_text(json.dumps({"key": {"data": "px"}, "val": {"3": {"ap07": 39.5}}}))
    r = rd.neck_reading(profile, progress=False)
    assert r["choice"] == "default"  # +0.5 over the best run of PyTorch's init: within the margin


def test_hm_rule_needs_more_than_the_measured_training_noise():
    assert rd.choose_hm({"val": {"ap07": 61.5}}, {"val": {"ap07": 58.5}}) == "default"  # +3.0: two trainings' spread
    assert rd.choose_hm({"val": {"ap07": 61.6}}, {"val": {"ap07": 58.5}}) == "he"
    assert rd.choose_hm({"val": {"ap07": 50.0}}, {"val": {"ap07": 58.5}}) == "default"


def test_hm_reading_compares_with_the_default_head_of_the_same_settings_only(tmp_path, monkeypatch):
    profile = ex.Profile("t", 10, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    metrics = profile.results_dir("metrics")
    key = {"data": "px", "seed": 0, "neck_init": "bilinear"}
    monkeypatch.setattr(rd, "reading", lambda *a, **k: {"key": {**key, "hm_init": "he"}, "val": {"ap07": 62.0}})
    with pytest.raises(FileNotFoundError, match="neck-reading"):
        rd.hm_reading(profile, progress=False)  # nothing of the default head on record
    neck = metrics / "reading-neck-bilinear.json"
    neck.write_text(json.dumps({"key": {**key, "data": "other"}, "val": {"ap07": 50.0}}))
    with pytest.raises(ValueError, match="other settings"):
        rd.hm_reading(profile, progress=False)  # another generator's data: not a comparison
    neck.write_text(json.dumps({"key": key, "val": {"ap07": 58.5}}))
    r = rd.hm_reading(profile, progress=False)
    assert (r["default_val_ap07"], r["choice"]) == (58.5, "he")
    assert json.loads((metrics / "reading-hm-he.json").read_text())["choice"] == "he"
