"""`make bench` parts on tiny inputs: what each reports, hand-computed FLOPs, the README update, the tables.

Speeds are never asserted (they depend on the machine); only that they were measured and are consistent.
"""
import json

import numpy as np
import pytest
import torch
from torch import nn

from crackcore.bench import BenchConfig, bench, write_readme
from crackcore.cli import main
from crackcore.fast import ROUTES, RouteUnavailable
from crackcore.limits import _conv_gflops, conv_inputs
from crackcore.models import build_model, model_stats
from crackcore.report import bench_tables


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "aff"
    assert main(["train", "--variant", "modified_aff", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
                 "--batch-size", "4", "--precision", "fp32"]) == 0
    return out / "model.pt"


def test_conv_gflops_by_hand():
    # 3→8 channels, 3×3, padding 1 on a 10×10 image, batch 2: 2·(2·10·10·8)·(3·9) FLOPs
    assert _conv_gflops(nn.Conv2d(3, 8, 3, padding=1), torch.Size([2, 3, 10, 10])) == pytest.approx(86400e-9)
    # stride 2 without padding: output 4×4
    assert _conv_gflops(nn.Conv2d(3, 8, 3, stride=2), torch.Size([1, 3, 10, 10])) == pytest.approx(2 * 16 * 8 * 27e-9)
    # a 4×4 stride-2 deconv 4→2 channels scatters every one of its 5·5 input pixels through a full kernel
    assert _conv_gflops(nn.ConvTranspose2d(4, 2, 4, 2, 1), torch.Size([1, 4, 5, 5])) == pytest.approx(6400e-9)


def test_conv_flops_agree_with_torchs_counter():
    model = build_model("modified").eval()
    convs = conv_inputs(model, torch.rand(1, 3, 80, 80))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m, _ in convs) == 2  # the neck's two deconvs
    ours = sum(_conv_gflops(m, s) for m, s in convs)
    assert ours == pytest.approx(model_stats(model)["gflops"], rel=1e-9)  # FlopCounterMode counts convs (and matmuls)


def test_training_part_reports_the_limit_and_the_data_share(tiny_data, tmp_path):
    cfg = BenchConfig(parts="training", variants="modified", out=str(tmp_path), data=str(tiny_data),
                      precision="fp32", train_steps=1)
    row = bench(cfg)["training"]["result"][0]
    assert row["variant"] == "modified" and row["batch_size"] == 8  # tiny_data: 8 training images, one batch
    assert row["train_img_s"] == pytest.approx(8 / row["step_s"])
    assert row["efficiency"] == pytest.approx(row["conv_limit_s"] / row["step_s"])
    assert 0 < row["data_wait_share_serial"] < 1 and row["loader_img_s"] > 0
    assert (tmp_path / "training.json").is_file() and "conv-limit img/s" in (tmp_path / "summary.md").read_text()


def test_routes_part_scores_each_route_and_picks_one_that_keeps_the_ap(trained, tiny_data, tmp_path, monkeypatch):
    def missing(model, calib_images=None, **_):
        raise RouteUnavailable("needs a warp drive")
    monkeypatch.setitem(ROUTES, "warp", (missing, True))
    cfg = BenchConfig(parts="routes", out=str(tmp_path), data=str(tiny_data), checkpoint=str(trained),
                      routes="fp32,fold_bn,int8,warp", runs=2, warmup=1, calib=4, precision="fp32")
    res = bench(cfg)["routes"]["result"]
    rows = {r["route"]: r for r in res["rows"]}
    assert rows["warp"] == {"route": "warp", "available": False, "reason": "needs a warp drive"}
    assert rows["fp32"]["ap07"] == res["fp32_ap07"] and rows["fp32"]["keeps_ap"]
    assert rows["fold_bn"]["ap07"] == pytest.approx(rows["fp32"]["ap07"], abs=1e-6)  # folding is exact
    assert rows["int8"]["precision"] == "int8" and "4 calibration images" in rows["int8"]["note"]
    assert res["best"] in {n for n, r in rows.items() if r.get("keeps_ap")}
    assert res["auto"] == "fold_bn" and res["best_without_calibration"] in ("fp32", "fold_bn")
    md = (tmp_path / "summary.md").read_text()
    assert "unavailable: needs a warp drive" in md and f"**{res['best']}**" in md


def test_predict_part_runs_the_cli_and_reports_memory(trained, tiny_data, tmp_path):
    cfg = BenchConfig(parts="predict", out="", data=str(tiny_data), checkpoint=str(trained), predict_images=6,
                      precision="fp32")
    ballast = np.ones(250_000_000)  # 2 GB touched here: a child that inherited our high-water mark would show it
    auto, int8 = bench(cfg)["predict"]["result"]
    del ballast
    assert auto["route"] == "fold_bn" and int8["route"] == "int8"
    assert auto["images"] == 6 and auto["images_per_hour"] == pytest.approx(3600 * auto["images_per_s"])
    assert 100 < auto["peak_rss_mb"] < 1_900  # a Python process with torch and one small model, not ours
    with pytest.raises(ValueError, match="holds 16 images"):
        bench(BenchConfig(parts="predict", out="", data=str(tiny_data), checkpoint=str(trained), predict_images=99))


def test_unknown_part_is_an_error():
    with pytest.raises(ValueError, match="unknown bench part"):
        bench(BenchConfig(parts="table1,vibes", out=""))


def test_write_readme_replaces_only_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- bench:start -->\nold table\n<!-- bench:end -->\noutro\n")
    write_readme("| new |", readme)
    assert readme.read_text() == "intro\n<!-- bench:start -->\n| new |\n<!-- bench:end -->\noutro\n"
    (tmp_path / "bare.md").write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        write_readme("x", tmp_path / "bare.md")


def test_bench_tables_ratio_and_route_verdicts():
    prov = {"device": "cpu (test)", "cpu_threads": 2, "torch": "2.x", "git_commit": "abcdef1234567"}
    t1 = [{"variant": "centernet_r18", "resolution": 384, "downsampling": 4, "fps_batch1": 20.0,
           "throughput_img_s": 21.0, "precision": "bf16", "route": "fold_bn_cl_bf16", "fps_batch1_route": 25.0},
          {"variant": "modified_aff", "resolution": 80, "downsampling": 1, "fps_batch1": 35.0,
           "throughput_img_s": 40.0, "precision": "bf16", "route": "fold_bn_cl_bf16", "fps_batch1_route": 50.0}]
    routes = {"variant": "modified_aff", "checkpoint": "c.pt", "fp32_ap07": 50.0, "best": "int8",
              "best_without_calibration": "bf16", "auto": "bf16",
              "rows": [{"route": "fp32", "available": True, "precision": "fp32", "fps_batch1": 10.0, "ap07": 50.0,
                        "keeps_ap": True, "note": ""},
                       {"route": "int8", "available": True, "precision": "int8", "fps_batch1": 40.0, "ap07": 49.6,
                        "keeps_ap": True, "note": ""}]}
    md = bench_tables({"table1": {"result": t1, "provenance": prov},
                       "routes": {"result": routes, "config": {"ap_tolerance": 0.5}, "provenance": prov}})
    assert "**1.75×** eager, 2.00× on route fold_bn_cl_bf16 (paper 30 / 20 = 1.50×)" in md
    assert "| int8    | int8        |              40 |   49.6 |          -0.4 | yes" in md
    assert "commit abcdef1234" in md


def test_cli_bench_prints_the_summary(tmp_path, capsys):
    assert main(["bench", "--parts", "table1", "--variants", "modified", "--runs", "2", "--warmup", "1",
                 "--batch-size", "2", "--precision", "fp32", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "table1.json").read_text())["result"][0]
    assert row["variant"] == "modified" and row["resolution"] == 80 and row["downsampling"] == 1
    assert row["fps_batch1"] > 0 and row["params"] > 1e6 and row["gflops"] > 1
    assert row["route"] == "fold_bn" and row["fps_batch1_route"] > 0  # fp32 asked: the exact folded route
    assert "**Table I speed**" in capsys.readouterr().out
