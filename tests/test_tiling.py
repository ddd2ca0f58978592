"""Tiling a photograph: tile origins, ownership of centres, and a crack's pieces joined into one box, by hand."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crackcore.inference.predict import PredictConfig
from crackcore.inference.tiling import join_fragments, merge_tiles, tile_origins

T = 80  # the stride-1 models' tile


def _join(boxes, origins, scores=None, edge=2.0):
    b = torch.tensor(boxes, dtype=torch.float32)
    s = torch.tensor(scores if scores is not None else [0.5] * len(boxes), dtype=torch.float32)
    return join_fragments(b, s, torch.tensor(origins, dtype=torch.float32), T, edge)


def test_tile_origins_cover_the_image():
    assert tile_origins(80, 80, 16) == [0]
    assert tile_origins(50, 80, 16) == [0]
    o = tile_origins(300, 80, 16)
    assert o[0] == 0 and o[-1] == 220 and all(b - a <= 64 for a, b in zip(o, o[1:]))
    with pytest.raises(ValueError, match="overlap"):
        tile_origins(300, 80, 80)  # tiles that overlap by a whole tile never advance


def test_pieces_cut_by_facing_borders_are_one_crack():
    # tiles at x = 0 and x = 64; a horizontal crack y 30–35 from x = 10 to x = 140
    b, s = _join([[10, 30, 80, 34], [64, 31, 140, 35]], [[0, 0], [64, 0]], scores=[0.3, 0.6])
    assert b.tolist() == [[10, 30, 140, 35]] and s.tolist() == pytest.approx([0.6])


def test_a_piece_that_ends_inside_its_tile_is_not_joined():
    # the left piece ends at x = 70, 10 px short of its tile's right side: the crack ends there
    b, _ = _join([[10, 30, 70, 34], [64, 31, 140, 35]], [[0, 0], [64, 0]])
    assert len(b) == 2


def test_pieces_of_one_tile_or_far_apart_are_not_joined():
    b, _ = _join([[10, 30, 80, 34], [0, 60, 80, 64]], [[0, 0], [0, 0]])  # one tile: the decoder's business
    assert len(b) == 2
    # tiles stacked vertically, both pieces cut by the seam, but 20 px apart along it: two cracks
    b, _ = _join([[10, 20, 14, 80], [34, 64, 38, 140]], [[0, 0], [0, 64]])
    assert len(b) == 2
    # a gap of 2 px along the seam is within edge = 2; 3 px is not
    assert len(_join([[10, 20, 14, 80], [16, 64, 20, 140]], [[0, 0], [0, 64]])[0]) == 1
    assert len(_join([[10, 20, 14, 80], [17, 64, 21, 140]], [[0, 0], [0, 64]])[0]) == 2


def test_a_diagonal_crack_joins_across_corner_tiles_and_chains_transitively():
    # tiles (0,0), (64,64), (128,128): a diagonal crack from (20,20) to (200,200), one piece per tile
    pieces = [[20, 20, 80, 80], [64, 64, 144, 144], [128, 128, 200, 200]]
    b, s = _join(pieces, [[0, 0], [64, 64], [128, 128]], scores=[0.2, 0.4, 0.3])
    assert b.tolist() == [[20, 20, 200, 200]] and s.tolist() == pytest.approx([0.4])
    # the corner pieces must reach both facing sides: one reaching only the right side stays apart
    b, _ = _join([[20, 20, 80, 70], [64, 64, 144, 144]], [[0, 0], [64, 64]])
    assert len(b) == 2


def test_edge_zero_leaves_every_box_and_joined_boxes_come_best_first():
    boxes = [[10, 30, 80, 34], [64, 31, 140, 35], [100, 0, 110, 10]]
    b, s = _join(boxes, [[0, 0], [64, 0], [64, 0]], scores=[0.2, 0.3, 0.9], edge=0.0)
    assert b.tolist() == boxes and s.tolist() == pytest.approx([0.2, 0.3, 0.9])
    b, s = _join(boxes, [[0, 0], [64, 0], [64, 0]], scores=[0.2, 0.3, 0.9])
    assert s.tolist() == pytest.approx([0.9, 0.3]) and b.tolist() == [[100, 0, 110, 10], [10, 30, 140, 35]]


def _brute_force_groups(boxes, origins, edge=2.0):
    """The joining rule read literally, pair by pair in plain Python: the sets of piece indices joined together."""
    def reaches(k, side):  # does piece k reach its own tile's side?
        (x1, y1, x2, y2), (ox, oy) = boxes[k], origins[k]
        return {"left": x1 <= ox + edge, "right": x2 >= ox + T - edge, "top": y1 <= oy + edge,
                "bottom": y2 >= oy + T - edge}[side]

    def joined(k, m):
        dx, dy = origins[m][0] - origins[k][0], origins[m][1] - origins[k][1]
        if (dx, dy) == (0, 0) or abs(dx) >= T or abs(dy) >= T:
            return False
        facing = ((dx == 0 or (reaches(k, "right") and reaches(m, "left") if dx > 0
                               else reaches(k, "left") and reaches(m, "right")))
                  and (dy == 0 or (reaches(k, "bottom") and reaches(m, "top") if dy > 0
                                   else reaches(k, "top") and reaches(m, "bottom"))))
        a, c = boxes[k], boxes[m]
        return facing and max(a[0], c[0]) - min(a[2], c[2]) <= edge and max(a[1], c[1]) - min(a[3], c[3]) <= edge

    groups = [{k} for k in range(len(boxes))]
    for k in range(len(boxes)):
        for m in range(len(boxes)):
            if joined(k, m):
                gk, gm = next(g for g in groups if k in g), next(g for g in groups if m in g)
                if gk is not gm:
                    groups.remove(gm)
                    gk |= gm
    return groups


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 79), st.integers(0, 79),
                          st.integers(1, 80), st.integers(1, 80)), min_size=1, max_size=12))
def test_joining_only_unites_boxes_and_follows_the_rule_pair_by_pair(pieces):
    """Whatever the pieces: never more boxes out than in, every piece inside the box it joined, scores kept, and
    the groups those of the rule applied literally to every pair (tiles 64 px apart: neighbours overlap by 16)."""
    origins = [[64 * i, 64 * j] for i, j, *_ in pieces]
    boxes = [[ox + x, oy + y, ox + min(x + w, 80), oy + min(y + h, 80)] for (ox, oy), (_, _, x, y, w, h)
             in zip(origins, pieces)]
    scores = list(np.linspace(0.9, 0.1, len(boxes)))
    b, s = _join(boxes, origins, scores)
    assert 1 <= len(b) <= len(boxes) and (s[:-1] >= s[1:]).all()
    assert set(np.round(s.numpy(), 5)) <= set(np.round(np.float32(scores), 5))
    for piece in torch.tensor(boxes, dtype=torch.float32):
        inside = (b[:, :2] <= piece[:2]).all(1) & (b[:, 2:] >= piece[2:]).all(1)
        assert inside.any()
    expected = sorted([min(boxes[k][0] for k in g), min(boxes[k][1] for k in g), max(boxes[k][2] for k in g),
                       max(boxes[k][3] for k in g)] for g in _brute_force_groups(boxes, origins))
    assert sorted(b.tolist()) == expected


def test_merge_tiles_joins_a_crack_cut_by_a_seam_in_image_pixels():
    # a 144 × 80 image in two tiles (x = 0, 64); each tile boxes its piece of one horizontal crack, in tile pixels
    dets = [{"boxes": torch.tensor([[10.0, 30, 80, 34]]), "scores": torch.tensor([0.4])},
            {"boxes": torch.tensor([[0.0, 31, 76, 35]]), "scores": torch.tensor([0.5])}]
    apart = merge_tiles(dets, [(0, 0), (64, 0)], 80, 144, T, overlap=16, merge_iou=0.5)
    assert apart["boxes"].tolist() == [[64, 31, 140, 35], [10, 30, 80, 34]]  # IoU 0.09: NMS keeps both, best first
    joined = merge_tiles(dets, [(0, 0), (64, 0)], 80, 144, T, overlap=16, merge_iou=0.5, join_edge=2.0)
    assert joined["boxes"].tolist() == [[10, 30, 140, 35]] and joined["scores"].tolist() == pytest.approx([0.5])


def test_predict_config_refuses_impossible_tiling():
    for bad in ({"overlap": -1}, {"merge_iou": 0.0}, {"join_edge": -1.0}):
        with pytest.raises(ValueError, match="overlap >= 0"):
            PredictConfig(**bad)


def test_join_rule_takes_the_shortest_reach_within_one_point_of_the_best_mean_over_the_sets():
    from crackcore.study.large_photos import choose_join

    ap = lambda *v: {e: {"ap07": a} for e, a in zip(("0", "2", "4", "8"), v)}  # noqa: E731
    # means over the two sets, by hand: 30, 31, 30.5, 29 -> 0 is within 1.0 of the best (31)
    assert choose_join({"usual": ap(30.0, 32.0, 31.0, 28.0), "dense": ap(30.0, 30.0, 30.0, 30.0)}) == 0.0
    # means 20, 30, 38, 39.5 -> 4 (38) is 1.5 short of 8's 39.5, so 8
    assert choose_join({"usual": ap(10.0, 30.0, 40.0, 45.0), "dense": ap(30.0, 30.0, 36.0, 34.0)}) == 8.0
    # the dense set's wrong joins outweigh the usual set's gain: means 30, 29, 25, 20 -> 0
    assert choose_join({"usual": ap(10.0, 20.0, 25.0, 30.0), "dense": ap(50.0, 38.0, 25.0, 10.0)}) == 0.0
    # one set alone: the shortest reach within a point of its best
    assert choose_join({"usual": ap(30.0, 39.5, 40.0, 40.0)}) == 2.0


def test_dense_photographs_carry_the_asked_number_of_cracks():
    from crackcore.study.large_photos import photos

    assert [len(p.boxes) for p in photos(2, cracks=4)] == [4, 4]
    assert [len(p.boxes) for p in photos(1, cracks=np.int64(2))] == [2]  # a count taken from numpy
    for bad in (0, 2.5, True, np.int64(0)):
        with pytest.raises(ValueError, match="cracks per photograph"):
            photos(1, cracks=bad)


def test_join_reading_scores_predict_on_large_photographs(tmp_path):
    """Two 320-px photographs, two distances, the committed modified_aff model: the reading's shape and its AP."""
    import shutil

    import crackcore.study.experiment as ex
    import crackcore.study.large_photos as lp
    from crackcore.storage import ROOT

    profile = ex.Profile("t", 4, 2, 2, tmp_path / "data", tmp_path / "runs", tmp_path / "results")
    (profile.results_dir("checkpoints")).mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "results" / "checkpoints" / "modified_aff-seed0.fp16.pt", profile.results_dir("checkpoints"))
    r = lp.join_reading(profile, n=2, edges=(0.0, 4.0), pools=(3,), sets={"usual": None, "dense": 3},
                        progress=False)
    assert set(r["by_set"]) == {"usual", "dense"} and r["cracks_per_photo"]["dense"] == 3.0
    assert set(r["by_set"]["dense"]["3"]) == {"0", "4"} and r["photos"] == 2 and r["choice"] in (0.0, 4.0)
    for by_edge in r["by_set"].values():
        joined, apart = by_edge["3"]["4"], by_edge["3"]["0"]
        assert 0 <= apart["ap07"] <= 100 and 0 <= joined["ap07"] <= 100
        assert joined["boxes_per_photo"] <= apart["boxes_per_photo"]  # joining only unites boxes
    assert (profile.results / "metrics" / "reading-join.json").is_file()
    photos = lp.photos(2)
    assert photos[0].image.shape == (320, 320, 3) and all(len(p.boxes) >= 1 for p in photos)
