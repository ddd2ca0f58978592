"""Image files as a model sees them: any Pillow mode decoded to (H, W, 3) uint8 RGB, the letterbox to the input size,
and the one scale that training applied, which `predict` applies again."""
from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad input data; the message names the file and the entry."""


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
