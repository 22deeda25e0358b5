"""Drawing results onto images: a box and a label per face, and a small text panel.

Images are RGB ``uint8`` arrays ``(height, width, 3)``; boxes are
``(top, right, bottom, left)`` in their pixels. Labels may be in any script: the
font is the first of :data:`FONT_FILES` found (WenQuanYi Micro Hei covers CJK and
Latin), else Pillow's built-in font.
"""
import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
)
KNOWN = (34, 197, 94)
UNKNOWN = (239, 68, 68)


@functools.lru_cache(maxsize=16)
def font(size):
    """A TrueType font of ``size`` pixels (cached)."""
    for path in FONT_FILES:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def _font_size(height, width):
    return int(np.clip(min(height, width) / 28, 12, 36))


def draw_faces(rgb, items):
    """Draw a box and a label for each face.

    items: ``[(box, text, known), ...]``; known faces are green, the rest red.
    Returns a new array; ``rgb`` is not modified.
    """
    im = Image.fromarray(np.ascontiguousarray(rgb))
    draw = ImageDraw.Draw(im)
    f = font(_font_size(*rgb.shape[:2]))
    width = max(2, min(rgb.shape[:2]) // 200)
    for box, text, known in items:
        top, right, bottom, left = (int(v) for v in box)
        colour = KNOWN if known else UNKNOWN
        draw.rectangle((left, top, right, bottom), outline=colour, width=width)
        if text:
            x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=f)
            tw, th = x1 - x0, y1 - y0
            pad = max(2, th // 5)
            y = bottom + 1 if bottom + th + 2 * pad < rgb.shape[0] else max(0, top - th - 2 * pad)
            x = min(max(0, left), max(0, rgb.shape[1] - tw - 2 * pad))
            draw.rectangle((x, y, x + tw + 2 * pad, y + th + 2 * pad), fill=colour)
            draw.text((x + pad - x0, y + pad - y0), text, font=f, fill=(255, 255, 255))
    return np.asarray(im)


def draw_panel(rgb, lines):
    """Draw ``lines`` (strings) in a semi-transparent dark panel at the top left.

    Returns a new array; ``rgb`` is not modified. No lines: an unchanged copy.
    """
    out = np.array(rgb, copy=True)
    if not lines:
        return out
    f = font(max(11, _font_size(*rgb.shape[:2]) - 4))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), line, font=f) for line in lines]
    line_h = max(b[3] - b[1] for b in boxes) + 4
    w = min(out.shape[1], max(b[2] - b[0] for b in boxes) + 16)
    h = min(out.shape[0], line_h * len(lines) + 10)
    out[:h, :w] = (out[:h, :w].astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken 60 %
    im = Image.fromarray(out)
    draw = ImageDraw.Draw(im)
    for i, (line, b) in enumerate(zip(lines, boxes)):
        draw.text((8 - b[0], 5 + i * line_h - b[1]), line, font=f, fill=(255, 255, 255))
    return np.asarray(im)
