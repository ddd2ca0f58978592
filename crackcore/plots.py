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
