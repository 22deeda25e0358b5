"""Box geometry for the video loop: overlap, one-to-one matching, clipping, crops.

Boxes are ``(top, right, bottom, left)`` in an image's pixels (floats or ints);
images are ``(H, W, ...)`` arrays.
"""
import numpy as np


def iou(a, b):
    """Intersection over union of two boxes, in [0, 1]."""
    top, bottom = max(a[0], b[0]), min(a[2], b[2])
    left, right = max(a[3], b[3]), min(a[1], b[1])
    inter = max(0.0, bottom - top) * max(0.0, right - left)
    area = (a[2] - a[0]) * (a[1] - a[3]) + (b[2] - b[0]) * (b[1] - b[3]) - inter
    return float(inter / area) if area > 0 else 0.0


def iou_matrix(a_boxes, b_boxes):
    """Intersection over union of every box of ``a_boxes`` with every box of ``b_boxes``: ``(len(a), len(b))``."""
    a = np.asarray(a_boxes, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b_boxes, dtype=np.float64).reshape(-1, 4)
    height = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    width = np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(height, 0, None) * np.clip(width, 0, None)
    union = (((a[:, 2] - a[:, 0]) * (a[:, 1] - a[:, 3]))[:, None]
             + ((b[:, 2] - b[:, 0]) * (b[:, 1] - b[:, 3]))[None, :] - inter)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(a_boxes, b_boxes, threshold):
    """Greedy one-to-one matching by IoU, best overlap first.

    Returns ``(pairs, unmatched_a, unmatched_b)`` where ``pairs`` is a list of
    ``(index in a_boxes, index in b_boxes)``; pairs overlap by at least ``threshold``.
    """
    overlap = iou_matrix(a_boxes, b_boxes)
    scores = sorted(((float(overlap[i, j]), int(i), int(j)) for i, j in np.ndindex(overlap.shape)), reverse=True)
    used_a, used_b, pairs = set(), set(), []
    for score, i, j in scores:
        if score < threshold:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        pairs.append((i, j))
    return (pairs, [i for i in range(len(a_boxes)) if i not in used_a],
            [j for j in range(len(b_boxes)) if j not in used_b])


def side(box):
    """The longer side of a box, in pixels."""
    return max(box[2] - box[0], box[1] - box[3])


def clip_box(box, shape):
    """``box`` rounded to ints and kept inside an image of ``shape`` ``(H, W, ...)``."""
    top, right, bottom, left = box
    h, w = shape[:2]
    return (int(np.clip(round(top), 0, h - 1)), int(np.clip(round(right), 0, w - 1)),
            int(np.clip(round(bottom), 0, h - 1)), int(np.clip(round(left), 0, w - 1)))


def region(box, shape, margin):
    """The integer window ``(y0, y1, x0, x1)`` around ``box`` grown by ``margin`` x its side on each side, inside ``shape``."""
    top, right, bottom, left = box
    m = margin * side(box)
    h, w = shape[:2]
    return (int(max(0, top - m)), int(min(h, bottom + m + 1)), int(max(0, left - m)), int(min(w, right + m + 1)))


def crop_around(rgb, box, margin=0.6):
    """A copy of the region around ``box`` (``margin`` of the box size on each side) and the box inside it."""
    top, right, bottom, left = box
    m = int(margin * max(bottom - top, right - left))
    y0, x0 = max(0, top - m), max(0, left - m)
    y1, x1 = min(rgb.shape[0], bottom + m + 1), min(rgb.shape[1], right + m + 1)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]), (top - y0, right - x0, bottom - y0, left - x0)
