"""Tables I and II beside the paper's numbers, threshold sweeps and per-image error counts for galleries."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.synth_files import image_index
from ..decode import WIDE_POOL
from ..engine.evaluate import wide_pool_key
from ..metrics import box_iou, match
from ..paper import PAPER_TABLE1, PAPER_TABLE2

WIDE = f"{WIDE_POOL} × {WIDE_POOL}"  # the stride-1 peak window's name in table headers


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


# Two-sided 95 % quantiles of Student's t for 1..10 degrees of freedom (any statistics table): n seeds give n − 1.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)
# Table I's two claims as paired differences: the stride-1 network at 80 px over CenterNet, and AFF over no AFF.
PAIRS = (("modified", "centernet_r18"), ("modified_aff", "modified"))


def _spread(x) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; NaN for one value)."""
    x = np.asarray(x, dtype=float)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else float("nan")


def seed_table(runs: dict[str, dict[int, dict]]) -> pd.DataFrame:
    """Tables I and II over seeds: each seed's AP07 and clean share (% of backgrounds without a box), mean ± sd."""
    rows = {}
    for v, by_seed in runs.items():
        seeds = sorted(by_seed)
        ap = [by_seed[s]["ap07"] for s in seeds]
        clean = [by_seed[s]["background"]["accuracy"] for s in seeds]
        nms = [by_seed[s]["diagnosis"]["test"]["ap07_box_nms_0.5"] for s in seeds]
        # §IV-C's decoder with the wide window (stride-1 variants; NaN where not measured)
        wide = [by_seed[s]["diagnosis"].get(wide_pool_key("test"), {}).get("ap07", np.nan) for s in seeds]
        (ap_m, ap_sd), (cl_m, cl_sd), (nms_m, nms_sd) = _spread(ap), _spread(clean), _spread(nms)
        wide_m, wide_sd = _spread(wide)
        rows[v] = {"seeds": " ".join(map(str, seeds)), "AP07 per seed": " / ".join(f"{x:.1f}" for x in ap),
                   "AP07 mean": ap_m, "AP07 sd": ap_sd, "paper AP": PAPER_TABLE1[v]["ap"],
                   "box NMS 0.5 AP07 mean": nms_m, "box NMS 0.5 AP07 sd": nms_sd,
                   f"{WIDE} window AP07 mean": wide_m, f"{WIDE} window AP07 sd": wide_sd,
                   "clean % per seed": " / ".join(f"{x:.1f}" for x in clean), "clean % mean": cl_m,
                   "clean % sd": cl_sd, "paper clean %": PAPER_TABLE2["accuracy"] if v == "modified_aff" else np.nan}
    return pd.DataFrame(rows).T


def paired_differences(runs: dict[str, dict[int, dict]], key: str = "ap07") -> pd.DataFrame:
    """Table I's gaps paired by seed (the same seed's two runs): each seed's difference, mean, sd and 95 % t interval.

    `key` is "ap07" or "clean" (Table II's share). A gap holds beyond seed noise when its interval excludes zero; the
    interval needs 2 to 11 seeds (the t table's range) and is NaN otherwise.
    """
    value = (lambda m: m["ap07"]) if key == "ap07" else (lambda m: m["background"]["accuracy"])
    rows = {}
    for a, b in PAIRS:
        seeds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
        if not seeds:
            continue
        d = [value(runs[a][s]) - value(runs[b][s]) for s in seeds]
        mean, sd = _spread(d)
        half = T95[len(d) - 2] * sd / np.sqrt(len(d)) if 2 <= len(d) <= len(T95) + 1 else np.nan
        paper = PAPER_TABLE1[a]["ap"] - PAPER_TABLE1[b]["ap"] if key == "ap07" else np.nan
        rows[f"{a} − {b}"] = {"seeds": " ".join(map(str, seeds)), "per seed": " / ".join(f"{x:+.1f}" for x in d),
                              "mean": mean, "sd": sd, "95% low": mean - half, "95% high": mean + half,
                              "paper": paper, "beyond seed noise": bool(abs(mean) > half) if np.isfinite(half) else None}
    return pd.DataFrame(rows).T


def table2(background: dict) -> pd.DataFrame:
    """Table II: background-only images with no box ("TP" in the paper), with a box ("FN"), accuracy in %."""
    ours = {k: background[k] for k in ("images", "no_box", "with_box")}
    ours["accuracy"] = round(background["accuracy"], 2)
    return pd.DataFrame({"paper": PAPER_TABLE2, "ours": ours}).T


def background_causes(max_scores, files, images: pd.DataFrame, threshold: float = 0.1,
                      negatives=("scratch", "seam", "edge", "joint", "stain", "fibre", "specular", "pinholes", "blobs",
                                 "dust")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table II split by what each synthetic background shows: (clean % per surface family, clean % with and without
    each hard negative). `images` is `data_stats.image_frame` of the background split; rows meet by file index."""
    index = [image_index(f) for f in files]
    df = images.set_index("index").loc[index].assign(clean=np.asarray(max_scores, float) < threshold)
    family = df.groupby("family")["clean"].agg(images="size", clean_pct=lambda c: 100 * c.mean())
    rows = {}
    for k in negatives:
        has = df[k].astype(float) > 0
        rows[k] = {"images with": int(has.sum()), "clean % with": 100 * df["clean"][has].mean(),
                   "clean % without": 100 * df["clean"][~has].mean()}
    return family.rename(columns={"clean_pct": "clean %"}), pd.DataFrame(rows).T.astype({"images with": int})


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


def crack_recall(per_image: list[dict], cracks: pd.DataFrame, threshold: float = 0.1,
                 iou_threshold: float = 0.5) -> pd.DataFrame:
    """Each test crack of `cracks` (`data_stats.crack_frame` of the split) with whether any box of `per_image` (an
    `evaluate` metrics file's test detections) scoring ≥ `threshold` covers it at IoU > `iou_threshold` (§V-A), and
    the best such score: which cracks a detector finds, to group by the generator's attributes."""
    by_file = {image_index(img["file"]): img for img in per_image}
    rows = []
    for index, group in cracks.groupby("index", sort=True):
        if index not in by_file:
            raise ValueError(f"image {index} of the crack table has no detections in per_image")
        img = by_file[index]
        gt = np.asarray(img["gt"], float).reshape(-1, 4)
        truth = group.sort_values("crack")[["x1", "y1", "x2", "y2"]].to_numpy(float)
        if gt.shape != truth.shape or not np.allclose(gt, truth, atol=1e-3):
            raise ValueError(f"image {index}: the metrics' ground truth is not the crack table's; other data?")
        scores = np.asarray(img["scores"], float)
        boxes = np.asarray(img["boxes"], float).reshape(-1, 4)[scores >= threshold]
        iou = box_iou(boxes, gt) if len(boxes) else np.zeros((0, len(gt)))  # (N, M)
        hit = iou > iou_threshold
        for j, crack in enumerate(group.sort_values("crack").to_dict("records")):  # any column name, spaces too
            rows.append({**crack, "found": bool(hit[:, j].any()),
                         "best_iou": float(iou[:, j].max()) if len(iou) else 0.0,
                         "score": float(scores[scores >= threshold][hit[:, j]].max()) if hit[:, j].any() else 0.0})
    return pd.DataFrame(rows)


def recall_table(found: pd.DataFrame, by: str, bins=None) -> pd.DataFrame:
    """Share of cracks found (%) and the median score of a found one, grouped by one attribute (binned by `bins`)."""
    key = pd.cut(found[by], bins) if bins is not None else found[by]
    g = found.assign(score_found=found["score"].where(found["found"])).groupby(key, observed=True)
    return pd.DataFrame({"cracks": g.size(), "found %": 100 * g["found"].mean(),
                         "median score when found": g["score_found"].median()})


def found_over_seeds(found: dict[tuple[str, int], pd.DataFrame], by: str, bins=None) -> pd.DataFrame:
    """Per variant, the share of test cracks found (%) grouped by one attribute: mean and sd over the seeds of
    `found` ({(variant, seed): crack_recall(...)}; every run scored on the same test split)."""
    per_run = pd.DataFrame({k: recall_table(f, by, bins)["found %"] for k, f in found.items()})  # (bins, runs)
    out = {"cracks": recall_table(next(iter(found.values())), by, bins)["cracks"]}
    for v in dict.fromkeys(k[0] for k in found):
        runs = per_run[[k for k in found if k[0] == v]]
        out[f"{v} found %"] = runs.mean(axis=1)
        out[f"{v} sd"] = runs.std(axis=1, ddof=1) if runs.shape[1] > 1 else np.nan
    return pd.DataFrame(out)


def write_table(df: pd.DataFrame, folder: str | Path, name: str) -> Path:
    """Write a table as `name`.md (for the README) and `name`.csv (for machines)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / f"{name}.csv")
    (folder / f"{name}.md").write_text(df.to_markdown() + "\n")
    return folder / f"{name}.md"


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


def seed_diagnosis(runs: dict[str, dict[int, dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Where AP goes over seeds: each diagnosis column's mean and sample sd per variant (sd NaN for one seed)."""
    per_variant = {v: diagnosis_table({s: runs[v][s] for s in sorted(runs[v])}) for v in runs}  # rows: seeds
    mean = pd.DataFrame({v: t.astype(float).mean() for v, t in per_variant.items()}).T
    sd = pd.DataFrame({v: t.astype(float).std(ddof=1) for v, t in per_variant.items()}).T
    return mean, sd


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


# diagnosis_table's columns that the budget table shows, in the waterfall's order
BUDGET_WATERFALL = {"ap07_box_nms_0.5": "after box NMS 0.5", "ap07_one_per_crack": "one peak per crack",
                    "ap07_one_per_crack_true_wh": "+ true sizes", "ap07_one_per_crack_true_box": "+ true boxes",
                    "fp_on_crack": "FPs on cracks", "fp_off_crack": "FPs off cracks", "size_iou_median": "size IoU"}


def budget_table(budget: dict, pixels: str | None = None) -> pd.DataFrame:
    """AP07 on test and train and Table II's clean share after each epoch budget (§IV-B's 25 and longer).

    Beside them, the test split's waterfall from `engine.diagnose` (box NMS, the wide peak window, one peak per
    crack, then the true sizes and boxes at those peaks): does a longer budget remove duplicates or find more cracks?
    With `pixels` (the data's hash, `ensure_data`), a column says which budgets were measured on those data: a curve
    committed before a generator change stays readable but must not pass for today's.
    """
    diag = diagnosis_table({int(e): b for e, b in budget["budgets"].items() if "test" in b.get("diagnosis", {})})
    rows = {}
    for e, b in budget["budgets"].items():
        test = diag.loc[int(e)] if int(e) in diag.index else {}  # NaN where a budget predates the diagnosis
        wide = b.get("diagnosis", {}).get(wide_pool_key("test"), {})
        rows[int(e)] = {"lr drop after epoch": b["lr_drop_epoch"], "test AP07": b["ap07_test"],
                        f"{WIDE} window": wide.get("ap07", np.nan), "train AP07": b["ap07_train"],
                        "backgrounds clean %": b["background"],
                        **{name: test.get(key, np.nan) for key, name in BUDGET_WATERFALL.items()},
                        "trained on": f"{b['trained'].get('device')} ({b['trained'].get('precision')})",
                        "evaluated on": f"{b['evaluated'].get('device')} ({b['evaluated'].get('precision')})",
                        **({"on these data": b["key"].get("data") == pixels} if pixels is not None else {})}
    return pd.DataFrame(rows).T.sort_index().rename_axis("epochs")


def _val_row(r: dict) -> dict:
    """The columns of one fit/validation run (`study.ceiling`, `study.readings`): validation AP07 under §IV-C's decoder,
    with the wide window, its waterfall, fit AP07, Table II's clean share where measured, and where it trained."""
    d, wide = r["val"], r.get("val_pool", {}).get(str(WIDE_POOL), {})
    return {"val AP07": d["ap07"], f"{WIDE} window": wide.get("ap07", np.nan),
            **{label: d.get(key, np.nan) for key, label in BUDGET_WATERFALL.items()}, "fit AP07": r["fit"]["ap07"],
            "backgrounds clean %": r["background"]["accuracy"] if "background" in r else np.nan,
            "trained on": f"{r['provenance'].get('device')} ({r['provenance'].get('precision')})"}


def ceiling_table(ceiling: dict, default: dict, pixels: str | None = None) -> pd.DataFrame:
    """The ceiling run (`study.ceiling`: §IV-B's protocol on the easiest data) beside a validation-split run of the
    same variant, seed, split sizes and protocol on the default data: validation AP07 under §IV-C's decoder, its
    waterfall (`engine.diagnose`), AP07 on the fit split and Table II's clean share. With `pixels` (`ensure_data`'s
    hash of today's default data), the `data` column says whether the default row was measured on them."""
    rows = {}
    for name, r in (("default data", default), ("easiest data", ceiling)):
        today = "" if pixels is None or name == "easiest data" else (
            " (today's)" if r["key"].get("data") == pixels else " (an earlier generator)")
        rows[name] = {"data": name.split()[0] + today, **_val_row(r)}
    return pd.DataFrame(rows).T


def start_table(runs: dict[str, dict]) -> pd.DataFrame:
    """Runs on the default data's fit split by start and budget (`study.ceiling.synthetic_start` and the from-scratch
    neck reading): what a pretrained backbone is worth under §IV-B's optimiser, scored on the validation split."""
    rows = {name: {"start": "pretrained stages" if r["key"].get("imagenet") else "from scratch",
                   "epochs": r["key"]["epochs"], **_val_row(r)} for name, r in runs.items()}
    return pd.DataFrame(rows).T
