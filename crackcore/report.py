"""Tables I and II beside the paper's numbers, threshold sweeps and per-image error counts for galleries."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import match

# Table I and Table II of the paper, as printed (volume in "Mb", FPS on a GTX 1060).
PAPER_TABLE1 = {
    "centernet_r18": {"method": "CenterNet [8]", "backbone": "ResNet-18", "resolution": 384, "downsampling": 4,
                      "volume_mb": 75.7, "ap": 94.20, "fps": 20},
    "modified": {"method": "CenterNet", "backbone": "Modified ResNet-18", "resolution": 80, "downsampling": 1,
                 "volume_mb": 34.0, "ap": 95.48, "fps": 33},
    "modified_aff": {"method": "CenterNet + Adaptive Feature Fusion", "backbone": "Modified ResNet-18",
                     "resolution": 80, "downsampling": 1, "volume_mb": 34.3, "ap": 96.16, "fps": 30},
}
PAPER_TABLE2 = {"images": 1523, "no_box": 1492, "with_box": 31, "accuracy": 97.96}


def table1(metrics: dict[str, dict], stats: dict[str, dict], speed: dict[str, dict] | None = None) -> pd.DataFrame:
    """Table I: the paper's row and ours for each variant (AP = VOC2007 11-point, ×100)."""
    rows = []
    for v, paper in PAPER_TABLE1.items():
        if v not in metrics:
            continue
        row = {"variant": v, "method": paper["method"], "resolution": paper["resolution"],
               "downsampling": paper["downsampling"], "paper_volume_mb": paper["volume_mb"],
               "volume_mb": round(stats[v]["volume_mb"], 1), "params_m": round(stats[v]["params"] / 1e6, 2),
               "gflops": round(stats[v]["gflops"], 2), "paper_ap": paper["ap"], "ap07": round(metrics[v]["ap07"], 2),
               "ap_all": round(metrics[v]["ap_all"], 2), "paper_fps": paper["fps"]}
        if speed is not None:
            row["fps"] = round(speed[v]["fps_batch1_route"], 1)  # the default route: stable from run to run
            row["fps_eager"] = round(speed[v]["fps_batch1"], 1)
        rows.append(row)
    return pd.DataFrame(rows).set_index("variant")


def table2(background: dict) -> pd.DataFrame:
    """Table II: background-only images with no box ("TP" in the paper), with a box ("FN"), accuracy in %."""
    ours = {k: background[k] for k in ("images", "no_box", "with_box")}
    ours["accuracy"] = round(background["accuracy"], 2)
    return pd.DataFrame({"paper": PAPER_TABLE2, "ours": ours}).T


def threshold_sweep(max_scores, thresholds=None, pr_curve: dict | None = None) -> pd.DataFrame:
    """Background accuracy (% of images without a box) as the §IV-C score threshold moves; with the test split's
    `pr_curve` (from `evaluate`), also the share of test cracks still found at each threshold (`test_recall`)."""
    s = np.asarray(max_scores, dtype=float)
    t = np.round(np.linspace(0.05, 0.95, 19), 2) if thresholds is None else np.asarray(thresholds, dtype=float)
    sweep = pd.DataFrame({"threshold": t, "accuracy": [100.0 * (s < x).mean() for x in t]})
    if pr_curve is not None:  # recall is cumulative in score order: its value at the last detection ≥ t
        scores, recall = np.asarray(pr_curve["scores"], float), np.asarray(pr_curve["recall"], float)
        sweep["test_recall"] = [float(recall[scores >= x].max()) if (scores >= x).any() else 0.0 for x in t]
    return sweep


def image_errors(pred_boxes, gt_boxes, iou_threshold: float = 0.5) -> tuple[int, int]:
    """(false positives, missed cracks) of one image under §V-A's IoU > 0.5 rule (predictions in score order)."""
    p, g = np.asarray(pred_boxes, float).reshape(-1, 4), np.asarray(gt_boxes, float).reshape(-1, 4)
    hits = int(match(p, g, iou_threshold).sum())
    return len(p) - hits, len(g) - hits


def write_table(df: pd.DataFrame, folder: str | Path, name: str) -> Path:
    """Write a table as `name`.md (for the README) and `name`.csv (for machines)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / f"{name}.csv")
    (folder / f"{name}.md").write_text(df.to_markdown() + "\n")
    return folder / f"{name}.md"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def bench_tables(parts: dict[str, dict], hosts: list[dict] = ()) -> str:
    """Markdown for `make bench`'s results: one table per part present, every speed beside its same-run ratios."""
    out = []
    if "table1" in parts:
        rows = parts["table1"]["result"]
        df = pd.DataFrame([{"variant": r["variant"], "input": f"{r['resolution']} px", "stride": r["downsampling"],
                            "FPS fp32 eager": round(r["fps_batch1_fp32"], 1),
                            f"FPS eager {r['precision']}": round(r["fps_batch1"], 1),
                            f"FPS route {r['route']}": round(r["fps_batch1_route"], 1),
                            "route / fp32": f"{r['fps_batch1_route'] / r['fps_batch1_fp32']:.2f}×",
                            "route / its limit": _pct(r["route_of_limit"]),
                            "paper FPS": PAPER_TABLE1[r["variant"]]["fps"]}
                           for r in rows]).set_index("variant")
        out += ["**Table I speed**, batch 1 end to end (uint8 image → boxes); untrained weights: speed does not "
                "depend on them. *Its limit* = the variant's convolutions alone in the route's precision, same run.",
                "", df.to_markdown(), ""]
        by = {r["variant"]: r for r in rows}
        if {"modified_aff", "centernet_r18"} <= set(by):
            a, b = by["modified_aff"], by["centernet_r18"]
            ratio = a["fps_batch1_route"] / b["fps_batch1_route"]
            out += [f"modified_aff at 80 px / centernet_r18 at 384 px: **{ratio:.2f}×** on route {a['route']}, "
                    f"{a['fps_batch1'] / b['fps_batch1']:.2f}× eager, "
                    f"{a['fps_batch1_fp32'] / b['fps_batch1_fp32']:.2f}× fp32 eager; their FLOP ratio "
                    f"{b['gflops'] / a['gflops']:.2f} (paper 30 / 20 = 1.50×)", ""]
    if "routes" in parts:
        res = parts["routes"]["result"]
        ref = res["fp32_ap07"]
        df = pd.DataFrame([{"route": r["route"], "precision": r["precision"],
                            "FPS (batch 1)": round(r["fps_batch1"], 1), "× fp32": f"{r['x_fp32']:.2f}×",
                            "of its limit": _pct(r["of_limit"]),
                            "AP07": round(r["ap07"], 2), "ΔAP vs fp32": round(r["ap07"] - ref, 2) if ref else None,
                            "keeps AP": "yes" if r["keeps_ap"] else "no", "note": r["note"]}
                           if r["available"] else {"route": r["route"], "note": "unavailable: " + r["reason"]}
                           for r in res["rows"]]).set_index("route")
        limits = ", ".join(f"{p} {v:.1f} FPS" for p, v in res["limits_fps"].items())
        out += [f"**Inference routes** of the trained `{res['variant']}` (`{res['checkpoint']}`), batch 1 end to end "
                f"(uint8 → boxes), AP07 on the {res['test_images']} test images; convolution limits in this run: "
                f"{limits} (int8 has no dense limit measured: its column is –)", "", df.to_markdown(), "",
                f"Fastest route keeping AP07 within {parts['routes']['config']['ap_tolerance']} of fp32: "
                f"**{res['best']}**; fastest without calibration data: **{res['best_without_calibration']}**; "
                f"`crackcore predict` default (`--route auto`) on this machine: **{res['auto']}**.", ""]
    if "training" in parts:
        df = pd.DataFrame([{"variant": r["variant"], "train img/s": round(r["train_img_s"], 1),
                            "conv-limit img/s": round(r["limit_img_s"], 1),
                            "efficiency": f"{100 * r['efficiency']:.0f}%",
                            "GFLOP/s": round(r["achieved_gflop_s"]), "loader img/s": round(r["loader_img_s"], 1),
                            "data wait (serial)": f"{100 * r['data_wait_share_serial']:.1f}%",
                            "data wait (paper run)": (f"{100 * r['paper_run_data_wait_share']:.1f}%"
                                                      if "paper_run_data_wait_share" in r else "–")}
                           for r in parts["training"]["result"]]).set_index("variant")
        out += ["**Training** (batch 16, real data and loss, Adam; limit = the step's convolutions alone, same shapes)",
                "", df.to_markdown(), ""]
    if "predict" in parts:
        batch1 = {r["route"]: r["fps_batch1"] for r in parts.get("routes", {}).get("result", {}).get("rows", [])
                  if r.get("available")}
        df = pd.DataFrame([{"route": r["route"], "images": r["images"], "wall s": round(r["wall_s"], 1),
                            "img/s": round(r["images_per_s"], 1),
                            "/ route's batch-1 FPS": (f"{r['images_per_s'] / batch1[r['route']]:.2f}×"
                                                      if r["route"] in batch1 else "–"),
                            "images/hour": f"{r['images_per_hour']:,.0f}",
                            "peak RSS MB": round(r["peak_rss_mb"])} for r in parts["predict"]["result"]])
        out += ["**`crackcore predict`** on a folder of 80×80 PNGs (fresh process: start-up, model load, reading, "
                "annotated PNGs and JSON/CSV included)", "", df.set_index("route").to_markdown(), ""]
    if hosts:
        out += hosts_table(hosts)
    first = next(iter(parts.values()), {})
    prov, mach = first.get("provenance", {}), first.get("machine", {})
    if prov:
        when = f"{mach['date']}, " if "date" in mach else ""
        isa = f" [{mach['isa']}]" if "isa" in mach else ""
        out += [f"Measured {when}on {prov.get('device')}{isa}, {prov.get('cpu_threads')} threads, "
                f"torch {prov.get('torch')}, commit {str(prov.get('git_commit'))[:10]}.", ""]
    return "\n".join(out)


def hosts_table(hosts: list[dict], bar: float = 30.0) -> list[str]:
    """The default route's batch-1 FPS of `modified_aff` on every host measured, and how many met `bar` FPS."""
    df = pd.DataFrame([{"date": h["date"], "CPU": h["cpu"], "ISA": h["isa"], "threads": h["threads"],
                        "route": h.get("route"), "FPS route": f"{h['fps_route']:.1f}",
                        "FPS fp32": f"{h['fps_fp32']:.1f}" if h.get("fps_fp32") else "–",
                        "route / fp32": f"{h['fps_route'] / h['fps_fp32']:.2f}×" if h.get("fps_fp32") else "–",
                        "route / its limit": _pct(h.get("route_of_limit")),
                        f"≥ {bar:g} FPS": "yes" if h["fps_route"] >= bar else "no", "source": h["source"]}
                       for h in hosts if h.get("fps_route")])
    if df.empty:
        return []
    fps = sorted(h["fps_route"] for h in hosts if h.get("fps_route"))
    slow = [f for f in fps if f < bar]
    span = (lambda a, b, unit="": f"{a}{unit}" if a == b else f"{a}–{b}{unit}")
    verdict = f"**{len(fps) - len(slow)} of {len(fps)} hosts** measured met {bar:g} FPS on the default route"
    if slow:
        verdict += (f"; the others reached {span(f'{slow[0]:.1f}', f'{slow[-1]:.1f}', ' FPS')} "
                    f"({span(f'{100 * slow[0] / bar:.0f}', f'{100 * slow[-1] / bar:.0f}', ' %')} of {bar:g})")
    verdict += "."
    return ["**Hosts** (`results/bench/hosts.json`): `modified_aff`, batch 1 end to end, on the default route of each "
            "host", "", df.set_index("date").to_markdown(disable_numparse=True), "", verdict, ""]


def diagnosis_table(metrics: dict[str, dict], test: str = "test", train: str = "train") -> pd.DataFrame:
    """Where AP goes, per variant: AP07 as measured, with true sizes, with true centres, with one peak per crack (and
    then true sizes, centres, boxes), on train; the size head."""
    rows = {}
    for v, m in metrics.items():
        d, t = m["diagnosis"][test], m["diagnosis"].get(train, {})
        rows[v] = {"ap07": d["ap07"], "ap07_true_wh": d["ap07_true_wh"], "ap07_true_centre": d["ap07_true_centre"],
                   "ap07_one_per_crack": d.get("ap07_one_per_crack", np.nan),
                   **{f"ap07_one_per_crack_{s}": d.get(f"ap07_one_per_crack_{s}", np.nan)
                      for s in ("true_wh", "true_centre", "true_box")},
                   **{c: v for c, v in d.items() if c.startswith("ap07_box_nms_")},
                   "fp_on_crack": d.get("fp_on_crack", np.nan), "fp_off_crack": d.get("fp_off_crack", np.nan),
                   "ap07_train": t.get("ap07", np.nan), "wh_corr_pred": d["wh_corr_pred"],
                   "wh_corr_true": d["wh_corr_true"], "size_iou_median": d["size_iou_median"]}
    return pd.DataFrame(rows).T


def shift_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """Domain shift: AP07 on the test split beside AP07 on the held-out surface family, and both Table IIs."""
    rows = {}
    for v, m in metrics.items():
        sh = m.get("shift", {})
        rows[v] = {"test AP07": m["ap07"], "shift AP07": sh.get("ap07", np.nan),
                   "AP07 drop": m["ap07"] - sh.get("ap07", np.nan),
                   "backgrounds clean %": m.get("background", {}).get("accuracy", np.nan),
                   "shift backgrounds clean %": sh.get("background", {}).get("accuracy", np.nan)}
    return pd.DataFrame(rows).T


def budget_table(budget: dict) -> pd.DataFrame:
    """AP07 on test and train and Table II's clean share after each epoch budget (§IV-B's 25 and longer)."""
    rows = {int(e): {"lr drop after epoch": b["lr_drop_epoch"], "test AP07": b["ap07_test"], "train AP07": b["ap07_train"],
                     "backgrounds clean %": b["background"],
                     "trained on": f"{b['trained'].get('device')} ({b['trained'].get('precision')})",
                     "evaluated on": f"{b['evaluated'].get('device')} ({b['evaluated'].get('precision')})"}
            for e, b in budget["budgets"].items()}
    return pd.DataFrame(rows).T.sort_index().rename_axis("epochs")
