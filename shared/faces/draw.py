"""Drawing results onto images, photos and video frames alike: a box and a label per face, a text panel.

Images are ``uint8`` arrays ``(H, W, 3)``, RGB (or BGR where ``bgr=True``: the colours are then
swapped so the picture looks the same); boxes are ``(top, right, bottom, left)`` in their
pixels, edges included, as Pillow's rectangles. One font rule: labels are
``min(H, W) / 28`` pixels high, between 12 and 36 (:func:`font_size`), the panel's text 4
pixels less (at least 11). Labels may be in any script: the font is the first of
:data:`FONT_FILES` found (WenQuanYi Micro Hei covers CJK and Latin), else Pillow's built-in
font, loaded once per size (:func:`font`).

Text is rendered with Pillow once and cached as small bitmaps (:func:`label`,
:func:`panel_mask`); boxes and the bitmaps are put on the image with NumPy slices, which costs a
fraction of drawing a whole 1080p frame through Pillow. The result is pixel for pixel what
Pillow's ``ImageDraw`` draws (``rectangle(..., width=...)``, then the label's rectangle and text),
but for boxes lower than two line widths, whose sides may differ by a pixel or two.
"""
import functools
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
#: A known face's box and label (RGB).
KNOWN = (34, 197, 94)
#: Any other face's box and label (RGB).
UNKNOWN = (239, 68, 68)
WHITE = (255, 255, 255)


@functools.lru_cache(maxsize=16)
def font(size):
    """A TrueType font of ``size`` pixels (cached)."""
    for path in FONT_FILES:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def font_size(shape):
    """The labels' font size in pixels for an image of ``shape`` ``(H, W, ...)``: ``min(H, W) / 28``, 12 to 36."""
    return int(np.clip(min(shape[:2]) / 28, 12, 36))


def panel_font_size(shape):
    """The panel's font size in pixels for an image of ``shape``: the labels' less 4, at least 11."""
    return max(11, font_size(shape) - 4)


def line_width(shape):
    """The boxes' line width in pixels for an image of ``shape``: ``min(H, W) / 200``, at least 2."""
    return max(2, min(shape[:2]) // 200)


@functools.lru_cache(maxsize=512)
def label(text, size, colour):
    """An RGB bitmap ``(h, w, 3)`` of ``text`` in white on ``colour`` (read-only, cached).

    The text's ink box with ``pad`` pixels around it (a fifth of its height, at least 2), and one
    more on the right and at the bottom: a Pillow rectangle ``(x, y, x + tw + 2 pad, y + th + 2 pad)``.
    """
    f = font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=f)
    pad = max(2, (y1 - y0) // 5)
    im = Image.new("RGB", (x1 - x0 + 2 * pad + 1, y1 - y0 + 2 * pad + 1), colour)
    ImageDraw.Draw(im).text((pad - x0, pad - y0), text, font=f, fill=WHITE)
    out = np.asarray(im)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=64)
def panel_mask(lines, size):
    """A ``uint8`` mask ``(h, w, 3)`` of the panel's white text (255: text), ``lines`` a tuple (read-only, cached)."""
    f = font(size)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [probe.textbbox((0, 0), line, font=f) for line in lines]
    line_h = max(b[3] - b[1] for b in boxes) + 4
    w = max(b[2] - b[0] for b in boxes) + 16
    h = line_h * len(lines) + 10
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for i, (line, b) in enumerate(zip(lines, boxes)):
        draw.text((8 - b[0], 5 + i * line_h - b[1]), line, font=f, fill=255)
    out = np.repeat(np.asarray(im)[..., None], 3, axis=2)
    out.flags.writeable = False
    return out


def _fill(image, top, bottom, left, right, colour):
    """Paint rows ``top..bottom-1``, columns ``left..right-1`` of ``image`` (cut to the image)."""
    H, W = image.shape[:2]
    top, left = max(0, top), max(0, left)
    bottom, right = min(H, bottom), min(W, right)
    if top < bottom and left < right:
        image[top:bottom, left:right] = colour


def _paste(image, bitmap, y, x):
    """Put ``bitmap`` on ``image`` with its top left corner at row ``y``, column ``x`` (cut to the image)."""
    H, W = image.shape[:2]
    h, w = bitmap.shape[:2]
    y0, x0 = max(0, -y), max(0, -x)  # the bitmap's first row and column on the image
    y1, x1 = min(h, H - y), min(w, W - x)
    if y0 < y1 and x0 < x1:
        image[y + y0:y + y1, x + x0:x + x1] = bitmap[y0:y1, x0:x1]


def labelled_boxes(image, items, bgr=False):
    """Draw a box and a label for each face on ``image`` IN PLACE and return it.

    items: ``[(box, text, known), ...]`` in drawing order: known faces green (:data:`KNOWN`), the
    rest red (:data:`UNKNOWN`); an empty text draws the box only. The box's lines
    (:func:`line_width`) lie inside it; the label goes under the box, or above it when it would
    not fit, moved left to stay on the image.
    """
    H, W = image.shape[:2]
    size, width = font_size(image.shape), line_width(image.shape)
    for box, text, known in items:
        top, right, bottom, left = (int(v) for v in box)
        colour = KNOWN if known else UNKNOWN
        paint = colour[::-1] if bgr else colour
        _fill(image, top, top + width, left, right + 1, paint)
        _fill(image, bottom - width + 1, bottom + 1, left, right + 1, paint)
        # the sides: rows top + width to bottom - width, both included; on a box lower than two line
        # widths they run the other way, from bottom - width + 1 to top + width, and stick out (nearly as Pillow's)
        a, b = top + width, bottom - width
        if a > b:
            a, b = b + 1, a
        _fill(image, a, b + 1, left, left + width, paint)
        _fill(image, a, b + 1, right - width + 1, right + 1, paint)
        if not text:
            continue
        tag = label(text, size, colour)
        if bgr:
            tag = tag[:, :, ::-1]
        h, w = tag.shape[:2]
        y = bottom + 1 if bottom + h <= H else max(0, top - h + 1)
        x = min(max(0, left), max(0, W - w + 1))
        _paste(image, tag, y, x)
    return image


def panel(image, lines):
    """Draw ``lines`` (strings) in white on a darkened box (60 % darker) at the top left of ``image``
    IN PLACE and return it; no lines: nothing drawn. RGB or BGR alike (white on grey)."""
    if not lines:
        return image
    mask = panel_mask(tuple(lines), panel_font_size(image.shape))
    h, w = min(mask.shape[0], image.shape[0]), min(mask.shape[1], image.shape[1])
    dark = cv2.convertScaleAbs(image[:h, :w], alpha=0.4)
    image[:h, :w] = cv2.add(dark, cv2.multiply(255 - dark, mask[:h, :w], scale=1 / 255.0))  # + the text, white
    return image


def overlay(image, items, lines=(), bgr=False):
    """A video frame's overlay, IN PLACE: :func:`labelled_boxes` for ``items``, then :func:`panel` for ``lines``."""
    labelled_boxes(image, items, bgr)
    return panel(image, lines)
