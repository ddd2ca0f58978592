"""The `crackcore` command line end to end on tiny data, its error handling, tiled prediction and torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from crackcore.cli import main
from crackcore.data.annotations import load_records
from crackcore.decode import DecodeConfig
from crackcore.inference.predict import PredictConfig, predict_image, predict_images
from crackcore.inference.routes import build_route

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "modified"
    assert main(["train", "--variant", "modified", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
                 "--batch-size", "4", "--precision", "fp32", "--seed", "1"]) == 0
    return out


def test_train_writes_every_output(trained):
    for name in ("last.pt", "model.pt", "history.jsonl", "config.json"):
        assert (trained / name).is_file(), name
    h = [json.loads(l) for l in (trained / "history.jsonl").read_text().splitlines()]
    assert len(h) == 1 and {"loss", "cls", "wh", "lr", "seconds", "images_per_s"} <= set(h[0])


def test_evaluate_writes_metrics(trained, tiny_data, tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(trained / "model.pt"), "--data", str(tiny_data), "--out", str(out),
                 "--precision", "fp32"]) == 0
    m = json.loads(out.read_text())
    assert 0 <= m["ap07"] <= 100 and 0 <= m["ap_all"] <= 100 and m["n_images"] == 4 and m["n_gt"] >= 4
    bg = m["background"]
    assert bg["images"] == 4 and bg["no_box"] + bg["with_box"] == 4
    assert bg["accuracy"] == pytest.approx(100 * bg["no_box"] / 4)
    assert len(m["background_max_scores"]) == 4 and len(m["per_image"]) == 4
    assert m["provenance"]["precision"] == "fp32" and "torch" in m["provenance"]
    assert "AP07" in capsys.readouterr().out
    # the held-out surface family, beside the main split: 4 crack images, 4 backgrounds in tiny_data
    assert 0 <= m["shift"]["ap07"] <= 100 and m["shift"]["n_images"] == 4 and m["shift"]["background"]["images"] == 4
    single = tmp_path / "single.json"  # a user's single COCO file has no shift splits: skipped, and said so
    assert main(["evaluate", "--checkpoint", str(trained / "model.pt"), "--data", str(tiny_data / "test.json"),
                 "--background-split", "", "--train-split", "", "--out", str(single), "--precision", "fp32"]) == 0
    assert set(json.loads(single.read_text())["shift"]) == {"ap_skipped", "background_skipped"}
    # a stride-1 model is also decoded with the wide window: the same AP as evaluating with --pool 9 itself
    wide = tmp_path / "wide.json"
    assert main(["evaluate", "--checkpoint", str(trained / "model.pt"), "--data", str(tiny_data), "--out", str(wide),
                 "--precision", "fp32", "--pool", "9", "--background-split", "", "--train-split", ""]) == 0
    w = json.loads(wide.read_text())
    assert m["diagnosis"]["test_pool9"]["ap07"] == pytest.approx(w["ap07"], abs=1e-9)
    assert set(w["diagnosis"]) == {"test"}  # already the wide window: not decoded twice


def test_evaluate_forwards_each_image_once_and_diagnoses_as_a_separate_pass(trained, tiny_data, monkeypatch):
    from crackcore.engine import diagnose
    from crackcore.engine.evaluate import EvalConfig, evaluate
    from crackcore.storage import load_model

    seen, real = [], diagnose._forward

    def counting(model, records, *args, **kwargs):
        seen.extend(str(r.path) for r in records)
        return real(model, records, *args, **kwargs)
    monkeypatch.setattr(diagnose, "_forward", counting)
    every = DecodeConfig(threshold=0.0)  # every image keeps its top 20 peaks, so the AP below are not trivially 0
    m = evaluate(EvalConfig(checkpoint=str(trained / "model.pt"), data=str(tiny_data), out="", precision="fp32",
                            decoding=every), progress=False)
    # test, train, background, shift and shift background of tiny_data: every image forwarded exactly once
    assert len(seen) == len(set(seen)) == 4 + 8 + 4 + 4 + 4
    monkeypatch.setattr(diagnose, "_forward", real)
    model, _ = load_model(trained / "model.pt")
    test = load_records(tiny_data, "test")
    assert m["n_det"] == 4 * 20 and m["diagnosis"]["test"]["ap07"] == pytest.approx(m["ap07"], abs=1e-9)
    assert m["diagnosis"]["test"] == pytest.approx(diagnose.decompose(model, test, decoding=every), nan_ok=True)
    assert m["diagnosis"]["test_pool9"] == pytest.approx(
        diagnose.decompose(model, test, decoding=DecodeConfig(threshold=0.0, pool=9)), nan_ok=True)


def test_predict_writes_json_csv_and_pngs(trained, tiny_data, tmp_path, capsys):
    out = tmp_path / "pred"
    folder = tiny_data / "images" / "test"
    assert main(["predict", str(folder), "--checkpoint", str(trained / "model.pt"), "--out", str(out),
                 "--precision", "fp32", "--threshold", "0.01"]) == 0
    res = json.loads((out / "predictions.json").read_text())
    assert len(res["images"]) == 4 and res["variant"] == "modified"
    assert res["route"] == "fold_bn" and "(route fold_bn)" in capsys.readouterr().out  # auto, fp32: says what ran
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file,x1,y1,x2,y2,score" and len(rows) - 1 == sum(map(len, res["images"].values()))
    assert len(list((out / "annotated").glob("*.png"))) == 4


def test_predict_int8_route_calibrates_on_the_inputs(trained, tiny_data, tmp_path):
    out = tmp_path / "pred8"
    assert main(["predict", str(tiny_data / "images" / "test"), "--checkpoint", str(trained / "model.pt"),
                 "--out", str(out), "--route", "int8", "--calib", "4", "--no-annotate", "--threshold", "0.01"]) == 0
    res = json.loads((out / "predictions.json").read_text())
    assert res["route"] == "int8" and res["precision"] == "int8" and len(res["images"]) == 4


def test_predict_unknown_route_is_a_usage_error(trained, tiny_data, tmp_path, capsys):
    assert main(["predict", str(tiny_data / "images" / "test"), "--checkpoint", str(trained / "model.pt"),
                 "--out", str(tmp_path / "p"), "--route", "warp9"]) == 2
    assert "unknown route 'warp9'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [
    (["evaluate", "--checkpoint", "nope.pt"], "checkpoint not found"),
    (["predict", "missing.png", "--checkpoint", "x.pt"], "no such file or folder"),
    (["train", "--data", "/nonexistent/data", "--out", "{tmp}/r"], "/nonexistent/data"),
    (["train", "--variant", "resnet50", "--out", "{tmp}/r"], "unknown variant"),
    (["evaluate", "--checkpoint", "{tmp}/junk.pt"], "not a readable crackcore checkpoint"),
    (["train", "--init", "{tmp}/none.pt", "--out", "{tmp}/r"], "--init checkpoint not found"),
    (["train", "--init", "{tmp}/junk.pt", "--out", "{tmp}/r"], "not a readable crackcore checkpoint"),
    (["train", "--init", "{tmp}/junk.pt", "--imagenet", "r18.pth", "--out", "{tmp}/r"], "two starting points"),
])
def test_user_errors_exit_2_with_one_line(argv, msg, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_wrong_variant_checkpoint_exit_2(trained, tiny_data, capsys):
    assert main(["train", "--variant", "modified_aff", "--data", str(tiny_data), "--out", str(trained),
                 "--resume", "--epochs", "1", "--batch-size", "4", "--precision", "fp32", "--seed", "1"]) == 2
    assert "holds a 'modified' model, not 'modified_aff'" in capsys.readouterr().err


def test_init_of_another_variant_exit_2_before_reading_data(trained, tmp_path, capsys):
    assert main(["train", "--variant", "modified_aff", "--init", str(trained / "model.pt"), "--data",
                 str(tmp_path / "no_data"), "--out", str(tmp_path / "ft")]) == 2
    err = capsys.readouterr().err
    assert "holds a 'modified' model, not a 'modified_aff' one (--variant)" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "ft").exists()


def test_tuple_knobs_are_flags(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synth", "--out", str(out), "--n-train", "2", "--n-test", "1", "--n-background", "1", "--n-shift", "1",
                 "--n-shift-background", "0", "--contrast", "0.1,0.4", "--jpeg-quality", "80,90"]) == 0
    card = (out / "DATACARD.md").read_text()
    assert "| `contrast` | `(0.1, 0.4)` |" in card and "| `jpeg_quality` | `(80, 90)` |" in card  # int stays int
    with pytest.raises(SystemExit) as e:
        main(["synth", "--out", str(out), "--contrast", "0.1"])
    assert e.value.code == 2 and "expected 2 comma-separated numbers" in capsys.readouterr().err


def test_nested_decoder_flags_build_the_decode_config(capsys):
    from crackcore.cli import build_parser, config_from_args
    from crackcore.engine.evaluate import EvalConfig
    from crackcore.inference.predict import PredictConfig
    args = build_parser().parse_args(["evaluate", "--k", "5", "--nms-iou", "0.5", "--split", "val"])
    cfg = config_from_args(EvalConfig, args)
    assert cfg.decoding == DecodeConfig(k=5, threshold=0.1, nms_iou=0.5) and cfg.split == "val"
    args = build_parser().parse_args(["predict", "x.png", "--threshold", "0.3"])
    assert config_from_args(PredictConfig, args).decoding == DecodeConfig(threshold=0.3)
    assert main(["predict", "x.png", "--threshold", "1.5"]) == 2  # checked before any file is read
    assert "threshold is a probability" in capsys.readouterr().err


def test_nested_training_flags_build_the_augmentation_label_and_loss_configs():
    from crackcore.cli import build_parser, config_from_args
    from crackcore.data.transforms import AugmentConfig
    from crackcore.engine.config import TrainConfig
    from crackcore.labels import LabelConfig
    from crackcore.losses import LossConfig
    args = build_parser().parse_args(["train", "--no-augment", "--crop-scale", "0.5,0.9", "--alpha", "3",
                                      "--wh-weight", "0.2", "--epochs", "7", "--radius-rule", "released"])
    cfg = config_from_args(TrainConfig, args)
    assert cfg.augmentation == AugmentConfig(augment=False, crop_scale=(0.5, 0.9))
    assert cfg.loss == LossConfig(alpha=3.0, wh_weight=0.2) and cfg.epochs == 7
    assert cfg.labels == LabelConfig(radius_rule="released")
    assert config_from_args(TrainConfig, build_parser().parse_args(["train"])) == TrainConfig()


def test_bad_flag_value_exits_2():
    with pytest.raises(SystemExit) as e:
        main(["train", "--epochs", "many"])
    assert e.value.code == 2


def test_help_shows_defaults_via_python_m():
    r = subprocess.run([sys.executable, "-m", "crackcore", "train", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and "--lr-drop-epoch" in r.stdout and "(default: 20)" in r.stdout


class DarkSpotDetector(nn.Module):
    """A stand-in detector with known behaviour: its heatmap peaks on the darkest 9×9 neighbourhood."""

    variant, stride, input_size = "modified", 1, 80

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        dark = 1 - nn.functional.avg_pool2d(x.mean(1, keepdim=True), 9, 1, 4, count_include_pad=False)  # (B, 1, H, W)
        logits = (dark - 0.5) * 40
        return {"hm": logits, "wh": torch.full_like(x[:, :2], 12.0)}


def test_predict_large_image_finds_planted_crack_in_image_coordinates():
    img = np.full((250, 333, 3), 230, np.uint8)
    img[141:147, 200:212] = 40  # planted dark streak centred at (206, 144), across a tile seam
    route = build_route("fp32", DarkSpotDetector())
    det = predict_image(route, img, PredictConfig(decoding=DecodeConfig(threshold=0.5)))
    assert len(det["boxes"]) == 1  # duplicates from overlapping tiles merged
    x1, y1, x2, y2 = det["boxes"][0].tolist()
    assert abs((x1 + x2) / 2 - 206) <= 1 and abs((y1 + y2) / 2 - 144) <= 1
    small = np.full((40, 50, 3), 230, np.uint8)
    small[10:16, 28:36] = 30
    d = predict_image(route, small, PredictConfig(decoding=DecodeConfig(threshold=0.5)))
    assert len(d["boxes"]) >= 1 and d["boxes"][:, 0::2].max() <= 50 and d["boxes"][:, 1::2].max() <= 40
    centres = (d["boxes"][:, :2] + d["boxes"][:, 2:]) / 2  # one tile: the paper's decoder, no merging
    assert ((centres - torch.tensor([32.0, 13.0])).abs() <= 4).all()


def test_predict_batches_tiles_across_images_without_mixing_them():
    route = build_route("fp32", DarkSpotDetector())
    images = []
    for i in range(5):  # 80×80 patches (one tile each) and one 200×120 photo (several tiles)
        img = np.full((200, 120, 3) if i == 2 else (80, 80, 3), 230, np.uint8)
        img[10 + 10 * i:16 + 10 * i, 40:48] = 30  # each image's streak in its own place
        images.append(img)
    cfg = PredictConfig(decoding=DecodeConfig(threshold=0.5), batch_size=3)
    batched = list(predict_images(route, images, cfg))
    assert [i for i, _, _ in batched] == list(range(5))
    for (i, _, det), img in zip(batched, images):
        alone = predict_image(route, img, cfg)
        assert torch.equal(det["boxes"], alone["boxes"]) and torch.equal(det["scores"], alone["scores"])
        centre = (det["boxes"][0, :2] + det["boxes"][0, 2:]) / 2
        assert abs(centre[0] - 44) <= 3 and abs(centre[1] - (13 + 10 * i)) <= 3  # the 9×9 detector has plateaus


def test_torchrun_two_cpu_processes(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "crackcore", "train", "--variant", "modified", "--data", str(tiny_data), "--out",
                        str(out), "--epochs", "1", "--limit", "8", "--batch-size", "4", "--precision", "fp32"],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["config"]["batch_size"] == 4  # the global batch the user asked for is what is recorded
    assert len((out / "history.jsonl").read_text().splitlines()) == 1


def test_fusion_weights_are_a_softmax_pair_per_pixel(tiny_data):
    from crackcore.engine.evaluate import fusion_weights
    from crackcore.models import build_model

    records = load_records(tiny_data, "test")
    images, ab = fusion_weights(build_model("modified_aff").eval(), records, batch_size=3)
    assert images.shape == (4, 3, 80, 80) and ab.shape == (4, 2, 80, 80)
    torch.testing.assert_close(ab.sum(1), torch.ones(4, 80, 80))  # eq. (4): a + b = 1
    with pytest.raises(ValueError, match="no adaptive feature fusion"):
        fusion_weights(build_model("modified").eval(), records)
