"""Loaders for users' data: COCO and VOC reading, one clear error per kind of bad input, letterboxing, the dataset."""
import json
import warnings

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crackcore.data.annotations import load_coco, load_records, load_voc
from crackcore.data.dataset import CrackDataset
from crackcore.data.images import DataError, letterbox, read_image


def _png(path, h=40, w=60, grey=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(0).integers(0, 255, (h, w) if grey else (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)
    return path


def _coco(tmp_path, images, annotations, categories=({"id": 1, "name": "crack"},), name="ann.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"images": images, "annotations": annotations, "categories": list(categories)}))
    return p


def _one_image_coco(tmp_path, bbox, category="crack"):
    _png(tmp_path / "a.png")
    return _coco(tmp_path, [{"id": 7, "file_name": "a.png", "width": 60, "height": 40}],
                 [{"id": 1, "image_id": 7, "category_id": 1, "bbox": bbox}], [{"id": 1, "name": category}])


def test_coco_reads_boxes_and_backgrounds(tmp_path):
    _png(tmp_path / "img" / "a.png"), _png(tmp_path / "img" / "b.jpg", 30, 50)
    p = _coco(tmp_path, [{"id": 1, "file_name": "img/a.png", "width": 60, "height": 40},
                         {"id": 2, "file_name": "img/b.jpg"}],
              [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2.5, 3, 10, 20]}])
    a, b = load_coco(p)
    assert a.boxes.dtype == np.float32 and a.boxes.tolist() == [[2.5, 3, 12.5, 23]]
    assert (a.width, a.height, a.image_id) == (60, 40, 1)
    assert b.boxes.shape == (0, 4) and (b.width, b.height) == (50, 30)


def test_category_map_renames_and_ignores(tmp_path):
    _png(tmp_path / "a.png")
    p = _coco(tmp_path, [{"id": 1, "file_name": "a.png"}],
              [{"id": i, "image_id": 1, "category_id": c, "bbox": [1, 1, 5, 5]} for i, c in ((1, 1), (2, 2))],
              [{"id": 1, "name": "hairline"}, {"id": 2, "name": "stain"}])
    (r,) = load_coco(p, category_map={"hairline": "crack", "stain": None})
    assert len(r.boxes) == 1


def _voc_xml(path, filename, objects, size=(60, 40)):
    objs = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><folder>VOC</folder><filename>{filename}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>")


def test_voc_standard_layout_and_image_sets(tmp_path):
    _png(tmp_path / "JPEGImages" / "a.jpg"), _png(tmp_path / "JPEGImages" / "b.jpg")
    _voc_xml(tmp_path / "Annotations" / "a.xml", "a.jpg", [("crack", (1, 1, 10, 20)), ("crack", (30, 5, 60, 40))])
    _voc_xml(tmp_path / "Annotations" / "b.xml", "b.jpg", [])
    a, b = load_voc(tmp_path)
    assert a.boxes.tolist() == [[0, 0, 10, 20], [29, 4, 60, 40]]  # 1-based inclusive → continuous
    assert b.boxes.shape == (0, 4)
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "test.txt").write_text("b\n")
    assert [r.path.name for r in load_records(tmp_path, "test")] == ["b.jpg"]


def test_voc_images_next_to_xmls_and_grey(tmp_path):
    _png(tmp_path / "g.png", grey=True)
    _voc_xml(tmp_path / "g.xml", "g.png", [("crack", (0, 0, 60, 40))])  # 0-based writers: within tolerance
    (r,) = load_voc(tmp_path)
    assert r.boxes.tolist() == [[0, 0, 60, 40]]
    img = read_image(r.path)
    assert img.shape == (40, 60, 3) and (img[..., 0] == img[..., 2]).all()


def test_load_records_reads_a_split_folder(tmp_path):
    _png(tmp_path / "a.png")
    _coco(tmp_path, [{"id": 1, "file_name": "a.png"}], [], name="test.json")
    assert len(load_records(tmp_path, "test")) == 1
    with pytest.raises(DataError, match="no train.json"):
        load_records(tmp_path, "train")


# --- one test per kind of bad input: the message names the file and the entry ---

def test_missing_image_file(tmp_path):
    p = _coco(tmp_path, [{"id": 1, "file_name": "nope.png"}], [])
    with pytest.raises(DataError, match=r"missing image file .*nope\.png.*ann\.json \(entry images\[0\]\)"):
        load_coco(p)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image(tmp_path, suffix):
    f = tmp_path / f"a{suffix}"
    cv2.imwrite(str(f), np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    p = _coco(tmp_path, [{"id": 1, "file_name": f.name}], [])
    with pytest.raises(DataError, match=rf"unreadable or truncated image .*a\{suffix}.*entry images\[0\]"):
        load_coco(p)


def test_not_an_image(tmp_path):
    (tmp_path / "a.png").write_text("hello")
    with pytest.raises(DataError, match="unreadable or truncated image"):
        read_image(tmp_path / "a.png")


@pytest.mark.parametrize("bbox, message", [([50, 10, 20, 10], "outside the 60x40 image"),
                                            ([-5, 0, 10, 10], "outside the 60x40 image"),
                                            ([5, 5, 0, 10], "non-positive size"),
                                            ([5, 5, 10, -1], "non-positive size"),
                                            ([float("nan"), 5, 10, 10], "NaN")])
def test_bad_box(tmp_path, bbox, message):
    p = _one_image_coco(tmp_path, bbox)
    with pytest.raises(DataError, match=rf"{message}.*ann\.json \(entry annotations\[0\]\)"):
        load_coco(p)


def test_box_overshoot_within_tolerance_is_clipped(tmp_path):
    (r,) = load_coco(_one_image_coco(tmp_path, [0, 0, 60.4, 40.2]))
    assert r.boxes.tolist() == [[0, 0, 60, 40]]


def test_malformed_json(tmp_path):
    (tmp_path / "ann.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"malformed JSON in .*ann\.json"):
        load_coco(tmp_path / "ann.json")


def test_malformed_xml(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><filename>a.jpg</filename>")
    with pytest.raises(DataError, match=r"malformed XML in .*a\.xml"):
        load_voc(tmp_path)


def test_unknown_category(tmp_path):
    p = _one_image_coco(tmp_path, [1, 1, 5, 5], category="dog")
    with pytest.raises(DataError, match=r"unknown category 'dog' in .*ann\.json \(entry annotations\[0\]\)"):
        load_coco(p)


def test_unknown_category_voc_names_the_object(tmp_path):
    _png(tmp_path / "a.jpg")
    _voc_xml(tmp_path / "a.xml", "a.jpg", [("crack", (1, 1, 5, 5)), ("chip", (1, 1, 5, 5))])
    with pytest.raises(DataError, match=r"unknown category 'chip' in .*a\.xml \(entry object 1\)"):
        load_voc(tmp_path)


def test_image_size_disagreeing_with_annotation(tmp_path):
    _png(tmp_path / "a.png")
    p = _coco(tmp_path, [{"id": 1, "file_name": "a.png", "width": 40, "height": 60}], [])
    with pytest.raises(DataError, match="is 60x40 but"):
        load_coco(p)


def test_skip_bad_counts_and_warns(tmp_path):
    _png(tmp_path / "good.png"), _png(tmp_path / "bad_box.png")
    p = _coco(tmp_path, [{"id": 1, "file_name": "good.png"}, {"id": 2, "file_name": "missing.png"},
                         {"id": 3, "file_name": "bad_box.png"}],
              [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
               {"id": 2, "image_id": 3, "category_id": 1, "bbox": [1, 1, 500, 5]},
               {"id": 3, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]}])
    with pytest.warns(UserWarning, match=r"skipped 3 bad entries of .*ann\.json"):
        records = load_coco(p, skip_bad=True)
    assert [r.image_id for r in records] == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_coco(_coco(tmp_path, [{"id": 1, "file_name": "good.png"}], [], name="ok.json"))) == 1


# --- letterbox and the dataset ---

def test_letterbox_keeps_aspect_and_pads_bottom_right():
    img = np.full((50, 100, 3), 200, np.uint8)
    out, boxes, scale = letterbox(img, [[10, 10, 100, 50]], 80)
    assert out.shape == (80, 80, 3) and scale == 0.8
    assert boxes.tolist() == [[8, 8, 80, 40]]
    assert (out[40:] == 200).all()  # padding in the mean colour, not a black bar
    same, b, s = letterbox(img[:, :50], np.zeros((0, 4)), 50)
    assert s == 1.0 and np.array_equal(same, img[:, :50]) and b.shape == (0, 4)


@pytest.mark.parametrize("size, train", [(80, False), (80, True), (96, True)])
def test_dataset_items(tmp_path, size, train):
    _png(tmp_path / "a.png", 40, 60, grey=True)
    p = _coco(tmp_path, [{"id": 1, "file_name": "a.png"}],
              [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 30, 20]}])
    ds = CrackDataset(load_coco(p), size, train=train)
    torch.manual_seed(0)
    image, boxes = ds[0]
    assert type(image) is torch.Tensor and image.shape == (3, size, size) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4
    if not train:
        assert torch.allclose(boxes, torch.tensor([[0, 0, 30, 20]]) * size / 60)


def test_training_dataset_pickles_for_spawned_workers(tmp_path):
    import pickle
    _png(tmp_path / "a.png")
    ds = CrackDataset(load_coco(_coco(tmp_path, [{"id": 1, "file_name": "a.png"}], [])), 80, train=True)
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[0][0].shape == (3, 80, 80)


def test_write_coco_round_trip(tiny_data, tmp_path):
    from crackcore.data.annotations import write_coco

    records = load_records(tiny_data, "train")[:5] + load_records(tiny_data, "background")[:2]
    back = load_coco(write_coco(records, tmp_path / "sub" / "part.json"))
    assert [r.path.resolve() for r in back] == [r.path.resolve() for r in records]
    for a, b in zip(records, back):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-5)
        assert (a.width, a.height) == (b.width, b.height)
    assert sum(len(r.boxes) == 0 for r in back) >= 2  # the backgrounds stay box-free


# --- read_image: every Pillow mode, odd shapes, EXIF, bombs; DataError and nothing else for bad bytes ---

MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "I;16", "I", "F", "CMYK")


def _check_read(path, exif=False):
    """read_image's contract: an (H, W, 3) uint8 array or a DataError; any other exception fails the test."""
    try:
        img = read_image(path, exif=exif)
    except DataError:
        return None
    assert isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    assert min(img.shape[:2]) >= 1
    return img


def _pil_image(mode, w, h, seed=0):
    """A w×h Pillow image of `mode` with random content in the mode's native range."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    if mode in ("I;16", "I"):
        im = Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16 if mode == "I;16" else np.int32))
    elif mode == "F":
        im = Image.fromarray(rng.uniform(0, 300, (h, w)).astype(np.float32))
    else:
        base = "RGBA" if mode in ("LA", "PA", "RGBA") else "RGB"
        im = Image.fromarray(rng.integers(0, 256, (h, w, len(base)), dtype=np.uint8), base).convert(mode)
    assert im.mode == mode
    return im


@pytest.mark.parametrize("mode", MODES)
def test_read_image_every_pil_mode(tmp_path, mode):
    f = tmp_path / "a.tif"  # TIFF stores every one of these modes as is
    src = _pil_image(mode, 7, 5)
    src.save(f)
    img = read_image(f)
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8
    if mode in ("RGB", "RGBA", "LA", "L", "P", "PA", "1", "CMYK"):  # Pillow's conversion, alpha dropped
        assert np.array_equal(img, np.asarray(src.convert("RGB")))


def test_read_image_scales_16_bit_and_repeats_grey(tmp_path):
    from PIL import Image

    a = np.array([[0, 257 * 100, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / "deep.png")
    img = read_image(tmp_path / "deep.png")
    assert img[..., 0].tolist() == [[0, 100, 255]] and (img[..., 0] == img[..., 2]).all()
    dark = np.array([[0, 200]], np.uint16)  # a dark 16-bit image stays dark: 200 / 257 → 1
    Image.fromarray(dark).save(tmp_path / "dark.png")
    assert read_image(tmp_path / "dark.png")[..., 0].tolist() == [[0, 1]]


def test_read_image_drops_alpha(tmp_path):
    from PIL import Image

    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (10, 20, 30), 0  # fully transparent: the stored colour is kept, not a backdrop
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert (read_image(tmp_path / "a.png") == [10, 20, 30]).all()


@pytest.mark.parametrize("w, h, suffix", [(1, 1, ".png"), (1, 1, ".jpg"), (30, 2000, ".jpg"), (2000, 30, ".png")])
def test_read_image_extreme_shapes(tmp_path, w, h, suffix):
    f = tmp_path / f"a{suffix}"
    assert cv2.imwrite(str(f), np.full((h, w, 3), 128, np.uint8))
    assert read_image(f).shape == (h, w, 3)


def _oriented_jpeg(path, orientation):
    """A 30 wide × 20 high JPEG, dark in its stored top-left 10×10 corner, with an EXIF Orientation tag."""
    from PIL import Image

    a = np.full((20, 30, 3), 255, np.uint8)
    a[:10, :10] = 0
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    Image.fromarray(a).save(path, exif=exif, quality=95)


def test_read_image_exif_orientation_only_when_asked(tmp_path):
    f = tmp_path / "phone.jpg"
    _oriented_jpeg(f, 6)  # 6: the viewer rotates the stored grid 90° clockwise
    stored = read_image(f)  # training: boxes refer to the stored grid
    assert stored.shape == (20, 30, 3) and stored[:10, :10].mean() < 30 and stored[:10, -10:].mean() > 225
    upright = read_image(f, exif=True)  # predict: as a viewer shows it
    assert upright.shape == (30, 20, 3)
    assert upright[:10, -10:].mean() < 30 and upright[:10, :10].mean() > 225  # top-left went to top-right


def test_read_image_refuses_decompression_bombs(tmp_path, monkeypatch):
    from PIL import Image

    _png(tmp_path / "big.png", 20, 20)
    _png(tmp_path / "biggish.png", 10, 15)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match=r"big\.png is too large .*decompression bomb"):  # over 2× the limit: Error
        read_image(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"biggish\.png is too large"):  # over the limit: Warning, refused too
        read_image(tmp_path / "biggish.png")


def test_read_image_empty_and_foreign_formats(tmp_path):
    from PIL import Image

    from crackcore.data.images import READ_FORMATS

    Image.init()
    assert set(READ_FORMATS) <= set(Image.OPEN)  # a name Pillow does not know would fail every open

    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty image file .*empty\.png"):
        read_image(tmp_path / "empty.png")
    Image.new("L", (8, 8)).save(tmp_path / "a.eps")  # PostScript: Pillow would hand it to Ghostscript
    with pytest.raises(DataError, match="unreadable or truncated image"):
        read_image(tmp_path / "a.eps")


def _seed_files():
    """Small valid files of each common format, to be cut, extended and corrupted by the fuzz test."""
    import io

    im = _pil_image("RGB", 9, 6, seed=3)
    seeds = []
    for fmt, mode in (("PNG", "RGB"), ("PNG", "I;16"), ("JPEG", "RGB"), ("TIFF", "F"), ("BMP", "RGB"),
                      ("GIF", "P"), ("WEBP", "RGB")):
        buf = io.BytesIO()
        (im if mode == "RGB" else _pil_image(mode, 9, 6)).save(buf, format=fmt)
        seeds.append(buf.getvalue())
    return seeds


SEEDS = _seed_files()


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "x.img"


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's "Corrupt EXIF data" and the like
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=4096), exif=st.booleans())
def test_fuzz_random_bytes(fuzz_file, data, exif):
    fuzz_file.write_bytes(data)
    _check_read(fuzz_file, exif)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(range(len(SEEDS))), cut=st.floats(0, 1), tail=st.binary(max_size=512),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4), exif=st.booleans())
def test_fuzz_damaged_valid_files(fuzz_file, seed, cut, tail, flips, exif):
    raw = bytearray(SEEDS[seed][: int(cut * len(SEEDS[seed]))] + tail)  # truncated, then random bytes appended
    for at, byte in flips:  # and a few bytes overwritten, headers included
        if raw:
            raw[min(int(at * len(raw)), len(raw) - 1)] = byte
    fuzz_file.write_bytes(bytes(raw))
    _check_read(fuzz_file, exif)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(MODES), w=st.integers(1, 12), h=st.integers(1, 12), seed=st.integers(0, 2**16),
       fmt=st.sampled_from(["TIFF", "PNG", "BMP", "JPEG", "WEBP", "GIF"]), exif=st.booleans())
def test_fuzz_random_small_images(tmp_path_factory, mode, w, h, seed, fmt, exif):
    f = tmp_path_factory.getbasetemp() / f"small.{fmt.lower()}"
    try:
        _pil_image(mode, w, h, seed).save(f, format=fmt)
    except (OSError, ValueError, KeyError):  # this format cannot store this mode: nothing to read
        return
    img = read_image(f, exif=exif)  # every writable mode must read back, at its size
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
