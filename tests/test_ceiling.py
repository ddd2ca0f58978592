"""The ceiling experiment: the easiest data keep the task, never read a test split, and apply the rule fixed beforehand."""
import dataclasses
import json

import numpy as np
import pytest

import crackcore.study.ceiling as ce
import crackcore.study.experiment as ex
import crackcore.study.readings as rd
from crackcore.data.synth import SynthConfig, render
from crackcore.engine.config import TrainConfig

ONE_EPOCH = TrainConfig(epochs=1, lr_drop_epoch=1, precision="fp32")


def test_rule_is_the_paper_regime_bar():
    assert ce.CEILING_BAR == 90.0
    assert ce.verdict(90.0) == "data" and ce.verdict(97.5) == "data"
    assert ce.verdict(89.99) == "protocol" and ce.verdict(58.5) == "protocol"


def test_easiest_knobs_take_away_difficulty_but_keep_cracks_camera_and_boxes():
    easy = dataclasses.replace(SynthConfig(), **ce.EASIEST)  # every key is a knob and the config validates
    default = SynthConfig()
    for knob in ("width", "short_length", "extent_weights", "visibility_k", "min_visible_run", "box_pad",
                 "noise_at_200", "blur_sigma", "jpeg_p", "crack_count_weights"):
        assert getattr(easy, knob) == getattr(default, knob)
    assert easy.contrast[0] == 2 * default.contrast[0] and easy.contrast[1] == default.contrast[1]
    assert "edges" not in easy.families("train") and "edges" not in easy.families("background")
    for i in range(30):  # no crack-like look-alike is ever drawn
        negs = render(dataclasses.replace(easy, n_background=30), "background", i).meta["negatives"]
        assert not any(negs[k] for k in ("fibre", "seam", "scratch", "edge", "joint", "stain"))
    bright = [render(dataclasses.replace(easy, n_background=30), "background", i).image.mean() for i in range(30)]
    assert np.median(bright) > 120  # bright ware, also under the dim `camera` family's exposure


def test_ceiling_trains_on_a_carved_split_of_the_easiest_data(tmp_path, monkeypatch):
    from crackcore.data import annotations
    from crackcore.engine import evaluate, train

    profile = ex.Profile("t", 10, 2, 6, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    read = []
    real_load = annotations.load_records
    for module in (annotations, evaluate, train, rd, ce):  # every reader of annotation files on its path
        monkeypatch.setattr(module, "load_records", lambda src, split, **kw: read.append((str(src), split)) or
                            real_load(src, split, **kw))
    r = ce.ceiling(profile, "modified", seed=0, backgrounds=4, progress=False)
    assert (r["n_fit"], r["n_val"]) == (8, 2) and r["background"]["images"] == 4
    assert r["verdict"] == ce.verdict(r["val"]["ap07"]) and r["precision"] == "fp32"
    assert not (tmp_path / "data").exists()  # the default data are never drawn, let alone read
    easy_root = str(tmp_path / "runs" / "ceiling" / "data")
    assert {split for src, split in read if src == easy_root} == {"train", "background"}  # never test or shift
    assert {src.rsplit("/", 1)[-1] for src, _ in read} == {"data", "fit.json", "val.json"}
    saved = json.loads((profile.results / "metrics" / "ceiling-modified-seed0.json").read_text())
    assert saved["val"]["ap07"] == r["val"]["ap07"] and saved["key"]["easiest"]["joint_p"] == 0.0
    again = ce.ceiling(profile, "modified", seed=0, backgrounds=4, progress=False)  # the same settings: kept, not rerun
    assert again == saved
    model_file = next((tmp_path / "runs" / "ceiling").glob("*/model.pt"))
    trained_at = model_file.stat().st_mtime_ns
    more = ce.ceiling(profile, "modified", seed=0, backgrounds=6, progress=False)  # more backgrounds: rescored only
    assert more["background"]["images"] == 6 and more["val"]["ap07"] == saved["val"]["ap07"]
    assert model_file.stat().st_mtime_ns == trained_at
    assert json.loads((profile.results / "metrics" / "ceiling-modified-seed0.json").read_text())["background"] == \
        more["background"]


def test_start_rule_boundaries():
    assert ce.START_BAR == 85.0
    assert ce.start_verdict(85.0, 58.5) == "enough" and ce.start_verdict(85.0, None) == "enough"
    assert ce.start_verdict(59.6, 58.5) == "helps" and ce.start_verdict(59.5, 58.5) == "no gain"  # by more than 1.0
    assert ce.start_verdict(84.9, None) == "no gain"  # no from-scratch run to compare with: only the bar speaks


def test_synthetic_start_trains_from_the_ceiling_backbone_on_the_default_fit_split(tmp_path, monkeypatch):
    import torch

    from crackcore.data import annotations
    from crackcore.engine import evaluate, train
    from crackcore.storage import load_checkpoint, load_model, save_checkpoint

    profile = ex.Profile("t", 10, 2, 6, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    read = []
    real_load = annotations.load_records
    for module in (annotations, evaluate, train, rd, ce):
        monkeypatch.setattr(module, "load_records", lambda src, split, **kw: read.append((str(src), split)) or
                            real_load(src, split, **kw))
    ce.ceiling(profile, "modified", seed=0, precision="fp32", backgrounds=4, progress=False)
    # A one-step parent sits within a step of the seed's initialisation, as a fresh start of the same seed does:
    # moved far from both, its stages can only reach the child through the start.
    parent_path = next((tmp_path / "runs" / "ceiling").glob("*/model.pt"))
    state = load_checkpoint(parent_path)
    state["model"] = {k: v + 0.5 if k.startswith("backbone.layer") and k.endswith("conv1.weight") else v
                      for k, v in state["model"].items()}
    save_checkpoint(parent_path, state)
    r = ce.synthetic_start(profile, "modified", seed=0, progress=False)
    assert {split for _, split in read} <= {"train", "background", "val"}  # never a test or shift split
    assert r["n_fit"] == 8 and r["n_val"] == 2 and r["scratch_val_ap07"] is None and r["precision"] == "fp32"
    assert r["verdict"] == ce.start_verdict(r["val"]["ap07"], None)
    parent, _ = load_model(parent_path)
    assert r["backbone"].endswith(ce.backbone_file(parent_path).name)
    backbone = torch.load(ce.backbone_file(parent_path), weights_only=True)
    want = {k: v for k, v in parent.backbone.state_dict().items() if k.startswith("layer")}
    assert set(backbone) == set(want) and all(torch.equal(backbone[k], want[k].float()) for k in want)
    # one Adam step at 2.5e-4 from the parent's stages: every conv weight is within about one step of the parent's
    child = load_checkpoint(next((tmp_path / "runs" / "readings").glob("*/model.pt")))
    assert child["config"]["imagenet"].endswith(".pt") and "backbone-" in child["config"]["imagenet"]
    convs = [k for k in want if k.endswith("conv1.weight")]
    moved = max(float((child["model"][f"backbone.{k}"].float() - want[k]).abs().max()) for k in convs)
    assert 0 < moved < 1e-3
    again = ce.synthetic_start(profile, "modified", seed=0, progress=False)  # kept, not retrained
    assert again["val"]["ap07"] == r["val"]["ap07"] and again["key"] == json.loads(json.dumps(r["key"]))
    # the matched baseline: the same budget from scratch, in its own file and its own run folder
    base = ce.synthetic_start(profile, "modified", seed=0, scratch=True, progress=False)
    assert base["backbone"] is None and base["n_fit"] == 8 and base["key"]["imagenet"] == ""
    assert (profile.results / "metrics" / "ceiling-start-scratch-modified-seed0.json").is_file()
    runs = sorted((tmp_path / "runs" / "readings").glob("*/model.pt"))
    assert len(runs) == 2
    fresh = next(load_checkpoint(f) for f in runs if load_checkpoint(f)["config"]["imagenet"] == "")
    assert min(float((fresh["model"][f"backbone.{k}"].float() - want[k]).abs().min()) for k in convs) > 0.4
    # a tagged replication writes its own file and leaves the first run's alone
    first = (profile.results / "metrics" / "ceiling-start-modified-seed0.json").read_text()
    tagged = ce.synthetic_start(profile, "modified", seed=0, tag="again", progress=False)
    assert (profile.results / "metrics" / "ceiling-start-modified-seed0-again.json").is_file()
    assert (profile.results / "metrics" / "ceiling-start-modified-seed0.json").read_text() == first
    assert tagged["val"]["ap07"] == r["val"]["ap07"]  # the same settings' run folder: scored again, not retrained
    assert len(sorted((tmp_path / "runs" / "readings").glob("*/model.pt"))) == 2


def test_tagged_names_tell_replications_apart():
    assert ce.tagged("ceiling", "modified_aff", 0) == "ceiling-modified_aff-seed0.json"  # the first run's, as committed
    assert ce.tagged("ceiling-start", "modified_aff", 0, "bf16-25ep") == "ceiling-start-modified_aff-seed0-bf16-25ep.json"


def test_a_start_is_judged_against_the_matched_scratch_run_else_the_neck_reading(tmp_path):
    profile = ex.Profile("t", 10, 2, 6, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    metrics = profile.results_dir("metrics")
    key = {"data": "d", "variant": "modified_aff", "seed": 1, "epochs": 25, "lr_drop_epoch": 20, "precision": "bf16",
           "imagenet": "runs/t/ceiling/x/backbone-y.pt"}
    assert ce.scratch_baseline(profile, key, "bf16-25ep") == ({}, None)  # nothing to compare with: no verdict of "helps"

    def write(name, **changes):
        (metrics / name).write_text(json.dumps({"key": {**key, "imagenet": "", **changes}, "val": {"ap07": 50.0}}))
    write("reading-neck-bilinear.json", seed=0, precision="auto")  # another seed's reading: not this start's baseline
    assert ce.scratch_baseline(profile, key, "bf16-25ep") == ({}, None)
    write("reading-neck-bilinear.json", precision="auto")  # the neck reading of this seed, whatever its precision
    assert ce.scratch_baseline(profile, key, "bf16-25ep")[1].name == "reading-neck-bilinear.json"
    write("ceiling-start-scratch-modified_aff-seed1-bf16-25ep.json", epochs=10)  # another budget: not matched
    assert ce.scratch_baseline(profile, key, "bf16-25ep")[1].name == "reading-neck-bilinear.json"
    write("ceiling-start-scratch-modified_aff-seed1-bf16-25ep.json")  # the matched run wins over the reading
    base, f = ce.scratch_baseline(profile, key, "bf16-25ep")
    assert f.name == "ceiling-start-scratch-modified_aff-seed1-bf16-25ep.json" and base["val"]["ap07"] == 50.0
    assert ce.start_verdict(51.1, base["val"]["ap07"]) == "helps" and ce.start_verdict(51.0, 50.0) == "no gain"


def test_start_runs_pair_each_start_with_its_baseline_by_budget_then_seed(tmp_path):
    profile = ex.Profile("t", 10, 2, 6, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    metrics = profile.results_dir("metrics")
    assert ce.start_runs(profile) == {}

    def write(name, seed, epochs, ap07, start=True, **changes):
        key = {"data": "d", "variant": "modified_aff", "seed": seed, "epochs": epochs, "lr_drop_epoch": epochs - 5,
               "precision": "bf16", "imagenet": "b.pt" if start else "", **changes}
        (metrics / name).write_text(json.dumps({"key": key, "seed": seed, "val": {"ap07": ap07}}))
    write("ceiling-start-modified_aff-seed1-bf16-25ep.json", 1, 25, 76.0)
    write("ceiling-start-scratch-modified_aff-seed1-bf16-25ep.json", 1, 25, 54.0, start=False)
    write("ceiling-start-modified_aff-seed0-bf16-25ep.json", 0, 25, 69.0)  # no matched run: the neck reading
    write("reading-neck-bilinear.json", 0, 25, 58.0, start=False, precision="auto")
    write("ceiling-start-modified_aff-seed0.json", 0, 10, 61.0)  # the pilot, whose baseline is not on record
    write("ceiling-start-scratch-modified_aff-seed0-bf16-25ep.json", 0, 10, 1.0, start=False)  # another budget
    write("ceiling-start-modified-seed0.json", 0, 25, 99.0, variant="modified")  # another variant: not listed
    runs = ce.start_runs(profile)
    assert {n: r["val"]["ap07"] for n, r in runs.items()} == {
        "seed 0, pretrained stages, 10 epochs": 61.0,
        "seed 0, from scratch, 25 epochs": 58.0, "seed 0, pretrained stages, 25 epochs": 69.0,
        "seed 1, from scratch, 25 epochs": 54.0, "seed 1, pretrained stages, 25 epochs": 76.0}
    assert list(runs)[1:] == ["seed 0, from scratch, 25 epochs", "seed 0, pretrained stages, 25 epochs",
                              "seed 1, from scratch, 25 epochs", "seed 1, pretrained stages, 25 epochs"]
    write("ceiling-start-modified_aff-seed1-fp32-25ep.json", 1, 25, 70.0, precision="fp32")  # a replication
    assert ce.start_runs(profile)["seed 1, pretrained stages, 25 epochs (fp32-25ep)"]["val"]["ap07"] == 70.0


def test_ceiling_runs_need_both_runs_of_the_same_seed(tmp_path):
    profile = ex.Profile("t", 10, 2, 6, tmp_path / "data", tmp_path / "runs", tmp_path / "results", ONE_EPOCH)
    metrics = profile.results_dir("metrics")
    (metrics / "ceiling-modified_aff-seed1.json").write_text(json.dumps({"key": {"variant": "modified_aff", "seed": 1}}))
    assert ce.ceiling_runs(profile, seed=1) == {}  # no default-data run beside it
    (metrics / "reading-neck-bilinear.json").write_text(json.dumps({"key": {"variant": "modified_aff", "seed": 0}}))
    assert ce.ceiling_runs(profile, seed=1) == {} and ce.ceiling_runs(profile, seed=0) == {}  # seeds differ; no seed 0
    (metrics / "ceiling-modified_aff-seed0.json").write_text(json.dumps({"key": {"variant": "modified_aff", "seed": 0}}))
    assert set(ce.ceiling_runs(profile, seed=0)) == {"default data", "easiest data"}
