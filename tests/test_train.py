"""Training (§IV-B): it learns, it is deterministic, an interrupted run resumes to identical weights, and fine-tuning
starts from its parent's weights and records that parent."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from crackcore.data.annotations import load_records
from crackcore.data.transforms import AugmentConfig
import crackcore.engine.config as config_mod
import crackcore.engine.train as train_mod
from crackcore.engine.config import TrainConfig
from crackcore.engine.train import lr_at, make_loader, train
from crackcore.losses import centernet_loss
from crackcore.models import build_model
from crackcore.storage import CheckpointError, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def die_after_first_checkpoint(cfg, monkeypatch) -> None:
    """Train `cfg` until its first checkpoint is written, then stop as a kill would (KeyboardInterrupt)."""
    real_save = train_mod.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt
    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)


def cfg_for(tiny_data, out, **kw):
    base = TrainConfig(variant="modified", data=str(tiny_data), out=str(out), epochs=2, batch_size=4, limit=8,
                       precision="fp32", seed=3)
    return replace(base, **kw)


def test_lr_schedule_is_the_papers():
    cfg = TrainConfig()
    assert [lr_at(cfg, e) for e in (0, 19, 20, 24)] == pytest.approx([2.5e-4, 2.5e-4, 2.5e-5, 2.5e-5])


def test_model_overfits_one_batch(tiny_data):
    torch.manual_seed(0)
    cfg = cfg_for(tiny_data, "unused", augmentation=AugmentConfig(augment=False))
    cfg = replace(cfg, batch_size=2)
    images, targets = next(iter(make_loader(cfg, load_records(tiny_data, "train")[:2], train=False)))
    model = build_model("modified")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    tg = {k: v for k, v in targets.items() if isinstance(v, torch.Tensor)}
    losses = []
    for _ in range(40):
        loss = centernet_loss(model(images), tg)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 3, losses


def test_same_seed_same_weights_and_resume_is_exact(tiny_data, tmp_path, monkeypatch):
    a = train(cfg_for(tiny_data, tmp_path / "a"), progress=False)
    b = train(cfg_for(tiny_data, tmp_path / "b"), progress=False)
    wa, wb = load_checkpoint(a / "model.pt")["model"], load_checkpoint(b / "model.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # a run killed right after its first checkpoint, then resumed, ends where the uninterrupted one did
    die_after_first_checkpoint(cfg_for(tiny_data, tmp_path / "c"), monkeypatch)
    assert load_checkpoint(tmp_path / "c" / "last.pt")["epoch"] == 1
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg_for(tiny_data, tmp_path / "c"), progress=False)
    c = train(cfg_for(tiny_data, tmp_path / "c"), resume=True, progress=False)
    wc = load_checkpoint(c / "model.pt")["model"]
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    history = (c / "history.jsonl").read_text().splitlines()
    assert len(history) == 2 and '"data_wait_share"' in history[0]

    with pytest.raises(ValueError, match="epochs"):  # resuming with other settings is refused, not mixed
        train(cfg_for(tiny_data, tmp_path / "c", epochs=3), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="'modified' model, not 'modified_aff'"):
        train(cfg_for(tiny_data, tmp_path / "c", variant="modified_aff"), resume=True, progress=False)


def test_a_longer_run_branched_from_a_shorter_one_ends_where_it_would_from_scratch(tiny_data, tmp_path):
    """Two runs that differ only in length and lr drop are one run until the earlier drop: started from the shorter
    run's checkpoint kept at its drop, the longer run ends with the very weights it reaches from scratch."""
    short = cfg_for(tiny_data, tmp_path / "e2", epochs=2, lr_drop_epoch=1, limit=4)  # one step per epoch
    train(short, progress=False, keep=(1,))
    kept = tmp_path / "e2" / "epoch1.pt"
    assert load_checkpoint(kept)["epoch"] == 1 and not (tmp_path / "e2" / "epoch2.pt").exists()
    long = cfg_for(tiny_data, tmp_path / "e3", epochs=3, lr_drop_epoch=2, limit=4)
    scratch = load_checkpoint(train(replace(long, out=str(tmp_path / "scratch")), progress=False) / "model.pt")
    branched = load_checkpoint(train(long, progress=False, branch_from=kept) / "model.pt")
    assert all(torch.equal(scratch["model"][k], branched["model"][k]) for k in scratch["model"])
    assert [h["loss"] for h in branched["history"]] == [h["loss"] for h in scratch["history"]]
    assert branched["branched_from"] == {"path": str(kept), "epoch": 1,
                                         "sha256": hashlib.sha256(kept.read_bytes()).hexdigest()}
    assert branched["config"]["epochs"] == 3 and "branched_from" not in scratch
    assert len((tmp_path / "e3" / "history.jsonl").read_text().splitlines()) == 3  # the shared epoch included

    # refused: a checkpoint past the shorter run's drop, and one of other settings
    with pytest.raises(config_mod.ConfigMismatch, match="holds epoch 2, past epoch 1"):
        train(replace(long, out=str(tmp_path / "x")), progress=False, branch_from=tmp_path / "e2" / "last.pt")
    with pytest.raises(config_mod.ConfigMismatch, match=r"\(seed\)"):
        train(replace(long, out=str(tmp_path / "y"), seed=4), progress=False, branch_from=kept)
    assert not (tmp_path / "x" / "last.pt").exists() and not (tmp_path / "y" / "last.pt").exists()


def test_checkpoint_contents(tiny_data, tmp_path):
    out = train(cfg_for(tiny_data, tmp_path / "r", epochs=1), progress=False)
    state = torch.load(out / "last.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "config", "variant", "provenance"} <= set(state)
    assert state["provenance"]["torch"] == torch.__version__ and state["provenance"]["precision"] == "fp32"
    assert state["config"]["data"] == str(tiny_data)  # outside the repository: kept absolute


def test_a_finished_run_without_its_optimizer_state_is_kept(tiny_data, tmp_path, monkeypatch):
    cfg = cfg_for(tiny_data, tmp_path / "r", epochs=1)
    out = train(cfg, progress=False)
    final = load_checkpoint(out / "model.pt")
    assert final["epoch"] == 1 and len(final["history"]) == 1  # the final weights carry their own loss history
    (out / "last.pt").unlink()
    monkeypatch.setattr(train_mod, "_epoch", lambda *a, **k: pytest.fail("retrained a finished run"))
    assert train(cfg, resume=True, progress=False) == out
    with pytest.raises(config_mod.ConfigMismatch, match="lr"):
        train(replace(cfg, lr=1e-3), resume=True, progress=False)


def test_sigterm_leaves_a_valid_checkpoint(tiny_data, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "crackcore", "train", "--variant", "modified", "--data",
                          str(tiny_data), "--out", str(out), "--epochs", "200", "--batch-size", "4", "--limit", "4",
                          "--precision", "fp32"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (out / "last.pt").exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err.decode()
    state = load_checkpoint(out / "last.pt", "modified")
    assert state["epoch"] >= 1
    assert not (out / "model.pt").exists()


# Fine-tuning (`init`): one 1-epoch parent, fine-tuned on the same tiny data.

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")  # BatchNorm updates these without any gradient


@pytest.fixture(scope="module")
def parent(tiny_data, tmp_path_factory):
    """A 1-epoch `modified` run from scratch: the checkpoint the fine-tuning tests start from."""
    return train(cfg_for(tiny_data, tmp_path_factory.mktemp("parent") / "run", epochs=1), progress=False) / "model.pt"


def test_init_loads_the_parent_and_keeps_its_size_bias(tiny_data, parent):
    cfg = cfg_for(tiny_data, "unused", init=str(parent), epochs=1)  # wh_init="mean", the default
    assert cfg.wh_init == "mean"
    weights, record = train_mod.load_parent(cfg)
    records = load_records(tiny_data, "train")[:8]
    model = train_mod.new_model(cfg, records, weights)
    theirs = load_checkpoint(parent)
    ours = model.state_dict()
    assert ours.keys() == theirs["model"].keys() and all(torch.equal(ours[k], theirs["model"][k]) for k in ours)
    # the mean-size bias a run from scratch starts with is not written over the parent's learned one
    bias = model.heads["wh"][-1].bias
    mean = torch.tensor(train_mod.mean_box_size(records, "modified")) / model.wh_scale
    assert not torch.allclose(bias, mean) and float(model.wh_scale) == 16.0
    assert record == {"path": str(parent), "sha256": hashlib.sha256(parent.read_bytes()).hexdigest(),
                      "variant": "modified", "epoch": 1, "config": theirs["config"]}
    # a run from scratch records no parent, and an empty `init`
    assert "parent" not in theirs and theirs["config"]["init"] == ""


def test_fine_tuning_at_lr_0_ends_on_the_parents_weights_and_records_it(tiny_data, parent, tmp_path):
    out = train(cfg_for(tiny_data, tmp_path / "ft", init=str(parent), epochs=1, lr=0.0), progress=False)
    theirs, final, last = load_checkpoint(parent), load_checkpoint(out / "model.pt"), load_checkpoint(out / "last.pt")
    moved = [k for k in theirs["model"] if not torch.equal(theirs["model"][k], final["model"][k])]
    assert moved and all(k.endswith(BN_STATS) for k in moved)  # an Adam step of size 0 changes no parameter
    expected = {"path": str(parent), "sha256": hashlib.sha256(parent.read_bytes()).hexdigest(), "variant": "modified",
                "epoch": 1, "config": theirs["config"]}
    assert final["parent"] == last["parent"] == json.loads((out / "parent.json").read_text()) == expected
    assert json.loads((out / "config.json").read_text())["init"] == str(parent) == final["config"]["init"]
    assert final["epoch"] == 1 and final["geometry"] == {"input_size": 80, "scale": 1.0}  # 80 px patches


def test_fine_tuning_resumes_without_reading_its_parent_again(tiny_data, parent, tmp_path, monkeypatch):
    copy = tmp_path / "parent.pt"
    shutil.copy(parent, copy)
    a = train(cfg_for(tiny_data, tmp_path / "a", init=str(copy), limit=4), progress=False)  # 2 epochs of one step

    die_after_first_checkpoint(cfg_for(tiny_data, tmp_path / "c", init=str(copy), limit=4), monkeypatch)
    copy.unlink()  # the resumed run continues its own weights: the parent file is not needed any more
    c = train(cfg_for(tiny_data, tmp_path / "c", init=str(copy), limit=4), resume=True, progress=False)
    wa, wc = load_checkpoint(a / "model.pt"), load_checkpoint(c / "model.pt")
    assert all(torch.equal(wa["model"][k], wc["model"][k]) for k in wa["model"])
    assert wc["parent"] == wa["parent"] and wc["parent"]["path"] == str(copy)
    with pytest.raises(config_mod.ConfigMismatch, match=r"\(init\)"):  # resuming it as a run from scratch: refused
        train(cfg_for(tiny_data, tmp_path / "c", limit=4), resume=True, progress=False)


def test_init_refusals_come_before_the_data_are_read(parent, tmp_path):
    no_data = str(tmp_path / "no_data")  # every check below fails on the checkpoint, before this is looked for
    with pytest.raises(ValueError, match="--init and --imagenet are two starting points"):
        TrainConfig(init=str(parent), imagenet="resnet18.pth")
    with pytest.raises(CheckpointError, match=r"holds a 'modified' model, not a 'modified_aff' one \(--variant\)"):
        train(cfg_for(no_data, tmp_path / "r", variant="modified_aff", init=str(parent)), progress=False)
    with pytest.raises(FileNotFoundError, match="--init checkpoint not found: .*nope.pt"):
        train(cfg_for(no_data, tmp_path / "r", init=str(tmp_path / "nope.pt")), progress=False)
    with pytest.raises(ValueError, match="size head of scale 16, not 8; pass --wh-scale 16"):
        train(cfg_for(no_data, tmp_path / "r", init=str(parent), wh_scale=8.0), progress=False)
    assert not (tmp_path / "r").exists()


def test_init_from_fp16_checkpoints_widens_them(tiny_data, parent, tmp_path):
    state = load_checkpoint(parent)
    half = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save({**state, "model": half, "dtype": str(torch.float16)}, tmp_path / "p.fp16.pt")  # as published
    weights, record = train_mod.load_parent(cfg_for(tiny_data, "unused", init=str(tmp_path / "p.fp16.pt")))
    assert all(weights[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype) for k, v in half.items())
    assert all(torch.equal(weights[k], v.float()) for k, v in half.items()) and record["epoch"] == 1
    published = ROOT / "results" / "checkpoints" / "modified_aff-seed0.fp16.pt"
    if published.exists():  # the committed checkpoints themselves
        cfg = TrainConfig(variant="modified_aff", init=str(published))
        weights, record = train_mod.load_parent(cfg)
        model = train_mod.new_model(cfg, [], weights)
        assert next(model.parameters()).dtype == torch.float32 and float(model.wh_scale) == 16.0
        assert record["path"] == "results/checkpoints/modified_aff-seed0.fp16.pt" and record["epoch"] == 25


def test_augmentation_and_loss_are_recorded_whole_and_compared_on_resume(tiny_data, tmp_path):
    """Nested configs are stored whole in the checkpoint; resuming with one augmentation strength or one focal
    exponent changed is refused and names that knob."""
    cfg = cfg_for(tiny_data, tmp_path / "run", epochs=1)
    state = load_checkpoint(train(cfg, progress=False) / "last.pt")
    assert state["config"]["augmentation"] == {"augment": True, "crop_p": 0.5, "crop_scale": [0.6, 1.0],
                                               "min_visibility": 0.3, "min_size": 1.0, "hflip_p": 0.5, "vflip_p": 0.5,
                                               "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.0}
    assert state["config"]["loss"] == {"alpha": 2.0, "beta": 4.0, "cls_weight": 1.0, "wh_weight": 0.1,
                                       "off_weight": 1.0}
    changed = replace(cfg, augmentation=replace(cfg.augmentation, brightness=0.3))
    with pytest.raises(config_mod.ConfigMismatch, match=r"\(brightness\)"):
        train(changed, resume=True, progress=False)
    with pytest.raises(config_mod.ConfigMismatch, match=r"\(beta\)"):
        train(replace(cfg, loss=replace(cfg.loss, beta=3.0)), resume=True, progress=False)


# The record of `modified`'s fp16 checkpoint as published at f87c883 (results/checkpoints/modified-seed0.fp16.pt
# there): augmentation one flag, the loss weights flat, no α, β, augmentation strengths or neck init.
FLAT_RECORD = {"variant": "modified", "data": "data/synth", "out": "runs/paper/modified-seed0", "epochs": 25,
               "batch_size": 16, "lr": 0.00025, "lr_drop_epoch": 20, "lr_drop_factor": 0.1, "seed": 0,
               "device": "auto", "precision": "auto", "workers": 0, "channels_last": True, "limit": 0,
               "augment": True, "imagenet": "", "max_objs": 32, "min_overlap": 0.3, "sigma_rule": "paper",
               "radius_rule": "corrected", "wh_init": "mean", "wh_scale": 16.0, "cls_weight": 1.0,
               "wh_weight": 0.1, "off_weight": 1.0}


def test_checkpoints_published_before_the_nested_configs_still_match_the_paper_protocol():
    """Checkpoints published before the nested configs recorded augmentation as one flag and the loss weights flat,
    without α, β, the augmentation strengths or the neck init. They trained with today's defaults but for the neck
    (PyTorch's init), so they match today's protocol with `neck_init="default"` (and would be restored, not
    retrained); with today's bilinear neck, or any of the other knobs changed, they do not."""
    from crackcore.study.experiment import get_profile, train_config

    old, published = FLAT_RECORD, "modified-seed0.fp16.pt"
    today = train_config(get_profile("paper"), old["variant"], 0)
    with pytest.raises(config_mod.ConfigMismatch, match="neck_init"):  # retrained with the validated neck start
        config_mod.check_same({"config": old}, config_mod.recorded_config(today), published)
    today = replace(today, neck_init="default")
    assert config_mod.comparable(old) == config_mod.comparable(config_mod.recorded_config(today))
    for other in (replace(today, loss=replace(today.loss, alpha=3.0)),
                  replace(today, augmentation=replace(today.augmentation, crop_scale=(0.5, 1.0))),
                  replace(today, augmentation=replace(today.augmentation, augment=False))):
        with pytest.raises(config_mod.ConfigMismatch):
            config_mod.check_same({"config": old}, config_mod.recorded_config(other), published)

