"""What each step of the face engine costs, on one photo: our calls beside face_recognition's.

    .venv/bin/python bench/bench_engine.py

Prints the median milliseconds of each step. Both columns run the same dlib code (the HOG
detector, a landmark predictor, the ResNet encoder): ``shared.faces.engine`` only calls dlib
directly, with the 5-point landmarks and one thread-local detector. So the two columns
differ by noise and by the landmark model (face_recognition's default is the 68-point
one), and no ratio is printed: a ratio of the same calls measures the machine, not the
code. Where our engine is faster it is by doing less work (detecting on scaled copies,
a plain pass before an upsampled one, tracking between detections in videos); those
choices are measured end to end by bench_align.py, bench_predict.py and bench_video.py.
"""
from common import KNN, median_ms, require_data

require_data()

import face_recognition  # noqa: E402

from shared.faces import engine  # noqa: E402
from shared.faces.images import load_image  # noqa: E402

# A typical web photo: obama1.jpg (1480x832) scaled to 853x480.
photo = KNN / "test" / "obama1.jpg"
rgb = load_image(photo, max_side=853)
box = engine.detect(rgb)[0]
chip = engine.align(rgb, [box])[0]

rows = [
    ("HOG detect, upsample 1", lambda: face_recognition.face_locations(rgb), lambda: engine.detect(rgb)),
    ("HOG detect, upsample 0", lambda: face_recognition.face_locations(rgb, 0), lambda: engine.detect(rgb, 0)),
    ("landmarks + ResNet, one face (5-point)", lambda: face_recognition.face_encodings(rgb, [box], model="small"),
     lambda: engine.embed(engine.align(rgb, [box]))),
    ("landmarks + ResNet, one face (68-point)", lambda: face_recognition.face_encodings(rgb, [box]), None),
    ("ResNet on a ready chip", None, lambda: engine.embed([chip])),
]
print(f"photo: {photo.name} at {rgb.shape[1]}x{rgb.shape[0]} (median of 15 runs)")
print(f"{'step':42s} {'face_recognition ms':>20s} {'shared.faces.engine ms':>16s}")
for name, lib, ours in rows:
    lib_ms = f"{median_ms(lib):.1f}" if lib else "-"
    ours_ms = f"{median_ms(ours):.1f}" if ours else "-"
    print(f"{name:42s} {lib_ms:>20s} {ours_ms:>16s}")
