"""Training pools and models for the tests, built one way with the project's own storage code.

A pool (:class:`shared.training.pool.Pool`) is built as an import builds it: each face's chip and
embedding are staged with :func:`shared.training.pool.save_chip` (as a job folder holds them),
then added per KOL with ``Pool.add``, in the order given; a model is trained on the whole pool
(:func:`shared.recognition.model.train`) and saved as the current version of the data
folder's :class:`~shared.recognition.store.ModelStore`. Faces are real (found by dlib in
the shared photos) or anything with ``.chip`` (150x150x3 uint8 RGB) and ``.embedding`` (128 floats).
"""
from pathlib import Path

import numpy as np

from shared.faces import engine, images
from shared.recognition.model import train
from shared.recognition.store import ModelStore
from shared.training.pool import Pool, save_chip


def one_face_each(photos):
    """``[Face]``: the face of each photo in which dlib finds exactly one, in the order of ``photos``
    (photos with none or several are left out)."""
    faces = []
    for path in photos:
        found = engine.analyze(images.load_image(path))
        if len(found) == 1:
            faces.append(found[0])
    return faces


def staged_chips(folder, faces):
    """Each face's chip (``<id>.png``) and embedding (``<id>.npy``) saved in ``folder``: the PNGs' paths,
    in the order of ``faces`` (what ``Pool.add`` takes)."""
    folder = Path(folder)
    return [folder / f"{save_chip(folder, face.chip, face.embedding)}.png" for face in faces]


def build_pool(pool_dir, kols, staging):
    """The pool at ``pool_dir`` with ``kols`` (``{display name: [face, ...]}``) added one KOL at a time,
    in order, each KOL's chips staged in ``staging/<its position>``.

    Returns ``(pool, slugs)``: the :class:`Pool` and the KOLs' slugs in the order of ``kols``.
    """
    pool = Pool(pool_dir)
    slugs = [pool.add(name, staged_chips(Path(staging) / str(n), faces))
             for n, (name, faces) in enumerate(kols.items())]
    return pool, slugs


def save_model(data_dir, pool):
    """Train a model on everything ``pool`` holds and save it as the current model of ``data_dir``.

    Returns ``(store, version)``: the data folder's :class:`ModelStore` (``data_dir/models``) and the
    new version's name.
    """
    X, slugs, _ = pool.embeddings()
    store = ModelStore(Path(data_dir) / "models")
    return store, store.save(train(X, slugs, pool.names()))


def reference_model(people_dir):
    """A model of the people of ``people_dir`` (a folder per person, named by their slug, of reference photos):
    the first face dlib finds in each photo, display names with spaces for underscores."""
    X, slugs = [], []
    for person in sorted(d for d in Path(people_dir).iterdir() if d.is_dir()):
        for photo in sorted(person.iterdir()):
            found = engine.analyze(images.load_image(photo))
            if found:
                X.append(found[0].embedding)
                slugs.append(person.name)
    return train(np.array(X), slugs, {s: s.replace("_", " ") for s in slugs})

