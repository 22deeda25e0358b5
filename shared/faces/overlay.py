"""What a viewer sees on a video frame: boxes, labels, the "seen most" panel, and JPEG bytes.

Frames are RGB ``uint8`` ``(H, W, 3)``; boxes ``(top, right, bottom, left)`` in its
pixels. Text is rendered once with Pillow (the fonts of :mod:`shared.faces.annotate`, so
any script works) and cached as small bitmaps; boxes and the cached bitmaps are put
on the frame with OpenCV/NumPy, which costs a fraction of drawing a whole 1080p
frame through Pillow.
"""
import functools

import cv2
import numpy as np
from PIL import Image, ImageDraw

from shared.faces import annotate


def _font_size(shape):
    return int(np.clip(min(shape[:2]) / 28, 12, 36))


@functools.lru_cache(maxsize=512)
def _label(text, size, colour):
    """An RGB bitmap of ``text`` in white on ``colour``, padded."""
    f = annotate.font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x0, y0, x1, y1 = probe.textbbox((0, 0), text, font=f)
    pad = max(2, (y1 - y0) // 5)
    im = Image.new("RGB", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), colour)
    ImageDraw.Draw(im).text((pad - x0, pad - y0), text, font=f, fill=(255, 255, 255))
    return np.asarray(im)


@functools.lru_cache(maxsize=64)
def _panel(lines, size):
    """A ``uint8`` mask ``(h, w, 3)`` of the panel's white text (255: text), ``lines`` a tuple."""
    f = annotate.font(size)
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    boxes = [probe.textbbox((0, 0), line, font=f) for line in lines]
    line_h = max(b[3] - b[1] for b in boxes) + 4
    w = max(b[2] - b[0] for b in boxes) + 16
    h = line_h * len(lines) + 10
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for i, (line, b) in enumerate(zip(lines, boxes)):
        draw.text((8 - b[0], 5 + i * line_h - b[1]), line, font=f, fill=255)
    return np.repeat(np.asarray(im)[..., None], 3, axis=2)


def draw(image, items, lines=(), bgr=False):
    """Draw the overlay on ``image`` IN PLACE and return it.

    image: ``(H, W, 3)`` ``uint8``, RGB (or BGR when ``bgr``: the colours are then
    swapped so the picture looks the same). items: ``[(box, text, known), ...]``: a
    box and a label per face, green for a known face (:data:`shared.faces.annotate.KNOWN`),
    red otherwise. lines: the panel's text lines, drawn in a darkened box at the top
    left (none: no panel).
    """
    out = image
    H, W = out.shape[:2]
    size = _font_size(out.shape)
    width = max(2, min(H, W) // 200)
    for box, text, known in items:
        top, right, bottom, left = (int(v) for v in box)
        colour = annotate.KNOWN if known else annotate.UNKNOWN
        cv2.rectangle(out, (left, top), (right, bottom), tuple(colour[::-1]) if bgr else colour, width)
        if not text:
            continue
        tag = _label(text, size, colour)
        if bgr:
            tag = tag[:, :, ::-1]
        th, tw = tag.shape[:2]
        y = bottom + 1 if bottom + 1 + th < H else max(0, top - th)
        x = min(max(0, left), max(0, W - tw))
        h, w = min(th, H - y), min(tw, W - x)
        out[y:y + h, x:x + w] = tag[:h, :w]
    if lines:
        mask = _panel(tuple(lines), max(11, size - 4))
        h, w = min(mask.shape[0], H), min(mask.shape[1], W)
        dark = cv2.convertScaleAbs(out[:h, :w], alpha=0.4)  # the panel's box, darkened
        out[:h, :w] = cv2.add(dark, cv2.multiply(255 - dark, mask[:h, :w], scale=1 / 255.0))  # + the text, white
    return out


#: The longest side of a streamed frame (pixels): larger frames are scaled down to it before the
#: overlay is drawn. An ``<img>`` on the video page shows at most about this much, and at 1080p the
#: scaled copy costs 7.5 ms a frame to encode against 10.6 ms (91 KB against 140 KB).
STREAM_SIDE = 1280


def render(rgb, items, lines=(), quality=80, max_side=STREAM_SIDE):
    """JPEG bytes of the RGB frame ``rgb`` with the overlay of :func:`draw` (``rgb`` is not modified).

    max_side: a frame whose longer side is larger is scaled down to it (bilinear), boxes with it;
        0 keeps the frame's size. The overlay is drawn on the BGR copy that OpenCV's encoder needs
        anyway (about twice as fast as Pillow's), so a frame costs one full-size copy, not two.
    """
    H, W = rgb.shape[:2]
    scale = max_side / max(H, W) if max_side and max(H, W) > max_side else 1.0
    if scale < 1.0:
        small = cv2.resize(rgb, (max(1, round(W * scale)), max(1, round(H * scale))), interpolation=cv2.INTER_LINEAR)
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        items = [(tuple(int(round(v * scale)) for v in box), text, known) for box, text, known in items]
    else:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    draw(bgr, items, lines, bgr=True)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
