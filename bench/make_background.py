"""Write the per-KOL SVMs' background negatives, ``shared/recognition/background.npy``, from the development sets.

    .venv/bin/python bench/make_background.py

The file is ``(B, 128)`` ``float16`` dlib embeddings (rows in person order): up to :data:`PER_PERSON`
photos of every lfw_dev person and every asian_dev photo, from the caches of ``bench/lfw_cache.py``.
These people are development people, never an agency's KOLs; ``bench/bench_accuracy.py`` never reads this
file (it gives each measured fold a background of the *other* fold's people, so nothing it reports on is a
negative of its own SVMs).
"""
import numpy as np

import lfw_cache
from common import ROOT

PER_PERSON = {"lfw_dev": 3, "asian_dev": 15}
TARGET = ROOT / "shared" / "recognition" / "background.npy"


def rows():
    """The background embeddings ``(B, 128)`` ``float64``, person by person."""
    out = []
    for name, cap in PER_PERSON.items():
        by_person = {}
        for person, _file, emb, _n in lfw_cache.load(name):
            if emb is not None and len(by_person.setdefault(person, [])) < cap:
                by_person[person].append(emb)
        out += [e for person in sorted(by_person) for e in by_person[person]]
    return np.array(out)


if __name__ == "__main__":
    E = rows().astype(np.float16)
    np.save(TARGET, E)
    print(f"{TARGET}: {E.shape[0]} embeddings, {TARGET.stat().st_size / 1024:.0f} KiB")
