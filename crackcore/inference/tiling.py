"""Photographs larger than the model's input: overlapping tiles in, one set of boxes in the photograph's pixels out.

The model learned 80 × 80 patches in which a long crack is cut by the patch border and boxed over what the patch
shows of it. Run tile by tile over a photograph, it therefore boxes each tile's piece of a long crack, and a crack
crossing five tiles comes back as a chain of five or more boxes where a person draws one. `join_fragments` rebuilds
the crack: pieces from neighbouring tiles that were each cut by their own tile's border, on the sides facing each
other, and that meet in the tiles' shared band, are one crack and become one box.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import nms

from ..data.images import to_input


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length): evenly stepped, the last one flush with the far edge."""
    if not 0 <= overlap < tile:
        raise ValueError(f"the tiles' overlap must be at least 0 and less than a tile ({tile} px), got {overlap}")
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def owned_spans(origins: list[int], tile: int, length: int) -> list[tuple[float, float]]:
    """The part of each tile that owns detection centres: overlaps are split down the middle."""
    cuts = [0.0] + [(b + a + tile) / 2 for a, b in zip(origins, origins[1:])] + [float(length)]  # not the padding
    return list(zip(cuts, cuts[1:]))


def tiles(image: np.ndarray, tile: int, overlap: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Cut an (H, W, 3) uint8 image into (T, 3, tile, tile) float tiles in [0, 1], padded where it is small.

    Padding takes the image's mean colour, as training's letterbox does: black would look like a product edge.
    """
    H, W = image.shape[:2]
    pad = np.empty((max(H, tile), max(W, tile), 3), np.uint8)
    pad[:] = image.reshape(-1, 3).mean(0).round().astype(np.uint8)
    pad[:H, :W] = image
    origins = [(x, y) for y in tile_origins(H, tile, overlap) for x in tile_origins(W, tile, overlap)]
    crops = np.stack([pad[y:y + tile, x:x + tile] for x, y in origins])  # (T, tile, tile, 3)
    return to_input(crops), origins


def _overlapping(starts: list[int], tile: int) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """For each tile start along one axis, the later and the earlier starts whose tiles overlap it (at predict's
    overlap, just the next and the previous one)."""
    return ({a: [b for b in starts if a < b < a + tile] for a in starts},
            {a: [b for b in starts if a - tile < b < a] for a in starts})


def join_fragments(boxes: torch.Tensor, scores: torch.Tensor, origin: torch.Tensor, tile: int,
                   edge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One box per crack from its tiles' pieces: (N, 4) boxes and (N,) scores in image pixels, each from the tile at
    (N, 2) `origin`, joined where two pieces from overlapping tiles each reach within `edge` px of their own tile's
    side that faces the other tile and meet (overlap, or a gap of at most `edge` px); joining is transitive. A joined
    box is the pieces' union and scores their best score. Returns boxes and scores, best first."""
    n = len(boxes)
    if n < 2 or edge <= 0:
        return boxes, scores
    b, o = boxes.double(), origin.double()
    # which sides of its own tile each box reaches: (N,) each
    left, top = b[:, 0] <= o[:, 0] + edge, b[:, 1] <= o[:, 1] + edge
    right, bottom = b[:, 2] >= o[:, 0] + tile - edge, b[:, 3] >= o[:, 1] + tile - edge
    members: dict[tuple[int, int], list[int]] = {}
    for i, (x, y) in enumerate(origin.long().tolist()):
        members.setdefault((x, y), []).append(i)
    later_x, _ = _overlapping(sorted({x for x, _ in members}), tile)
    later_y, earlier_y = _overlapping(sorted({y for _, y in members}), tile)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (x, y), mine in members.items():
        # each unordered pair of overlapping tiles once: from the left one, or from the upper one of a column
        pairs = [(x2, y2) for x2 in later_x[x] for y2 in (*earlier_y[y], y, *later_y[y])]
        pairs += [(x, y2) for y2 in later_y[y]]
        for other in pairs:
            theirs = members.get(other)
            if not theirs:
                continue
            i, j = torch.tensor(mine)[:, None], torch.tensor(theirs)[None, :]  # (m, 1), (1, k)
            dx, dy = other[0] - x, other[1] - y  # dx ≥ 0; dy of any sign
            facing_x = (right[i] & left[j]) if dx > 0 else torch.ones(len(mine), len(theirs), dtype=torch.bool)
            facing_y = ((bottom[i] & top[j]) if dy > 0 else (top[i] & bottom[j]) if dy < 0
                        else torch.ones(len(mine), len(theirs), dtype=torch.bool))
            gap_x = torch.maximum(b[i, 0], b[j, 0]) - torch.minimum(b[i, 2], b[j, 2])  # (m, k); < 0: overlap
            gap_y = torch.maximum(b[i, 1], b[j, 1]) - torch.minimum(b[i, 3], b[j, 3])
            for p, q in (facing_x & facing_y & (gap_x <= edge) & (gap_y <= edge)).nonzero().tolist():
                parent[root(mine[p])] = root(theirs[q])
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    out_b = torch.stack([torch.cat([boxes[g, :2].min(0).values, boxes[g, 2:].max(0).values])
                         for g in groups.values()])
    out_s = torch.stack([scores[g].max() for g in groups.values()])
    order = out_s.argsort(descending=True, stable=True)
    return out_b[order], out_s[order]


def merge_tiles(dets, origins, height: int, width: int, tile: int, overlap: int, merge_iou: float,
                join_edge: float = 0.0) -> dict[str, torch.Tensor]:
    """One image's detections in its own pixels from its tiles' (tile-pixel) detections: each centre reported by
    the tile that owns it, duplicates across a seam merged by box NMS at `merge_iou`, then (with `join_edge` > 0) the
    pieces of one crack cut by the tiles' borders joined into one box (`join_fragments`)."""
    xs, ys = tile_origins(width, tile, overlap), tile_origins(height, tile, overlap)
    own = {(x, y): (sx, sy) for x, sx in zip(xs, owned_spans(xs, tile, width))
           for y, sy in zip(ys, owned_spans(ys, tile, height))}
    boxes, scores, where = [], [], []
    for d, (x, y) in zip(dets, origins):
        b = d["boxes"] + torch.tensor([x, y, x, y], dtype=torch.float32)
        cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
        (x0, x1), (y0, y1) = own[(x, y)]
        keep = (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)  # each centre is reported by one tile only
        boxes.append(b[keep])
        scores.append(d["scores"][keep])
        where.append(torch.tensor([[x, y]], dtype=torch.float32).expand(int(keep.sum()), 2))
    boxes, scores, where = torch.cat(boxes), torch.cat(scores), torch.cat(where)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)  # padding of small images is not part of the photo
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    if len(origins) > 1:  # peaks of one crack seen from two tiles, just either side of a seam
        keep = nms(boxes, scores, merge_iou)
        boxes, scores = join_fragments(boxes[keep], scores[keep], where[keep], tile, join_edge)
    return {"boxes": boxes, "scores": scores}
