"""Figures the notebooks show: image grids with boxes, loss and PR curves, heatmaps, fusion-weight maps."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

GT_COLOUR, PRED_COLOUR = "#2ca02c", "#d62728"


def draw_boxes(ax, boxes, colour: str, scores=None, lw: float = 1.2) -> None:
    """Outline (N, 4) x1 y1 x2 y2 boxes on an axis (continuous pixel coordinates: imshow's pixel i spans i−½…i+½)."""
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec=colour, lw=lw))
        if scores is not None:
            ax.text(x1 - 0.5, y1 - 1.5, f"{float(scores[i]):.2f}", color=colour, fontsize=6)


def image_grid(images, gts=None, preds=None, titles=None, cols: int = 8, size: float = 1.6):
    """A grid of (H, W, 3) images with ground-truth boxes (green) and predictions ({boxes, scores}, red)."""
    n = len(images)
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        ax.imshow(img, cmap=None if img.ndim == 3 else "magma", interpolation="nearest")
        if gts is not None:
            draw_boxes(ax, gts[i], GT_COLOUR)
        if preds is not None:
            draw_boxes(ax, preds[i]["boxes"], PRED_COLOUR, preds[i]["scores"])
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    return fig


def loss_curves(history: list[dict], title: str = ""):
    """Per-epoch loss terms (log scale) and the learning rate from a run's history.jsonl."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = [h["epoch"] for h in history]
    for key in ("loss", "cls", "wh", "off"):
        if key in history[0]:
            a.plot(epochs, [h[key] for h in history], marker=".", label=key)
    a.set(yscale="log", xlabel="epoch", ylabel="mean loss", title=title or "training loss")
    a.legend()
    b.plot(epochs, [h["lr"] for h in history], marker=".")
    b.set(yscale="log", xlabel="epoch", ylabel="learning rate", title="schedule (§IV-B)")
    fig.tight_layout()
    return fig


def pr_curves(curves: dict[str, dict], title: str = "precision–recall, IoU > 0.5"):
    """One precision–recall curve per name, from metrics JSON `pr_curve` entries, labelled with their AP."""
    fig, ax = plt.subplots(figsize=(4.5, 4))
    for name, c in curves.items():
        ax.plot(c["recall"], c["precision"], label=name)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01), title=title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def maps_row(maps, titles, cmap: str = "viridis", vmin=None, vmax=None, size: float = 2.2):
    """Several 2-D maps side by side with colour bars (heatmaps, Gaussian labels, fusion weights a and b)."""
    fig, axes = plt.subplots(1, len(maps), figsize=(len(maps) * size * 1.25, size), squeeze=False)
    for ax, m, t in zip(axes.flat, maps, titles):
        im = ax.imshow(np.asarray(m), cmap=cmap if np.asarray(m).ndim == 2 else None, vmin=vmin, vmax=vmax,
                       interpolation="nearest")
        ax.set_title(t, fontsize=8)
        ax.axis("off")
        if np.asarray(m).ndim == 2:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def save(fig, path: str | Path, dpi: int = 130) -> Path:
    """Write a figure as PNG with fixed metadata, so re-running a notebook rewrites identical bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    return path


def distributions(df, columns, hue: str | None = "split", log=(), discrete=(), titles=None, cols: int = 3,
                  size: float = 2.8):
    """Seaborn histograms of several DataFrame columns side by side (notebook 01: crack and box statistics)."""
    import seaborn as sns

    rows = max(1, -(-len(columns) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size * 1.25, rows * size), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(columns):
            ax.axis("off")
            continue
        c = columns[i]
        sns.histplot(df, x=c, hue=hue, ax=ax, log_scale=c in log, discrete=c in discrete, element="step",
                     stat="count", common_norm=False, legend=i == 0)
        ax.set_title(titles[i] if titles else c, fontsize=9)
    fig.tight_layout()
    return fig


def box_sizes(df, hue: str | None = "split", cell: float | None = 4.0, size: float = 4.0):
    """Box width against height (log-log), with the side of one stride-`cell` output cell marked."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(size * 1.1, size))
    sns.scatterplot(df, x="box_w", y="box_h", hue=hue, ax=ax, s=14, alpha=0.7, linewidth=0)
    ax.set(xscale="log", yscale="log", xlabel="box width (px)", ylabel="box height (px)")
    from matplotlib.ticker import NullFormatter

    for axis in (ax.xaxis, ax.yaxis):  # plain pixel ticks on log axes: 1, 2, 4 … 64
        axis.set_major_locator(plt.FixedLocator([1, 2, 4, 8, 16, 32, 64]))
        axis.set_major_formatter(plt.ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    if cell:
        ax.axvline(cell, color="grey", ls="--", lw=0.8)
        ax.axhline(cell, color="grey", ls="--", lw=0.8)
        ax.text(cell * 1.05, ax.get_ylim()[1] * 0.8, f"{cell:g} px = one stride-{cell:g} cell", fontsize=7,
                color="grey")
    fig.tight_layout()
    return fig


def curves(x, ys: dict, xlabel: str, ylabel: str, title: str = "", styles: dict | None = None, ax=None,
           size: float = 3.6):
    """Several y(x) curves on one axis (radius against box side, Gaussian profiles, loss weights)."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(size * 1.35, size))
    for name, y in ys.items():
        ax.plot(x, y, label=name, **(styles or {}).get(name, {}))
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    if fig is not None:
        fig.tight_layout()
    return fig if fig is not None else ax.figure


def image_and_heatmaps(image, boxes, heatmaps, titles, scales, cmap: str = "magma", size: float = 2.4):
    """An image with its boxes and centres, then heatmaps of it with the boxes drawn at each map's scale (Fig. 2).

    `scales[i]` maps image pixels to cells of `heatmaps[i]` (input_size / image_size / stride).
    """
    n = 1 + len(heatmaps)
    fig, axes = plt.subplots(1, n, figsize=(n * size, size * 1.08), squeeze=False)
    b = np.asarray(boxes, dtype=float).reshape(-1, 4)
    ax = axes[0, 0]
    ax.imshow(image, interpolation="nearest")
    draw_boxes(ax, b, GT_COLOUR)
    ax.plot((b[:, 0] + b[:, 2]) / 2 - 0.5, (b[:, 1] + b[:, 3]) / 2 - 0.5, "+", color=GT_COLOUR, ms=6)
    ax.set_title(titles[0], fontsize=8)
    ax.axis("off")
    for ax, hm, t, s in zip(axes.flat[1:], heatmaps, titles[1:], scales):
        ax.imshow(hm, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        draw_boxes(ax, b * s, "#7fd4ff", lw=0.8)
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def wh_scatter(pred, true, title: str = ""):
    """Predicted against true width and height at the true centres (§III-B): a collapsed size head is a line."""
    pred, true = np.asarray(pred, float).reshape(-1, 2), np.asarray(true, float).reshape(-1, 2)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.4))
    top = max(1.0, float(np.nanmax(np.concatenate([pred, true]))))
    for ax, j, name in ((axes[0], 0, "width"), (axes[1], 1, "height")):
        ax.scatter(true[:, j], pred[:, j], s=6, alpha=0.6)
        ax.plot([0, top], [0, top], color="grey", lw=1, ls="--")
        ax.set(xlabel=f"true {name} (px)", ylabel=f"predicted {name} (px)", title=name)
    axes[2].scatter(true[:, 0], true[:, 1], s=6, alpha=0.6, color=GT_COLOUR, label="truth")
    axes[2].scatter(pred[:, 0], pred[:, 1], s=6, alpha=0.6, color=PRED_COLOUR, label="predicted")
    axes[2].set(xlabel="w (px)", ylabel="h (px)", title="shapes")
    axes[2].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def ap_decomposition(table, paper: float | None = None, sd=None, split: str = "test", train: str = "train"):
    """Bars of AP07 per variant: as measured, after box NMS at IoU 0.5, then one peak per crack and on top of it true
    sizes, true centres and both (a waterfall of what each part of the detector costs), and on the train split.
    With `sd` (the same columns' spread over seeds) each bar is a mean over seeds with its ±1 sd. `split` and `train`
    name the two splits in the legend."""
    cols = [("ap07", f"measured ({split})"), ("ap07_box_nms_0.5", "box NMS 0.5 (not the paper's)"),
            ("ap07_one_per_crack", "one peak per crack"),
            ("ap07_one_per_crack_true_wh", "+ true sizes"), ("ap07_one_per_crack_true_centre", "+ true centres"),
            ("ap07_one_per_crack_true_box", "+ true boxes"), ("ap07_train", f"{train} split")]
    cols = [(c, label) for c, label in cols if c in table and table[c].notna().any()]  # older metrics lack some
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(table))
    w = 0.8 / len(cols)
    for i, (c, label) in enumerate(cols):
        err = None if sd is None else sd[c].to_numpy(float)
        ax.bar(x + (i - (len(cols) - 1) / 2) * w, table[c].to_numpy(float), w, yerr=err, capsize=2,
               error_kw={"lw": 0.8}, label=label)
    if paper is not None:
        ax.axhline(paper, color="#d62728", ls=":", lw=1, label=f"paper ({paper:.2f})")
    ax.set_xticks(x, list(table.index))
    ax.set(ylabel="AP07", ylim=(0, 100), title="where AP goes" + ("" if sd is None else ", mean ± sd over seeds"))
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))  # below: bars reach 90+
    fig.tight_layout()
    return fig


def budget_curve(table, paper_ap: float | None = None, paper_clean: float | None = None):
    """Test AP07 (as measured and after box NMS), train AP07 and the clean background share against epochs (§IV-B)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    e = table.index.to_numpy(int)
    lines = (("test AP07", "o-", "C0"), ("after box NMS 0.5", "d-", "C1"), ("train AP07", "s--", "C2"),
             ("backgrounds clean %", "^:", "C3"))
    for col, style, colour in lines:  # NMS: how much of test AP07's gap at each budget is duplicate peaks
        ax.plot(e, table[col].to_numpy(float), style, color=colour, label=col, ms=4 if "NMS" in col else 6)
    for y, name, colour in ((paper_ap, "paper AP07", "C0"), (paper_clean, "paper clean %", "C3")):
        if y is not None:  # the paper's 25-epoch numbers, on its private photographs
            ax.axhline(y, color=colour, lw=0.8, ls="-.", label=f"{name} ({y:.2f})")
    ax.set_xticks(e)
    ax.set(xlabel="epochs (lr ×0.1 after 80 % of them)", ylabel="%", ylim=(0, 100), title="what the epoch budget costs")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig


def found_bars(table, by: str, title: str = "which test cracks a detector finds (IoU > 0.5, score ≥ 0.1)"):
    """Bars of `tables.found_over_seeds`: the share of cracks found per bin of one attribute, per variant, ±1 sd."""
    variants = [c[:-len(" found %")] for c in table.columns if c.endswith(" found %")]
    x = np.arange(len(table))
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(table) + 2, 3.2))
    for i, v in enumerate(variants):
        sd = table[f"{v} sd"].to_numpy(float)
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, table[f"{v} found %"], width, label=v,
               yerr=None if np.isnan(sd).all() else sd, capsize=2)
    ax.set_xticks(x, [f"{b}\n({n} cracks)" for b, n in zip(table.index.astype(str), table["cracks"])], fontsize=8)
    ax.set(xlabel=by, ylabel="found %", ylim=(0, 105), title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def label_curve(table, zero_shot: float | None = None):
    """AP07 on a new surface against the labelled images trained on, from scratch and fine-tuned (§IV-B)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for col, style in (("fine-tuned AP07", "o-"), ("scratch AP07", "s--")):
        ax.plot(table.index.to_numpy(int), table[col].to_numpy(float), style, label=col)
    if zero_shot is not None:  # the synthetic model before it saw any of the new surface
        ax.axhline(zero_shot, color="grey", lw=0.8, ls=":", label=f"synthetic model, 0 labelled ({zero_shot:.1f})")
    ax.set_xticks(table.index.to_numpy(int))
    ax.set(xlabel="labelled images of the new surface", ylabel="AP07 (%)", ylim=(0, 100),
           title="how many photographs to label")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def peaks(maps, size: float = 2.3):
    """Each image with its true boxes above its predicted heatmap with the decoded peaks (+) and the true boxes:
    one peak per crack at the box centre is what §III-A trains for; a row of peaks along a crack is a ridge."""
    n = len(maps)
    fig, axes = plt.subplots(2, n, figsize=(n * size, 2 * size + 0.3), squeeze=False)
    for j, m in enumerate(maps):
        top, bottom = axes[0, j], axes[1, j]
        top.imshow(m["image"], cmap="gray", interpolation="nearest")
        draw_boxes(top, m["gt"], GT_COLOUR)
        bottom.imshow(m["heat"], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        s = m["stride"]
        draw_boxes(bottom, m["gt"] / s, GT_COLOUR, lw=0.8)
        c = (m["gt"][:, :2] + m["gt"][:, 2:]) / 2 / s - 0.5
        bottom.plot(c[:, 0], c[:, 1], "x", color=GT_COLOUR, ms=6)  # where the label's peak is
        p = m["peaks"] / s - 0.5  # cell centres sit at integer plot coordinates
        bottom.plot(p[:, 0], p[:, 1], "+", color="#7fd4ff", ms=6)
        bottom.set_title(f"max {m['heat'].max():.2f}, {len(p)} peaks ≥ thr", fontsize=8)
        for ax in (top, bottom):
            ax.axis("off")
    fig.tight_layout()
    return fig


def seed_points(runs: dict[str, dict[int, dict]], paper_ap: dict[str, float], paper_clean: dict[str, float]):
    """Every seed's test AP07, held-out-surface AP07 and clean background share per variant, the mean as a bar,
    the paper's Tables I and II beside them (§V-B: one number each, no spread reported)."""
    variants = list(runs)
    panels = (("test AP07", lambda m: m["ap07"], paper_ap),
              ("held-out surface AP07", lambda m: m.get("shift", {}).get("ap07", np.nan), {}),
              ("backgrounds clean %", lambda m: m["background"]["accuracy"], paper_clean))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for ax, (title, value, paper) in zip(axes, panels):
        for i, v in enumerate(variants):
            ys = np.array([value(runs[v][s]) for s in sorted(runs[v])], dtype=float)
            ys = ys[np.isfinite(ys)]
            if len(ys):
                ax.hlines(ys.mean(), i - 0.3, i + 0.3, color="C0", lw=2, label="_mean" if i else "mean over seeds")
                ax.plot(i + np.linspace(-0.1, 0.1, len(ys)), ys, "o", color="C0", ms=4, alpha=0.7,
                        label="_seed" if i else "one seed")
            if v in paper:  # measured on the paper's photographs, not ours: a target, not a like-for-like number
                ax.plot(i, paper[v], "*", color="C3", ms=10, label="paper")
        handles, labels = ax.get_legend_handles_labels()
        keep = {lab: h for h, lab in zip(handles, labels)}  # one legend entry per kind
        ax.legend(keep.values(), keep.keys(), fontsize=7, loc="lower right")
        ax.set_xticks(range(len(variants)), variants, fontsize=7)
        ax.set(ylim=(0, 100), title=title)
        ax.title.set_fontsize(9)
    axes[0].set_ylabel("%")
    fig.tight_layout()
    return fig
