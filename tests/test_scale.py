"""The KOL model at scale (issue 24): versions stored as memory-mapped ``.npy`` files, old ``model.npz``
versions still loading, and one KOL added by :func:`shared.recognition.model.add_kol` giving the model a
full training gives (the full training is the reference)."""
import mmap

import numpy as np
import pytest

from shared.faces import engine
from shared.faces.images import load_image
from shared.recognition import rule
from shared.recognition.model import ARRAYS, add_kol, train
from shared.recognition.store import MANIFEST, OLD_FILE, ModelStore, map_arrays, model_arrays
from shared.training.train import retrain

from .builders import build_pool
from .conftest import KNN, needs_data
from .test_classifier import _people


def _mapped(array):
    """True when ``array`` is a view of a memory-mapped file."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def _write_old_version(store, model, version="20261120-120000-0000aa"):
    """``model`` saved the way versions were saved before issue 24: one uncompressed ``model.npz`` (the
    arrays as that code named them) beside ``meta.json``, and ``current`` naming it."""
    folder = store.root / version
    folder.mkdir(parents=True)
    np.savez(folder / OLD_FILE, X=model.X, offsets=model.offsets, centroids=model.centroids,
             classes=np.array(model.classes, dtype=str), chips=np.array(model.chips, dtype=str),
             rule_right=np.array(model.rule["right"]), rule_stranger=np.array(model.rule["stranger"]),
             shrink=np.array(model.shrink), svm_w=model.svm_w, svm_b=model.svm_b)
    (folder / "meta.json").write_text('{"names": {}}')
    (store.root / "current").write_text(version)
    return version


def _answers(model, probes):
    """``[(slug, confidence)]`` of each probe face, one photo each."""
    return [(p.slug, p.confidence) for e in probes for p in model.predict(np.asarray(e)[None, :])]


def _same_answers(a, b, tolerance=1e-3):
    """The same identities, confidences within ``tolerance``."""
    assert [s for s, _ in a] == [s for s, _ in b]
    assert max(abs(x - y) for (_, x), (_, y) in zip(a, b)) <= tolerance


def test_a_version_is_one_mapped_npy_file_per_array(tmp_path):
    X, slugs, centres = _people(4, 5, seed=2)
    model = train(X, slugs, {})
    store = ModelStore(tmp_path / "models")
    version = store.save(model)
    folder = store.root / version
    assert not (folder / OLD_FILE).exists() and (folder / MANIFEST).exists()
    assert sorted(p.suffix for p in folder.iterdir() if p.name not in (MANIFEST, "meta.json")) == \
        [".npy"] * len(model_arrays(model))
    loaded = store.load(version)
    for name in ARRAYS:  # every array of the model comes back mapped, read-only, equal
        if getattr(model, name) is not None:
            value = getattr(loaded, name)
            assert _mapped(value) and not value.flags.writeable, name
            assert np.array_equal(value, getattr(model, name)), name
    assert loaded.classes == model.classes and list(loaded.chips) == list(model.chips)
    assert loaded.shrink == model.shrink and loaded.rule == model.rule
    assert _answers(loaded, centres) == _answers(model, centres)
    assert all(a.dtype != object for a in map_arrays(folder).values())


def test_a_version_saved_as_one_npz_still_loads_answers_and_is_rewritten_mapped(tmp_path):
    X, slugs, centres = _people(4, 5, seed=3)
    model = train(X, slugs, {})
    store = ModelStore(tmp_path / "models")
    version = _write_old_version(store, model)
    assert store.versions() == [version] and store.current_version() == version
    loaded = store.current()
    assert loaded.classes == model.classes and loaded.svm_negs is None and not _mapped(loaded.X)
    assert _answers(loaded, centres) == _answers(model, centres)
    assert store.switch(version) == version
    assert store.forget("k1") == [version]  # a rewrite stores it the new way
    folder = store.root / version
    assert not (folder / OLD_FILE).exists() and (folder / MANIFEST).exists()
    again = store.current()
    assert again.classes == ["k0", "k2", "k3"] and _mapped(again.X)


def test_a_rewrite_deletes_the_files_it_replaced(tmp_path):
    X, slugs, _ = _people(3, 4, seed=4)
    store = ModelStore(tmp_path / "models")
    version = store.save(train(X, slugs, {}))
    before = set((store.root / version).iterdir())
    store.forget("k2")
    after = set((store.root / version).iterdir())
    assert not any(p.name.startswith(".tmp-") for p in after)
    assert not (before - {store.root / version / MANIFEST, store.root / version / "meta.json"}) & after
    assert len(after) == len(map_arrays(store.root / version)) + 2  # its arrays, the manifest, meta.json


def _split(X, slugs, last):
    """The rows of every KOL but ``last``, and ``last``'s rows."""
    mine = np.array([s == last for s in slugs])
    return X[~mine], [s for s in slugs if s != last], X[mine]


def test_adding_one_kol_gives_what_a_full_training_gives():
    """Synthetic roster big enough that a KOL's 400 nearest negatives are a part of the pool: only some
    SVMs are fitted again, and every array equals the full training's."""
    X, slugs, centres = _people(90, 6, seed=11)
    chips = [f"c{i}" for i in range(len(X))]
    base_X, base_slugs, new_rows = _split(X, slugs, "k45")
    keep = [c for c, s in zip(chips, slugs) if s != "k45"]
    base = train(base_X, base_slugs, {}, chips=keep)
    full = train(X, slugs, {}, chips=chips)
    added = add_kol(base, "k45", new_rows, [c for c, s in zip(chips, slugs) if s == "k45"])
    assert 1 < added.meta["metrics"]["added"]["svms"] < len(full.classes)  # its own and its neighbours' only
    assert added.classes == full.classes and list(added.chips) == list(full.chips)
    assert np.array_equal(added.X, full.X) and np.array_equal(added.offsets, full.offsets)
    assert added.shrink == full.shrink != base.shrink
    # an SVM kept (its new negatives outside its margin) equals a refit within liblinear's tolerance
    np.testing.assert_allclose(added.svm_w, full.svm_w, atol=1e-3)
    np.testing.assert_allclose(added.svm_b, full.svm_b, atol=1e-3)
    assert np.array_equal(added.svm_negs, full.svm_negs)
    np.testing.assert_allclose(added.svm_reach, full.svm_reach, rtol=1e-5)
    assert np.array_equal(added.kol_nearest, full.kol_nearest)
    rng = np.random.default_rng(12)
    probes = np.concatenate([centres + rng.normal(0, 0.025, centres.shape), rng.normal(0, 0.06, (40, 128))])
    _same_answers(_answers(added, probes), _answers(full, probes))
    for key in ("cv_accuracy", "per_kol", "confused", "roster"):
        assert added.meta["metrics"][key] == full.meta["metrics"][key], key


def test_new_photos_for_a_kol_and_one_taken_away_give_what_a_full_training_gives():
    X, slugs, centres = _people(90, 6, seed=13)
    chips = [f"c{i}" for i in range(len(X))]
    full = train(X, slugs, {}, chips=chips)
    rows = [i for i, s in enumerate(slugs) if s == "k7"]
    more = centres[7] + np.random.default_rng(14).normal(0, 0.025, (3, 128))
    now = rows[1:]  # its first photo went, three came
    X2 = np.concatenate([X[:rows[0]], X[now], more, X[rows[-1] + 1:]])
    slugs2 = slugs[:rows[0]] + ["k7"] * (len(now) + 3) + slugs[rows[-1] + 1:]
    chips2 = chips[:rows[0]] + [chips[i] for i in now] + ["m0", "m1", "m2"] + chips[rows[-1] + 1:]
    reference = train(X2, slugs2, {}, chips=chips2)
    added = add_kol(full, "k7", np.concatenate([X[now], more]), [chips[i] for i in now] + ["m0", "m1", "m2"])
    assert list(added.chips) == list(reference.chips) and added.shrink == reference.shrink
    np.testing.assert_allclose(added.svm_w, reference.svm_w, atol=1e-3)
    assert np.array_equal(added.svm_negs, reference.svm_negs)
    probes = centres + np.random.default_rng(15).normal(0, 0.025, centres.shape)
    _same_answers(_answers(added, probes), _answers(reference, probes))


def test_a_model_without_the_svm_negatives_is_not_extended():
    X, slugs, _ = _people(3, 4, seed=5)
    assert add_kol(train(X, slugs, {}, svm_background=False), "k9", X[:2], ["a", "b"]) is None
    assert add_kol(train(X, slugs, {}).without(["k0"]), "k9", X[:2], ["a", "b"]) is None
    other = rule.background()[::-1]  # its negatives index the background it was trained with
    assert add_kol(train(X, slugs, {}), "k9", X[:2], ["a", "b"], svm_background=other) is None
    assert add_kol(train(X, slugs, {}, svm_background=other), "k9", X[:2], ["a", "b"], svm_background=other) is not None


@needs_data
def test_adding_a_real_kol_answers_as_a_full_training_on_real_faces(celeb_faces):
    """Real dlib faces (four five_celebs people, then the fifth added; then one more photo for one of them):
    the same identities and confidences as training the whole pool, on held-out photos and strangers."""
    people = sorted(celeb_faces)
    held = {p: [f.embedding for _, f in celeb_faces[p][-3:]] for p in people}
    pool = {p: [f.embedding for _, f in celeb_faces[p][:-3]] for p in people}
    strangers = [f.embedding for path in sorted((KNN / "train").rglob("*.jp*g"))
                 for f in engine.analyze(load_image(path))[:1]]
    probes = [e for p in people for e in held[p]] + strangers

    def rows(names):
        X = np.array([e for p in names for e in pool[p]])
        return X, [p for p in names for _ in pool[p]], [f"{p}-{i}" for p in names for i in range(len(pool[p]))]

    X4, s4, c4 = rows(people[:-1])
    base = train(X4, s4, {}, chips=c4)
    X5, s5, c5 = rows(people)
    last = people[-1]
    added = add_kol(base, last, np.array(pool[last]), [f"{last}-{i}" for i in range(len(pool[last]))])
    full = train(X5, s5, {}, chips=c5)
    assert added.meta["metrics"]["added"]["svms"] >= 2
    assert added.shrink == full.shrink
    _same_answers(_answers(added, probes), _answers(full, probes))
    assert sum(s == p for (s, _), p in zip(_answers(added, probes), [p for p in people for _ in held[p]])) >= 10
    first = people[0]  # one held-out photo joins the first KOL
    pool[first].append(held[first][0])
    X6, s6, c6 = rows(people)
    again = add_kol(added, first, np.array(pool[first]), [f"{first}-{i}" for i in range(len(pool[first]))])
    _same_answers(_answers(again, probes), _answers(train(X6, s6, {}, chips=c6), probes))


class _Face:
    """A face for the pool builders: a chip of its own (noise drawn from the embedding) and an embedding."""

    def __init__(self, embedding):
        seed = int(abs(np.asarray(embedding)).sum() * 1e6)
        self.chip = np.random.default_rng(seed).integers(0, 256, (150, 150, 3), dtype=np.uint8)
        self.embedding = np.asarray(embedding, dtype=np.float64)


def test_retrain_after_importing_one_kol_extends_the_model_as_a_full_training_would(tmp_path):
    X, slugs, centres = _people(30, 5, seed=21)
    kols = {f"K{i}": [_Face(X[j]) for j in range(len(X)) if slugs[j] == f"k{i}"] for i in range(29)}
    pool, _ = build_pool(tmp_path / "pool", kols, tmp_path / "staging")
    store = ModelStore(tmp_path / "models")
    first = retrain(pool, store)
    assert "added" not in first["metrics"]
    build_pool(tmp_path / "pool", {"K29": [_Face(X[j]) for j in range(len(X)) if slugs[j] == "k29"]},
               tmp_path / "staging2")
    result = retrain(pool, store)
    new = pool.slug_for("K29")
    assert result["metrics"]["added"]["kol"] == new and result["identities"] == 30
    assert result["metrics"]["incremental"] == {"reused": 145, "read": 5}
    extended = store.current()
    assert extended.names[new] == "K29" and extended.meta["metrics"]["expected"] is not None
    reference = retrain(pool, ModelStore(tmp_path / "reference"), full=True)
    assert "added" not in reference["metrics"]
    full = ModelStore(tmp_path / "reference").current()
    probes = centres + np.random.default_rng(22).normal(0, 0.025, centres.shape)
    _same_answers(_answers(extended, probes), _answers(full, probes))
    assert retrain(pool, store)["metrics"].get("added") is None  # nothing changed: the whole pool, as before


def test_the_svm_negatives_are_the_ones_fit_svms_trains_on():
    """svm_negatives reproduces fit_svms's choice: each KOL fitted alone on them gives fit_svms's SVM."""
    X, slugs, _ = _people(30, 4, seed=31)
    model = train(X, slugs, {})
    bg = rule.background()
    for k in (0, 7, 29):
        own = model.X[model.offsets[k]:model.offsets[k + 1]]
        negs = model.svm_negs[k][model.svm_negs[k] >= 0]
        data = np.concatenate([model.X, bg])[negs]
        w, b = rule.fit_svms(own, [0, len(own)], data)
        np.testing.assert_allclose(w[0], model.svm_w[k], atol=1e-6)
        assert len(negs) == rule.SVM_NEGATIVES


@pytest.mark.parametrize("photos", [1, 3])
def test_adding_to_a_one_kol_model(photos):
    X, slugs, centres = _people(2, 4, seed=41)
    base = train(X[:4], slugs[:4], {})
    added = add_kol(base, "k1", X[4:4 + photos], [f"c{i}" for i in range(photos)])
    full = train(np.concatenate([X[:4], X[4:4 + photos]]), slugs[:4] + ["k1"] * photos, {},
                 chips=[str(i) for i in range(4)] + [f"c{i}" for i in range(photos)])
    np.testing.assert_allclose(added.svm_w, full.svm_w, atol=1e-3)
    _same_answers(_answers(added, centres), _answers(full, centres))


def test_a_photo_just_past_a_kols_reach_changes_nothing_of_it():
    """A new photo within REACH_SLACK of a KOL's reach but not nearer than its farthest negative leaves that
    KOL's negatives and SVM as they were (it crashed on the empty swap before)."""
    X, slugs, _ = _people(90, 6, seed=51)
    base = train(X[:-6], slugs[:-6], {}, chips=[f"c{i}" for i in range(len(X) - 6)])
    new = X[-6:]
    d = ((base.centroids.astype(np.float64)[:, None, :] - new[None].astype(np.float64)) ** 2).sum(2).min(1)
    far = int(np.argmax(d > base.svm_reach))  # a KOL the new photos do not reach
    base.svm_reach = np.array(base.svm_reach)
    base.svm_reach[far] = d[far] / (1 + 1e-6)  # their nearest is just past its (stated) reach
    added = add_kol(base, "k89", new, [f"n{i}" for i in range(6)])
    assert np.array_equal(added.svm_w[far], base.svm_w[far])
