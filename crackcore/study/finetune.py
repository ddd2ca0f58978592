"""Your own photographs: how many labelled images does a new surface need, from scratch or fine-tuned?

A factory's images are not our synthetic ones. `photo_set` stands in for a user's labelled photographs: the surface
family that training never sees (`SynthConfig.holdout_family`), rendered with another seed than the data set's, so
none of its images is in the `shift` test split. `label_curve` then trains the same variant on the first 25, 50 and
100 of them twice, from scratch under the §IV-B protocol and fine-tuned from the synthetic-trained model
(`TrainConfig.init`, a tenth of the learning rate), and scores every model on the set's own test and background
images, beside the synthetic model as it is (0 labelled images). The curve says how many photos to label.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd

from ..data.annotations import load_records, write_coco
from ..data.synth_files import write_dataset
from ..engine.evaluate import EvalConfig, evaluate
from ..engine.config import comparable, recorded_config
from ..engine.train import train
from ..storage import file_sha256, load_checkpoint, portable_path, save_json
from .experiment import Profile, ensure_data, ensure_trained, fingerprint, get_profile, synth_config, train_config

PHOTO_SEED = 1  # the generator's seed for the stand-in photographs: not the data set's (0)
SIZES = {"paper": (25, 50, 100), "quick": (4, 8)}  # labelled images per point of the curve
TEST_SIZE = {"paper": 100, "quick": 8}  # the set's own test and background images


def photo_set(profile: Profile | str, progress: bool = False) -> Path:
    """A labelled set of the held-out surface family as a user would bring it: train.json, test.json and
    background.json (COCO) in <profile data>-photos/; regenerated only when the generator changed."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    n_train, n_test = max(SIZES[profile.name]), TEST_SIZE[profile.name]
    cfg = dataclasses.replace(synth_config(profile), seed=PHOTO_SEED, n_train=0, n_test=0, n_background=0,
                              n_shift=n_train + n_test, n_shift_background=n_test)
    root = profile.data.with_name(profile.data.name + "-photos")
    key = fingerprint([dataclasses.asdict(cfg), ensure_data(profile, progress=progress)])
    stamp = root / "FINGERPRINT.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == key:
        return root
    shutil.rmtree(root, ignore_errors=True)
    write_dataset(root / "rendered", cfg, progress=progress)
    cracks = load_records(root / "rendered", "shift")
    write_coco(cracks[:n_train], root / "train.json")
    write_coco(cracks[n_train:], root / "test.json")
    write_coco(load_records(root / "rendered", "shift_background"), root / "background.json")
    stamp.write_text(json.dumps({"key": key}) + "\n")
    return root


def label_curve(profile: Profile | str = "paper", variant: str = "modified_aff", seed: int = 0,
                progress: bool = True) -> dict:
    """AP07 and clean backgrounds on the photo set after training on N labelled images, from scratch and
    fine-tuned (§IV-B); written to results/metrics/labels-{variant}-seed{seed}.json, kept while its inputs stay."""
    profile = get_profile(profile) if isinstance(profile, str) else profile
    parent = ensure_trained(profile, variant, seed, progress)
    photos = photo_set(profile, progress=progress)
    out = profile.results_dir("metrics") / f"labels-{variant}-seed{seed}.json"
    runs = profile.runs / "labels"
    known = json.loads(out.read_text()) if out.exists() else {}
    stamp = json.loads((photos / "FINGERPRINT.json").read_text())["key"]
    if known.get("photos") != stamp or known.get("parent_model") != file_sha256(parent)[:16]:
        known = {}
    known.update({"variant": variant, "seed": seed, "photos": stamp, "parent_model": file_sha256(parent)[:16],
                  "parent": portable_path(parent),
                  "parent_commit": load_checkpoint(parent).get("provenance", {}).get("git_commit")})
    records = load_records(photos, "train")

    def score(ckpt: Path) -> dict:
        m = evaluate(EvalConfig(checkpoint=str(ckpt), data=str(photos), train_split="", shift_split="",
                                shift_background_split="", out="", precision=profile.train.precision), progress=False)
        return {"ap07": m["ap07"], "background": m["background"]["accuracy"], "evaluated": m["provenance"]}

    points = known.setdefault("points", {})
    if "0" not in points:
        points["0"] = {"synthetic model": score(parent)}
    base = train_config(profile, variant, seed)
    for n in SIZES[profile.name]:
        subset = write_coco(records[:n], runs / f"train-{n}.json")
        how = {"scratch": dataclasses.replace(base, data=str(subset)),
               "fine-tuned": dataclasses.replace(base, data=str(subset), init=str(parent), lr=base.lr / 10)}
        for name, cfg in how.items():
            cfg = dataclasses.replace(cfg, out=str(runs / f"{variant}-seed{seed}-{name}-{n}"))
            key = fingerprint({**comparable(recorded_config(cfg)), "photos": stamp, "parent": known["parent_model"]})
            if points.get(str(n), {}).get(name, {}).get("key") == key:
                continue
            run_stamp = Path(cfg.out) / "LABELS_KEY"
            if not run_stamp.exists() or run_stamp.read_text() != key:  # another parent or set: never resume it
                shutil.rmtree(cfg.out, ignore_errors=True)
                Path(cfg.out).mkdir(parents=True)
                run_stamp.write_text(key)
            ckpt = train(cfg, resume=True, progress=progress) / "model.pt"
            points.setdefault(str(n), {})[name] = {**score(ckpt), "key": key, "epochs": cfg.epochs, "lr": cfg.lr,
                                                   "checkpoint": portable_path(ckpt),
                                                   "trained": load_checkpoint(ckpt)["provenance"]}
            save_json(out, known)
    save_json(out, known)
    return json.loads(out.read_text())


def curve_table(result: dict):
    """The label curve as a table: AP07 and clean backgrounds per number of labelled images, both ways."""
    rows = {int(n): {f"{how} {what}": p[how][key] for how in ("scratch", "fine-tuned") if how in p
                     for what, key in (("AP07", "ap07"), ("clean %", "background"))}
            for n, p in result["points"].items() if n != "0"}
    return pd.DataFrame(rows).T.sort_index().rename_axis("labelled images")
