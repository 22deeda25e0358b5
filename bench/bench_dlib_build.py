"""Raw dlib speed of whichever dlib this Python has: compare builds (README, install traps).

    .venv/bin/python bench/bench_dlib_build.py            # the project's source build
    /tmp/vb/bin/python bench/bench_dlib_build.py          # e.g. a venv with `pip install dlib-bin numpy pillow`

Model files are taken from the project's .venv (face_recognition_models), so the other
venv needs only dlib, numpy and pillow. Prints median ms of HOG detection (upsample 0 and 1)
and of one face encoding on obama1.jpg scaled to 853x480.
"""
import glob
import os
from pathlib import Path

import dlib
import numpy as np
from common import KNN, ROOT, median_ms
from PIL import Image

MODELS = glob.glob(str(ROOT / ".venv/lib/python3*/site-packages/face_recognition_models/models"))[0]

det = dlib.get_frontal_face_detector()
sp = dlib.shape_predictor(os.path.join(MODELS, "shape_predictor_5_face_landmarks.dat"))
enc = dlib.face_recognition_model_v1(os.path.join(MODELS, "dlib_face_recognition_resnet_model_v1.dat"))
rgb = np.asarray(Image.open(KNN / "test" / "obama1.jpg").convert("RGB").resize((853, 480)))
shape = sp(rgb, det(rgb, 1)[0])


def med(fn):
    return median_ms(fn, repeat=21, warmup=1)


print(f"dlib {dlib.__version__} from {Path(dlib.__file__).parent.parent.parent.parent.parent}  "
      f"(DLIB_USE_BLAS={getattr(dlib, 'DLIB_USE_BLAS', '?')})")
print(f"HOG detect upsample 0: {med(lambda: det(rgb, 0)):.1f} ms   upsample 1: {med(lambda: det(rgb, 1)):.1f} ms   "
      f"encode one face: {med(lambda: enc.compute_face_descriptor(rgb, shape)):.1f} ms")
