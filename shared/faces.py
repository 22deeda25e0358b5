"""Face detection, alignment and embedding: the only module that touches dlib.

Conventions (the same as ``face_recognition``):

- images are RGB ``uint8`` arrays of shape ``(height, width, 3)``;
- a box is a tuple ``(top, right, bottom, left)`` of ints, in pixels of the image
  that was passed in, clipped to it (dlib's inclusive corners, as face_recognition
  reports them, so a box can be handed to either);
- a chip is an aligned face, RGB ``uint8`` of shape ``(CHIP_SIZE, CHIP_SIZE, 3)``,
  cut by dlib's 5-point alignment with padding ``CHIP_PADDING`` — exactly the crop
  dlib's face-recognition network expects, so a chip can be embedded on its own;
- an embedding is a ``float64`` vector of 128 values (dlib ResNet); two photos of
  one person are usually closer than 0.6 in Euclidean distance.

The dlib networks are loaded once per process, on first use (:func:`models`); the
HOG detector once per thread (:func:`detector`).
"""
import functools
import importlib.util
import os
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import cv2
import numpy as np

CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMBEDDING_SIZE = 128

# dlib's HOG detector releases Python's GIL while it scans; its ResNet encoder holds it (measured by
# bench/bench_gil.py). Neither object is safe to share between threads: the HOG detector crashed a
# threaded server (SIGSEGV, "double free") when two requests detected at once, and the ResNet keeps
# per-call state inside the network object. So each thread gets its own detector (built once per
# thread, ~0.1 s) and the encoder runs one pass at a time.
_encoder_lock = threading.Lock()
_per_thread = threading.local()


def _model_dir():
    # Found without importing face_recognition_models: its __init__ imports
    # pkg_resources, which recent setuptools releases no longer ship.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The face_recognition_models package is not installed.")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


@functools.lru_cache(maxsize=1)
def models():
    """Load dlib's 5-point shape predictor and ResNet encoder (once per process)."""
    import dlib

    folder = _model_dir()
    return SimpleNamespace(
        dlib=dlib,
        shape5=dlib.shape_predictor(os.path.join(folder, "shape_predictor_5_face_landmarks.dat")),
        encoder=dlib.face_recognition_model_v1(
            os.path.join(folder, "dlib_face_recognition_resnet_model_v1.dat")),
    )


def detector():
    """This thread's dlib HOG face detector (see the note on thread safety above)."""
    found = getattr(_per_thread, "detector", None)
    if found is None:
        found = _per_thread.detector = models().dlib.get_frontal_face_detector()
    return found


@dataclass
class Face:
    """One face found in an image.

    box: ``(top, right, bottom, left)`` in the image's pixels.
    chip: the aligned crop, ``(CHIP_SIZE, CHIP_SIZE, 3)`` RGB ``uint8``.
    embedding: ``(128,)`` ``float64``.
    """

    box: tuple
    chip: np.ndarray
    embedding: np.ndarray

    @property
    def area(self):
        top, right, bottom, left = self.box
        return max(0, bottom - top) * max(0, right - left)


def detect(rgb, upsample=1, scale=1.0):
    """Find faces with dlib's HOG detector.

    rgb: ``(H, W, 3)`` RGB ``uint8``.
    upsample: how many times the detector doubles the image first (finds smaller
        faces, costs about 4x per step).
    scale: resize factor applied before detection (``0.5`` detects on a half-size
        copy, about 4x faster); boxes are mapped back to ``rgb``'s pixels.

    Returns boxes ``(top, right, bottom, left)``, largest face first.
    """
    height, width = rgb.shape[:2]
    img = rgb
    if scale != 1.0:
        img = cv2.resize(rgb, None, fx=scale, fy=scale,
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    rects = detector()(img, int(upsample))
    boxes = []
    for r in rects:
        top = max(0, int(round(r.top() / scale)))
        right = min(width - 1, int(round(r.right() / scale)))
        bottom = min(height - 1, int(round(r.bottom() / scale)))
        left = max(0, int(round(r.left() / scale)))
        if bottom > top and right > left:
            boxes.append((top, right, bottom, left))
    boxes.sort(key=lambda b: (b[2] - b[0]) * (b[1] - b[3]), reverse=True)
    return boxes


def _rect(box):
    top, right, bottom, left = box
    return models().dlib.rectangle(int(left), int(top), int(right), int(bottom))


def landmarks(rgb, box):
    """The 5 landmarks (eye corners and nose) of the face in ``box``, as a dlib shape."""
    return models().shape5(rgb, _rect(box))


def align(rgb, boxes, size=CHIP_SIZE, padding=CHIP_PADDING):
    """Cut one aligned chip per box.

    Returns a list of ``(size, size, 3)`` RGB ``uint8`` arrays, in the order of ``boxes``.
    """
    m = models()
    return [np.ascontiguousarray(m.dlib.get_face_chip(rgb, landmarks(rgb, b), size=size, padding=padding))
            for b in boxes]


def embed(chips):
    """Embed aligned chips (as made by :func:`align` with the default size and padding).

    Returns a ``(len(chips), 128)`` ``float64`` array (``(0, 128)`` for no chips).
    """
    if not len(chips):
        return np.zeros((0, EMBEDDING_SIZE))
    batch = [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]
    encoder = models().encoder
    with _encoder_lock:
        vectors = encoder.compute_face_descriptor(batch)
    return np.array(vectors, dtype=np.float64)


def analyze(rgb, upsample=1, scale=1.0, boxes=None):
    """Detect (unless ``boxes`` is given), align and embed every face in ``rgb``.

    Returns a list of :class:`Face`, largest face first.
    """
    if boxes is None:
        boxes = detect(rgb, upsample=upsample, scale=scale)
    chips = align(rgb, boxes)
    vectors = embed(chips)
    return [Face(tuple(b), c, v) for b, c, v in zip(boxes, chips, vectors)]


def distances(embeddings, probe):
    """Euclidean distance of each row of ``embeddings`` ``(N, 128)`` to ``probe`` ``(128,)``: ``(N,)``."""
    embeddings = np.asarray(embeddings, dtype=np.float64).reshape(-1, EMBEDDING_SIZE)
    return np.linalg.norm(embeddings - np.asarray(probe, dtype=np.float64), axis=1)


def sharpness(chip):
    """Variance of the Laplacian of a chip's grey image: low values mean blur."""
    grey = cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
