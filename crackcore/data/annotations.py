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

import numpy as np

from ..storage import atomic_write
from .images import IMAGE_SUFFIXES, DataError, read_image


BOX_TOLERANCE = 1.0


@dataclass(frozen=True, eq=False)
class Record:
    """One annotated image: its file, its crack boxes (none for a background) and its pixel size."""
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
