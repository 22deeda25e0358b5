import numpy as np
import pytest

from shared.faces import engine
from shared.faces.boxes import iou
from shared.faces.images import load_image

from .conftest import FIVE, KNN, needs_data

pytestmark = needs_data


def test_face_found_and_box_lands_on_it():
    rgb = load_image(KNN / "train" / "obama" / "obama.jpg")
    boxes = engine.detect(rgb)
    assert len(boxes) == 1
    top, right, bottom, left = boxes[0]
    assert 0 <= top < bottom <= rgb.shape[0] and 0 <= left < right <= rgb.shape[1]
    # The eyes and nose found by the landmark model lie inside the box.
    shape = engine.landmarks(rgb, boxes[0])
    for i in range(shape.num_parts):
        p = shape.part(i)
        assert left <= p.x <= right and top <= p.y <= bottom


def test_boxes_match_the_library_including_downscaled_detection():
    import face_recognition

    rgb = load_image(KNN / "test" / "obama_and_biden.jpg")
    theirs = face_recognition.face_locations(rgb)
    ours = engine.detect(rgb)
    assert len(ours) == len(theirs) >= 2
    for box in theirs:
        assert max(iou(box, b) for b in ours) > 0.9
    half = engine.detect(rgb, upsample=2, scale=0.5)  # same pixel scale, mapped back
    for box in theirs:
        assert max(iou(box, b) for b in half) > 0.6


def test_chips_and_embeddings_match_the_library():
    import face_recognition

    rgb = load_image(FIVE / "ben_afflek" / "train_1.jpg")
    found = engine.analyze(rgb)
    assert found and found[0].chip.shape == (engine.CHIP_SIZE, engine.CHIP_SIZE, 3)
    assert found[0].embedding.shape == (128,)
    theirs = face_recognition.face_encodings(rgb, [found[0].box])[0]
    assert np.linalg.norm(theirs - found[0].embedding) < 0.02


def test_same_person_closer_than_different_people(celeb_faces):
    def emb(person):
        return np.array([f.embedding for _, f in celeb_faces[person][:8]])

    a, b = emb("ben_afflek"), emb("elton_john")
    same = [np.linalg.norm(x - y) for i, x in enumerate(a) for y in a[i + 1:]]
    diff = [np.linalg.norm(x - y) for x in a for y in b]
    assert np.median(same) < engine.SAME_PERSON_DISTANCE < np.median(diff)
    assert np.mean(same) < np.mean(diff) - 0.2


def test_no_face_gives_no_boxes():
    rgb = np.full((200, 300, 3), 127, np.uint8)
    assert engine.detect(rgb) == [] and engine.analyze(rgb) == []
    assert engine.embed([]).shape == (0, 128)


def test_sharpness_drops_with_blur():
    import cv2

    rgb = load_image(KNN / "train" / "obama" / "obama.jpg")
    chip = engine.align(rgb, engine.detect(rgb))[0]
    assert engine.sharpness(cv2.GaussianBlur(chip, (9, 9), 3)) < engine.sharpness(chip) / 2


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 800, 3)])
def test_degenerate_images_do_not_crash(shape):
    assert engine.detect(np.zeros(shape, np.uint8)) == []


@pytest.mark.parametrize("person, path", [("obama", KNN / "train" / "obama" / "obama.jpg"),
                                          ("ben", FIVE / "ben_afflek" / "train_1.jpg"),
                                          ("elton", FIVE / "elton_john" / "train_1.jpg")])
def test_tight_crops_give_one_face_of_the_same_person(person, path):
    rgb = load_image(path)
    original = engine.analyze(rgb)[0]
    shape = engine.landmarks(rgb, original.box)
    dlib = engine.networks().dlib
    top, right, bottom, left = original.box
    crops = {"box": rgb[top:bottom + 1, left:right + 1],
             "aligned112": dlib.get_face_chip(rgb, shape, size=112, padding=0.1),
             "aligned160": dlib.get_face_chip(rgb, shape, size=160, padding=0.3),
             "chip": original.chip}
    for name, crop in crops.items():
        crop = np.ascontiguousarray(crop)
        found = engine.analyze(crop)
        assert len(found) == 1, (person, name)
        t, r, b, l = found[0].box
        assert 0 <= t < b < crop.shape[0] and 0 <= l < r < crop.shape[1]
        assert np.linalg.norm(found[0].embedding - original.embedding) < engine.SAME_PERSON_DISTANCE, (person, name)


def test_faceless_photos_stay_faceless_with_the_tight_fallback():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)
    wall = np.ascontiguousarray(load_image(KNN / "train" / "obama" / "obama.jpg")[:120, :120])
    gradient = np.dstack([np.tile(np.linspace(0, 255, 160), (160, 1)).astype(np.uint8)] * 3)
    for rgb in (noise, wall, gradient):
        assert engine.detect(rgb) == [] and engine.analyze(rgb) == []
