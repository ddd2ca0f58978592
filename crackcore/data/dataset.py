"""Annotated images as training data: COCO JSON and Pascal VOC loaders that validate every entry before training.

One class, "crack". Boxes are (N, 4) float32 x1 y1 x2 y2 in continuous pixel coordinates (pixel column i spans
[i, i + 1)); COCO's x y w h is already in them, VOC's 1-based inclusive xmin..xmax becomes xmin - 1..xmax.
A box may overshoot the border by BOX_TOLERANCE px (annotation-tool rounding, 0-based VOC files) and is clipped;
farther out it is an error. Images without boxes are backgrounds.
"""
from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision import tv_tensors

from ..storage import atomic_write
from .transforms import build_eval_transform, build_train_transform

BOX_TOLERANCE = 1.0
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad input data; the message names the file and the entry."""


@dataclass(frozen=True, eq=False)
class Record:
    path: Path
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2, read-only
    width: int
    height: int
    image_id: int


@dataclass
class _Entry:
    """One image as an annotation file lists it, before validation."""
    path: Path
    image_id: int
    where: str  # "FILE (entry ...)" for messages
    size: tuple[int, int] | None  # declared (width, height), if any
    objects: list = field(default_factory=list)  # (where, category name, [x1, y1, x2, y2])
    errors: list = field(default_factory=list)  # DataErrors found while parsing this image's entries


# Pillow decoders tried on open: raster photo formats only (JPEG covers cameras' MPO files). Others run external
# programs (EPS → Ghostscript) or are rarely exercised; a file in them reads as "cannot identify image file".
READ_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF", "WEBP", "GIF", "PPM", "JPEG2000")


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """A decoded image of any Pillow mode as (H, W, 3) uint8 RGB.

    16-bit grey (I;16*) is scaled by 1/257 so 65535 is 255; 32-bit int or float grey (I, F) is taken as 16-bit
    when it exceeds 255, else as 8-bit, non-finite values as 0. Grey is repeated over the channels. Alpha is
    dropped, not composited: the stored colour is what the camera saw, and a backdrop would be invented.
    """
    if im.mode.startswith("I;16"):
        a = np.asarray(im, np.float64) / 257.0  # (H, W)
    elif im.mode in ("I", "F"):
        a = np.nan_to_num(np.asarray(im, np.float64), nan=0.0, posinf=0.0, neginf=0.0)  # (H, W)
        a = a / 257.0 if a.max() > 255 else a
    else:  # 1, L, P, LA, PA, RGB, RGBA, CMYK, YCbCr, ...: Pillow's own conversion, which drops alpha
        return np.asarray(im.convert("RGB")).copy()
    grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def read_image(path, *, exif: bool = False) -> np.ndarray:
    """Decode an image file fully into (H, W, 3) uint8 RGB (see `_to_rgb8`); DataError, and only that, if it cannot be.

    `exif=False` (training, evaluation) keeps the stored pixel grid, to which COCO and VOC boxes and sizes refer;
    `exif=True` (predict) turns a photo upright by its EXIF Orientation, as an image viewer shows it. Images over
    Pillow's pixel limit (`Image.MAX_IMAGE_PIXELS`, decompression bombs) are refused before they are decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing image file {path}")
    try:
        if path.stat().st_size == 0:  # Pillow would only say "cannot identify image file"
            raise DataError(f"empty image file {path}")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # refused, not just noted
            with Image.open(path, formats=READ_FORMATS) as im:
                im.load()  # decodes every pixel: a truncated file fails here, not inside a DataLoader worker
                if exif:
                    im = ImageOps.exif_transpose(im)
                if min(im.size) < 1:
                    raise DataError(f"image {path} has no pixels ({im.width}x{im.height})")
                return _to_rgb8(im)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"image {path} is too large to decode safely (decompression bomb?): {e}") from None
    except Exception as e:  # Pillow's decoders raise OSError, SyntaxError, EOFError, struct.error, ...: all bad input
        raise DataError(f"unreadable or truncated image {path}: {str(e) or type(e).__name__}") from None


def to_input(images: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (N, H, W, 3) uint8 RGB → (N, 3, H, W) float32 in [0, 1]: what every crackcore model takes."""
    a = torch.from_numpy(np.ascontiguousarray(images))
    return (a[None] if a.ndim == 3 else a).permute(0, 3, 1, 2).float().div_(255)


def rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize an (H, W, 3) image by `scale` (area averaging down, bilinear up), as letterbox and predict both do."""
    h, w = image.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) == (w, h):
        return image
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def letterbox(image: np.ndarray, boxes, size: int, fill=None) -> tuple[np.ndarray, np.ndarray, float]:
    """Resize the longer side to `size` keeping the aspect, pad bottom/right; boxes follow. Returns the scale.

    Padding defaults to the image's mean colour: black bars would look like the product edges the detector
    must learn to ignore.
    """
    h, w = image.shape[:2]
    scale = size / max(h, w)
    image = rescale(image, scale)
    nh, nw = image.shape[:2]
    colour = image.reshape(-1, 3).mean(0) if fill is None else fill
    out = np.empty((size, size, 3), np.uint8)
    out[...] = np.rint(colour).astype(np.uint8)
    out[:nh, :nw] = image
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32(scale)  # (N, 4)
    boxes = np.clip(boxes, 0, np.array([nw, nh, nw, nh], np.float32))
    return out, boxes, scale


def training_scale(records, input_size: int) -> float:
    """The one image geometry of a model: the median scale letterbox applied to its training images.

    Training and evaluation letterbox every image to the input size; `predict` resizes every image by this scale
    and then tiles it, so a crack meets the model at the size it was trained at (80 px patches: 1 for the stride-1
    models, 4.8 for CenterNet at 384 px). Checkpoints record it.
    """
    scales = [input_size / max(r.width, r.height) for r in records]
    if not scales:
        raise ValueError("no training records: the training scale is undefined")
    return float(np.median(scales))


def _keep(name: str, where: str, category: str, category_map: dict | None) -> bool:
    """True for the crack class, False for a category mapped to None; DataError for any other."""
    if category_map and name in category_map:
        if category_map[name] is None:
            return False
        name = category_map[name]
    if name != category:
        raise DataError(f"unknown category {name!r} in {where}")
    return True


def _box(xyxy, where: str, width: int, height: int) -> np.ndarray:
    """A validated, clipped (4,) box."""
    b = np.asarray(xyxy, np.float64)
    if not np.isfinite(b).all():
        raise DataError(f"box {b.tolist()} has NaN or infinite coordinates in {where}")
    if b[2] <= b[0] or b[3] <= b[1]:
        raise DataError(f"box {b.tolist()} has non-positive size in {where}")
    t = BOX_TOLERANCE
    if b[0] < -t or b[1] < -t or b[2] > width + t or b[3] > height + t:
        raise DataError(f"box {b.tolist()} is outside the {width}x{height} image in {where}")
    return np.clip(b, 0, [width, height, width, height]).astype(np.float32)


def _record(e: _Entry, category: str, category_map: dict | None) -> Record:
    if e.errors:
        raise e.errors[0]
    try:
        h, w = read_image(e.path).shape[:2]
    except DataError as err:
        raise DataError(f"{err} in {e.where}") from None
    if e.size and all(e.size) and e.size != (w, h):
        raise DataError(f"image {e.path} is {w}x{h} but {e.where} says {e.size[0]}x{e.size[1]}")
    boxes = [_box(xyxy, where, w, h) for where, name, xyxy in e.objects if _keep(name, where, category, category_map)]
    arr = np.array(boxes, np.float32).reshape(-1, 4)  # (N, 4)
    arr.setflags(write=False)
    return Record(e.path, arr, w, h, e.image_id)


def _validate(entries, orphans, source, category, category_map, skip_bad) -> list[Record]:
    """Records of the good entries; the first bad one raises, or with skip_bad all are skipped with a warning."""
    bad = list(orphans)
    if bad and not skip_bad:
        raise bad[0]
    records = []
    for e in entries:
        try:
            records.append(_record(e, category, category_map))
        except DataError as err:
            if not skip_bad:
                raise
            bad.append(err)
    if bad:
        warnings.warn(f"skipped {len(bad)} bad entries of {source} (first: {bad[0]})", stacklevel=3)
    return records


def load_coco(json_path, image_root=None, category: str = "crack", category_map: dict | None = None,
              skip_bad: bool = False) -> list[Record]:
    """Records of a COCO detection file; file names are relative to image_root (default: the file's folder)."""
    src = Path(json_path)
    root = Path(image_root) if image_root is not None else src.parent
    if not src.is_file():
        raise DataError(f"missing annotation file {src}")
    try:
        doc = json.loads(src.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"malformed JSON in {src}: {err}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataError(f"malformed COCO file {src}: no 'images' list")
    try:
        names = {c["id"]: str(c["name"]) for c in doc.get("categories", [])}
    except (KeyError, TypeError):
        raise DataError(f"malformed COCO file {src}: a category lacks 'id' or 'name'") from None
    entries, orphans = {}, []
    for i, im in enumerate(doc["images"]):
        where = f"{src} (entry images[{i}])"
        try:
            size = (int(im["width"]), int(im["height"])) if "width" in im and "height" in im else None
            iid, path = im["id"], root / im["file_name"]
        except (KeyError, TypeError, ValueError):
            orphans.append(DataError(f"malformed image entry (needs id, file_name) in {where}"))
            continue
        if iid in entries:
            orphans.append(DataError(f"duplicate image id {iid!r} in {where}"))
            continue
        entries[iid] = _Entry(path, iid, where, size)
    for j, ann in enumerate(doc.get("annotations", [])):
        where = f"{src} (entry annotations[{j}])"
        try:
            iid, cid = ann["image_id"], ann["category_id"]
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            orphans.append(DataError(f"malformed annotation (needs image_id, category_id, bbox) in {where}"))
            continue
        if iid not in entries:
            orphans.append(DataError(f"annotation for unknown image id {iid!r} in {where}"))
            continue
        name = names.get(cid, f"<undeclared id {cid}>")
        entries[iid].objects.append((where, name, [x, y, x + w, y + h]))
    return _validate(entries.values(), orphans, src, category, category_map, skip_bad)


def _voc_entry(xml: Path, image_dir: Path, image_id: int) -> _Entry:
    """Parse one VOC annotation file; DataError if it is not well-formed."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as err:
        raise DataError(f"malformed XML in {xml}: {err}") from None
    name = (root.findtext("filename") or "").strip()
    path = image_dir / name if name else None
    if path is None or (not path.suffix and not path.exists()):  # LabelImg may omit the suffix
        stem = name or xml.stem
        path = next((image_dir / (stem + s) for s in IMAGE_SUFFIXES if (image_dir / (stem + s)).is_file()),
                    image_dir / (stem + ".jpg"))
    try:
        size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
    except (TypeError, ValueError):
        size = None
    e = _Entry(path, image_id, str(xml), size)
    for k, obj in enumerate(root.iter("object")):
        where = f"{xml} (entry object {k})"
        try:
            x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (TypeError, ValueError):
            e.errors.append(DataError(f"malformed object (needs bndbox xmin ymin xmax ymax) in {where}"))
            continue
        e.objects.append((where, (obj.findtext("name") or "").strip(), [x1 - 1, y1 - 1, x2, y2]))
    return e


def load_voc(folder, image_dir=None, image_set: str | None = None, category: str = "crack",
             category_map: dict | None = None, skip_bad: bool = False) -> list[Record]:
    """Records of a Pascal VOC folder: Annotations/*.xml and JPEGImages/ (or XMLs next to their images)."""
    root = Path(folder)
    ann_dir = root / "Annotations" if (root / "Annotations").is_dir() else root
    img_dir = Path(image_dir) if image_dir else (root / "JPEGImages" if (root / "JPEGImages").is_dir() else ann_dir)
    if image_set is not None:
        listing = root / "ImageSets" / "Main" / f"{image_set}.txt"
        if not listing.is_file():
            raise DataError(f"missing image set file {listing}")
        xmls = [ann_dir / f"{ln.split()[0]}.xml" for ln in listing.read_text().splitlines() if ln.strip()]
    else:
        xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise DataError(f"no VOC annotation files (*.xml) in {ann_dir}")
    entries, orphans = [], []
    for n, xml in enumerate(xmls):
        try:
            if not xml.is_file():
                raise DataError(f"missing annotation file {xml}")
            entries.append(_voc_entry(xml, img_dir, n))
        except DataError as err:
            orphans.append(err)
    return _validate(entries, orphans, root, category, category_map, skip_bad)


def write_coco(records, json_path, *, info: dict | None = None, attributes: list[list[dict]] | None = None) -> Path:
    """A COCO detection file (category 1 "crack") listing `records`, file names relative to the file's folder;
    `attributes` (one list per record, one dict per box) travel with each annotation, `info` as the file's."""
    import os

    path = Path(json_path)
    images, anns = [], []
    for i, r in enumerate(records, 1):
        images.append({"id": i, "file_name": os.path.relpath(Path(r.path).resolve(), path.parent.resolve()),
                       "width": r.width, "height": r.height})
        extra = attributes[i - 1] if attributes is not None else [None] * len(r.boxes)
        anns += [{"id": len(anns) + 1, "image_id": i, "category_id": 1, "iscrowd": 0,
                  "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                  "area": float((b[2] - b[0]) * (b[3] - b[1])), **({"attributes": a} if a is not None else {})}
                 for b, a in zip(r.boxes, extra)]
    doc = {**({"info": info} if info else {}), "images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "crack", "supercategory": "defect"}]}
    text = json.dumps(doc)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))  # readers in other processes never see half a file
    return path


def synth_records(root, split: str) -> list[Record]:
    """Records of one split written by crackcore.data.synth_files.write_dataset (§V-A)."""
    return load_coco(Path(root) / f"{split}.json")


def load_records(source, split: str, **kwargs) -> list[Record]:
    """A split from a folder with <split>.json (synthetic or COCO), a COCO file, or a VOC folder.

    For a single COCO file, or a VOC folder without ImageSets/Main, the file or folder is the split and
    `split` is ignored; a VOC folder with ImageSets/Main reads <split>.txt.
    """
    src = Path(source)
    if src.is_file():
        return load_coco(src, **kwargs)
    if (src / f"{split}.json").is_file():
        return load_coco(src / f"{split}.json", **kwargs)
    if (src / "Annotations").is_dir() or any(src.glob("*.xml")):
        sets = src / "ImageSets" / "Main"
        return load_voc(src, image_set=split if sets.is_dir() else None, **kwargs)
    raise DataError(f"no {split}.json, COCO file or VOC folder at {src}")


class CrackDataset(Dataset):
    """(image (3, S, S) float32 in [0, 1], boxes (N, 4) float32 xyxy in input pixels) per record.

    Images are letterboxed to `input_size`, then augmented (§IV-B) when `train`. N varies per image, so the
    default collate cannot stack a batch: pass a collate_fn that keeps the boxes as a list.
    """

    def __init__(self, records, input_size: int, train: bool, transform=None):
        self.records, self.size = list(records), input_size
        self.transform = transform or (build_train_transform(input_size) if train else build_eval_transform(input_size))

    def __len__(self) -> int:
        return len(self.records)

    def inputs(self) -> torch.Tensor:
        """Every image as the model sees it, stacked: (N, 3, S, S) in [0, 1] (boxes dropped)."""
        return torch.stack([self[i][0] for i in range(len(self))])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.records[i]
        img, boxes, _ = letterbox(read_image(r.path), r.boxes, self.size)
        image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1))  # (3, S, S) uint8
        bb = tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(self.size, self.size))
        image, bb = self.transform(image, bb)
        return image.as_subclass(torch.Tensor), bb.as_subclass(torch.Tensor)
