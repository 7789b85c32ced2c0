"""Preprocessing: canvases, photos and arrays become MNIST-style 28×28 images; bad input gets a message."""
from __future__ import annotations

import io
import re
import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile
from scipy import ndimage

from core.errors import DigitLabError
from core.data.preprocess import (MAX_UPLOAD_PIXELS, WORK_MAX, EmptyDrawingError, ImageFormatError, decode_upload,
                             to_model_input, to_model_inputs)

SEVEN = [(0.3, 0.2), (0.7, 0.22), (0.45, 0.8)]  # a 7 as fractions of its box
WHITE, BLACK, CLEAR = (255, 255, 255, 255), (0, 0, 0, 255), (0, 0, 0, 0)


def canvas(size: int = 280, box: tuple[float, float, float] = (0.0, 0.0, 1.0), width: float = 20,
           ink=WHITE, paper=CLEAR, points=SEVEN) -> np.ndarray:
    """An RGBA canvas with a stroke drawn in the square (left, top, side), fractions of the canvas."""
    left, top, side = (v * size for v in box)
    image = Image.new("RGBA", (size, size), paper)
    xy = [(left + x * side, top + y * side) for x, y in points]
    pen = ImageDraw.Draw(image)
    pen.line(xy, fill=ink, width=max(1, round(width)), joint="curve")
    for x, y in (xy[0], xy[-1]):
        pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=ink)
    return np.asarray(image).copy()


def ink_box(x: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(x.max(axis=1) > 0), np.flatnonzero(x.max(axis=0) > 0)
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def centre_of_mass(x: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted, in 0-based pixel indices, as MNIST was centred."""
    total = x.sum()
    return float(x.sum(axis=1) @ np.arange(28)) / total, float(x.sum(axis=0) @ np.arange(28)) / total


def assert_mnist_like(x: np.ndarray) -> None:
    assert x.shape == (28, 28) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() == pytest.approx(1.0)
    h, w = ink_box(x)
    assert 18 <= max(h, w) <= 20, (h, w)  # longer side scaled to the 20-px box
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1, (cy, cx)


@pytest.mark.parametrize("box, width", [
    ((0.0, 0.0, 1.0), 20),    # fills the canvas
    ((0.05, 0.6, 0.3), 8),    # small, in a corner
    ((0.45, 0.45, 0.1), 3),   # tiny
    ((0.2, 0.1, 0.6), 3),     # thin
    ((0.1, 0.1, 0.8), 40),    # thick
], ids=["huge", "off-centre", "tiny", "thin", "thick"])
def test_a_stroke_anywhere_and_any_size_becomes_a_centred_20px_digit(box, width):
    assert_mnist_like(to_model_input(canvas(box=box, width=width)))


def test_where_the_digit_was_drawn_does_not_matter():
    here, there = canvas(box=(0.0, 0.0, 0.5)), canvas(box=(0.45, 0.3, 0.5))
    np.testing.assert_allclose(to_model_input(here), to_model_input(there), atol=1e-6)


def test_thin_strokes_survive_the_tenfold_shrink():
    x = to_model_input(canvas(box=(0.0, 0.0, 1.0), width=4))
    assert_mnist_like(x)
    assert (x > 0.3).sum() >= 20  # a visible line, not a few grey dots


def test_stroke_colour_does_not_matter_on_a_transparent_canvas():
    white = to_model_input(canvas(ink=WHITE))
    for ink in (BLACK, (200, 30, 60, 255)):
        np.testing.assert_allclose(to_model_input(canvas(ink=ink)), white, atol=1e-6)


def test_opaque_canvas_reads_the_ink_from_brightness():
    transparent = to_model_input(canvas())
    for ink, paper in ((BLACK, WHITE), (WHITE, BLACK), ((20, 20, 200, 255), (250, 250, 240, 255))):
        assert np.abs(to_model_input(canvas(ink=ink, paper=paper)) - transparent).mean() < 0.01


def test_dark_ink_on_light_paper_reads_the_same_as_light_on_dark():
    gray = canvas(ink=WHITE, paper=BLACK)[..., 0]
    np.testing.assert_allclose(to_model_input(255 - gray), to_model_input(gray), atol=1e-6)


def test_paper_texture_noise_and_specks_are_ignored_in_a_photo():
    clean = to_model_input(canvas())
    rng = np.random.default_rng(0)
    photo = canvas(ink=(40, 40, 50, 255), paper=(235, 232, 225, 255))[..., :3].astype(float)
    photo += rng.normal(0, 8, photo.shape)  # paper grain and JPEG noise
    photo[20:23, 250:253] = 30  # a speck of dirt far from the digit
    photo[260, 10] = 0
    x = to_model_input(np.clip(photo, 0, 255).astype(np.uint8))
    assert_mnist_like(x)
    assert np.abs(x - clean).mean() < 0.03


@pytest.mark.parametrize("image", [
    np.zeros((280, 280, 4), np.uint8),                        # untouched transparent canvas
    np.full((280, 280, 4), 255, np.uint8),                    # opaque white canvas
    np.zeros((280, 280), np.uint8),                           # all zero / full black
    np.full((64, 64, 3), 255, np.uint8),                      # full white
    np.full((50, 40, 3), (90, 140, 30), np.uint8),            # one flat colour
    np.full((28, 28), 0.5, np.float32),                       # flat float grey
    np.zeros((1, 1), np.uint8), np.full((1, 1, 4), 255, np.uint8),
], ids=["transparent", "opaque-white", "black", "white", "flat-colour", "flat-float", "1x1", "1x1-rgba"])
def test_nothing_to_read_raises_empty_drawing_error_with_a_sentence(image):
    with pytest.raises(EmptyDrawingError, match="(?i)draw"):
        to_model_input(image)


def test_a_one_pixel_image_has_no_paper_to_contrast_with_so_it_is_empty():
    with pytest.raises(EmptyDrawingError):
        to_model_input(np.full((1, 1), 255, np.uint8))


def test_a_single_dot_becomes_a_small_centred_dot():
    x = to_model_input(canvas(points=[(0.8, 0.1)], width=24))
    h, w = ink_box(x)
    assert max(h, w) <= 6
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1 and x.max() == 1.0


def _arc(cx: float, cy: float, rx: float, ry: float, start: float = 0, end: float = 360) -> list:
    """Points along an ellipse (degrees clockwise from 12 o'clock), in a digit's unit box."""
    return [(cx + rx * math.sin(math.radians(a)), cy - ry * math.cos(math.radians(a)))
            for a in np.linspace(start, end, 49)]


THICK = {  # digits as strokes in a box 1 tall, about 0.6 wide (x right, y down)
    "0": [_arc(0.3, 0.5, 0.3, 0.5)],
    "6": [[(0.5, 0.0), (0.3, 0.2), (0.08, 0.55)] + _arc(0.32, 0.72, 0.26, 0.28, 270, 630)],
    "8": [_arc(0.3, 0.25, 0.22, 0.25), _arc(0.3, 0.74, 0.28, 0.26)],
    "9": [_arc(0.3, 0.28, 0.26, 0.28, 90, 450) + [(0.56, 0.3), (0.5, 0.65), (0.3, 1.0)]],
    "1": [[(0.15, 0.15), (0.35, 0.0), (0.35, 1.0)]],
    "4": [[(0.4, 0.0), (0.0, 0.65), (0.6, 0.65)], [(0.45, 0.3), (0.45, 1.0)]],
    "7": [[(0.0, 0.0), (0.6, 0.0), (0.25, 1.0)]],
}


def brush(strokes: list, height: float, width: float, at=(120.0, 100.0), size: int = 280) -> np.ndarray:
    """Strokes drawn with a round brush `width` px wide (round caps and joins), `height` px tall, on RGBA."""
    image = Image.new("RGBA", (size, size), CLEAR)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        xy = [(at[0] + x * height, at[1] + y * height) for x, y in stroke]
        pen.line(xy, fill=WHITE, width=round(width), joint="curve")
        for x, y in xy:
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=WHITE)
    return np.asarray(image).copy()


@pytest.mark.parametrize("width", [20, 30, 40])
@pytest.mark.parametrize("height", [30, 40, 50])
@pytest.mark.parametrize("digit", list(THICK))
def test_a_small_digit_drawn_with_a_wide_brush_is_scaled_like_any_digit_not_shrunk_to_a_dot(digit, height, width):
    drawing = brush(THICK[digit], height, width)
    if digit in "0689" and height <= 40 and width >= 30:
        assert not _has_hole(drawing)  # the wide brush really closed the loops
    x = to_model_input(drawing)
    assert_mnist_like(x)  # long side 18-20 px, centred; a dot would be 4 px


def _has_hole(drawing: np.ndarray) -> bool:
    ink = drawing[..., 3] > 0
    return bool((ndimage.binary_fill_holes(ink) & ~ink).any())


def assert_small_dot(x: np.ndarray) -> None:
    h, w = ink_box(x)
    assert max(h, w) <= 6, (h, w)
    cy, cx = centre_of_mass(x)
    assert abs(cy - 14) <= 1 and abs(cx - 14) <= 1 and x.max() == 1.0


@pytest.mark.parametrize("width", [5, 8, 12, 20, 30, 40])
def test_a_click_with_any_brush_becomes_a_small_centred_dot(width):
    assert_small_dot(to_model_input(brush([[(0.0, 0.0)]], 1, width, at=(200.0, 60.0))))


@pytest.mark.parametrize("width", [5, 8, 12, 20, 30, 40])
@pytest.mark.parametrize("drag", [2, 4])
def test_a_short_dab_with_any_brush_becomes_a_small_centred_dot(width, drag):
    dab = [[(0.0, 0.0), (drag, 0.0)]]  # the pen moved `drag` px while pressed
    assert_small_dot(to_model_input(brush(dab, 1, width, at=(60.0, 200.0))))
    assert_small_dot(to_model_input(brush([[(0.0, 0.0), (drag * 0.7, drag * 0.7)]], 1, width)))  # diagonally


def test_a_5000px_image_is_downscaled_early_and_reads_like_the_small_one():
    small = canvas(size=280)
    big = np.asarray(Image.fromarray(small).resize((5000, 5000), Image.NEAREST))
    x = to_model_input(big)  # speed is measured in benchmarks/predict.py, not asserted here
    assert np.abs(x - to_model_input(small)).mean() < 0.02


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "1", "F", "I"])
def test_pil_images_in_any_mode_read_like_the_array(mode):
    rgba = canvas(ink=BLACK, paper=WHITE, width=24)
    expected = to_model_input(rgba)
    image = Image.fromarray(rgba).convert(mode)
    assert np.abs(to_model_input(image) - expected).mean() < 0.02


def test_pil_image_with_transparency_uses_the_alpha_channel():
    image = Image.fromarray(canvas(ink=BLACK))  # black ink on transparent black: only alpha shows it
    assert_mnist_like(to_model_input(image))
    assert_mnist_like(to_model_input(image.convert("LA")))


def test_float_and_integer_grayscale_read_like_uint8():
    gray = canvas(ink=WHITE, paper=BLACK)[..., 0]
    expected = to_model_input(gray)
    for same in (gray / 255.0, gray.astype(np.float32), gray.astype(np.int64), gray.astype(np.uint16) * 257,
                 gray[..., None], gray > 127):
        assert np.abs(to_model_input(same) - expected).mean() < 0.02


@pytest.mark.parametrize("image, words", [
    (np.zeros((28, 28, 5), np.uint8), "shape"),
    (np.zeros((2, 28, 28, 3), np.uint8), "shape"),
    (np.zeros((0, 28), np.uint8), "no pixels"),
    (np.array([["a", "b"], ["c", "d"]]), "numbers"),
    (None, "numbers"),
    (np.full((28, 28), np.nan, np.float32), "NaN"),
    (np.full((28, 28), -1.0), "negative"),
    (np.full((28, 28), 1000.0), "0–255"),
    ([[0, 1], [2]], "image"),
])
def test_wrong_inputs_raise_a_value_error_that_says_what_is_wrong(image, words):
    with pytest.raises(ImageFormatError, match=words) as error:
        to_model_input(image)
    assert isinstance(error.value, ValueError) and isinstance(error.value, DigitLabError)


def test_a_batch_stacks_and_names_the_image_that_failed():
    images = [canvas(), Image.fromarray(canvas(ink=BLACK, paper=WHITE))]
    batch = to_model_inputs(images)
    assert batch.shape == (2, 28, 28) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0], to_model_input(images[0]))
    assert to_model_inputs([]).shape == (0, 28, 28)
    with pytest.raises(EmptyDrawingError, match="Image 2 of 2"):
        to_model_inputs([canvas(), np.zeros((280, 280, 4), np.uint8)])


def test_an_mnist_digit_comes_back_nearly_unchanged(mnist_sample):
    images, _ = mnist_sample
    again = to_model_inputs(list(images[:200]))
    assert np.abs(again - images[:200]).mean() < 0.03
    measured = np.array([centre_of_mass(x) for x in again])
    assert np.abs(measured - 14).max() <= 1


# -- uploads -------------------------------------------------------------------------------------------
def photo(size: tuple[int, int] = (300, 200)) -> Image.Image:
    """A 7 in dark ink on light paper, as an RGB photo of `size` (width, height)."""
    side = min(size)
    rgba = canvas(size=side, box=(0.15, 0.15, 0.7), width=side / 12, ink=(30, 30, 40, 255), paper=(235, 230, 220, 255))
    page = Image.new("RGB", size, (235, 230, 220))
    page.paste(Image.fromarray(rgba).convert("RGB"), ((size[0] - side) // 2, (size[1] - side) // 2))
    return page


def encoded(image: Image.Image, fmt: str, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation  # EXIF Orientation
    image.save(buffer, format=fmt, exif=exif.tobytes(), **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@pytest.mark.parametrize("fmt, size", [("JPEG", (300, 200)), ("JPEG", (3000, 2000)), ("PNG", (300, 200)),
                                       ("PNG", (1500, 1000))], ids=["jpeg", "big-jpeg", "png", "big-png"])
def test_a_photo_stored_sideways_with_an_exif_rotation_reads_upright(fmt, size):
    upright = photo(size)
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # how a phone stores a portrait shot
    decoded = decode_upload(encoded(sideways, fmt, orientation=6))  # 6: "rotate 90° clockwise to view"
    assert decoded.format == fmt and decoded.width > decoded.height  # upright again: landscape
    expected = to_model_input(decode_upload(encoded(upright, fmt)))
    assert np.abs(to_model_input(decoded) - expected).mean() < 0.01
    ignored = to_model_input(decode_upload(encoded(sideways, fmt)))  # without the tag: a lying 7
    assert np.abs(ignored - expected).mean() > 0.05


def test_a_large_jpeg_is_decoded_at_reduced_size_and_reads_like_the_full_decode(monkeypatch):
    data = encoded(photo((4000, 3000)), "JPEG")
    decoded_at: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def spy(image: ImageFile.ImageFile):  # the size the file's pixels are actually decoded at
        decoded_at.append(image.size)
        return load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    decoded = decode_upload(data)
    monkeypatch.undo()
    assert decoded_at and max(max(size) for size in decoded_at) <= 2 * WORK_MAX  # never 12 MP in memory
    assert max(decoded.size) <= 2 * WORK_MAX and decoded.format == "JPEG"
    with Image.open(io.BytesIO(data)) as full:
        full.load()
        assert full.size == (4000, 3000)
        expected = to_model_input(full)
    x = to_model_input(decoded)
    assert_mnist_like(x)
    assert np.abs(x - expected).mean() < 0.01


def test_a_large_png_is_shrunk_after_decoding_exactly_as_preprocessing_would():
    image = photo((2400, 1600)).convert("L")
    decoded = decode_upload(encoded(image, "PNG"))
    assert max(decoded.size) <= WORK_MAX
    np.testing.assert_array_equal(to_model_input(decoded), to_model_input(image))


def test_small_uploads_keep_their_size_and_format():
    small = photo((64, 48))
    for fmt in ("PNG", "JPEG"):
        decoded = decode_upload(encoded(small, fmt))
        assert decoded.size == (64, 48) and decoded.format == fmt


def _blank(fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 255).save(buffer, format=fmt)
    return buffer.getvalue()


def _noisy_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("data, words", [
    (b"", "The file is empty"),
    (b"%PDF-1.4", "That file is not a readable PNG or JPEG image: it is another kind of file, or a damaged image."),
    (b"hello, I am text renamed to seven.png", "not a readable PNG or JPEG"),
    (_blank("PNG")[:40], "not a readable PNG or JPEG"),
    (_blank("GIF"), "is a GIF image; upload a PNG or JPEG"),
    (_blank("BMP"), "is a BMP image; upload a PNG or JPEG"),
    (_blank("TIFF"), "is a TIFF image; upload a PNG or JPEG"),
    (_noisy_jpeg()[:-1], "That image is damaged or cut short: its pixels could not all be read."),  # was Pillow's
], ids=["empty", "pdf", "text", "truncated-png", "gif", "bmp", "tiff", "truncated-jpeg"])
def test_uploads_that_are_not_png_or_jpeg_are_refused_in_words(data, words):
    with pytest.raises(DigitLabError, match=re.escape(words)) as refused:
        decode_upload(data)
    assert "BytesIO" not in str(refused.value) and " at 0x" not in str(refused.value)  # no Python internals


def test_uploads_declaring_too_many_megapixels_are_refused_before_decoding():
    limit = f"the limit is {MAX_UPLOAD_PIXELS // 10**6} megapixels"
    with pytest.raises(DigitLabError, match=limit):
        decode_upload(_blank("PNG", size=(6000, 5000)))
    bomb = io.BytesIO()  # a small file declaring 400 million pixels: Pillow's decompression-bomb guard
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 200_000
    with pytest.raises(DigitLabError, match=f"declares more than {MAX_UPLOAD_PIXELS // 10**6} megapixels"):
        decode_upload(bomb.getvalue())
