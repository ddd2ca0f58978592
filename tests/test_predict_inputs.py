"""`crackcore predict` on folders of users' files: a bad input never costs a good result."""
import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from crackcore.cli import main
from crackcore.inference.predict import PredictConfig, predict

GOOD = ("rgb.png", "grey.png", "rgba.png", "deep.png", "palette.png", "dot.png", "tall.jpg")
BAD = ("truncated.png", "empty.png", "notes.jpg")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained `modified` model: its outputs are arbitrary (sizes may be negative), which is the point."""
    from crackcore.models import build_model
    from crackcore.storage import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, {"model": build_model("modified").state_dict(), "variant": "modified"})
    return path


def write_good(folder):
    """The seven readable kinds: RGB, grey, RGBA, 16-bit grey, palette, 1×1, and a 30×2000 JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(100, 255, (48, 64, 3), dtype=np.uint8)
    rgb[20:24, 10:50] = 30  # a dark streak, so there is something crack-like to find
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgb).convert("L").save(folder / "grey.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(folder / "deep.png")
    with Image.open(folder / "deep.png") as im:
        assert im.mode == "I;16"
    Image.fromarray(rgb).convert("P").save(folder / "palette.png")
    Image.fromarray(rgb[:1, :1]).save(folder / "dot.png")
    Image.fromarray(np.full((2000, 30, 3), 200, np.uint8)).save(folder / "tall.jpg")  # 30 wide, 2000 high


def write_bad(folder):
    """The three unreadable kinds: a truncated PNG, an empty file, and text named .jpg."""
    folder.mkdir(parents=True, exist_ok=True)
    full = cv2.imencode(".png", np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    (folder / "truncated.png").write_bytes(full[: len(full) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("not a photograph\n")


def run_predict(folder, checkpoint, out, *extra):
    return main(["predict", str(folder), "--checkpoint", str(checkpoint), "--out", str(out), "--precision", "fp32",
                 *extra])


@pytest.fixture(scope="module")
def mixed(checkpoint, tmp_path_factory):
    """The 7-good/3-bad folder run once through the CLI: (exit code, predictions.json, out folder, stderr, folder)."""
    root = tmp_path_factory.mktemp("mixed")
    write_good(root / "in"), write_bad(root / "in")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # capsys is per test; this run is shared by two
        code = run_predict(root / "in", checkpoint, root / "out")
    return code, json.loads((root / "out" / "predictions.json").read_text()), root / "out", err.getvalue(), root / "in"


def test_every_good_image_is_predicted_despite_bad_ones(mixed):
    code, res, out, _, folder = mixed
    assert code == 2
    assert sorted(res["images"]) == sorted(str(folder / n) for n in GOOD)
    for name in GOOD:
        with Image.open(folder / name) as im:
            w, h = im.size
        for d in res["images"][str(folder / name)]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h  # inside the photo, never inverted
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "file,x1,y1,x2,y2,score" and len(rows) - 1 == sum(map(len, res["images"].values()))
    assert sorted(p.name for p in (out / "annotated").glob("*.png")) == sorted(f"{n.split('.')[0]}.png" for n in GOOD)
    assert cv2.imread(str(out / "annotated" / "dot.png")).shape == (201, 201, 3)  # 1×1, drawn enlarged


def test_every_bad_image_is_named_with_its_reason(mixed):
    code, res, _, err, folder = mixed
    errors = {e["file"]: e["error"] for e in res["errors"]}
    assert sorted(errors) == sorted(str(folder / n) for n in BAD)
    assert "truncated" in errors[str(folder / "truncated.png")]
    assert "empty image file" in errors[str(folder / "empty.png")]
    assert "unreadable" in errors[str(folder / "notes.jpg")]
    lines = [ln for ln in err.splitlines() if "crackcore predict: error:" in ln]  # the rest is the progress bar
    assert len(lines) == 3 and "Traceback" not in err
    for n in BAD:  # one line each, naming the file
        assert sum(n in ln for ln in lines) == 1, (n, lines)


def test_only_good_images_exit_0(checkpoint, tmp_path):
    folder = tmp_path / "in"
    write_good(folder)
    for n in ("tall.jpg", "deep.png", "palette.png", "rgba.png"):  # fewer tiles: this checks the exit code
        (folder / n).unlink()
    assert run_predict(folder, checkpoint, tmp_path / "out", "--no-annotate") == 0
    res = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert res["errors"] == [] and len(res["images"]) == 3


@pytest.mark.parametrize("route", ["fp32", "int8"])  # int8 would calibrate on the inputs: there are none readable
def test_no_readable_image_still_writes_the_errors(checkpoint, tmp_path, capsys, route):
    write_bad(tmp_path / "in")
    assert run_predict(tmp_path / "in", checkpoint, tmp_path / "out", "--route", route) == 2
    res = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert res["images"] == {} and len(res["errors"]) == 3 and res["route"] == route
    err = capsys.readouterr().err
    assert sum("crackcore predict: error:" in ln for ln in err.splitlines()) == 3 and "Traceback" not in err


def test_predict_function_reports_errors_and_reads_photos_upright(checkpoint, tmp_path):
    a = np.full((20, 30, 3), 220, np.uint8)  # stored 30 wide × 20 high
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer rotates it 90° clockwise, to 20 wide × 30 high
    Image.fromarray(a).save(tmp_path / "phone.jpg", exif=exif)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    cfg = PredictConfig(checkpoint=str(checkpoint), out=str(tmp_path / "out"), precision="fp32")
    res = predict(cfg, [tmp_path / "phone.jpg", tmp_path / "broken.jpg"], progress=False)
    assert list(res["images"]) == [str(tmp_path / "phone.jpg")]
    assert [e["file"] for e in res["errors"]] == [str(tmp_path / "broken.jpg")]
    drawn = cv2.imread(str(tmp_path / "out" / "annotated" / "phone.png"))
    assert drawn.shape[:2] == (30 * 7, 20 * 7)  # upright, enlarged ×(200 // 30 + 1)
