"""`make bench` parts on tiny inputs: what each reports, hand-computed FLOPs, the README update, the tables.

Speeds are never asserted (they depend on the machine); only that they were measured and are consistent.
"""
import json

import numpy as np
import pytest
import torch
from torch import nn

from crackcore.cli import main, write_readme
from crackcore.inference.route import RouteUnavailable
from crackcore.inference.routes import ROUTES
from crackcore.measure.bench import BenchConfig, bench, host_row, record_host
from crackcore.measure.bench_tables import bench_tables
from crackcore.measure.conv_limit import conv_gflops, conv_inputs, inference_limit_fps
from crackcore.models import build_model, model_stats


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "aff"
    assert main(["train", "--variant", "modified_aff", "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
                 "--batch-size", "4", "--precision", "fp32"]) == 0
    return out / "model.pt"


def test_conv_gflops_by_hand():
    # 3→8 channels, 3×3, padding 1 on a 10×10 image, batch 2: 2·(2·10·10·8)·(3·9) FLOPs
    assert conv_gflops(nn.Conv2d(3, 8, 3, padding=1), torch.Size([2, 3, 10, 10])) == pytest.approx(86400e-9)
    # stride 2 without padding: output 4×4
    assert conv_gflops(nn.Conv2d(3, 8, 3, stride=2), torch.Size([1, 3, 10, 10])) == pytest.approx(2 * 16 * 8 * 27e-9)
    # a 4×4 stride-2 deconv 4→2 channels scatters every one of its 5·5 input pixels through a full kernel
    assert conv_gflops(nn.ConvTranspose2d(4, 2, 4, 2, 1), torch.Size([1, 4, 5, 5])) == pytest.approx(6400e-9)


def test_conv_flops_agree_with_torchs_counter():
    model = build_model("modified").eval()
    convs = conv_inputs(model, torch.rand(1, 3, 80, 80))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m, _ in convs) == 2  # the neck's two deconvs
    ours = sum(conv_gflops(m, s) for m, s in convs)
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
    assert rows["fp32"]["x_fp32"] == 1.0 and rows["int8"]["of_limit"] is None  # no dense int8 limit is measured
    assert rows["fold_bn"]["of_limit"] == pytest.approx(rows["fold_bn"]["fps_batch1"] / res["limits_fps"]["fp32"])
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
    with pytest.raises(ValueError, match="holds 24 images"):  # tiny_data: 8 + 4 + 4 and 4 + 4 of the held-out family
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


def md_rows(md: str) -> list[list[str]]:
    """The cells of every markdown table row: tables are checked by value, not by their padding."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
            if line.startswith("|") and not set(line) <= set("|:- ")]


def test_bench_tables_ratios_and_route_verdicts():
    prov = {"device": "cpu (test)", "cpu_threads": 2, "torch": "2.x", "git_commit": "abcdef1234567"}
    mach = {"date": "2026-12-02", "isa": "avx2+avx512f"}
    t1 = [{"variant": "centernet_r18", "resolution": 384, "downsampling": 4, "fps_batch1": 20.0,
           "fps_batch1_fp32": 10.0,
           "throughput_img_s": 21.0, "precision": "bf16", "route": "fold_bn_cl_bf16", "fps_batch1_route": 25.0,
           "route_of_limit": 0.5, "gflops": 25.0},
          {"variant": "modified_aff", "resolution": 80, "downsampling": 1, "fps_batch1": 35.0, "fps_batch1_fp32": 20.0,
           "throughput_img_s": 40.0, "precision": "bf16", "route": "fold_bn_cl_bf16", "fps_batch1_route": 50.0,
           "route_of_limit": 0.8, "gflops": 20.0}]
    routes = {"variant": "modified_aff", "checkpoint": "c.pt", "fp32_ap07": 50.0, "best": "int8", "test_images": 181,
              "best_without_calibration": "bf16", "auto": "bf16", "limits_fps": {"fp32": 12.5, "bf16": 50.0},
              "rows": [{"route": "fp32", "available": True, "precision": "fp32", "fps_batch1": 10.0, "ap07": 50.0,
                        "keeps_ap": True, "note": "", "x_fp32": 1.0, "of_limit": 0.8},
                       {"route": "int8", "available": True, "precision": "int8", "fps_batch1": 40.0, "ap07": 49.6,
                        "keeps_ap": True, "note": "", "x_fp32": 4.0, "of_limit": None}]}
    predict = [{"route": "int8", "images": 10, "wall_s": 0.5, "images_per_s": 20.0, "images_per_hour": 72000.0,
                "peak_rss_mb": 1000.0}]
    md = bench_tables({"table1": {"result": t1, "provenance": prov, "machine": mach},
                       "routes": {"result": routes, "config": {"ap_tolerance": 0.5}, "provenance": prov},
                       "predict": {"result": predict, "provenance": prov}})
    # 50 / 25 on the route, 35 / 20 eager, 20 / 10 in fp32; FLOPs 25 / 20
    assert "**2.00×** on route fold_bn_cl_bf16, 1.75× eager, 2.00× fp32 eager; their FLOP ratio 1.25" in md
    rows = md_rows(md)
    # fp32 eager 20, bf16 eager 35, route 50 = 2.50× fp32 and 80 % of its limit; the paper's 30 FPS
    assert ["modified_aff", "80 px", "1", "20", "35", "50", "2.50×", "80%", "30"] in rows
    assert ["int8", "int8", "40", "4.00×", "–", "49.6", "-0.4", "yes", ""] in rows
    assert "fp32 12.5 FPS, bf16 50.0 FPS" in md and "AP07 on the 181 test images" in md
    assert "0.50×" in md  # predict's 20 img/s over the int8 route's 40 FPS at batch 1
    assert "Measured 2026-12-02, on cpu (test) [avx2+avx512f], 2 threads" in md and "commit abcdef1234" in md


def test_hosts_table_counts_the_hosts_that_meet_real_time():
    hosts = [{"date": "2026-11-25", "cpu": "A", "isa": "avx512_bf16", "threads": 2, "route": "r", "fps_route": 36.0,
              "fps_fp32": 18.0, "route_of_limit": 0.9, "source": "s"},
             {"date": "2026-11-26", "cpu": "A", "isa": "avx512_bf16", "threads": 2, "route": "r", "fps_route": 18.0,
              "fps_fp32": 9.0, "source": "s"},
             {"date": "2026-11-27", "cpu": "B", "isa": "avx2", "threads": 2, "route": "r", "fps_route": 6.0,
              "source": "s"}]
    md = bench_tables({}, hosts)
    verdict = ("**1 of 3 hosts** measured met 30 FPS on the default route; the others reached 6.0–18.0 FPS "
               "(20–60 % of 30).")
    assert verdict in md
    rows = md_rows(md)
    assert ["2026-11-25", "A", "avx512_bf16", "2", "r", "36.0", "18.0", "2.00×", "90%", "yes", "s"] in rows
    assert ["2026-11-27", "B", "avx2", "2", "r", "6.0", "–", "–", "–", "no", "s"] in rows
    one_slow = bench_tables({}, hosts[:1] + hosts[2:])
    assert "**1 of 2 hosts** measured met 30 FPS on the default route; the others reached 6.0 FPS (20 % of 30)." \
        in one_slow


def test_host_row_prefers_the_trained_routes_and_is_replaced_per_host(tmp_path):
    t1 = {"variant": "modified_aff", "route": "fold_bn", "fps_batch1_route": 10.0, "fps_batch1_fp32": 8.0,
          "route_of_limit": 0.5}
    routes = {"auto": "fold_bn", "rows": [{"route": "fp32", "available": True, "fps_batch1": 7.0, "of_limit": 0.4},
                                          {"route": "fold_bn", "available": True, "fps_batch1": 9.0, "of_limit": 0.6},
                                          {"route": "onnx", "available": False, "reason": "x"}]}
    cpu = torch.device("cpu")
    assert host_row({}, cpu) is None
    row = host_row({"table1": {"result": [t1]}}, cpu)
    assert (row["fps_route"], row["fps_fp32"], row["meets_real_time"]) == (10.0, 8.0, False)
    row = host_row({"table1": {"result": [t1]}, "routes": {"result": routes}}, cpu)
    assert (row["fps_route"], row["fps_fp32"], row["route_of_limit"]) == (9.0, 7.0, 0.6)
    path = tmp_path / "hosts.json"
    record_host(path, {"cpu": "old", "source": "notes", "fps_route": 1.0})
    record_host(path, row)
    assert len(record_host(path, {**row, "fps_route": 11.0})) == 2  # the same host and commit: replaced, not added
    assert json.loads(path.read_text())[-1]["fps_route"] == 11.0


def test_inference_limit_is_a_positive_rate_at_the_models_input():
    model = build_model("modified").eval()
    fps = inference_limit_fps(model, "fp32", runs=1)
    assert 0 < fps < float("inf") and not model.training


def test_cli_bench_prints_the_summary(tmp_path, capsys):
    assert main(["bench", "--parts", "table1", "--variants", "modified", "--runs", "2", "--warmup", "1",
                 "--batch-size", "2", "--precision", "fp32", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "table1.json").read_text())["result"][0]
    assert row["variant"] == "modified" and row["resolution"] == 80 and row["downsampling"] == 1
    assert row["fps_batch1"] > 0 and row["params"] > 1e6 and row["gflops"] > 1
    assert row["route"] == "fold_bn" and row["fps_batch1_route"] > 0  # fp32 asked: the exact folded route
    assert row["fps_batch1_fp32"] == row["fps_batch1"]  # fp32 asked: eager is the fp32 reference itself
    assert row["route_of_limit"] == pytest.approx(row["fps_batch1_route"] / row["limit_fps"])
    assert "**Table I speed**" in capsys.readouterr().out
