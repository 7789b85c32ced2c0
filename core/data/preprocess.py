"""Turn a canvas drawing or an uploaded picture into the 28×28 MNIST-style image a model sees.

`to_model_input(image)` takes an RGBA canvas, an RGB / grayscale array or a PIL image and returns
float32 (28, 28) in [0, 1], ink bright on black, as MNIST / 255; `to_model_inputs(images)` stacks many.
`decode_upload(data)` turns an uploaded file's bytes into a PIL image (checked, upright, small enough).

The steps follow how MNIST was made: find the ink, crop to it, scale its longer side to 20 px with
antialiasing, and place it in 28×28 so that its centre of mass sits at pixel (14, 14).
Ink is the alpha channel when the background is transparent (a drawing canvas, any stroke colour);
otherwise it is whatever differs most from the paper's colour (the median of the image's border),
so dark ink on white paper and light ink on a black screen both work. Decisions on edge cases:
- nothing to read (all transparent, one flat colour, all black, all white, and so any 1×1 image,
  which has no paper to contrast with) raises `EmptyDrawingError`;
- a lone dot becomes a small centred dot of 4 px, not a 20 px disc. A dot is decided from the ink's
  shape: a click or a short dab of a round brush reaches at most a jitter (2% of the picture) beyond
  the widest disc that fits inside it; a small digit drawn with a wide brush, even with its holes
  closed, is an oval, a waisted 8 or a 6/9 with a tail and reaches further, so it is scaled to 20 px.
  (A 0 drawn almost as a circle with a brush wider than the 0 is a dot: nothing in the ink says otherwise.)
- specks with under 2% of the main stroke's ink (a stray click, JPEG or paper noise) are dropped;
- float images may hold 0..1 or 0..255; integer images 0..255 or 0..65535;
- uploads must be PNG or JPEG of at most 25 megapixels; EXIF orientation is applied, and they are
  shrunk while decoding (JPEG at 1/2, 1/4 or 1/8 scale) to a long side of at most WORK_MAX px, as
  `to_model_input` would shrink them anyway.
"""
from __future__ import annotations

import io
import math
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage
from skimage.measure import regionprops

from core.errors import DigitLabError, EmptyDrawingError, ImageFormatError

SIZE = 28            # output side, px
BOX = 20             # the ink's longer side after scaling, px (as in MNIST)
WORK_MAX = 560       # larger inputs (long side, px) are area-averaged below this before anything else
MIN_CONTRAST = 0.1   # ink must differ from the paper by at least 10% of the full range
ALPHA_FLOOR = 0.05   # relative alpha below this is a stray antialiased edge, not ink
LUMA_FLOOR = 0.2     # relative difference from the paper below this is texture / JPEG noise
SPECK = 0.02         # connected blobs with < 2% of the largest blob's ink are specks, dropped
DOT_REACH = 0.02     # a dot reaches at most this much (of the picture's long side) beyond its widest disc
DOT_JITTER_PX = 2.0  # ... or this many px: a pixelated disc's outline is not quite round
DOT_PX = 4           # ... and is drawn this big, like a pen dot, instead of being blown up to 20 px
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as PIL's convert("L")
EIGHT = np.ones((3, 3), dtype=bool)  # diagonal neighbours belong to the same stroke
UPLOAD_FORMATS = ("PNG", "JPEG")
MAX_UPLOAD_PIXELS = 25_000_000  # also bounds decoding work: a 5 MB upload can hide a huge image

EMPTY = "The canvas is empty — draw a digit first."
FLAT = "The picture shows no digit: it is (almost) one flat colour. Draw or upload a digit first."


def to_model_input(image: Any) -> np.ndarray:
    """One drawing or picture -> float32 (28, 28) in [0, 1], ink bright on black, max 1."""
    pixels = _shrink(_as_array(image))
    ink, floor, message = _find_ink(pixels)
    return _mnistify(ink, floor, message)


def to_model_inputs(images: Sequence[Any]) -> np.ndarray:
    """Many drawings or pictures (a list, or an array whose first axis is the batch) -> (N, 28, 28)."""
    if isinstance(images, Image.Image):
        raise ImageFormatError("Pass a list of images to to_model_inputs, or use to_model_input for one.")
    images = list(images)
    out = np.empty((len(images), SIZE, SIZE), dtype=np.float32)
    for i, image in enumerate(images):
        try:
            out[i] = to_model_input(image)
        except DigitLabError as error:  # say which one, keep the class so callers can still catch it
            raise type(error)(f"Image {i + 1} of {len(images)}: {error}") from error
    return out


def decode_upload(data: bytes) -> Image.Image:
    """An uploaded file as an upright PIL image of at most WORK_MAX px, after checking it is a sane PNG or JPEG."""
    if not data:
        raise DigitLabError("The file is empty.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind, size = probe.format, probe.size
            probe.verify()  # checks the structure without decoding all pixels
    except Image.DecompressionBombError:
        raise DigitLabError(f"The image declares more than {MAX_UPLOAD_PIXELS // 10**6} megapixels; "
                            "crop or shrink it first.") from None
    except UnidentifiedImageError:  # its own message names an in-memory buffer ("<_io.BytesIO object at 0x…>")
        raise DigitLabError("That file is not a readable PNG or JPEG image: it is another kind of file, or a damaged "
                            "image. Upload a PNG or JPEG of one digit.") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise DigitLabError(f"That file is not a readable PNG or JPEG image ({error}).") from None
    if kind not in UPLOAD_FORMATS:
        raise DigitLabError(f"That file is a {kind} image; upload a PNG or JPEG.")
    if size[0] * size[1] > MAX_UPLOAD_PIXELS:
        raise DigitLabError(f"The image is {size[0]}×{size[1]} pixels; the limit is {MAX_UPLOAD_PIXELS // 10**6} "
                            "megapixels. Crop or shrink it first.")
    try:
        image = Image.open(io.BytesIO(data))
        long_side = max(image.size)
        if kind == "JPEG" and long_side > WORK_MAX:
            # Decode at 1/2, 1/4 or 1/8 scale (in the DCT, no full-size pixels ever exist), keeping the
            # long side >= WORK_MAX so the result matches a full decode shrunk by _shrink.
            image.draft(image.mode, tuple(math.ceil(side * WORK_MAX / long_side) for side in image.size))
        image.load()
        image = _shrink_image(image)  # PNG has no reduced decode: drop the full-size pixels right away
        upright = ImageOps.exif_transpose(image)  # phone photos are stored sideways with a rotation tag
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # e.g. a JPEG cut short in transit ("image file is truncated (1 bytes not processed)"): said in words
        raise DigitLabError("That image is damaged or cut short: its pixels could not all be read. Save or export it "
                            "again and upload the new file.") from None
    upright.format = kind  # what the file was, as Image.open would say
    return upright


def _shrink_image(image: Image.Image) -> Image.Image:
    """Box-average a PIL image to a long side of at most WORK_MAX px, exactly as _shrink does an array."""
    factor = math.ceil(max(image.size) / WORK_MAX)
    if factor <= 1:
        return image
    info = image.info  # holds the EXIF orientation, for exif_transpose
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    elif image.mode not in {"L", "LA", "RGB", "RGBA", "F", "I"}:
        image = Image.fromarray(_pil_pixels(image))  # palette, 1-bit, CMYK ...: to a mode that averages
    small = image.reduce(factor)
    small.info = info
    return small


def _as_array(image: Any) -> np.ndarray:
    """Pixels as uint8 0..255 or float32 0..1, shaped (H, W) or (H, W, C) with C in 2..4."""
    if isinstance(image, Image.Image):
        image = _pil_pixels(image)
    try:
        arr = np.asarray(image)
    except Exception as error:  # ragged lists and the like
        raise ImageFormatError(
            f"Expected an image (a numpy array or PIL image), got {type(image).__name__}.") from error
    if arr.dtype.kind not in "biuf":
        raise ImageFormatError(
            f"Expected an image of numbers (a numpy array or PIL image), got {type(image).__name__} "
            f"holding {arr.dtype}.")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (2, 3, 4)):
        raise ImageFormatError(
            "An image must be shaped (height, width) for grayscale or (height, width, channels) with "
            f"3 (RGB) or 4 (RGBA) channels; got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageFormatError(f"The image has no pixels (shape {arr.shape}).")
    return _scaled(arr)


def _pil_pixels(image: Image.Image) -> np.ndarray:
    """A PIL image in any mode as a numpy array of a mode we read (keeping alpha when there is some)."""
    if image.mode in {"L", "LA", "RGB", "RGBA", "F"} or image.mode.startswith("I"):
        return np.asarray(image)
    if image.mode == "1":
        return np.asarray(image.convert("L"))
    return np.asarray(image.convert("RGBA" if image.has_transparency_data else "RGB"))


def _scaled(arr: np.ndarray) -> np.ndarray:
    """uint8 stays as it is; other types become float32 in [0, 1], or a clear error."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * np.uint8(255)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ImageFormatError("The image contains NaN or infinite values, so it cannot be read.")
    low, high = float(arr.min()), float(arr.max())
    if low < 0:
        raise ImageFormatError(f"Pixel values must not be negative; this image goes down to {low:g}.")
    if arr.dtype.kind == "f" and high <= 1.0:
        return arr.astype(np.float32, copy=False)
    if high <= 255:
        return (arr.astype(np.float32) / 255.0) if arr.dtype.kind == "f" else arr.astype(np.uint8)
    if arr.dtype.kind in "iu" and high <= 65535:  # 16-bit scans
        return arr.astype(np.float32) / 65535.0
    raise ImageFormatError(
        f"Pixel values must be 0–1 or 0–255 (0–65535 for 16-bit); this image goes up to {high:g}.")


def _shrink(arr: np.ndarray) -> np.ndarray:
    """Area-average large inputs to a long side of at most WORK_MAX px, so the rest stays fast."""
    factor = math.ceil(max(arr.shape[:2]) / WORK_MAX)
    if factor <= 1:
        return arr
    if arr.dtype == np.uint8:  # PIL infers L / LA / RGB / RGBA from the shape
        return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).reduce(factor))
    planes = arr[..., None] if arr.ndim == 2 else arr
    small = [np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c]), "F").reduce(factor))
             for c in range(planes.shape[2])]
    return small[0] if arr.ndim == 2 else np.stack(small, axis=-1)


def _border(a: np.ndarray) -> np.ndarray:
    """The pixels of the outer ring (2% of the short side, at least 1 px): where the paper shows."""
    k = max(1, min(a.shape[:2]) // 50)
    rest = a.shape[2:]
    return np.concatenate([a[:k].reshape(-1, *rest), a[-k:].reshape(-1, *rest),
                           a[:, :k].reshape(-1, *rest), a[:, -k:].reshape(-1, *rest)])


def _find_ink(arr: np.ndarray) -> tuple[np.ndarray, float, str]:
    """Ink strength per pixel (float32, 0 = paper), the noise floor to apply, and the empty message."""
    full = 255.0 if arr.dtype == np.uint8 else 1.0
    has_alpha = arr.ndim == 3 and arr.shape[2] in (2, 4)
    if has_alpha:
        alpha = arr[..., -1]
        if np.median(_border(alpha)) < 0.5 * full:  # transparent background: the strokes are the alpha
            return alpha.astype(np.float32) / np.float32(full), ALPHA_FLOOR, EMPTY
    colour = arr[..., :-1] if has_alpha else arr
    if colour.ndim == 3 and colour.shape[2] == 3:
        lum = colour.astype(np.float32) @ LUMA
    else:
        lum = colour.reshape(colour.shape[:2]).astype(np.float32)
    lum /= np.float32(full)
    paper = np.float32(np.median(_border(lum)))
    if has_alpha and arr[..., -1].min() < full:  # a few see-through pixels on opaque paper: paper colour
        a = arr[..., -1].astype(np.float32) / np.float32(full)
        lum = lum * a + paper * (1 - a)
    darker, lighter = paper - lum, lum - paper
    # Ink is on whichever side of the paper colour it stands out most; ties go to the usual polarity.
    dark_peak, light_peak = float(darker.max()), float(lighter.max())
    use_dark = dark_peak > light_peak or (dark_peak == light_peak and paper > 0.5)
    return np.maximum(darker if use_dark else lighter, 0), LUMA_FLOOR, FLAT


def _mnistify(ink: np.ndarray, floor: float, empty_message: str) -> np.ndarray:
    """Ink map -> denoise, crop, scale the long side to 20 px, centre the mass at (14, 14) in 28×28."""
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise EmptyDrawingError(empty_message)
    # Soft threshold: noise below the floor goes to 0, strokes keep their antialiased edges.
    ink = np.clip((ink * np.float32(1 / peak) - np.float32(floor)) * np.float32(1 / (1 - floor)), 0, None)
    mask = ink > 0
    labels, count = ndimage.label(mask, structure=EIGHT)
    if count > 1:
        mass = np.bincount(labels.ravel(), weights=ink.ravel())
        mass[0] = 0
        keep = mass >= SPECK * mass.max()
        if not keep[1:].all():
            mask = keep[labels]
            ink = np.where(mask, ink, np.float32(0))
    box = ndimage.find_objects(mask.astype(np.int8))[0]  # the bounding box of all the ink kept
    crop = np.ascontiguousarray(ink[box], dtype=np.float32)
    h, w = crop.shape
    scale = (DOT_PX if _is_dot(crop, max(ink.shape)) else BOX) / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    # LANCZOS in PIL widens its kernel when shrinking, so thin strokes are averaged, not skipped.
    small = np.asarray(Image.fromarray(crop, "F").resize((nw, nh), Image.Resampling.LANCZOS))
    small = np.clip(small, 0, 1)
    total = float(small.sum())
    if total <= 0:  # cannot happen for real ink, but never divide by zero
        raise EmptyDrawingError(empty_message)
    cy, cx = ndimage.center_of_mass(small)
    # MNIST's centre of mass sits at (14, 14) in 0-based pixel indices (measured: 13.99, 14.00).
    top = min(max(math.floor(SIZE / 2 - cy + 0.5), 0), SIZE - nh)
    left = min(max(math.floor(SIZE / 2 - cx + 0.5), 0), SIZE - nw)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top:top + nh, left:left + nw] = small
    out /= out.max()
    return out


def _is_dot(crop: np.ndarray, picture_px: int) -> bool:
    """Whether the cropped ink is one round blob (a click or a short dab, not a digit).

    Measured: the ink's longest extent (max Feret diameter) less its thickness (the diameter of the
    widest disc inside it). A click is ~1 px off a disc, a dab reaches by its drag; small thick digits
    drawn with a 20-40 px brush on a 280 px canvas reach 13 px (a 0) to 45 px (a 7) beyond theirs.
    """
    h, w = crop.shape
    if min(h, w) < 0.5 * max(h, w) or crop.sum() < 0.5 * h * w:
        return False  # elongated or airy: strokes (the cheap test spares most digits the transform)
    solid = crop >= 0.5
    labels, count = ndimage.label(solid, structure=EIGHT)
    if count != 1:
        return False  # a dot is one blob
    thickness = 2 * float(ndimage.distance_transform_edt(np.pad(solid, 1)).max())
    extent = regionprops(labels)[0].feret_diameter_max
    return extent - thickness <= max(DOT_REACH * picture_px, DOT_JITTER_PX)
