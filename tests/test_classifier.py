import numpy as np
import pytest

from shared import classifier, faces
from shared.classifier import ModelStore
from shared.errors import UserError
from shared.images import load_image

from .conftest import KNN, five_celebs_photos, needs_data


def _training_set(celeb_faces):
    X = np.array([f.embedding for person in celeb_faces for _, f in celeb_faces[person]])
    slugs = [person for person in celeb_faces for _ in celeb_faces[person]]
    return X, slugs


@needs_data
def test_trained_model_names_held_back_photos_and_refuses_strangers(celeb_faces, tmp_path):
    X, slugs = _training_set(celeb_faces)
    model = classifier.train(X, slugs, {s: s.replace("_", " ").title() for s in set(slugs)})
    assert model.meta["identities"] == 5 and model.meta["samples"] == len(X)
    assert 0.3 <= model.threshold <= 0.75

    right = total = 0
    for person, paths in five_celebs_photos("val_").items():
        for path in paths:
            found = faces.analyze(load_image(path))
            if len(found) != 1:
                continue
            total += 1
            right += model.predict([found[0].embedding])[0].identity == person
    assert total >= 20 and right / total >= 0.9

    strangers = [f for p in sorted((KNN / "train").rglob("*.jp*g"))
                 for f in faces.analyze(load_image(p))[:1]]
    answers = model.predict([f.embedding for f in strangers])
    assert len(answers) >= 7
    assert sum(not a.known for a in answers) / len(answers) >= 0.85
    assert all(0.0 <= a.confidence <= 1.0 for a in answers)


@needs_data
def test_save_load_round_trip_and_current_pointer(celeb_faces, tmp_path):
    X, slugs = _training_set(celeb_faces)
    store = ModelStore(tmp_path / "models")
    assert store.current_version() is None and store.current() is None
    model = classifier.train(X, slugs, {})
    version = store.save(model)
    assert store.current_version() == version
    loaded = store.current()
    assert loaded.version == version and loaded.classes == model.classes
    probe = X[::7]
    assert [p.identity for p in loaded.predict(probe)] == [p.identity for p in model.predict(probe)]
    assert store.current() is loaded  # cached until `current` changes
    assert not list((tmp_path / "models").rglob("*.pkl"))
    second = store.save(classifier.train(X[:40], slugs[:40], {}))
    assert store.current().version == second != version


def test_single_identity_and_similarity():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=128) * 0.1
    X = centre + rng.normal(size=(6, 128)) * 0.02
    model = classifier.train(X, ["solo"] * 6, {"solo": "Solo"})
    near, far = model.predict([centre, centre + 0.2])
    assert near.known and near.identity == "solo" and not far.known and far.identity is None
    assert near.p_same > 0.5 > far.p_same
    # confidence is in the answer given: high for both a clear match and a clear stranger
    assert near.confidence > 0.5 and far.confidence > 0.5
    sims = model.similar(centre, k=3)
    assert len(sims) == 1 and 0 <= sims[0][1] <= 1


def test_empty_pool_is_a_clear_error():
    with pytest.raises(UserError):
        classifier.train(np.zeros((0, 128)), [], {})


def test_malformed_versions_are_refused(tmp_path):
    store = ModelStore(tmp_path)
    for bad in ["../../etc", "", "20260101-000000-zzzzzz"]:
        with pytest.raises(UserError):
            store.load(bad)
    (tmp_path / "current").write_text("../../evil")
    assert store.current_version() is None


def test_similarity_is_graded_and_half_at_the_threshold():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 128)) * 0.2
    X = np.concatenate([c + rng.normal(size=(8, 128)) * 0.02 for c in centres])
    model = classifier.train(X, ["a"] * 8 + ["b"] * 8 + ["c"] * 8, {})
    assert model.similarity(0.0) == 1.0
    assert abs(model.similarity(model.threshold) - 0.5) < 1e-9
    assert model.similarity(2 * model.threshold) < 0.1
    rows = model.similar(centres[1], k=5)
    assert [r[0] for r in rows][0] == "b" and len(rows) == 3
    sims = [r[1] for r in rows]
    assert sims == sorted(sims, reverse=True) and all(0.0 <= v <= 1.0 for v in sims)
    assert sims[0] > 0.5 > sims[1]
    assert model.similar(centres[1], k=1)[0][0] == "b" and model.similar(centres[1], k=0) == []


def test_confidence_is_in_the_answer_given():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(2, 128)) * 0.2
    X = np.concatenate([c + rng.normal(size=(8, 128)) * 0.02 for c in centres])
    model = classifier.train(X, ["a"] * 8 + ["b"] * 8, {})
    far = centres[0] + rng.normal(size=128) * 0.3
    for p in model.predict([centres[0], centres[1], far]):
        assert 0.5 <= p.confidence <= 1.0 and 0.0 <= p.p_same <= 1.0
        assert p.confidence == (p.p_same if p.known else round(1 - p.p_same, 4))
        assert p.known == (p.distance <= model.threshold)
    near_a, near_b, stranger = model.predict([centres[0], centres[1], far])
    assert (near_a.identity, near_b.identity, stranger.identity) == ("a", "b", None)
    assert stranger.candidate in ("a", "b") and not stranger.known
