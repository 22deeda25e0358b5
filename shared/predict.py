"""From a photo to named faces: detect, embed, ask the model, draw the answers.

The app views and the video helper use these plain functions; the batch worker
:func:`predict_file` runs in :mod:`shared.parallel`'s worker processes.

A *face object* is the dict of the JSON contract::

    {"box": {"top": int, "right": int, "bottom": int, "left": int},
     "identity": display name or None, "confidence": float, "known": bool}

``box`` is in pixels of the RGB array returned by :func:`shared.images.load_image`
(EXIF orientation applied, longest side at most ``images.MAX_SIDE``); ``confidence``
is the probability that the answer (the name, or "unknown") is right
(see :mod:`shared.classifier`). Faces are listed largest first.
"""
import logging
import os
import threading
from pathlib import Path

import numpy as np

from . import annotate, faces, images
from .errors import UserError

#: Longest side in pixels of the annotated thumbnails written for batch results.
THUMB_SIDE = 320

log = logging.getLogger(__name__)


def face_object(box, prediction, names):
    """The contract's face dict for one ``box`` ``(top, right, bottom, left)`` and its
    :class:`shared.classifier.Prediction`; ``names`` maps slug to display name."""
    top, right, bottom, left = (int(v) for v in box)
    identity = None
    if prediction.known and prediction.identity is not None:
        identity = names.get(prediction.identity, prediction.identity)
    return {"box": {"top": top, "right": right, "bottom": bottom, "left": left},
            "identity": identity, "confidence": float(prediction.confidence), "known": bool(prediction.known)}


def predict_faces(rgb, model, found=None):
    """Name every face in ``rgb`` (RGB ``uint8`` ``(H, W, 3)``) with ``model``.

    found: the :class:`shared.faces.Face` list if already computed (else detected here,
        HOG with one upsampling step, the same as face_recognition's default).
    Returns ``(objects, found)``: face objects (largest face first) and the matching
    :class:`shared.faces.Face` list, in the same order.
    """
    if found is None:
        found = faces.analyze(rgb)
    if not found:
        return [], []
    predictions = model.predict(np.array([f.embedding for f in found]))
    return [face_object(f.box, p, model.names) for f, p in zip(found, predictions)], found


def label(obj):
    """The text drawn beside a face: ``"Name 97%"`` or ``"unknown 88%"``."""
    return f"{obj['identity'] if obj['known'] else 'unknown'} {obj['confidence'] * 100:.0f}%"


def annotated(rgb, objects):
    """A new RGB array with a box and a :func:`label` drawn for each face object."""
    items = [((o["box"]["top"], o["box"]["right"], o["box"]["bottom"], o["box"]["left"]), label(o), o["known"])
             for o in objects]
    return annotate.draw_faces(rgb, items)


def thumbnail(rgb, side=THUMB_SIDE):
    """``rgb`` scaled down (aspect kept) so that its longest side is at most ``side`` pixels."""
    import cv2

    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


# -- batch worker (runs in shared.parallel's processes) ------------------------------

_model_cache = {}
_model_lock = threading.Lock()


def _model(models_root, version):
    """The model ``version`` under ``models_root``, loaded once per worker process."""
    from .classifier import ModelStore

    key = (str(models_root), version)
    with _model_lock:
        if key not in _model_cache:
            _model_cache.clear()
            _model_cache[key] = ModelStore(models_root).load(version)
        return _model_cache[key]


def predict_file(task):
    """Predict the faces of one uploaded photo (a batch item).

    task: ``(index, photo_path, display_name, models_root, version, thumb_path)``;
        ``thumb_path`` is where the annotated thumbnail (JPEG) is written.
    Returns ``{"index", "faces": [face objects], "error": str|None, "thumb": bool, "worker": pid}``.
    A bad photo gives an ``error`` sentence, never an exception.
    """
    index, photo, name, models_root, version, thumb_path = task
    result = {"index": index, "faces": [], "error": None, "thumb": False, "worker": os.getpid()}
    try:
        rgb = images.load_image(photo, name=name)
        objects, _ = predict_faces(rgb, _model(models_root, version))
        result["faces"] = objects
        if not objects:
            result["error"] = "No face was found in this photo."
        from .storage import atomic_write_bytes

        atomic_write_bytes(Path(thumb_path), images.encode_jpeg(thumbnail(annotated(rgb, objects)), quality=82))
        result["thumb"] = True
    except UserError as exc:
        result["error"] = exc.message
    except Exception:  # noqa: BLE001 - one broken photo must not fail the batch
        log.exception("batch photo %s failed", name)
        result["error"] = "This photo could not be processed."
    return result
