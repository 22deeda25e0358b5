"""The face engine against the plain face_recognition calls, on the same photos, in one run.

    .venv/bin/python bench/bench_engine.py

Prints median milliseconds for HOG detection and for encoding one face, ours and
the library's, and their ratio (library / ours: above 1 means we are faster).
"""
from common import KNN, median_ms, require_data

require_data()

import face_recognition  # noqa: E402

from shared import faces  # noqa: E402
from shared.images import load_image  # noqa: E402

# A typical web photo: obama1.jpg (1480x832) scaled to 853x480.
photo = KNN / "test" / "obama1.jpg"
rgb = load_image(photo, max_side=853)
box = faces.detect(rgb)[0]
chip = faces.align(rgb, [box])[0]

rows = [
    ("HOG detect, upsample 1", lambda: face_recognition.face_locations(rgb), lambda: faces.detect(rgb)),
    ("encode one face (landmarks+chip+ResNet)", lambda: face_recognition.face_encodings(rgb, [box]),
     lambda: faces.embed(faces.align(rgb, [box]))),
    ("detect+encode whole photo", lambda: face_recognition.face_encodings(rgb, face_recognition.face_locations(rgb)),
     lambda: faces.analyze(rgb)),
    ("ResNet on a ready chip", None, lambda: faces.embed([chip])),
]
print(f"photo: {photo.name} at {rgb.shape[1]}x{rgb.shape[0]}")
print(f"{'step':42s} {'library ms':>11s} {'ours ms':>9s} {'ratio':>6s}")
for name, lib, ours in rows:
    ours_ms = median_ms(ours)
    lib_ms = median_ms(lib) if lib else float("nan")
    print(f"{name:42s} {lib_ms:11.1f} {ours_ms:9.1f} {lib_ms / ours_ms:6.2f}")
