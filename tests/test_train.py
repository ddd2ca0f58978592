"""Training (§IV-B): it learns, it is deterministic, and an interrupted run resumes to identical weights."""
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from crackcore.data import load_records
from crackcore.losses import centernet_loss
from crackcore.models import build_model
from crackcore.runtime import CheckpointError, load_checkpoint
from crackcore.train import TrainConfig, collate, lr_at, make_loader, train
import crackcore.train as train_mod

ROOT = Path(__file__).resolve().parent.parent


def cfg_for(tiny_data, out, **kw):
    base = TrainConfig(variant="modified", data=str(tiny_data), out=str(out), epochs=2, batch_size=4, limit=8,
                       precision="fp32", seed=3)
    return replace(base, **kw)


def test_lr_schedule_is_the_papers():
    cfg = TrainConfig()
    assert [lr_at(cfg, e) for e in (0, 19, 20, 24)] == pytest.approx([2.5e-4, 2.5e-4, 2.5e-5, 2.5e-5])


def test_model_overfits_one_batch(tiny_data):
    torch.manual_seed(0)
    cfg = cfg_for(tiny_data, "unused", augment=False)
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
    real_save = train_mod.save_checkpoint
    def save_then_die(path, state):
        real_save(path, state)
        raise KeyboardInterrupt
    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(tiny_data, tmp_path / "c"), progress=False)
    monkeypatch.setattr(train_mod, "save_checkpoint", real_save)
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
    with pytest.raises(train_mod.ConfigMismatch, match="lr"):
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
