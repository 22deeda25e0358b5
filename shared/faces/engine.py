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
  one person are usually closer than :data:`SAME_PERSON_DISTANCE` (0.6) in Euclidean distance.

The dlib networks are loaded once per process, on first use (:func:`networks`); the
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
#: dlib's same-person distance: two embeddings (Euclidean) closer than this are usually one person.
#: dlib's ResNet was validated at this threshold and it is face_recognition's default ``tolerance``;
#: the one name for it (stricter or looser thresholds elsewhere have their own names).
SAME_PERSON_DISTANCE = 0.6

# dlib's HOG detector releases Python's GIL while it scans; its ResNet encoder holds it (measured by
# bench/bench_gil.py). Neither object is safe to share between threads: the HOG detector crashed a
# threaded server (SIGSEGV, "double free") when two requests detected at once, and the ResNet keeps
# per-call state inside the network object. So each thread gets its own detector (built once per
# thread, ~0.1 s) and the encoder runs one pass at a time.
_encoder_lock = threading.Lock()
_per_thread = threading.local()


def _networks_dir():
    # Found without importing face_recognition_models: its __init__ imports
    # pkg_resources, which recent setuptools releases no longer ship.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The face_recognition_models package is not installed.")
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


@functools.lru_cache(maxsize=1)
def networks():
    """Load dlib's 5-point shape predictor and ResNet encoder (once per process)."""
    import dlib

    folder = _networks_dir()
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
        found = _per_thread.detector = networks().dlib.get_frontal_face_detector()
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
    return networks().dlib.rectangle(int(left), int(top), int(right), int(bottom))


def landmarks(rgb, box):
    """The 5 landmarks (eye corners and nose) of the face in ``box``, as a dlib shape."""
    return networks().shape5(rgb, _rect(box))


def align(rgb, boxes, size=CHIP_SIZE, padding=CHIP_PADDING):
    """Cut one aligned chip per box.

    Returns a list of ``(size, size, 3)`` RGB ``uint8`` arrays, in the order of ``boxes``.
    """
    net = networks()
    return [np.ascontiguousarray(net.dlib.get_face_chip(rgb, landmarks(rgb, b), size=size, padding=padding))
            for b in boxes]


def embed(chips):
    """Embed aligned chips (as made by :func:`align` with the default size and padding).

    Returns a ``(len(chips), 128)`` ``float64`` array (``(0, 128)`` for no chips).
    """
    if not len(chips):
        return np.zeros((0, EMBEDDING_SIZE))
    batch = [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]
    encoder = networks().encoder
    with _encoder_lock:
        vectors = encoder.compute_face_descriptor(batch)
    return np.array(vectors, dtype=np.float64)


#: Tight-crop fallback: the photo is resized so its longer side is this many pixels and padded
#: on every side; these tries run in order (padding as a fraction of that side, how the border
#: is filled, HOG upsampling steps) until one finds a face.
TIGHT_SIDE = 240
#: (A fourth try, grey border with upsampling, found "faces" in random noise: left out.)
TIGHT_TRIES = ((0.2, cv2.BORDER_REPLICATE, 0), (0.4, cv2.BORDER_CONSTANT, 0), (0.2, cv2.BORDER_REPLICATE, 1))
#: A photo that is only a face: the face box assumed for direct alignment, as fractions of the
#: photo's ``(top, right, bottom, left)`` (fits dlib-style chips and 112/160 px aligned crops).
FULL_FRAME_BOX = (0.05, 0.95, 1.0, 0.05)
#: Direct alignment is kept only if the detector scores the aligned crop at least this high
#: (its usual cut-off is 0; blank, noise and background crops score nothing above -1).
FULL_FRAME_MIN_SCORE = -0.6


def _padded(rgb, pad, mode=cv2.BORDER_REPLICATE):
    return cv2.copyMakeBorder(np.ascontiguousarray(rgb), pad, pad, pad, pad, mode, value=(127, 127, 127))


def _face_from_padded(rgb, padded, pad, box):
    """One :class:`Face` for ``box`` given in ``padded``'s pixels (``padded`` = ``rgb`` with ``pad`` px
    added on each side); its reported box is mapped back to ``rgb`` and clipped to it."""
    chip = align(padded, [box])[0]
    height, width = rgb.shape[:2]
    top, right, bottom, left = (int(v) - pad for v in box)
    clipped = (max(0, top), min(width - 1, right), min(height - 1, bottom), max(0, left))
    return Face(clipped, chip, embed([chip])[0])


def tight_faces(rgb):
    """Faces of a photo that is (almost) only a face, where plain detection found none.

    rgb: ``(H, W, 3)`` RGB ``uint8``. Two tries, cheapest first:

    1. the photo is resized to :data:`TIGHT_SIDE` px on its longer side, padded on every side
       and searched again (:data:`TIGHT_TRIES`): the detector needs some margin around a face
       to find it, which a tight crop cuts away;
    2. if still nothing and the photo is roughly square (aspect within 1:2), the face is
       assumed to fill it (:data:`FULL_FRAME_BOX`), aligned directly, and kept only if the
       detector then scores the aligned crop at least :data:`FULL_FRAME_MIN_SCORE`
       (so a photo of a wall stays faceless).

    Returns a list of :class:`Face` (boxes in ``rgb``'s pixels, clipped to it), largest first.
    Costs a few small (~300-400 px) detection passes for photos with no face at all.
    """
    height, width = rgb.shape[:2]
    if min(height, width) < 24:
        return []
    f = TIGHT_SIDE / max(height, width)
    small = cv2.resize(rgb, (max(1, round(width * f)), max(1, round(height * f))),
                       interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    for pad_fraction, mode, upsample in TIGHT_TRIES:
        pad_small = int(round(pad_fraction * TIGHT_SIDE))
        rects = detector()(_padded(small, pad_small, mode), upsample)
        if len(rects):
            big_pad = int(round(pad_small / f))
            padded = _padded(rgb, big_pad, mode)
            # a rect is in padded-small pixels; / f gives padded-big pixels (big_pad = pad_small / f)
            found = [_face_from_padded(rgb, padded, big_pad, tuple(
                int(round(v / f)) for v in (r.top(), r.right(), r.bottom(), r.left()))) for r in rects]
            found = [x for x in found if x.area > 0]
            found.sort(key=lambda x: x.area, reverse=True)
            return found
    if not 0.5 <= height / width <= 2.0:
        return []
    big_pad = int(round(0.4 * max(height, width)))
    padded = _padded(rgb, big_pad)
    t, r, b, l = FULL_FRAME_BOX
    box = (int(t * height) + big_pad, int(r * width) + big_pad, int(b * height) + big_pad, int(l * width) + big_pad)
    shape = landmarks(padded, box)
    dlib = networks().dlib
    for size, padding in ((200, 0.5), (150, 0.25), (200, 0.8)):
        check = np.ascontiguousarray(dlib.get_face_chip(padded, shape, size=size, padding=padding))
        _, scores, _ = detector().run(check, 0, FULL_FRAME_MIN_SCORE)
        if len(scores):
            return [_face_from_padded(rgb, padded, big_pad, box)]
    return []


def analyze(rgb, upsample=1, scale=1.0, boxes=None, tight=True):
    """Detect (unless ``boxes`` is given), align and embed every face in ``rgb``.

    tight: when no face is found (or ``boxes`` is empty), try :func:`tight_faces`, for photos
        that are only a face (aligned 112/150/160 px crops, headshots cut at the chin).
    Returns a list of :class:`Face`, largest face first.
    """
    if boxes is None:
        boxes = detect(rgb, upsample=upsample, scale=scale)
    if not len(boxes):
        return tight_faces(rgb) if tight else []
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
